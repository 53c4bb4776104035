"""The judge's wiring on FastStream's in-memory TestKafkaBroker: its subscription with the channel
table's topic and versioned group, the runtime's validation and dead-lettering. The example spec's
judge is rules-only, so no model loads. (Against the real broker: tests/service/test_judge_scoring.py.)"""

from __future__ import annotations

from aiokafka import ConsumerRecord

from distillery.contracts import ids
from distillery.contracts.events import CandidatesJudged, EventDeadLettered, Reference, Task
from distillery.contracts.spec import load_spec
from distillery_judge.handlers import SUBSCRIPTIONS, JudgeDeps, JudgeSettings, follow_peers
from tests.support import ROOT, InMemoryService, candidate

SPEC = load_spec(ROOT / "examples" / "spec.yaml")


async def test_a_complete_task_on_the_candidates_topic_becomes_a_verdict_and_garbage_reaches_the_dlq() -> None:
    settings = JudgeSettings(topic_prefix="wired")
    deps = JudgeDeps(spec=SPEC, settings=settings)
    service = InMemoryService("judge", SUBSCRIPTIONS, deps, settings)
    assert service.groups == [f"distillery-judge-{deps.version}"]
    topics = service.bus.topics
    service.catch(topics.verdicts, topics.dlq)
    task = Task(task_id=ids.task_id_for("math_steps", "wired"), unit="math_steps", prompt="What is 6 * 7?",
                reference=Reference(answer="42"))
    stranger = candidate(task.model_copy(update={"task_id": "t-unknown", "unit": "astrology"}), "#### 1")
    async with service:
        await service.publish(topics.candidates, candidate(task, "Six sevens.\n#### 42", "qwen-coder"))
        await service.publish(topics.candidates, stranger)
        await service.client.publish(b'{"not": "a candidate"}', topics.candidates, key=b"k")

    (verdict,) = service.sent(topics.verdicts, CandidatesJudged)
    assert verdict.task == task and verdict.judge_version == deps.version and verdict.produced_by == "judge@test"
    assert [jc.pool for jc in verdict.candidates] == ["train"]
    assert not deps.aggregator.in_flight, "the verdict was published, so its task counts as judged"
    errors = sorted(d.error.split(":")[0] for d in service.sent(topics.dlq, EventDeadLettered))
    assert errors == ["invalid", "unknown_unit"]


def test_the_consumer_group_override_replaces_the_versioned_group() -> None:
    deps = JudgeDeps(spec=SPEC, settings=JudgeSettings(consumer_group="judge-replay"))
    assert deps.group == "judge-replay"
    assert JudgeDeps(spec=SPEC).group == f"distillery-judge-{deps.version}"


def test_the_peers_follower_passes_over_its_own_verdicts_before_decoding_and_reads_the_others() -> None:
    deps = JudgeDeps(spec=SPEC, settings=JudgeSettings())
    deps.rebuilt_to = {0: 5}
    task = Task(task_id=ids.task_id_for("math_steps", "peers"), unit="math_steps", prompt="What is 6 * 7?")
    ours, theirs = (CandidatesJudged(verdict_id=f"verdict_{who}", task=task, judge_version=deps.version,
                                     candidates=[], produced_by="judge@test") for who in ("ours", "theirs"))
    deps.recorded_here = {ours.verdict_id}

    def record(offset: int, value: bytes) -> ConsumerRecord:
        return ConsumerRecord("verdicts", 0, offset, 0, 0, b"k", value, None, 1, len(value), ())

    skip = follow_peers(deps)["skip"]
    assert skip(record(4, theirs.model_dump_json().encode()))  # read by the start-up rebuild
    assert not skip(record(7, theirs.model_dump_json().encode()))  # a peer's: decoded and marked
    assert not skip(record(8, b'{"not": "a verdict"}'))  # garbage: decoded, so dead-lettered
    assert skip(record(9, ours.model_dump_json().encode())) and deps.recorded_here == set()
    assert not skip(record(10, ours.model_dump_json().encode()))  # once only: a second copy is decoded
