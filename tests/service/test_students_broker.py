"""``distillery students`` against the real broker: the listing reads the students and evaluations topics.

Two StudentTrained events (one published twice, as a redelivered training request re-announces
it) and one EvaluationCompleted are produced the way the trainer and the evaluator key them; the
listing function must show two rows, newest first, with the evaluation joined to its student.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from distillery.contracts.events import EvaluationCompleted, StudentTrained, SubjectScore, Trace
from distillery.runtime.kafka import ensure_topics, produce_all
from distillery_cli import students

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
FIRST, SECOND = "student_1111aaaa2222bbbb3333cccc", "student_4444dddd5555eeee6666ffff"


def trained(student_id: str, at: datetime, artifact_dir: str) -> StudentTrained:
    manifest = {"topic": "samples", "end_offsets": {"0": 4}, "judge_versions": ["rules-v1-0123456789"], "samples": 4,
                "per_pool": {"train": 3, "refusal": 1}, "per_unit": {"math_steps": 4}, "per_pathway": {"answer": 4},
                "task_ids": ["t1", "t2"], "sample_ids": ["s1", "s2", "s3", "s4"], "sha256": student_id[-12:] * 5,
                "recipe": {"epochs": 2}, "retracted": 0, "dropped_over_max_seq_len": []}
    return StudentTrained(student_id=student_id, student="tiny", version=student_id.split("_")[1][:12],
                          artifact_dir=artifact_dir, base_model="tiny-llama", recipe={"epochs": 2, "max_steps": 10},
                          manifest=manifest, loss_curve=[2.0, 1.5, 0.75], train_seconds=3.5, train_cost_usd=0.001,
                          produced_by="trainer@test", produced_at=at, trace=Trace(causation_id=f"req_{student_id}"))


def evaluated(student_id: str) -> EvaluationCompleted:
    scores = [SubjectScore(unit=unit, subject="student:after", n=4, accuracy=acc, mean_latency_s=0.1,
                           cost_per_request_usd=0.0, mean_output_tokens=8) for unit, acc in (("math_steps", 0.5),
                                                                                             ("tool_call", 0.25))]
    return EvaluationCompleted(evaluation_id=f"eval_{student_id[-8:]}", student_id=student_id, scores=scores, roi={},
                               report_path=f"/artifacts/{student_id}/evaluation/report.md", produced_by="evaluator@test")


def test_students_lists_the_topics_artifacts_once_each_newest_first(settings, tmp_path):
    asyncio.run(ensure_topics(settings, settings.topics.all_topics([])))
    on_disk = tmp_path / FIRST
    (on_disk / "model").mkdir(parents=True)
    for name in ("lineage.json", "manifest.json", "dataset.jsonl", "loss.png"):
        (on_disk / name).write_text("{}")
    first = trained(FIRST, T0, str(on_disk))
    second = trained(SECOND, T0 + timedelta(hours=1), str(tmp_path / "gone"))
    reannounced = first.model_copy(update={"produced_at": T0 + timedelta(hours=2)})
    items = [(settings.topics.students, e.key, e.model_dump_json().encode()) for e in (first, second, reannounced)]
    evaluation = evaluated(FIRST)
    items.append((settings.topics.evaluations, evaluation.key, evaluation.model_dump_json().encode()))
    items.append((settings.topics.students, "junk", b"not an event"))  # ignored, as every reader does
    asyncio.run(produce_all(settings, items))

    rows = students.load_rows(settings)

    assert [(r.student_id, r.announcements) for r in rows] == [(SECOND, 1), (FIRST, 2)]
    newest, oldest = rows
    assert newest.evaluation is None and newest.on_disk == students.MISSING
    assert oldest.trained.produced_at == T0 and oldest.on_disk == students.ON_DISK
    assert oldest.evaluation == evaluation and oldest.after_accuracy == 0.375
    assert students.row_cells(oldest)[1].splitlines()[:2] == ["4 samples; judge rules-v1-0123456789", "train 3, refusal 1"]
    assert [r.student_id for r in students.load_rows(settings, student="tiny")] == [SECOND, FIRST]
    assert students.load_rows(settings, student="small") == []
