"""``backend: student`` (distillery_teacher.student): a teacher deployment serving the promoted student's
artifact. Readiness and failures with artifacts written by hand; one test (model tier) saves a real
tiny student the way the trainer does and generates with it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from distillery.contracts.events import GenerationRequested, LoopDecided, Reference, Task, loop_decision_id
from distillery.domain.generate import Generation
from distillery_teacher.logic import answer
from distillery_teacher.student import ServedStudent, artifact_problem
from tests.support import DEPLOYMENT, loop_spec

SPEC = loop_spec()
TEACHER = SPEC.teachers[DEPLOYMENT]
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def decision(action: str, artifact_dir: Path | str, student_id: str = "student_a", unit: str = "math_steps",
             minutes: int = 0, student: str = "tiny") -> LoopDecided:
    return LoopDecided(decision_id=loop_decision_id(action, student, unit, student_id), action=action,
                       student=student, unit=unit, student_id=student_id, artifact_dir=str(artifact_dir),
                       produced_by="evaluator@test", produced_at=T0 + timedelta(minutes=minutes))


def request(i: int = 0, shadow: bool = True) -> GenerationRequested:
    task = Task(task_id=f"task_{i}", unit="math_steps", prompt=f"What is {i} * 7?", reference=Reference(answer=str(7 * i)))
    return GenerationRequested(request_id=f"shadow_{i}", task=task, teacher_id=DEPLOYMENT, strategy="shadow",
                               route_reason="test", expected_candidates=1, max_new_tokens=8, shadow=shadow,
                               produced_by="router@test")


def write(path: Path, text: str = "{}") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_artifact_problem_names_the_missing_config_then_the_missing_weights(tmp_path) -> None:
    artifact = tmp_path / "student_a"
    assert artifact_problem(str(artifact)) == f"missing {artifact / 'model' / 'config.json'}"
    write(artifact / "model" / "config.json")
    problem = artifact_problem(str(artifact))
    assert problem.startswith(f"no weights in {artifact / 'model'}") and "model.safetensors" in problem
    write(artifact / "model" / "model.safetensors", "")
    assert artifact_problem(str(artifact)) is None


def test_a_lora_adapter_artifact_is_servable(tmp_path) -> None:
    write(tmp_path / "model" / "adapter_config.json")
    write(tmp_path / "model" / "adapter_model.safetensors", "")
    assert artifact_problem(str(tmp_path)) is None


def test_nothing_promoted_is_ready_but_cannot_generate() -> None:
    served = ServedStudent(SPEC, "tiny")
    assert served.current() is None and served.not_ready() is None
    assert asyncio.run(served.is_ready()) is True
    with pytest.raises(LookupError, match="student 'tiny' has no promoted artifact"):
        served.generate([("task_0", "system", "user")], 8)


def test_a_promoted_artifact_with_missing_files_is_not_ready_and_fails_to_generate(tmp_path) -> None:
    served = ServedStudent(SPEC, "tiny")
    served.follow(decision("promote", tmp_path / "student_a"))
    problem = served.not_ready()
    assert problem == (f"student 'tiny': promoted artifact student_a: missing "
                       f"{tmp_path / 'student_a' / 'model' / 'config.json'}")
    assert asyncio.run(served.is_ready()) == problem
    with pytest.raises(FileNotFoundError, match="config.json"):
        served.generate([("task_0", "system", "user")], 8)
    write(tmp_path / "student_a" / "model" / "config.json")
    assert "no weights" in served.not_ready()


def test_the_deployment_follows_its_own_students_promotions_only(tmp_path) -> None:
    served = ServedStudent(SPEC, "tiny")
    served.follow(decision("promote", tmp_path / "other", student="smollm2"))
    assert served.current() is None
    first = decision("promote", tmp_path / "a", "student_a")
    later = decision("promote", tmp_path / "b", "student_b", unit="tool_call", minutes=5)
    for d in (first, later):
        served.follow(d)
    assert served.current() == later  # the latest promotion in force, any unit
    served.follow(decision("demote", tmp_path / "b", "student_b", unit="tool_call", minutes=10))
    assert served.current() == first
    served.follow(decision("demote", tmp_path / "a", "student_a", minutes=15))
    assert served.current() is None and served.not_ready() is None


def test_answer_turns_a_missing_artifact_into_failed_shadow_candidates(tmp_path) -> None:
    served = ServedStudent(SPEC, "tiny")
    served.follow(decision("promote", tmp_path / "gone"))
    shadow, plain = request(0), request(1, shadow=False)
    candidates = answer([shadow, plain], served, SPEC, TEACHER, "teacher@test")
    assert [c.request_id for c in candidates] == [shadow.request_id, plain.request_id]
    for cand, req in zip(candidates, (shadow, plain), strict=True):
        assert cand.error is not None and "FileNotFoundError" in cand.error and "config.json" in cand.error
        assert cand.text == "" and cand.finish_reason == "error"
        assert cand.shadow == req.shadow and cand.teacher_id == DEPLOYMENT and cand.task == req.task


@pytest.mark.model
def test_a_saved_tiny_student_is_served_once_promoted(tmp_path) -> None:
    from distillery.domain.models import build_tiny_student
    from distillery_trainer.sft import save_student

    model, tokenizer = build_tiny_student(hidden_size=32, layers=1, seed=0)
    artifact = tmp_path / "student_a"
    save_student(model, tokenizer, artifact / "model")  # where the trainer puts it
    assert artifact_problem(str(artifact)) is None

    served = ServedStudent(SPEC, "tiny")
    served.follow(decision("promote", artifact))
    assert served.not_ready() is None and asyncio.run(served.is_ready()) is True
    gens = served.generate([("task_0", "Solve it.", "What is 6 * 7?"), ("task_1", "", "What is 2 + 2?")], 4)
    assert len(gens) == 2 and all(isinstance(g, Generation) and g.error is None for g in gens)
    assert all(0 < g.completion_tokens <= 4 and g.prompt_tokens > 0 for g in gens)

    candidates = answer([request(0), request(1)], served, SPEC, TEACHER, "teacher@test")
    assert all(c.error is None and c.shadow and c.teacher_id == DEPLOYMENT for c in candidates)
    assert all(c.usage.completion_tokens > 0 for c in candidates)
