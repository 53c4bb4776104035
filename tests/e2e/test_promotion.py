"""Promotion in shadow on the real broker: a student evaluated within tolerance is promoted for its
unit, a share of the unit's live tasks also goes to it through its own teacher deployment
(``backend: student``), its answers are judged as ``shadow`` and never become samples, and a live
quality below the teachers' demotes it; after that, no task goes to it.

The spec serves the tiny student through the deployment ``tiny-live`` with ``share: 1`` (every
live ticket) and a window of ``WINDOW`` shadow answers. The held-out bar is planted low
(``quality_tolerance: 1``: any student is "within tolerance"), the live bar high
(``live_tolerance: 0``): the tiny student, which learns the loop and not the task, answers live
tickets far worse than the teachers, so it is demoted once the window fills. That is the planted
quality drop. Before the live traffic, the artifact's model folder is moved away: the deployment
reports not ready, naming the missing file, and is ready again once the folder is back.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from distillery.contracts.events import (
    CandidateGenerated,
    CandidatesJudged,
    GenerationRequested,
    LoopDecided,
    SampleCurated,
    StudentTrained,
    parse_sample_record,
)
from distillery_cli import stack
from tests.support import cli, custom_unit_generator, custom_unit_spec, editor_lag
from tests.waiting import events, wait_for

UNIT, STUDENT, DEPLOYMENT = "ticket_triage", "tiny", "tiny-live"
WINDOW = 6
LOOP = {
    "teachers": {DEPLOYMENT: {"backend": "student", "student": STUDENT}},
    "promotion": {STUDENT: {"deployment": DEPLOYMENT, "share": 1.0, "window": WINDOW, "live_tolerance": 0.0}},
    "economics": {"quality_tolerance": 1.0},
}


@pytest.fixture
def pipeline(tmp_path, kafka_bootstrap, topic_prefix):
    data_dir = tmp_path / "data"
    custom_unit_generator().generate(data_dir, 40, 0.25, 0)
    spec_path = custom_unit_spec(tmp_path, data_dir, extra=LOOP, tiny={"max_steps": 20})
    state = stack.start(spec_path, tmp_path / "run", topic_prefix, bootstrap=kafka_bootstrap)
    try:
        stack.wait_ready(state, timeout_s=120)
        yield state, data_dir
    finally:
        stack.stop(state)


def submit(run_dir: str, tasks: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    cli("submit", str(path), "--run-dir", run_dir)


def router_shadowing(state) -> float | None:
    """The router's ``distillery_router_shadowing`` for the student on the unit (None: not exported yet)."""
    samples = (stack.scrape(state.process("router")) or {}).get("distillery_router_shadowing", [])
    return next((value for labels, value in samples if labels == {"student": STUDENT, "unit": UNIT}), None)


def readiness(state, name: str) -> tuple[int, str]:
    port = next(p.port for p in state.processes if p.name == name)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def decisions(settings) -> list[LoopDecided]:
    return events(settings, settings.topics.promotions, LoopDecided)


