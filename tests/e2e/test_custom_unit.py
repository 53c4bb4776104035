"""End to end: the user-defined unit of examples/custom_unit on the real broker.

The example's generator writes a fresh, small set of support tickets and the two recorded
teachers (``careful`` leaves what a ticket does not state null, ``inventive`` fills every gap
with a made-up value). The six services run as OS processes on a copy of the example's spec
(absolute replay paths, a shorter training); the test submits, trains and reports through the
CLI and checks the verdicts, the samples and the evaluation's metrics, the team's plugin metric
``category_macro_f1`` included.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from distillery.contracts.events import (
    CandidatesJudged,
    EvaluationCompleted,
    EventDeadLettered,
    SampleCurated,
    StudentTrained,
)
from distillery.contracts.spec import load_spec
from distillery.domain.checkers import NOT_STATED, canonical_json
from distillery_cli import stack
from tests.support import cli, custom_unit_generator, custom_unit_spec, editor_lag
from tests.waiting import events, wait_for

UNIT = "ticket_triage"
TICKETS, EVAL_SHARE, SEED = 40, 0.25, 0
SUBJECTS = ("teacher:careful", "teacher:inventive", "student:before", "student:after")
METRICS = ("field_accuracy", "invented_value_rate", "missing_field_recall", "category_macro_f1", "exact_match",
           "field_accuracy:order_id")


@pytest.fixture
def pipeline(tmp_path, kafka_bootstrap, topic_prefix):
    data_dir = tmp_path / "data"
    counts = custom_unit_generator().generate(data_dir, TICKETS, EVAL_SHARE, SEED)
    assert counts["tickets"] == TICKETS and counts["eval"] == int(TICKETS * EVAL_SHARE)
    assert 0 < counts["missing_order"] < TICKETS
    spec_path = custom_unit_spec(tmp_path, data_dir, tiny={"max_steps": 20})
    state = stack.start(spec_path, tmp_path / "run", topic_prefix, bootstrap=kafka_bootstrap)
    try:
        stack.wait_ready(state, timeout_s=120)
        yield state, spec_path, data_dir
    finally:
        stack.stop(state)


def pools_table(verdicts: list[CandidatesJudged]) -> str:
    counted = Counter((jc.pool, jc.teacher_id) for v in verdicts for jc in v.candidates)
    teachers = sorted({t for _, t in counted})
    pools = sorted({p for p, _ in counted})
    width = max(len(p) for p in [*pools, "pool"]) + 2
    lines = ["pool".ljust(width) + "".join(t.rjust(11) for t in teachers)]
    lines += [pool.ljust(width) + "".join(str(counted.get((pool, t), 0)).rjust(11) for t in teachers)
              for pool in pools]
    return "\n".join(lines)


def test_custom_unit_flows_through_the_pipeline(pipeline, settings):
    state, spec_path, data_dir = pipeline
    run_dir = state.run_dir
    spec = load_spec(spec_path)
    unit = spec.units[UNIT]
    tasks = {t["task_id"]: t for t in map(json.loads, (data_dir / "tickets.jsonl").read_text().splitlines())}
    assert len(tasks) == TICKETS

    assert f"submitted {TICKETS} task(s)" in cli("submit", str(data_dir / "tickets.jsonl"), "--run-dir", run_dir)

    # 1. every task judged exactly once, nothing dead-lettered
    verdicts = wait_for(lambda: events(settings, settings.topics.verdicts, CandidatesJudged),
                        lambda v: len({x.task.task_id for x in v}) == TICKETS, timeout_s=120)
    wait_for(lambda: editor_lag(settings), lambda lag: lag == 0, timeout_s=60)
    verdicts = events(settings, settings.topics.verdicts, CandidatesJudged)
    assert len(verdicts) == TICKETS and {v.task.task_id for v in verdicts} == set(tasks)
    assert all(v.attempt == 1 and len(v.candidates) == 2 for v in verdicts)
    assert events(settings, settings.topics.dlq, EventDeadLettered) == []

    # 2. pools per teacher
    by_teacher: dict[str, list] = {"careful": [], "inventive": []}
    for verdict in verdicts:
        for jc in verdict.candidates:
            by_teacher[jc.teacher_id].append((verdict.task, jc))
    inventing = {jc.candidate_id: (task, jc) for task, jc in by_teacher["inventive"]
                 if any(r.startswith("invented_value:") for r in jc.reasons)}
    gaps = [t for t in tasks.values() if None in t["reference"]["fields"].values()]
    assert inventing and len(inventing) == len(gaps), "inventive invents on every ticket with a gap, nowhere else"
    for task, jc in inventing.values():
        assert jc.pool in ("contrastive", "failure"), (jc.pool, jc.reasons)
        if jc.pool == "contrastive":
            assert jc.correction == canonical_json(task.reference.fields)
            assert "correction:reference" in jc.reasons
    assert any(jc.pool == "contrastive" for _, jc in inventing.values())
    for _task, jc in by_teacher["inventive"]:
        if jc.candidate_id not in inventing:  # a complete ticket: inventive is as good as careful
            assert jc.pool == "train", (jc.pool, jc.reasons)
    careful_pools = Counter(jc.pool for _, jc in by_teacher["careful"])
    assert not {"contrastive", "discard"} & set(careful_pools), careful_pools
    for task, jc in by_teacher["careful"]:
        assert not any(r.startswith("invented_value:") for r in jc.reasons)
        if task.reference.fields["order_id"] is None:
            assert jc.pool == "refusal" and "missing_stated:order_id" in jc.reasons, (jc.pool, jc.reasons)
        else:
            assert jc.pool == "train", (jc.pool, jc.reasons)
    table = pools_table(verdicts)
    print(f"\njudge pools per teacher ({TICKETS} tickets, {counts_of(tasks)}):\n{table}")

    # 3. samples: no invented value is learnt as right; boundaries name the field and the must-not
    samples = events(settings, settings.topics.samples, SampleCurated)
    assert samples and {s.unit for s in samples} == {UNIT}
    eval_ids = {tid for tid, t in tasks.items() if t["split"] == "eval"}
    assert not {s.provenance.task_id for s in samples} & eval_ids, "held-out tickets never become samples"
    assert {"train", "refusal", "contrastive"} <= {s.pool for s in samples}
    for s in samples:
        if s.provenance.candidate_id in inventing:
            task, _ = inventing[s.provenance.candidate_id]
            assert s.pool == "contrastive" and s.final == canonical_json(task.reference.fields), (s.pool, s.final)
    assert any(s.provenance.candidate_id in inventing for s in samples)
    must_not = unit.must_not[0]
    for s in samples:
        if s.pool == "refusal":
            assert s.provenance.teacher_id == "careful"
            assert "order_id" in s.limits and must_not in s.limits, s.limits
            assert not stated(json.loads(s.final)["order_id"])  # null, or careful's "not stated" now and then
        if s.pool == "train":
            assert canonical_json(json.loads(s.final)) == s.final, s.final
            assert not any(stated(v) and tasks[s.provenance.task_id]["reference"]["fields"][k] is None
                           for k, v in json.loads(s.final).items()), "a train sample states only what the ticket does"

    # 4. train the student through the CLI, then the evaluation and its metrics
    cli("train", "--student", "tiny", "--run-dir", run_dir, "--wait")
    trained = events(settings, settings.topics.students, StudentTrained)
    assert len(trained) == 1 and trained[0].manifest["samples"] > 0
    evaluation = wait_for(lambda: events(settings, settings.topics.evaluations, EvaluationCompleted),
                          lambda e: len(e) == 1, timeout_s=300)[0]
    assert set(SUBJECTS) <= {s.subject for s in evaluation.scores}
    rows = json.loads((Path(evaluation.report_path).parent / "metrics.json").read_text())
    cells = {(r["subject"], r["metric"]): r["value"] for r in rows if r["unit"] == UNIT}
    missing = [(s, m) for s in SUBJECTS for m in METRICS if (s, m) not in cells]
    assert not missing, f"metric rows missing: {missing}"
    assert cells[("teacher:careful", "invented_value_rate")] == 0
    assert cells[("teacher:careful", "missing_field_recall")] == 1
    assert cells[("teacher:careful", "exact_match")] == 1 and cells[("teacher:careful", "category_macro_f1")] == 1
    assert cells[("teacher:inventive", "invented_value_rate")] > 0
    assert cells[("teacher:inventive", "missing_field_recall")] == 0
    assert cells[("teacher:inventive", "category_macro_f1")] == 1  # it invents values, never the category
    print("held-out metrics:\n" + "\n".join(
        f"  {m:<24}" + "".join(f"{s}={cells[(s, m)]:<8g}" for s in SUBJECTS) for m in METRICS))

    report = cli("report", "--run-dir", run_dir, "--no-open")
    assert "invented_value_rate" in report and "category_macro_f1" in report, report
    status = cli("status", "--run-dir", run_dir)
    assert "judge pools per teacher" in status and "careful" in status and "inventive" in status, status
    assert "refusal" in status and "contrastive" in status


def stated(value) -> bool:
    """What the json_fields checker reads as a value (null and "not stated" and the like are not)."""
    return value is not None and not (isinstance(value, str) and value.strip().casefold() in NOT_STATED)


def counts_of(tasks: dict[str, dict]) -> str:
    held = sum(t["split"] == "eval" for t in tasks.values())
    no_order = sum(t["reference"]["fields"]["order_id"] is None for t in tasks.values())
    return f"{held} held out, {no_order} without an order number"
