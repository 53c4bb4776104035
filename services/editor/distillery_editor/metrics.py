"""The editor's Prometheus metrics (the runtime adds consumed, published, dead letters, lag)."""

from prometheus_client import Counter

SAMPLES = Counter("distillery_editor_samples_total", "Samples published", ["unit", "pool", "pathway", "tier"])
TOKENS = Counter("distillery_editor_tokens_total", "Tokens of published samples before and after compression "
                 "(compression ratio = after / before)", ["unit", "pathway", "stage"])
DROPPED = Counter("distillery_editor_duplicates_total",
                  "Samples not admitted: duplicate_id, duplicate_content, near_duplicate, cluster_quota", ["reason"])
HELD_OUT = Counter("distillery_editor_heldout_skipped_total", "Verdicts of eval tasks, never made samples")
SHADOW = Counter("distillery_editor_shadow_skipped_total", "Shadow verdicts (a promoted student's live answers), never made samples")
STALE = Counter("distillery_editor_stale_verdicts_total", "Verdicts superseded by a later one of another version")
RETRACTED = Counter("distillery_editor_retractions_total", "Samples retracted", ["reason"])  # judge_version, human
DECISIONS = Counter("distillery_editor_review_decisions_total", "Human review decisions applied", ["decision"])
