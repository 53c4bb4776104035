"""One channel table (distillery.contracts.channels) and everything that restates it: the services'
subscriptions, topic names, the AsyncAPI document, the Kubernetes base, the CLI's lag view.
(Compose's topic job: tests/unit/test_compose.py; the committed AsyncAPI and k8s files are
regenerated from the table and compared in test_asyncapi.py and test_k8s.py.)"""

from __future__ import annotations

import importlib

import pytest

from distillery.contracts.channels import (
    BY_STEM,
    CHANNELS,
    SERVICE_GROUPS,
    TEACHER_STEM,
    Topics,
    consumers_of,
    main_input,
)
from distillery.contracts.events import CandidatesJudged, ReviewDecided
from distillery_cli import pipeline
from distillery_cli.stack import ProcessInfo, StackState
from distillery_gen import asyncapi, k8s

SERVICES = ("router", "teacher", "judge", "editor", "trainer", "evaluator")


@pytest.mark.parametrize("service", SERVICES)
def test_each_services_subscriptions_are_its_consumers_in_the_table(service: str) -> None:
    subscriptions = importlib.import_module(f"distillery_{service}.handlers").SUBSCRIPTIONS
    declared = sorted((stem, s.suffix) for s in subscriptions for stem in (s.stem, *s.also))
    assert declared == sorted((ch.stem, c.suffix) for ch, c in consumers_of(service))
    for sub in subscriptions:
        assert sub.model in next(ch for ch in CHANNELS if ch.stem == sub.stem).events
        for stem in sub.also:  # read together: the table says so on the other channel
            assert next(c for c in BY_STEM[stem].consumers if c.service == service).together_with == sub.stem


def test_channels_read_together_are_co_partitioned_and_share_the_group() -> None:
    """Same partition count, and the same key: partition i of each holds the same units."""
    pairs = [(ch, c) for ch in CHANNELS for c in ch.consumers if c.together_with]
    assert pairs
    for ch, c in pairs:
        other = BY_STEM[c.together_with]
        assert ch.partitions == other.partitions
        assert c.suffix == next(o for o in other.consumers if o.service == c.service).suffix


def test_events_read_together_are_keyed_alike() -> None:
    from tests.unit.test_contracts import golden
    verdict = CandidatesJudged.model_validate(golden("CandidatesJudged"))
    decision = ReviewDecided.model_validate(golden("ReviewDecided"))
    assert verdict.key == verdict.task.unit and decision.key == decision.task.unit


def test_every_service_has_one_main_input_and_a_group() -> None:
    assert set(SERVICE_GROUPS) == set(SERVICES)
    for service in SERVICES:
        assert sum(c.scales_on for _, c in consumers_of(service)) == 1, service
        main_input(service)


def test_topic_names_and_partitions_come_from_the_table() -> None:
    topics = Topics("p").all_topics(["a", "b"])
    assert len(topics) == len(CHANNELS) - 1 + 2
    for ch in CHANNELS:
        names = [ch.topic("p", t) for t in ("a", "b")] if ch.stem == TEACHER_STEM else [ch.topic("p")]
        assert all(topics[name] == ch.partitions for name in names)
    assert Topics("p").generation_requests("a") == "p.generation.requests.a.v1"


def test_the_asyncapi_document_names_every_consumer_group() -> None:
    document = asyncapi.document()
    for ch in CHANNELS:
        key = ch.stem.replace(".", "_").replace("{teacher_id}", "teacher")
        summary = document["operations"][f"receive_{key}"]["summary"]
        for consumer in ch.consumers:
            assert asyncapi.receiver(consumer) in summary
            if not consumer.broadcast:
                assert f"{consumer.service} (group {SERVICE_GROUPS[consumer.service]}{consumer.suffix}" in summary


def test_keda_scales_each_deployment_on_its_main_input() -> None:
    rows = k8s.table()
    for service in ("router", "judge", "editor", "trainer", "evaluator"):
        channel, _ = main_input(service)
        _, group, topic, partitions, _, _ = rows[service]
        assert (topic, partitions) == (channel.topic(), channel.partitions)
        assert group.startswith(SERVICE_GROUPS[service].split("{")[0])
    teachers = [name for name in rows if name.startswith("teacher-")]
    assert teachers and all(rows[t][1] == f"distillery-teacher-{t.removeprefix('teacher-')}" for t in teachers)


def test_the_cli_lag_view_has_a_row_for_every_consumer_a_service_always_has() -> None:
    state = StackState(run_dir=".", bootstrap="127.0.0.1:1", topic_prefix="p", spec_path="spec.yaml", broker_pid=None,
                       processes=[ProcessInfo(name="teacher-a", module="distillery_teacher", pid=0, port=0, log="x")])
    rows = pipeline.group_topics(state)
    for ch in CHANNELS:
        for c in ch.consumers:
            if c.optional or c.broadcast or c.service in ("judge", "teacher"):
                continue
            assert rows[pipeline.row_name(ch, c)] == (SERVICE_GROUPS[c.service] + c.suffix, ch.topic("p"))
    assert rows["teacher-a"] == ("distillery-teacher-a", "p.generation.requests.a.v1")
