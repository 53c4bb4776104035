"""The teacher's Prometheus metrics (the runtime adds consumed, published, dead letters, lag)."""

from prometheus_client import Counter, Gauge, Histogram

TOKENS = Counter("distillery_teacher_tokens_total", "Tokens processed", ["teacher", "kind"])
COST = Counter("distillery_teacher_cost_usd_total", "Generation cost in USD", ["teacher"])
LATENCY = Histogram("distillery_teacher_latency_seconds", "Generation latency per request", ["teacher"])
CANDIDATES = Counter("distillery_teacher_candidates_total", "Candidates produced", ["teacher", "finish_reason"])
ERRORS = Counter("distillery_teacher_errors_total", "Failed generations", ["teacher"])
SERVING = Gauge("distillery_teacher_student_servable",
                "A student deployment: 1 while its promoted artifact can be served, 0 while its files are missing",
                ["teacher"])
