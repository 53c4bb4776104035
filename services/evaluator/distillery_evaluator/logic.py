"""Evaluation as plain functions: outputs per subject in, scores, ROI and a report out."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from statistics import mean

from distillery.contracts.events import CandidateGenerated, SubjectScore, Task
from distillery.contracts.spec import CapabilitySpec, UnitSpec
from distillery.domain.checkers import (
    CheckResult,
    Scored,
    metric_values,
    run_checker,
    unit_metric_names,
)
from distillery.domain.loop import same_answer
from distillery.domain.scoring import is_decline
from distillery_evaluator.signals import classify_error


@dataclass(frozen=True)
class Output:
    """One subject's answer to one held-out task, with what it cost.

    ``missing`` says why a subject has no answer to a task it should have answered (the teacher
    failed, or its candidate never arrived): such an output has no text, counts as wrong, and its
    reason is counted, so every subject is scored on the same tasks."""

    task: Task
    subject: str
    text: str
    latency_s: float
    cost_usd: float
    output_tokens: int
    missing: str | None = None
    tool_calls: int = 0


def expected_teachers(unit: UnitSpec) -> list[str]:
    """The teachers that answer every task of a unit: a ``single`` unit's teacher, every competitor,
    or a chain's last step. Expert and value routing pick per task: their teachers are expected
    only on the tasks they were sent (those that have a candidate from them)."""
    routing = unit.routing
    if routing.strategy == "single":
        return routing.teachers[:1]
    if routing.strategy == "competition":
        return list(routing.teachers)
    if routing.strategy == "chain":
        return routing.teachers[-1:]
    return []


def teacher_outputs(candidates: list[CandidateGenerated], tasks: list[Task], spec: CapabilitySpec) -> list[Output]:
    """Each teacher's first answer to each held-out task, read from the candidates themselves.

    Verdicts are not the source: a judge that timed out on a slow teacher judges without it, and
    a regenerated task has several attempts; the held-out score is the teacher's first answer.
    A teacher expected on a task (:func:`expected_teachers`) with no answer gets an output marked
    ``missing`` (``error: ...`` or ``no answer recorded``), scored wrong, never dropped."""
    first: dict[tuple[str, str], CandidateGenerated] = {}
    for cand in sorted(candidates, key=lambda c: (c.attempt, c.chain.step if c.chain else 0)):
        if cand.task.split == "eval" and (cand.chain is None or cand.chain.is_final or cand.error):
            first.setdefault((cand.task.task_id, cand.teacher_id), cand)
    outs = []
    for task in tasks:
        answered = sorted(t for (task_id, t) in first if task_id == task.task_id)
        for teacher in dict.fromkeys([*expected_teachers(spec.units[task.unit]), *answered]):
            cand = first.get((task.task_id, teacher))
            subject = f"teacher:{teacher}"
            if cand is None:
                outs.append(Output(task, subject, "", 0.0, 0.0, 0, missing="no answer recorded"))
            elif cand.error:
                outs.append(Output(task, subject, "", cand.latency_s, cand.cost_usd, 0,
                                   missing=f"error: {cand.error.split(':')[0]}"))
            else:
                outs.append(Output(task, subject, cand.text, cand.latency_s, cand.cost_usd,
                                   cand.usage.completion_tokens, tool_calls=len(cand.trajectory)))
    return outs


_CHECKED: dict[tuple, CheckResult] = {}


def checked(output: Output, spec: CapabilitySpec) -> CheckResult:
    """The unit's checker on one output, the same one the judge runs (memoised: every figure of a
    report asks again, and a model-based checker is not free)."""
    key = (id(spec), output.task.unit, output.task.task_id, output.subject, output.text, output.missing)
    if key not in _CHECKED:
        if len(_CHECKED) > 200_000:
            _CHECKED.clear()
        unit = spec.units[output.task.unit]
        _CHECKED[key] = run_checker(unit, output.task, "" if output.missing else output.text)
    return _CHECKED[key]


def is_correct(output: Output, spec: CapabilitySpec) -> bool:
    """The unit's accuracy metric, through the same checker the judge uses."""
    return not output.missing and bool(checked(output, spec).correct)


