"""Service test: the editor process against the real broker through a judge replay, a restart and human review."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from distillery.contracts import ids
from distillery.contracts.events import (
    CandidatesJudged,
    Event,
    JudgedCandidate,
    ReviewDecided,
    SampleCurated,
    SampleRetracted,
    Trace,
    decision_id_for,
    live_samples,
    new_task,
    parse_sample_record,
)
from distillery.runtime.kafka import ensure_topics, produce_all, read_snapshot
from tests.service.test_services_alone import run_service, stop
from tests.waiting import wait_for

V1, V2 = "rules-v1-service", "rules-v2-service"


def cand(cid: str, pool: str, final: str, rank: int, reasons: list[str] | None = None) -> JudgedCandidate:
    return JudgedCandidate(candidate_id=cid, teacher_id="qwen-coder", text=f"#### {final}", pool=pool, rank=rank,
                           score=0.9, final=final, reasons=reasons or ["rules_passed"])


def verdict(task, version: str, *candidates: JudgedCandidate) -> CandidatesJudged:
    return CandidatesJudged(verdict_id=ids.verdict_id_for(task.task_id, version), task=task, judge_version=version,
                            candidates=list(candidates), produced_by="judge@test", trace=Trace(task_id=task.task_id))


def decided(task, jc: JudgedCandidate, decision: str, pool: str | None = None, note: str = "") -> ReviewDecided:
    return ReviewDecided(decision_id=decision_id_for(jc.candidate_id, decision, pool, note, "ana"), task=task,
                         candidate=jc, judge_version=V2, verdict_id=ids.verdict_id_for(task.task_id, V2),
                         decision=decision, pool=pool, note=note, reviewer="ana", produced_by="cli@test",
                         trace=Trace(task_id=task.task_id))


def publish(settings, topic: str, *events: Event) -> None:
    asyncio.run(produce_all(settings, [(topic, e.key, e.model_dump_json().encode()) for e in events]))


def sample_history(settings) -> list:
    snapshot = asyncio.run(read_snapshot(settings, settings.topics.samples))
    out = []
    for record in snapshot.records:
        with contextlib.suppress(ValueError):
            out.append(parse_sample_record(record.value))
    return out


def live_ids(history: list) -> set[str]:
    return {s.sample_id for s in live_samples(history)}


def metric(info, name: str, **labels: str) -> float | None:
    """The metric's value, or None while the service is too busy to answer (wait_for polls again):
    a restarted editor rebuilds its state from the topic before it serves /metrics promptly."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{info.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:  # TimeoutError and URLError are OSErrors
        return None
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def sample_of(cid: str, version: str) -> str:
    return ids.sample_id_for(cid, version, "answer")


def test_editor_retracts_on_replay_survives_restart_and_applies_review(tmp_path, settings):
    task = new_task("math_steps", "What is 3 * 4?", reference={"answer": "12"})
    a, b, r = cand("A", "train", "12", 1), cand("B", "hard_case", "13", 2), cand("R", "review", "14", 3)
    v1 = verdict(task, V1, a, b, r)
    v2 = verdict(task, V2, a, cand("B", "discard", "13", 2, ["wrong_answer"]), r)
    asyncio.run(ensure_topics(settings, settings.topics.all_topics([])))
    editor = run_service("editor", settings, tmp_path)
    try:
        publish(settings, settings.topics.verdicts, v1)
        history = wait_for(lambda: sample_history(settings), lambda h: len(h) == 2)
        assert live_ids(history) == {sample_of("A", V1), sample_of("B", V1)}

        # the replay: V2 rejects B, and accepts A with the same content (kept, no churn)
        publish(settings, settings.topics.verdicts, v2)
        history = wait_for(lambda: sample_history(settings), lambda h: len(h) == 3)
        retraction = history[-1]
        assert isinstance(retraction, SampleRetracted) and retraction.sample_id == sample_of("B", V1)
        assert retraction.judge_version == V2 and retraction.reason == f"rejected by {V2}: discard: wrong_answer"
        assert live_ids(history) == {sample_of("A", V1)}
        assert metric(editor, "distillery_editor_retractions_total", reason="judge_version") == 1
    finally:
        stop(editor)

    # a restarted editor in a fresh group reads both verdicts again, and V1 is republished on top
    editor = run_service("editor", settings, tmp_path, DISTILLERY_CONSUMER_GROUP="editor-second-life")
    try:
        publish(settings, settings.topics.verdicts, v1)
        # V1 at its old offset (older than V2's verdict) and V1 republished (V1 lost the task): both stale
        wait_for(lambda: metric(editor, "distillery_editor_stale_verdicts_total"), lambda n: n == 2)
        wait_for(lambda: metric(editor, "distillery_editor_duplicates_total"), lambda n: n is not None and n >= 1)  # V2 read again
        assert sample_history(settings) == history, "nothing new: no re-admission, no flip back to V1"

        # human review: reject A (its V1 sample goes), accept R into hard_case
        publish(settings, settings.topics.reviews, decided(task, a, "reject", note="copied"),
                decided(task, r, "accept", pool="hard_case"))
        history = wait_for(lambda: sample_history(settings), lambda h: len(h) == 5)
        human = [e for e in history[3:] if isinstance(e, SampleRetracted)]
        assert [(e.sample_id, e.judge_version, e.reason) for e in human] == [
            (sample_of("A", V1), "human", "human reject: copied")]
        (accepted,) = [e for e in history[3:] if isinstance(e, SampleCurated)]
        assert accepted.sample_id == sample_of("R", V2) and accepted.pool == "hard_case"
        assert accepted.metadata["decided_by"] == "human"
        assert live_ids(history) == {sample_of("R", V2)}
        assert metric(editor, "distillery_editor_review_decisions_total", decision="accept") == 1
        assert metric(editor, "distillery_editor_retractions_total", reason="human") == 1
    finally:
        stop(editor)
