"""The tasks topic is an open front door: an upstream system that knows nothing of Distillery's
envelope produces the JSON object a user puts in a JSONL file, and the router wraps it in a
TaskSubmitted, validates it as `distillery submit` does and routes it. The producers here are
librdkafka (C), not Python's aiokafka: confluent-kafka, and kcat. The router runs as a process."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess

import pytest

from distillery.contracts import ids
from distillery.contracts.events import EventDeadLettered, GenerationRequested
from distillery.contracts.spec import load_spec
from distillery.runtime.kafka import ensure_topics
from tests.service.test_router_routing import start_router
from tests.service.test_services_alone import stop
from tests.support import ROOT
from tests.waiting import events, wait_for

SPEC_PATH = ROOT / "examples" / "spec.yaml"
# Producer settings a team would use; all of them work against the embedded broker (Tansu 0.6.0)
# with the librdkafka that confluent-kafka bundles (2.16.0), idempotence included.
PRODUCER_SETTINGS = {
    "defaults": {},
    "idempotent": {"enable.idempotence": True},
    "acks_all_gzip_linger": {"acks": "all", "compression.type": "gzip", "linger.ms": 20},
}


@pytest.fixture
def router(tmp_path, settings):
    spec = load_spec(SPEC_PATH)
    asyncio.run(ensure_topics(settings, settings.topics.all_topics(spec.routed_teachers())))
    info = start_router(settings, tmp_path, SPEC_PATH)
    yield spec
    stop(info)


def routed_task_ids(settings, spec) -> set[str]:
    return {r.task.task_id for t in spec.routed_teachers()
            for r in events(settings, settings.topics.generation_requests(t), GenerationRequested)}


def dead_letters(settings) -> list[str]:
    return sorted(d.error for d in events(settings, settings.topics.dlq, EventDeadLettered)
                  if d.source_topic == settings.topics.tasks)


def test_bare_tasks_from_confluent_kafka_are_routed_with_every_producer_setting(router, settings) -> None:
    from confluent_kafka import Producer

    spec, expected = router, set()
    for name, conf in PRODUCER_SETTINGS.items():
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "message.timeout.ms": 20000, **conf})
        failures: list = []
        line = {"unit": "math_steps", "prompt": f"What is 12 * 12? ({name})"}
        producer.produce(settings.topics.tasks, json.dumps(line).encode(), on_delivery=lambda e, m, seen=failures: seen.append(e))
        assert producer.flush(30) == 0 and failures == [None], (name, failures)
        expected.add(ids.task_id_for("math_steps", line["prompt"], []))
    producer.produce(settings.topics.tasks, json.dumps({"unit": "no_such_unit", "prompt": "?"}).encode())
    producer.produce(settings.topics.tasks, b"not json at all")
    producer.flush(30)
    assert expected <= wait_for(lambda: routed_task_ids(settings, spec), lambda got: expected <= got, timeout_s=60)
    reasons = wait_for(lambda: dead_letters(settings), lambda d: len(d) >= 2, timeout_s=30)
    assert len(reasons) == 2 and reasons[0].startswith("invalid: JSONDecodeError")
    assert "unknown capability unit 'no_such_unit'" in reasons[1]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat (Debian package 'kcat') is not installed")
@pytest.mark.skipif(not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), reason=(
    "Debian's kcat links librdkafka 2.0.2, which cannot read the embedded broker's (Tansu 0.6.0) "
    "ApiVersions v3 response (read underflow at byte 274 of 279), with api.version.request=false too; "
    "this test runs against an external Kafka (KAFKA_BOOTSTRAP_SERVERS)"))
def test_bare_task_lines_produced_by_kcat_are_routed(router, settings) -> None:
    spec = router
    lines = [{"unit": "math_steps", "prompt": "A train travels 60 km in 1.5 hours. What is its speed in km/h?"},
             {"unit": "math_steps", "prompt": "What is 17 * 3?", "task_id": "upstream-17x3"}]
    payload = "".join(json.dumps(line) + "\n" for line in lines).encode()
    subprocess.run(["kcat", "-P", "-b", settings.kafka_bootstrap_servers, "-t", settings.topics.tasks],
                   input=payload, check=True, timeout=30)
    expected = {ids.task_id_for("math_steps", lines[0]["prompt"], []), "upstream-17x3"}
    assert expected <= wait_for(lambda: routed_task_ids(settings, spec), lambda got: expected <= got, timeout_s=60)