def reference_reasons(output: Output, spec: CapabilitySpec) -> list[str]:
    return checked(output, spec).reasons


def error_classes(outputs: list[Output], spec: CapabilitySpec) -> dict[str, int]:
    """Counts of the wrong answers among ``outputs`` per error class (signals.classify_error)."""
    counts: dict[str, int] = {}
    for o in outputs:
        if not is_correct(o, spec):
            unit = spec.units[o.task.unit]
            cls = classify_error(unit.output_form, o.task, o.text, reference_reasons(o, spec), unit.tools)
            counts[cls] = counts.get(cls, 0) + 1
    return counts


def unit_metrics(outputs: list[Output], spec: CapabilitySpec) -> list[dict]:
    """The metrics each unit declares (``eval_metric`` and ``metrics``, by registry name; a
    ``json_fields`` unit adds field accuracy, invented-value rate and missing-field recall), per
    subject, plus refusal precision / recall: a subject should stop exactly on the
    tasks whose reference is "no call" (recall: it stops when it should; precision: only then).
    Refusal figures are computed over all of a subject's tasks (unit ``all``): a false refusal
    on a tool-call task counts against precision."""
    rows = []
    groups: dict[tuple[str, str], list[Output]] = defaultdict(list)
    for out in outputs:
        groups[(out.task.unit, out.subject)].append(out)
    for (unit, subject), outs in sorted(groups.items()):
        scored = [Scored(o.task, o.text, checked(o, spec), missing=bool(o.missing)) for o in outs]
        for name in unit_metric_names(spec.units[unit]):
            rows += [{"unit": unit, "subject": subject, "metric": metric, "value": value}
                     for metric, value in metric_values(name, scored).items()]
        rows.append({"unit": unit, "subject": subject, "metric": "output_tokens",
                     "value": round(mean(o.output_tokens for o in outs), 1)})
        if spec.units[unit].uses_tools:  # does it act (call a tool) at all, right or wrong?
            rows.append({"unit": unit, "subject": subject, "metric": "tool_use_rate",
                         "value": round(mean(o.tool_calls > 0 for o in outs), 4)})
    by_subject: dict[str, list[Output]] = defaultdict(list)
    for out in outputs:
        by_subject[out.subject].append(out)
    for subject, outs in sorted(by_subject.items()):
        should = [o for o in outs if o.task.reference is not None and o.task.reference.no_call]
        if not should:
            continue
        refused = [o for o in outs if is_decline(o.text)]
        right = [o for o in refused if o.task.reference is not None and o.task.reference.no_call]
        rows.append({"unit": "all", "subject": subject, "metric": "refusal_recall", "value": round(len(right) / len(should), 4)})
        rows.append({"unit": "all", "subject": subject, "metric": "refusal_precision",
                     "value": round(len(right) / len(refused), 4) if refused else 0.0})
    return rows


def breakdown(outputs: list[Output], spec: CapabilitySpec) -> list[dict]:
    """Accuracy per unit x difficulty and unit x scenario (task metadata) for every subject."""
    groups: dict[tuple[str, str, str, str], list[bool]] = defaultdict(list)
    for out in outputs:
        for dimension in ("difficulty", "scenario"):
            value = out.task.metadata.get(dimension)
            if value:
                groups[(out.task.unit, dimension, value, out.subject)].append(is_correct(out, spec))
    return [{"unit": u, "dimension": d, "value": v, "subject": s, "n": len(c), "accuracy": round(mean(c), 4)}
            for (u, d, v, s), c in sorted(groups.items())]


def agreement(outputs: list[Output], spec: CapabilitySpec, best: dict[str, str], subject: str = "student:after") -> dict[str, float]:
    """Per unit: share of held-out tasks where ``subject`` answers like the unit's best teacher."""
    teacher = {(o.task.task_id, o.subject): o for o in outputs if o.subject.startswith("teacher:")}
    hits: dict[str, list[bool]] = defaultdict(list)
    for out in outputs:
        ref = teacher.get((out.task.task_id, best.get(out.task.unit, "")))
        if out.subject == subject and ref is not None:
            hits[out.task.unit].append(same_answer(out.text, ref.text, spec, out.task))
    return {unit: round(mean(v), 4) for unit, v in sorted(hits.items())}


