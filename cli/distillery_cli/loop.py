"""The closed loop from the operator's side: ``distillery resume UNIT``, and the loop's state in
``distillery status`` and ``distillery students`` (rounds, units a stop signal holds out,
promotions in force, and the history of promotions and demotions).

Everything is read from the topics with the same functions the services use
(:mod:`distillery.domain.loop`), so the CLI shows the state the trainer and the router act on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from distillery.contracts.events import (
    CandidatesJudged,
    EvaluationCompleted,
    LoopDecided,
    SampleCurated,
    StudentTrained,
    TaskSubmitted,
    TrainingRequested,
    loop_decision_id,
    parse_sample_record,
)
from distillery.contracts.settings import ConfigError, ServiceSettings
from distillery.contracts.spec import CapabilitySpec, load_spec
from distillery.domain.loop import RECOMMENDATION, ROUND_REASON, Stop, live_quality, serving, stopped_units
from distillery.runtime.kafka import produce_all
from distillery_cli import pipeline, stack
from distillery_cli.output import RUN_DIR, console, short_id


@dataclass(frozen=True)
class LoopState:
    rounds: dict[str, int]  # student -> automatic rounds requested
    stopped: dict[str, dict[str, Stop]]  # student -> unit -> its stop
    promoted: dict[tuple[str, str], LoopDecided]  # (student, unit) -> promotion in force
    decisions: list[LoopDecided]  # the promotions topic, in order


def read_state(settings: ServiceSettings, spec: CapabilitySpec) -> LoopState:
    topics = settings.topics
    evaluations = pipeline.events(settings, topics.evaluations, EvaluationCompleted)
    decisions = pipeline.events(settings, topics.promotions, LoopDecided)
    samples = [s for s in pipeline.events(settings, topics.samples, parse_sample_record) if isinstance(s, SampleCurated)]
    requests = pipeline.events(settings, topics.training_requests, TrainingRequested)
    return LoopState(
        rounds={name: len({r.request_id for r in requests if r.student == name and r.reason.startswith(ROUND_REASON)})
                for name in spec.students},
        stopped={name: stopped_units(name, evaluations, decisions, samples) for name in spec.students},
        promoted=serving(decisions), decisions=list({d.decision_id: d for d in decisions}.values()),
    )


def loop_tables(state: LoopState) -> list[Table]:
    """The loop's state per student, and its decision history (empty when the loop never acted)."""
    tables = []
    current = Table("student", "rounds", "left out of the next round", "promoted (shadow)", title="closed loop")
    for name in sorted(state.rounds):
        stops = state.stopped.get(name, {})
        held = "; ".join(f"{unit}: {', '.join(stop.signals)}" for unit, stop in sorted(stops.items())) or "-"
        served = ", ".join(f"{unit} ({short_id(d.student_id)})" for (student, unit), d in sorted(state.promoted.items())
                           if student == name) or "-"
        current.add_row(name, str(state.rounds[name]), held, served)
    tables.append(current)
    if any(state.stopped.values()):
        current.caption = f"A unit left out: {RECOMMENDATION}."
    if state.decisions:
        history = Table("when", "action", "student", "unit", "trained student", "why", title="promotions topic")
        for d in state.decisions:
            history.add_row(d.produced_at.strftime("%Y-%m-%d %H:%M:%S"), d.action, d.student, d.unit,
                            short_id(d.student_id) if d.student_id else "-", d.reason)
        tables.append(history)
    return tables


def print_loop(settings: ServiceSettings, spec: CapabilitySpec) -> None:
    if not spec.students:
        return
    for table in loop_tables(read_state(settings, spec)):
        console.print(table)


def resume_decisions(unit: str, student: str | None, state: LoopState) -> list[LoopDecided]:
    """One ``resume`` per student whose rounds hold ``unit`` out (only ``student``'s when given)."""
    held = {name: stops[unit] for name, stops in state.stopped.items() if unit in stops and student in (None, name)}
    if not held:
        stopped = sorted({f"{u} ({name})" for name, stops in state.stopped.items() for u in stops})
        raise ConfigError(f"unit '{unit}' is not held out of any{f' {student!r}' if student else ''} round "
                          f"(held out: {', '.join(stopped) or 'none'})")
    return [LoopDecided(decision_id=loop_decision_id("resume", name, unit, stop.evaluation_id), action="resume",
                        student=name, unit=unit, reason=f"operator resumed {unit} (stopped by "
                                                         f"{', '.join(stop.signals)})", produced_by="cli@resume")
            for name, stop in sorted(held.items())]


def resume(unit: str = typer.Argument(..., help="The unit to bring back into the rounds."),
           student: str = typer.Option(None, help="Only this student's rounds (default: every student holding it out)."),
           run_dir: Path = RUN_DIR) -> None:
    """Bring a unit a stop signal holds out back into the student's automatic rounds."""
    state = stack.StackState.load(run_dir)
    spec = load_spec(state.spec_path)
    if unit not in spec.units:
        raise ConfigError(f"unknown unit '{unit}' (spec units: {', '.join(sorted(spec.units))})")
    settings = pipeline.settings_for(state)
    decisions = resume_decisions(unit, student, read_state(settings, spec))
    asyncio.run(produce_all(settings, [(settings.topics.promotions, d.key, d.model_dump_json().encode())
                                       for d in decisions]))
    for d in decisions:
        console.print(f"resumed {unit} for {d.student}: its next round trains on it again")


