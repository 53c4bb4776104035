"""The example's own unit, end to end as plain functions (examples/custom_unit): support-ticket
triage judged, curated and evaluated on its recorded tasks and teachers.

``careful`` copies what a ticket states and leaves the rest null (or "not stated"); ``inventive``
fills every gap with a made-up value. Invented values must never train: they become contrasts
against the reference. A careful answer to a ticket without its (required) order number is a
boundary sample that says what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillery.contracts.events import CandidatesJudged, SourceOffset, Task, Usage
from distillery.contracts.spec import judge_version, load_spec
from distillery.contracts.submission import validate_task
from distillery.domain.checkers import canonical_json
from distillery_editor.logic import curate
from distillery_evaluator.logic import teacher_outputs, unit_metrics
from distillery_judge.logic import judge_task
from tests.support import candidate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "custom_unit"
TEACHERS = ("careful", "inventive")
UNIT = "ticket_triage"
MUST_NOT = "invent an order number, amount or date the ticket does not state"


@pytest.fixture(scope="module")
def spec():
    return load_spec(EXAMPLE / "spec.yaml")


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    return [Task.model_validate(json.loads(line)) for line in (EXAMPLE / "tickets.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def recordings() -> dict[tuple[str, str], dict]:
    rows = {}
    for teacher in TEACHERS:
        for line in (EXAMPLE / f"{teacher}.jsonl").read_text().splitlines():
            row = json.loads(line)
            rows[(row["task_id"], row["teacher_id"])] = row
    return rows


def candidates_for(task: Task, recordings: dict) -> list:
    out = []
    for teacher in TEACHERS:
        row = recordings[(task.task_id, teacher)]
        out.append(candidate(task, row["text"], teacher=teacher, expected=len(TEACHERS), latency_s=row["latency_s"],
                             usage=Usage(prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"])))
    return out


@pytest.fixture(scope="module")
def verdicts(spec, tasks, recordings) -> list[CandidatesJudged]:
    version = judge_version(spec)
    return [judge_task(t, [(c, None) for c in candidates_for(t, recordings)], len(TEACHERS), spec, version,
                       "judge@test") for t in tasks]


def by_teacher(verdict: CandidatesJudged) -> dict:
    return {jc.teacher_id: jc for jc in verdict.candidates}


def gaps_of(task: Task) -> list[str]:
    return sorted(name for name, value in task.reference.fields.items() if value is None)


# --- the data the test stands on -----------------------------------------------------------------------


def test_the_example_has_tickets_with_and_without_an_order_number(tasks, recordings) -> None:
    assert len(tasks) == 60 and {t.unit for t in tasks} == {UNIT}
    missing_order = [t for t in tasks if t.reference.fields["order_id"] is None]
    assert 5 <= len(missing_order) < len(tasks)
    assert {t.split for t in missing_order} == {"train", "eval"}
    assert all((t.task_id, teacher) in recordings for t in tasks for teacher in TEACHERS)


# --- the judge -------------------------------------------------------------------------------------------


def test_no_invented_value_is_in_the_train_pool(verdicts) -> None:
    contrasts = 0
    for verdict in verdicts:
        for jc in verdict.candidates:
            invented = [r for r in jc.reasons if r.startswith("invented_value:")]
            if invented or (jc.teacher_id == "inventive" and gaps_of(verdict.task)):
                assert jc.pool == "contrastive", (jc.teacher_id, jc.pool, jc.reasons)
                contrasts += 1
    assert contrasts > 10


def test_an_inventive_answer_is_contrasted_with_the_reference(verdicts) -> None:
    seen = 0
    for verdict in verdicts:
        gaps = gaps_of(verdict.task)
        jc = by_teacher(verdict)["inventive"]
        if not gaps:  # a complete ticket: nothing to invent, and it is right
            assert jc.pool == "train" and jc.reasons == ["rules_passed", "reference_match"]
            continue
        seen += 1
        assert jc.pool == "contrastive"
        assert [r for r in jc.reasons if r != "correction:reference"] == [f"invented_value:{f}" for f in gaps]
        assert jc.reasons[-1] == "correction:reference"
        assert jc.correction == canonical_json(verdict.task.reference.fields)
        assert json.loads(jc.correction) == verdict.task.reference.fields
    assert seen > 10


def test_careful_answers_without_an_order_number_are_boundary_samples(verdicts) -> None:
    refusals = 0
    for verdict in verdicts:
        jc = by_teacher(verdict)["careful"]
        if verdict.task.reference.fields["order_id"] is None:
            refusals += 1
            # amount and date may be missing: only the required order_id is a stated gap
            assert jc.pool == "refusal" and jc.reasons == ["missing_stated:order_id"], jc.reasons
        else:
            assert jc.pool == "train" and jc.reasons == ["rules_passed", "reference_match"], jc.reasons
        assert not any(r.startswith("invented_value:") for r in jc.reasons)
    assert refusals == sum(v.task.reference.fields["order_id"] is None for v in verdicts)


def test_field_scores_are_partial_credit(verdicts) -> None:
    for verdict in verdicts:
        jc = by_teacher(verdict)["inventive"]
        fields = verdict.task.reference.fields
        share_right = (len(fields) - len(gaps_of(verdict.task))) / len(fields)
        assert jc.dimensions["reference"] == pytest.approx(share_right, abs=1e-4)
        assert jc.scorers["reference"] == "reference:json_fields"


# --- the editor ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def samples(spec, verdicts) -> list:
    out = []
    for i, verdict in enumerate(verdicts):
        out += curate(verdict, SourceOffset(topic="verdicts", partition=0, offset=i), spec, "editor@test")
    return out


def is_canonical(text: str) -> bool:
    obj = json.loads(text)
    return isinstance(obj, dict) and list(obj) == sorted(obj) and text == canonical_json(obj)


def test_only_training_tasks_become_samples_and_every_final_is_canonical_json(samples, verdicts) -> None:
    train_ids = {v.task.task_id for v in verdicts if v.task.split == "train"}
    assert samples and {s.provenance.task_id for s in samples} <= train_ids
    assert {s.pool for s in samples} == {"train", "refusal", "contrastive"}
    for s in samples:
        assert is_canonical(s.final), s.final
        assert s.pathway == "answer"


def test_refusal_samples_say_what_is_missing_and_carry_the_must_not(samples, tasks) -> None:
    refusals = [s for s in samples if s.pool == "refusal"]
    by_id = {t.task_id: t for t in tasks}
    assert len(refusals) == sum(t.split == "train" and t.reference.fields["order_id"] is None for t in tasks)
    for s in refusals:
        assert s.provenance.teacher_id == "careful"
        lines = s.limits.splitlines()
        assert lines[0] == "Missing: the input does not state order_id."
        assert "Instead: leave order_id null (not stated) and ask for it." in lines
        assert f"Must not: {MUST_NOT}." in lines
        assert "function" not in s.limits  # not the tool boundary's wording
        final = json.loads(s.final)  # the careful answer itself, not the tool refusal sentence
        assert final["category"] == by_id[s.provenance.task_id].reference.fields["category"]
        assert final["order_id"] is None  # "not stated" in any wording is written null


def test_contrastive_samples_keep_the_invented_answer_beside_the_reference(samples, tasks) -> None:
    contrasts = [s for s in samples if s.pool == "contrastive"]
    by_id = {t.task_id: t for t in tasks}
    assert contrasts
    for s in contrasts:
        task = by_id[s.provenance.task_id]
        assert s.provenance.teacher_id == "inventive"
        assert s.final == canonical_json(task.reference.fields)
        assert is_canonical(s.contrast) and s.contrast != s.final
        assert s.limits.splitlines()[0].startswith("Wrong because: invented_value:")


def test_train_samples_are_the_answers_as_canonical_json(samples, recordings) -> None:
    train = [s for s in samples if s.pool == "train"]
    assert train
    for s in train:
        text = recordings[(s.provenance.task_id, s.provenance.teacher_id)]["text"]
        answer = json.loads(text.removeprefix("```json").removesuffix("```"))
        # the answer itself, with "not stated" in any wording written null
        assert s.final == canonical_json({k: None if v == "not stated" else v for k, v in answer.items()})


# --- task validation -------------------------------------------------------------------------------------


def test_a_ticket_whose_reference_lacks_fields_is_rejected(spec) -> None:
    with pytest.raises(ValueError) as info:
        validate_task({"unit": UNIT, "prompt": "My parcel is late.", "reference": {"answer": "x"}}, spec, 10_000, "t")
    message = str(info.value)
    assert "\n" not in message
    assert "unit 'ticket_triage'" in message and "'json_fields'" in message
    assert "needs reference.fields" in message and "gives answer" in message


def test_a_ticket_with_fields_or_without_a_reference_is_accepted(spec, tasks) -> None:
    event = validate_task(tasks[0].model_dump(mode="json"), spec, 10_000, "t")
    assert event.task == tasks[0]
    bare = validate_task({"unit": UNIT, "prompt": "My parcel is late."}, spec, 10_000, "t")
    assert bare.task.reference is None


# --- the evaluator ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metric_rows(spec, tasks, recordings) -> dict[tuple[str, str], float]:
    held_out = [t for t in tasks if t.split == "eval"]
    cands = [c for t in held_out for c in candidates_for(t, recordings)]
    outputs = teacher_outputs(cands, held_out, spec)
    assert len(outputs) == len(TEACHERS) * len(held_out)
    return {(r["subject"], r["metric"]): r["value"] for r in unit_metrics(outputs, spec) if r["unit"] == UNIT}


@pytest.mark.parametrize("teacher", TEACHERS)
def test_the_evaluator_reports_the_field_metrics_and_the_team_metric(metric_rows, teacher) -> None:
    subject = f"teacher:{teacher}"
    for metric in ("exact_match", "field_accuracy", "invented_value_rate", "missing_field_recall",
                   "category_macro_f1", *(f"field_accuracy:{f}" for f in ("amount", "category", "date", "order_id"))):
        assert (subject, metric) in metric_rows, metric
    assert metric_rows[(subject, "category_macro_f1")] == 1.0  # both teachers get the category right
    assert metric_rows[(subject, "field_accuracy:category")] == 1.0


def test_the_evaluator_tells_the_careful_teacher_from_the_inventive_one(metric_rows) -> None:
    careful, inventive = "teacher:careful", "teacher:inventive"
    assert metric_rows[(careful, "invented_value_rate")] == 0.0
    assert metric_rows[(careful, "missing_field_recall")] == 1.0
    assert metric_rows[(careful, "exact_match")] == 1.0
    assert metric_rows[(inventive, "invented_value_rate")] > 0
    assert metric_rows[(inventive, "missing_field_recall")] < 1.0
    assert metric_rows[(inventive, "field_accuracy")] < metric_rows[(careful, "field_accuracy")]
    assert metric_rows[(inventive, "exact_match")] < metric_rows[(careful, "exact_match")]
