"""Editor service: turns judged candidates into structured, deduplicated training samples."""

__version__ = "0.1.0"