# --- the timeline of one run ----------------------------------------------------------------------

BURST_GAP_S = 5.0  # submissions further apart than this are separate batches


@dataclass(frozen=True)
class Moment:
    at: datetime
    what: str
    detail: str


def submission_bursts(submitted: list[TaskSubmitted]) -> list[Moment]:
    """Tasks as they arrived, one row per burst (a ``submit`` of a file is one)."""
    moments: list[Moment] = []
    burst: list[TaskSubmitted] = []
    for event in sorted({e.task_id: e for e in submitted}.values(), key=lambda e: e.produced_at):
        if burst and (event.produced_at - burst[-1].produced_at).total_seconds() > BURST_GAP_S:
            moments.append(_burst(burst))
            burst = []
        burst.append(event)
    return moments + ([_burst(burst)] if burst else [])


def _burst(burst: list[TaskSubmitted]) -> Moment:
    held_out = sum(e.task.split == "eval" for e in burst)
    return Moment(burst[0].produced_at, "tasks", f"{len(burst)} submitted ({held_out} held out)")


def evaluation_moment(e: EvaluationCompleted) -> Moment:
    after = {s.unit: s.accuracy for s in e.scores if s.subject == "student:after"}
    teachers: dict[str, float] = {}
    for s in e.scores:
        if s.subject.startswith("teacher:"):
            teachers[s.unit] = max(teachers.get(s.unit, 0.0), s.accuracy)
    figures = "; ".join(f"{unit} {acc:.3f} (best teacher {teachers.get(unit, 0):.3f})" for unit, acc in sorted(after.items()))
    held = "; ".join(f"{unit} stop: {', '.join(fired)}" for unit, fired in sorted(e.unit_signals.items()))
    return Moment(e.produced_at, "evaluated", f"{short_id(e.student_id)}: {figures}" + (f"; {held}" if held else ""))


def live_moments(verdicts: list[CandidatesJudged], decisions: list[LoopDecided], spec: CapabilitySpec) -> list[Moment]:
    """A promotion's live window each time ``window`` more shadow answers were judged, and at the end."""
    moments = []
    promotions = [d for d in decisions if d.action == "promote" and d.student in spec.promotion]
    for promotion in promotions:
        policy = spec.promotion[promotion.student]
        shadow = [v for v in verdicts if v.shadow and v.task.unit == promotion.unit and v.produced_at >= promotion.produced_at]
        marks = sorted({*range(policy.window, len(shadow) + 1, policy.window), len(shadow)} - {0})
        for mark in marks:
            upto = shadow[mark - 1].produced_at
            live = live_quality([v for v in verdicts if v.produced_at <= upto], promotion, policy.deployment,
                                policy.window, spec)
            if live is not None:
                moments.append(Moment(upto, "live", f"{promotion.student}/{promotion.unit} after {mark} shadow "
                                      f"answers: student {live.student_quality:.3f}, teachers {live.teacher_quality:.3f}, "
                                      f"agreement {live.agreement:.3f} (last {live.n}, {live.errors} failed)"))
    return moments


def timeline_moments(settings: ServiceSettings, spec: CapabilitySpec) -> list[Moment]:
    topics = settings.topics
    decisions = pipeline.events(settings, topics.promotions, LoopDecided)
    moments = submission_bursts(pipeline.events(settings, topics.tasks, TaskSubmitted))
    moments += [Moment(r.produced_at, "training requested", f"{r.student}: {r.reason}")
                for r in pipeline.events(settings, topics.training_requests, TrainingRequested)]
    moments += [Moment(t.produced_at, "trained", f"{t.student} {short_id(t.student_id)} on "
                       f"{t.manifest.get('samples', 0)} samples in {t.train_seconds:.0f} s")
                for t in pipeline.events(settings, topics.students, StudentTrained) if t.variant is None]
    moments += [evaluation_moment(e) for e in pipeline.events(settings, topics.evaluations, EvaluationCompleted)
                if e.variant is None]
    moments += [Moment(d.produced_at, d.action, f"{d.student}/{d.unit}: {d.reason}") for d in decisions]
    moments += live_moments(pipeline.events(settings, topics.verdicts, CandidatesJudged), decisions, spec)
    return sorted(moments, key=lambda m: m.at)


def timeline(run_dir: Path = RUN_DIR) -> None:
    """The closed loop of this run in time order: task batches, rounds, students, evaluations,
    promotions, live shadow quality and demotions."""
    state = stack.StackState.load(run_dir)
    moments = timeline_moments(pipeline.settings_for(state), load_spec(state.spec_path))
    start = moments[0].at if moments else None
    table = Table("t+", "when", "what", "detail", title="timeline")
    for m in moments:
        table.add_row(f"{(m.at - start).total_seconds():.0f}s", m.at.strftime("%H:%M:%S"), m.what, m.detail)
    console.print(table)
