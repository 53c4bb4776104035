"""Write the Grafana dashboards (deploy/grafana/dashboards/*.json) from the panel lists below.

The dashboards are generated so that each panel is one line here (title, PromQL, unit), the
JSON stays consistent, and a test can check that every metric a panel queries is one the
services export. Run ``python -m distillery_gen.grafana`` after editing; a test fails when the
committed JSON differs from what this script writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"  # generators run from a checkout
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}

# dashboard uid -> (title, [(panel title, [PromQL expressions], unit, panel type)])
DASHBOARDS: dict[str, tuple[str, list[tuple[str, list[str], str, str]]]] = {
    "distillery-pipeline": ("Distillery: pipeline overview", [
        ("Tasks in (per s)", ['sum(rate(distillery_router_events_consumed_total[5m]))'], "reqps", "timeseries"),
        ("Generation requests by teacher (per s)", ['sum by (teacher) (rate(distillery_router_requests_total[5m]))'], "reqps", "timeseries"),
        ("Candidates by teacher (per s)", ['sum by (teacher) (rate(distillery_teacher_candidates_total[5m]))'], "reqps", "timeseries"),
        ("Verdicts by pool (per s)", ['sum by (pool) (rate(distillery_judge_candidates_pooled_total[5m]))'], "reqps", "timeseries"),
        ("Samples published (per s)", ['sum by (pool) (rate(distillery_editor_samples_total[5m]))'], "reqps", "timeseries"),
        ("Tasks waiting for candidates", ['distillery_judge_open_tasks'], "short", "stat"),
        ("Consumer lag per service and topic", ['sum by (job, topic) ({__name__=~"distillery_.+_consumer_lag"})'], "short", "timeseries"),
        ("Dead letters (last hour)", ['sum by (job, reason) (increase({__name__=~"distillery_.+_dead_letters_total"}[1h]))'], "short", "timeseries"),
        ("Batch seconds p95 per service", ['histogram_quantile(0.95, sum by (job, le) (rate({__name__=~"distillery_.+_batch_seconds_bucket"}[5m])))'], "s", "timeseries"),
    ]),
    "distillery-teachers": ("Distillery: teachers", [
        ("Tokens by teacher and kind (per s)", ['sum by (teacher, kind) (rate(distillery_teacher_tokens_total[5m]))'], "short", "timeseries"),
        ("Latency p50 / p95", ['histogram_quantile(0.5, sum by (teacher, le) (rate(distillery_teacher_latency_seconds_bucket[5m])))',
                               'histogram_quantile(0.95, sum by (teacher, le) (rate(distillery_teacher_latency_seconds_bucket[5m])))'], "s", "timeseries"),
        ("Cost (USD per hour)", ['sum by (teacher) (rate(distillery_teacher_cost_usd_total[1h])) * 3600'], "currencyUSD", "timeseries"),
        ("Error rate", ['sum by (teacher) (rate(distillery_teacher_errors_total[5m])) / sum by (teacher) (rate(distillery_teacher_candidates_total[5m]))'], "percentunit", "timeseries"),
        ("Judge acceptance per teacher and unit", ['distillery_router_acceptance_rate'], "percentunit", "table"),
        ("Cost per accepted candidate", ['distillery_router_cost_per_accepted_usd'], "currencyUSD", "table"),
    ]),
    "distillery-judge": ("Distillery: judge", [
        ("Pass rate per rule", ['sum by (unit, check) (rate(distillery_judge_checks_total{outcome="pass"}[15m])) / sum by (unit, check) (rate(distillery_judge_checks_total[15m]))'], "percentunit", "timeseries"),
        ("Position-swap agreement", ['distillery_judge_position_swap_agreement'], "percentunit", "timeseries"),
        ("Perturbation catch rate", ['distillery_judge_perturbation_catch_rate'], "percentunit", "timeseries"),
        ("Two-judge agreement", ['distillery_judge_two_judge_agreement'], "percentunit", "timeseries"),
        ("Gate closed (train goes to review)", ['distillery_judge_gate_closed'], "short", "stat"),
        ("Teacher relations (conflict / complement / agree)", ['sum by (unit, relation) (increase(distillery_judge_relations_total[1h]))'], "short", "timeseries"),
        ("Regenerations and timeouts (last hour)", ['sum by (unit) (increase(distillery_judge_regenerations_total[1h]))', 'increase(distillery_judge_timeouts_total[1h])'], "short", "timeseries"),
    ]),
    "distillery-samples": ("Distillery: samples", [
        ("Samples by unit and pool", ['sum by (unit, pool) (distillery_editor_samples_total)'], "short", "bargauge"),
        ("Samples by pathway and tier", ['sum by (pathway, tier) (distillery_editor_samples_total)'], "short", "bargauge"),
        ("Not admitted, by reason (per s)", ['sum by (reason) (rate(distillery_editor_duplicates_total[15m]))'], "reqps", "timeseries"),
        ("Dedup rate", ['sum(rate(distillery_editor_duplicates_total[1h])) / (sum(rate(distillery_editor_duplicates_total[1h])) + sum(rate(distillery_editor_samples_total[1h])))'], "percentunit", "stat"),
        ("Compression ratio (tokens after / before)", ['sum by (unit) (distillery_editor_tokens_total{stage="after"}) / sum by (unit) (distillery_editor_tokens_total{stage="before"})'], "percentunit", "bargauge"),
        ("Retractions and human decisions", ['sum by (reason) (distillery_editor_retractions_total)', 'sum by (decision) (distillery_editor_review_decisions_total)'], "short", "stat"),
    ]),
    "distillery-students": ("Distillery: students", [
        ("Held-out accuracy per unit and subject", ['distillery_evaluator_accuracy'], "percentunit", "bargauge"),
        ("Gap to the best teacher", ['distillery_evaluator_teacher_gap'], "percentunit", "bargauge"),
        ("Agreement with the best teacher", ['distillery_evaluator_teacher_agreement'], "percentunit", "bargauge"),
        ("Invented values and missing-field recall (json_fields units)", ['distillery_evaluator_metric{metric=~"invented_value_rate|missing_field_recall"}'], "percentunit", "bargauge"),
        ("Every unit metric per subject (built-in and plugin)", ['distillery_evaluator_metric'], "short", "table"),
        ("ROI and net saving", ['distillery_evaluator_roi', 'distillery_evaluator_net_saving_usd'], "short", "stat"),
        ("Break-even traffic (requests/day) and reached", ['distillery_evaluator_ledger{item="break_even_requests_per_day"}', 'distillery_evaluator_ledger{item="break_even_reached"}'], "short", "stat"),
        ("Stop signals firing", ['distillery_evaluator_stop_signal == 1'], "short", "table"),
        ("Training loss and throughput", ['distillery_trainer_loss', 'distillery_trainer_tokens_per_second'], "short", "timeseries"),
        ("Live shadow quality: promoted student against the teachers", ['distillery_evaluator_live{item=~"student_quality|teacher_quality|agreement"}'], "percentunit", "timeseries"),
        ("Shadow answers by pool (per s)", ['sum by (unit, pool) (rate(distillery_evaluator_shadow_answers_total[5m]))'], "reqps", "timeseries"),
        ("Time to break-even (days at the configured traffic; -1: never)", ['distillery_evaluator_ledger{item="break_even_days"}'], "short", "stat"),
        ("Rounds, units held out by a stop signal, units in shadow", ['distillery_trainer_round', 'distillery_trainer_unit_stopped == 1', 'distillery_router_shadowing == 1'], "short", "table"),
    ]),
}

# dashboard uid -> annotations (name, PromQL that is non-empty at the moment, text, colour)
ANNOTATIONS: dict[str, list[tuple[str, str, str, str]]] = {
    "distillery-students": [
        ("Rounds", "changes(distillery_trainer_round[2m]) > 0", "round of {{student}}", "blue"),
        ("Promotions", "increase(distillery_evaluator_promotions_total[2m]) > 0", "{{student}} promoted for {{unit}}", "green"),
        ("Demotions", "increase(distillery_evaluator_demotions_total[2m]) > 0", "{{student}} demoted for {{unit}}", "red"),
    ],
}


def panel(index: int, title: str, exprs: list[str], unit: str, kind: str) -> dict:
    return {
        "id": index + 1, "type": kind, "title": title, "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": e} for i, e in enumerate(exprs)],
    }


def annotation(name: str, expr: str, text: str, colour: str) -> dict:
    """A Prometheus annotation: a mark wherever ``expr`` has a sample (step 1 m)."""
    return {"name": name, "datasource": DATASOURCE, "enable": True, "iconColor": colour, "expr": expr,
            "step": "60s", "titleFormat": name, "textFormat": text, "useValueForTime": False}


def dashboard(uid: str, title: str, panels: list[tuple[str, list[str], str, str]]) -> dict:
    board = {
        "uid": uid, "title": title, "tags": ["distillery"], "schemaVersion": 39, "version": 1,
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "editable": True,
        "panels": [panel(i, *p) for i, p in enumerate(panels)],
    }
    if uid in ANNOTATIONS:
        board["annotations"] = {"list": [annotation(*a) for a in ANNOTATIONS[uid]]}
    return board


def rendered() -> dict[str, str]:
    return {f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2) + "\n"
            for uid, (title, panels) in DASHBOARDS.items()}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in rendered().items():
        (OUT / name).write_text(text)
    print(f"wrote {len(DASHBOARDS)} dashboards to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
