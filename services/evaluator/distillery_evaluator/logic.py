"""Evaluation as plain functions: outputs per subject in, scores, ROI and a report out."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from statistics import mean

from distillery.events import CandidatesJudged, SubjectScore, Task, subject_order
from distillery.scoring import check_reference
from distillery.spec import CapabilitySpec


@dataclass(frozen=True)
class Output:
    """One subject's answer to one held-out task, with what it cost."""

    task: Task
    subject: str
    text: str
    latency_s: float
    cost_usd: float
    output_tokens: int


def teacher_outputs(verdicts: list[CandidatesJudged]) -> list[Output]:
    """The teachers' answers to held-out tasks, as the pipeline recorded them."""
    outs = []
    for verdict in verdicts:
        if verdict.task.split != "eval":
            continue
        for jc in verdict.candidates:
            if jc.pool == "failure" and not jc.text:
                continue  # a teacher error has no answer to score; it is counted in the teacher's metrics
            outs.append(Output(verdict.task, f"teacher:{jc.teacher_id}", jc.text, jc.latency_s, jc.cost_usd,
                               jc.usage.completion_tokens))
    return outs


def is_correct(output: Output, spec: CapabilitySpec) -> bool:
    """The unit's accuracy metric, through the same reference checks the judge uses."""
    unit = spec.units[output.task.unit]
    return bool(check_reference(output.task, output.text, unit.rules.reference).correct)


def write_outputs(outputs: list[Output], spec: CapabilitySpec, path) -> None:
    """Every scored answer, so a reader can see *why* a subject scored what it did."""
    import json

    rows = [json.dumps({"task_id": o.task.task_id, "unit": o.task.unit, "subject": o.subject,
                        "correct": is_correct(o, spec), "text": o.text}, ensure_ascii=False)
            for o in sorted(outputs, key=lambda o: (o.task.unit, o.task.task_id, o.subject))]
    path.write_text("\n".join(rows) + "\n")


def score(outputs: list[Output], spec: CapabilitySpec) -> list[SubjectScore]:
    groups: dict[tuple[str, str], list[Output]] = defaultdict(list)
    for out in outputs:
        groups[(out.task.unit, out.subject)].append(out)
    return [
        SubjectScore(
            unit=unit, subject=subject, n=len(outs),
            accuracy=round(mean(is_correct(o, spec) for o in outs), 4),
            mean_latency_s=round(mean(o.latency_s for o in outs), 4),
            cost_per_request_usd=round(mean(o.cost_usd for o in outs), 8),
            mean_output_tokens=round(mean(o.output_tokens for o in outs), 1),
        )
        for (unit, subject), outs in sorted(groups.items())
    ]


def roi(scores: list[SubjectScore], offline_cost_usd: dict[str, float], spec: CapabilitySpec) -> dict[str, float]:
    """The ROI ledger: offline cost against serving savings at the configured traffic.

    Traffic is split evenly over the evaluated units. A unit's traffic moves to the student
    only if the student is within ``quality_tolerance`` of that unit's best teacher; then each
    of its requests saves (best teacher's cost - student's cost). Otherwise it saves nothing:
    a cheap student that is wrong is no saving.
    net = mean saving per request x requests over the horizon - offline cost;
    break-even = offline cost / mean saving per request (requests, and days at the traffic).
    """
    econ = spec.economics
    units = sorted({s.unit for s in scores})
    by = {(s.unit, s.subject): s for s in scores}
    ledger: dict[str, float] = {f"offline_{k}_usd": round(v, 6) for k, v in offline_cost_usd.items()}
    savings, teacher_costs, student_costs = [], [], []
    for unit in units:
        teachers = [s for s in scores if s.unit == unit and s.subject.startswith("teacher:")]
        student = by.get((unit, "student:after"))
        if not teachers or student is None:
            continue
        best = max(teachers, key=lambda t: (t.accuracy, -t.cost_per_request_usd))
        served = student.accuracy >= best.accuracy - econ.quality_tolerance
        ledger[f"student_serves_{unit}"] = float(served)
        teacher_costs.append(best.cost_per_request_usd)
        student_costs.append(student.cost_per_request_usd)
        savings.append(best.cost_per_request_usd - student.cost_per_request_usd if served else 0.0)
    offline = sum(offline_cost_usd.values())
    requests = econ.requests_per_day * econ.horizon_days
    saving = mean(savings) if savings else 0.0
    ledger.update(
        offline_total_usd=round(offline, 6),
        teacher_cost_per_request_usd=round(mean(teacher_costs), 8) if teacher_costs else 0.0,
        student_cost_per_request_usd=round(mean(student_costs), 8) if student_costs else 0.0,
        units_served_by_student=float(sum(ledger.get(f"student_serves_{u}", 0.0) for u in units)),
        saving_per_request_usd=round(saving, 8),
        horizon_requests=requests,
        net_saving_usd=round(saving * requests - offline, 4),
        roi=round((saving * requests - offline) / offline, 4) if offline else 0.0,
        break_even_requests=round(offline / saving, 1) if saving > 0 else -1.0,
        break_even_days=round(offline / saving / econ.requests_per_day, 3) if saving > 0 and econ.requests_per_day else -1.0,
    )
    return ledger


def report_markdown(student: str, student_id: str, scores: list[SubjectScore], ledger: dict[str, float],
                    heldout_overlap: int, plots: list[str]) -> str:
    units = sorted({s.unit for s in scores})
    subjects = sorted({s.subject for s in scores}, key=subject_order)
    lines = [
        f"# Distillery evaluation: student `{student}` ({student_id})", "",
        "Accuracy on held-out tasks per capability unit (n tasks); the same reference checks as the judge.", "",
        "| unit | " + " | ".join(subjects) + " |",
        "|---|" + "---|" * len(subjects),
    ]
    table = {(s.unit, s.subject): s for s in scores}
    for unit in units:
        cells = [f"{table[(unit, sub)].accuracy:.2f} (n={table[(unit, sub)].n})" if (unit, sub) in table else "-" for sub in subjects]
        lines.append(f"| {unit} | " + " | ".join(cells) + " |")
    lines += ["", "| subject | mean latency (s/request) | cost per request (USD) | mean output tokens |", "|---|---|---|---|"]
    for sub in subjects:
        rows = [s for s in scores if s.subject == sub]
        n = sum(r.n for r in rows)
        lat = sum(r.mean_latency_s * r.n for r in rows) / n
        cost = sum(r.cost_per_request_usd * r.n for r in rows) / n
        toks = sum(r.mean_output_tokens * r.n for r in rows) / n
        lines.append(f"| {sub} | {lat:.3f} | {cost:.6f} | {toks:.1f} |")
    lines += ["", "## ROI ledger", "", "| item | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in ledger.items()]
    lines += ["", f"Held-out check: {heldout_overlap} evaluation tasks appear in the training manifest (must be 0)."]
    lines += [f"\n![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"