def test_promoted_student_is_tried_in_shadow_never_sampled_and_demoted(pipeline, settings, tmp_path):
    state, data_dir = pipeline
    tasks = [json.loads(line) for line in (data_dir / "tickets.jsonl").read_text().splitlines()]
    held_out = [t for t in tasks if t["split"] == "eval"]
    train = [t for t in tasks if t["split"] == "train"]
    first, live, after = train[:12], train[12:12 + 2 * WINDOW], train[12 + 2 * WINDOW:]
    assert len(after) >= 3

    # 1. samples, a student, an evaluation within the (planted) tolerance: promoted for the unit
    submit(state.run_dir, held_out + first, tmp_path / "batch1.jsonl")
    wait_for(lambda: events(settings, settings.topics.verdicts, CandidatesJudged),
             lambda v: len(v) >= len(held_out) + len(first), timeout_s=60)
    wait_for(lambda: editor_lag(settings), lambda lag: lag == 0, timeout_s=60)
    cli("train", "--student", STUDENT, "--wait", "--run-dir", state.run_dir)
    trained = events(settings, settings.topics.students, StudentTrained)[-1]
    promoted = wait_for(lambda: decisions(settings), bool, timeout_s=60)
    assert [(d.action, d.unit, d.student_id) for d in promoted] == [("promote", UNIT, trained.student_id)]
    assert "within 1 of teacher:" in promoted[0].reason and promoted[0].artifact_dir == trained.artifact_dir

    # 2. the promoted artifact's files go missing: not ready, with the reason; back: ready
    model = Path(trained.artifact_dir) / "model"
    model.rename(model.with_name("model.moved"))
    code, body = wait_for(lambda: readiness(state, f"teacher-{DEPLOYMENT}"), lambda r: r[0] == 503, timeout_s=30)
    assert "promoted artifact" in body and "config.json" in body, body
    model.with_name("model.moved").rename(model)
    wait_for(lambda: readiness(state, f"teacher-{DEPLOYMENT}"), lambda r: r[0] == 204, timeout_s=30)

    # 3. live tickets: the teachers answer as always, the student in shadow, judged, never a sample.
    # The router applies the promotion when its -promotions follower reads it: wait for its shadowing
    # gauge at 1 first (a CI run under load submitted before and no ticket was shadowed).
    wait_for(lambda: router_shadowing(state), lambda value: value == 1.0, timeout_s=30)
    submit(state.run_dir, live, tmp_path / "live.jsonl")
    live_ids = {t["task_id"] for t in live}
    wait_for(lambda: events(settings, settings.topics.generation_requests(DEPLOYMENT), GenerationRequested),
             lambda r: {x.task.task_id for x in r if x.shadow} >= live_ids, timeout_s=60)
    wait_for(lambda: [c for c in events(settings, settings.topics.candidates, CandidateGenerated) if c.shadow],
             lambda c: len(c) >= len(live_ids), timeout_s=60)
    wait_for(lambda: [v for v in events(settings, settings.topics.verdicts, CandidatesJudged) if v.shadow],
             lambda v: len(v) >= len(live_ids), timeout_s=60)
    demoted = wait_for(lambda: decisions(settings), lambda d: len(d) >= 2, timeout_s=120)
    assert [d.action for d in demoted] == ["promote", "demote"], demoted
    assert demoted[1].student_id == trained.student_id and f"over the last {WINDOW} shadow answers" in demoted[1].reason
    assert demoted[1].figures["student_quality"] < demoted[1].figures["teacher_quality"]

    verdicts = events(settings, settings.topics.verdicts, CandidatesJudged)
    shadow = [v for v in verdicts if v.shadow]
    assert len({v.task.task_id for v in shadow}) >= WINDOW
    assert all(len(v.candidates) == 1 and v.candidates[0].teacher_id == DEPLOYMENT for v in shadow)
    teachers_judged = {v.task.task_id for v in verdicts if not v.shadow}
    assert live_ids <= teachers_judged  # traffic never dropped: every live ticket has its teachers' verdict
    assert all(DEPLOYMENT not in {jc.teacher_id for jc in v.candidates} for v in verdicts if not v.shadow)
    samples = [s for s in events(settings, settings.topics.samples, parse_sample_record) if isinstance(s, SampleCurated)]
    shadow_candidates = {jc.candidate_id for v in shadow for jc in v.candidates}
    assert samples and not {s.provenance.candidate_id for s in samples} & shadow_candidates
    assert all(s.provenance.teacher_id != DEPLOYMENT for s in samples)

    # 4. demoted: tickets after the demotion go to the teachers only, once the router has read the
    # demotion (its shadowing gauge at 0), as an operator would check on the dashboard.
    wait_for(lambda: router_shadowing(state), lambda value: value == 0.0, timeout_s=30)
    submit(state.run_dir, after, tmp_path / "after.jsonl")
    after_ids = {t["task_id"] for t in after}
    wait_for(lambda: {v.task.task_id for v in events(settings, settings.topics.verdicts, CandidatesJudged)},
             lambda judged: after_ids <= judged, timeout_s=60)
    to_student = [r for r in events(settings, settings.topics.generation_requests(DEPLOYMENT), GenerationRequested)
                  if r.task.task_id in after_ids]
    assert to_student == []

    listing = cli("students", "--run-dir", state.run_dir)
    assert "promotions topic" in listing and "demote" in listing and "promote" in listing, listing
    print("\n".join(f"{d.produced_at:%H:%M:%S} {d.action} {d.unit}: {d.reason}" for d in demoted))
