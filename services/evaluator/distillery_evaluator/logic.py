"""Evaluation as plain functions: outputs per subject in, scores, ROI and a report out."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from statistics import mean

from distillery.events import CandidatesJudged, SubjectScore, Task
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

    savings/request = teacher cost/request - student cost/request (request-weighted over units);
    net = savings/request x requests over the horizon - offline cost;
    break-even = offline cost / savings per request (in requests, and in days at the traffic).
    """
    def per_request(prefix: str) -> float:
        rows = [s for s in scores if s.subject.startswith(prefix)]
        total = sum(s.n for s in rows)
        return sum(s.cost_per_request_usd * s.n for s in rows) / total if total else 0.0

    teacher, student = per_request("teacher:"), per_request("student:after")
    offline = sum(offline_cost_usd.values())
    econ = spec.economics
    requests = econ.requests_per_day * econ.horizon_days
    saving = teacher - student
    ledger = {f"offline_{k}_usd": round(v, 6) for k, v in offline_cost_usd.items()}
    ledger.update(
        offline_total_usd=round(offline, 6),
        teacher_cost_per_request_usd=round(teacher, 8),
        student_cost_per_request_usd=round(student, 8),
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
    subjects = sorted({s.subject for s in scores}, key=_subject_order)
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


def _subject_order(subject: str) -> tuple[int, str]:
    order = {"teacher": 0, "student:before": 1, "student:after": 2}
    return (order.get(subject.split(":")[0] if subject.startswith("teacher") else subject, 3), subject)