def best_teachers(scores: list[SubjectScore]) -> dict[str, str]:
    """Per unit, the most accurate teacher (the cheaper one on a tie): the one the student replaces."""
    best: dict[str, SubjectScore] = {}
    for s in scores:
        if s.subject.startswith("teacher:"):
            cur = best.get(s.unit)
            if cur is None or (s.accuracy, -s.cost_per_request_usd) > (cur.accuracy, -cur.cost_per_request_usd):
                best[s.unit] = s
    return {unit: s.subject for unit, s in best.items()}


def write_outputs(outputs: list[Output], spec: CapabilitySpec, path) -> None:
    """Every scored answer, so a reader can see *why* a subject scored what it did."""
    import json

    rows = [json.dumps({"task_id": o.task.task_id, "unit": o.task.unit, "subject": o.subject,
                        "correct": is_correct(o, spec), "text": o.text,
                        **({"missing": o.missing} if o.missing else {}),
                        **({"tool_calls": o.tool_calls} if o.tool_calls else {})}, ensure_ascii=False)
            for o in sorted(outputs, key=lambda o: (o.task.unit, o.task.task_id, o.subject))]
    path.write_text("\n".join(rows) + "\n")


def _answered_mean(outs: list[Output], value) -> float:
    """Mean of ``value`` over the answered outputs: an answer that never came has no latency or cost."""
    answered = [value(o) for o in outs if not o.missing]
    return mean(answered) if answered else 0.0


def score(outputs: list[Output], spec: CapabilitySpec) -> list[SubjectScore]:
    """Accuracy over every task of the unit (unanswered ones count wrong); latency, cost and length
    over the answered ones."""
    groups: dict[tuple[str, str], list[Output]] = defaultdict(list)
    for out in outputs:
        groups[(out.task.unit, out.subject)].append(out)
    return [
        SubjectScore(
            unit=unit, subject=subject, n=len(outs),
            accuracy=round(mean(is_correct(o, spec) for o in outs), 4),
            mean_latency_s=round(_answered_mean(outs, lambda o: o.latency_s), 4),
            cost_per_request_usd=round(_answered_mean(outs, lambda o: o.cost_usd), 8),
            mean_output_tokens=round(_answered_mean(outs, lambda o: o.output_tokens), 1),
            unanswered=dict(Counter(o.missing for o in outs if o.missing)),
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
    break-even = offline cost / mean saving per request (requests, and days at the traffic);
    break-even traffic = the requests per day at which the horizon pays the offline cost back.
    Offline items are whatever the caller passes (teacher generation, judging, human review,
    training); every figure is also exported as a metric.
    """
    econ = spec.economics
    units = sorted({s.unit for s in scores})
    by = {(s.unit, s.subject): s for s in scores}
    ledger: dict[str, float] = {f"offline_{k}_usd": round(v, 6) for k, v in offline_cost_usd.items()}
    savings, teacher_costs, student_costs, teacher_lat, student_lat = [], [], [], [], []
    best_teacher = best_teachers(scores)
    for unit in units:
        student = by.get((unit, "student:after"))
        if unit not in best_teacher or student is None:
            continue
        best = by[(unit, best_teacher[unit])]
        served = student.accuracy >= best.accuracy - econ.quality_tolerance
        ledger[f"student_serves_{unit}"] = float(served)
        teacher_costs.append(best.cost_per_request_usd)
        student_costs.append(student.cost_per_request_usd)
        teacher_lat.append(best.mean_latency_s)
        student_lat.append(student.mean_latency_s)
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
        break_even_requests_per_day=round(offline / saving / econ.horizon_days, 1) if saving > 0 else -1.0,
        teacher_latency_s=round(mean(teacher_lat), 4) if teacher_lat else 0.0,
        student_latency_s=round(mean(student_lat), 4) if student_lat else 0.0,
        # what calling the teacher for the same traffic would cost: the bar sample upkeep must stay under
        teacher_cost_horizon_usd=round((mean(teacher_costs) if teacher_costs else 0.0) * requests, 4),
    )
    ledger["break_even_reached"] = float(saving > 0 and econ.requests_per_day >= ledger["break_even_requests_per_day"])
    return ledger
