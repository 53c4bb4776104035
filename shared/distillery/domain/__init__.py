"""The domain library: scoring, text, tools, prompts, sampling, model backends, loading and generation."""
