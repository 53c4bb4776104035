"""Service test: two editor replicas admit exactly what one admits.

The editor's dedup and quotas are per unit. Verdicts and review decisions are keyed by unit and
read by one range-assigned consumer, so each unit lives on one replica; a replica that is assigned
partitions rebuilds its state from the samples topic. Here the same questions are submitted twice
(the second time with a trailing space and reworded answers), across units that land on both
replicas' partitions, and the admitted samples are compared with a single editor's.
"""

from __future__ import annotations

import asyncio

import yaml
from aiokafka.partitioner import DefaultPartitioner

from distillery.contracts.channels import channel
from distillery.contracts.events import SampleCurated
from distillery.contracts.settings import ServiceSettings
from distillery.runtime.kafka import ensure_topics
from tests.service.test_editor_near_duplicates import curated
from tests.service.test_editor_retraction import metric, publish
from tests.service.test_services_alone import SPEC, run_service, stop
from tests.unit.test_editor_distribution import math_task, verdict_for
from tests.waiting import wait_for

PARTITIONS = channel("verdicts").partitions


def partition_of(unit: str) -> int:
    """Where the producer puts a unit's verdicts (Kafka's default partitioner, murmur2 of the key)."""
    return DefaultPartitioner()(unit.encode(), list(range(PARTITIONS)), list(range(PARTITIONS)))


def units_on_every_partition() -> list[str]:
    """One unit name per verdicts partition, so any split of partitions gives both replicas work."""
    found: dict[int, str] = {}
    for i in range(200):
        found.setdefault(partition_of(f"math_{i}"), f"math_{i}")
    assert len(found) == PARTITIONS
    return [found[p] for p in range(PARTITIONS)]


def spec_with_units(tmp_path, units: list[str]):
    data = yaml.safe_load(SPEC.read_text())
    template = {**data["units"]["math_steps"], "editor": {"near_duplicate_threshold": 0.85}}
    data["units"].update({unit: template for unit in units})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def verdicts(units: list[str], per_unit: int = 8) -> list:
    """Each question twice: as first asked, then re-submitted with a trailing space (a new task id)."""
    out = []
    for unit in units:
        for i in range(per_unit):
            prompt = f"A crate holds {i + 3} boxes of {i + 5} apples each. How many apples are in {unit}?"
            answer = str((i + 3) * (i + 5))
            for asked in (prompt, prompt + " "):
                out.append(verdict_for(math_task(asked, answer).model_copy(update={"unit": unit}), answer))
    return out


def admitted(settings: ServiceSettings, expected: int) -> list[SampleCurated]:
    samples = wait_for(lambda: curated(settings), lambda s: len(s) >= expected, timeout_s=90)
    return sorted(samples, key=lambda s: s.sample_id)


def run_editors(replicas: int, settings: ServiceSettings, tmp_path, spec_path, events: list, expected: int):
    asyncio.run(ensure_topics(settings, settings.topics.all_topics([])))
    editors = [run_service("editor", settings, tmp_path / f"editor-{i}", DISTILLERY_SPEC_PATH=str(spec_path))
               for i in range(replicas)]
    try:
        # every replica holds partitions before the verdicts go out: ready comes before the group settles
        wait_for(lambda: [metric(e, "distillery_editor_assigned_partitions") for e in editors],
                 lambda counts: all(counts), timeout_s=60)
        publish(settings, settings.topics.verdicts, *events)
        admitted(settings, expected)
        # every verdict read by some replica: what was admitted by then is all there is
        wait_for(lambda: sum(metric(e, "distillery_editor_events_consumed_total") for e in editors),
                 lambda n: n >= len(events), timeout_s=60)
        samples = sorted(curated(settings), key=lambda s: s.sample_id)
        return samples, [metric(e, "distillery_editor_events_consumed_total") for e in editors]
    finally:
        for editor in editors:
            stop(editor)


def test_two_editor_replicas_admit_what_one_admits(tmp_path, settings, kafka_bootstrap):
    units = units_on_every_partition()
    spec_path = spec_with_units(tmp_path, units)
    events = verdicts(units)
    distinct = len(events) // 2  # every re-submission is a duplicate of its first asking

    one, _ = run_editors(1, settings, tmp_path / "one", spec_path, events, distinct)
    two_settings = settings.model_copy(update={"topic_prefix": settings.topic_prefix + "r2"})
    two, consumed = run_editors(2, two_settings, tmp_path / "two", spec_path, events, distinct)

    assert len(one) == distinct, f"one editor admitted {len(one)} of {distinct}"
    assert [s.sample_id for s in two] == [s.sample_id for s in one]
    assert [s.content_hash for s in two] == [s.content_hash for s in one]
    assert all(n > 0 for n in consumed), f"a replica had no work: {consumed}"
