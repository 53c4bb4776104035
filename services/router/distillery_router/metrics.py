"""The router's Prometheus metrics (the runtime adds consumed, published, dead letters, lag)."""

from prometheus_client import Counter, Gauge

ROUTED = Counter("distillery_router_requests_total", "Generation requests sent", ["unit", "teacher", "strategy"])
ACCEPTANCE = Gauge("distillery_router_acceptance_rate", "Judge acceptance learned per teacher and unit", ["unit", "teacher"])
COST_PER_ACCEPTED = Gauge("distillery_router_cost_per_accepted_usd", "Cost per accepted candidate", ["unit", "teacher"])
JUDGED = Gauge("distillery_router_judged_candidates", "Candidates behind the learned figures", ["unit", "teacher"])
SHADOWING = Gauge("distillery_router_shadowing", "1 while a promoted student gets a share of the unit's live tasks",
                  ["student", "unit"])
