"""Service test: the editor process on the real broker admits no near-duplicate and keeps its cluster
quotas across a restart (its index and clusters are rebuilt from the samples topic)."""

from __future__ import annotations

import asyncio

import yaml

from distillery.contracts.events import SampleCurated
from distillery.runtime.kafka import ensure_topics
from tests.service.test_editor_retraction import metric, publish, sample_history
from tests.service.test_services_alone import SPEC, run_service, stop
from tests.unit.test_editor_distribution import EGGS, EGGS_REWORDED, KINDS, TRAIN, math_task, verdict_for
from tests.waiting import wait_for


def curated(settings) -> list[SampleCurated]:
    return [e for e in sample_history(settings) if isinstance(e, SampleCurated)]


def test_restarted_editor_admits_no_near_duplicate_and_keeps_quotas(tmp_path, settings):
    data = yaml.safe_load(SPEC.read_text())
    data["units"]["math_steps"]["editor"] = {"near_duplicate_threshold": 0.7, "cluster_similarity": 0.5,
                                             "cluster_quota": 1}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    asyncio.run(ensure_topics(settings, settings.topics.all_topics([])))
    env = {"DISTILLERY_SPEC_PATH": str(spec_path)}

    first = [verdict_for(math_task(EGGS, "9"), "9"), verdict_for(math_task(TRAIN, "260"), "260")]
    editor = run_service("editor", settings, tmp_path, **env)
    try:
        publish(settings, settings.topics.verdicts, *first)
        samples = wait_for(lambda: curated(settings), lambda s: len(s) == 2)
        assert all(s.cluster for s in samples) and len({s.cluster for s in samples}) == 2
    finally:
        stop(editor)

    # a restart in a new consumer group: every verdict is read again, plus new ones
    again = [verdict_for(math_task(EGGS_REWORDED, "9"), "9"),  # a near-duplicate of a published sample
             verdict_for(math_task(KINDS["travel"][0].format(n=50, m=2), "100"), "100"),  # a full cluster
             verdict_for(math_task("What is the area of a rectangle 5 m wide and 8 m long?", "40"), "40")]
    editor = run_service("editor", settings, tmp_path, DISTILLERY_CONSUMER_GROUP="editor-restarted", **env)
    try:
        publish(settings, settings.topics.verdicts, *again)
        samples = wait_for(lambda: curated(settings), lambda s: len(s) >= 3, timeout_s=60)
        wait_for(lambda: metric(editor, "distillery_editor_duplicates_total"), lambda n: n >= 4, timeout_s=30)
        prompts = [s.prompt for s in curated(settings)]
        assert len(prompts) == 3 and sum("rectangle" in p for p in prompts) == 1  # only the new kind got in
        assert metric(editor, "distillery_editor_duplicates_total", reason="duplicate_id") == 2  # the first two
        assert metric(editor, "distillery_editor_duplicates_total", reason="near_duplicate") == 1
        assert metric(editor, "distillery_editor_duplicates_total", reason="cluster_quota") == 1
    finally:
        stop(editor)
