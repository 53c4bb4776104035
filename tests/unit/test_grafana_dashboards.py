"""The Grafana dashboards are the generator's output, cover what operators watch, and query
only well-formed PromQL over metric names (the live check is in tests/e2e/test_pipeline_replay.py)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import deploy_queries, metrics_used_by_deploy

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"


def generator():
    from distillery_gen import grafana

    return grafana


def test_committed_dashboards_are_what_the_generator_writes() -> None:
    rendered = generator().rendered()
    committed = {p.name: p.read_text() for p in (GRAFANA / "dashboards").glob("*.json")}
    assert committed == rendered, "run: python -m distillery_gen.grafana"


def test_the_five_dashboards_and_their_panels() -> None:
    boards = {p.stem: json.loads(p.read_text()) for p in (GRAFANA / "dashboards").glob("*.json")}
    assert set(boards) == {"distillery-pipeline", "distillery-teachers", "distillery-judge", "distillery-samples",
                           "distillery-students"}
    titles = {uid: " | ".join(p["title"] for p in b["panels"]).lower() for uid, b in boards.items()}
    for uid, words in {"distillery-pipeline": ["tasks in", "candidates", "verdicts by pool", "samples", "dead letters"],
                       "distillery-teachers": ["tokens", "latency", "cost", "error rate", "acceptance"],
                       "distillery-judge": ["pass rate per rule", "position-swap", "perturbation", "relations"],
                       "distillery-samples": ["pool", "dedup", "compression"],
                       "distillery-students": ["accuracy", "roi", "stop signals"]}.items():
        for word in words:
            assert word in titles[uid], (uid, word)
    for board in boards.values():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)) and all(p["targets"] and p["datasource"]["uid"] == "prometheus"
                                                  for p in board["panels"])


def test_queries_are_balanced_and_name_distillery_metrics() -> None:
    for query in deploy_queries():
        assert query.count("(") == query.count(")") and query.count("{") == query.count("}"), query
    names, patterns = metrics_used_by_deploy()
    assert all(name.startswith("distillery_") for name in names) and patterns
