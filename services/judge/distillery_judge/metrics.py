"""The judge's Prometheus metrics (the runtime adds consumed, published, dead letters, lag)."""

from prometheus_client import Counter, Gauge, Info

VERDICTS = Counter("distillery_judge_candidates_pooled_total", "Candidates per pool", ["unit", "pool"])
CHECKS = Counter("distillery_judge_checks_total", "Rule-floor and reference checks by outcome (pass rate per rule)",
                 ["unit", "check", "outcome"])
OPEN_TASKS = Gauge("distillery_judge_open_tasks", "Tasks waiting for candidates")
LATE = Counter("distillery_judge_late_candidates_total", "Candidates of tasks already judged")
GROUP = Info("distillery_judge_group", "Judge version and the consumer group it reads candidates with")
CHAIN_STEPS = Counter("distillery_judge_chain_steps_skipped_total", "Intermediate chain steps (judged with the final)")
REGENERATIONS = Counter("distillery_judge_regenerations_total", "Bounded retries asked of the router", ["unit"])
TIMEOUTS = Counter("distillery_judge_timeouts_total", "Tasks judged incomplete after the timeout")
RELATIONS = Counter("distillery_judge_relations_total", "Multi-teacher relation of judged tasks", ["unit", "relation"])
SELF_CHECKS = Counter("distillery_judge_self_checks_total", "Self-check outcomes", ["unit", "check", "outcome"])
POSITION_SWAP = Gauge("distillery_judge_position_swap_agreement", "Share of pairwise judgments that survive swapping the order (rolling)", ["unit"])
PERTURBATION = Gauge("distillery_judge_perturbation_catch_rate", "Share of planted-error variants the judge failed (rolling)", ["unit"])
TWO_JUDGES = Gauge("distillery_judge_two_judge_agreement", "Share of candidates two judge models agree on (rolling)", ["unit"])
GATE = Gauge("distillery_judge_gate_closed", "1 while the unit's self-checks are below its threshold (train goes to review)", ["unit"])
RATE_GAUGES = {"position_swap": POSITION_SWAP, "perturbation": PERTURBATION, "two_judge": TWO_JUDGES}
SHADOW = Counter("distillery_judge_shadow_answers_total", "A promoted student's live answers judged, by pool", ["unit", "pool"])
