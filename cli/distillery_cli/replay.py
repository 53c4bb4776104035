"""``distillery replay``: re-judge every recorded candidate under a new judge version, and diff versions.

A replay is the judge service itself under another label (``DISTILLERY_JUDGE_LABEL``), in replay
mode (``DISTILLERY_REPLAY=true``: no regeneration requests), with its own consumer group
``distillery-judge-<version>`` reading the candidates topic from the start. Its verdicts join
the verdicts topic next to the old version's, which stay; the editor retracts samples the new
version rejects. ``replay diff`` compares two versions' verdicts, candidate by candidate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.table import Table

from distillery.contracts.events import CandidatesJudged, JudgedCandidate
from distillery.contracts.settings import ConfigError, ServiceSettings
from distillery.contracts.spec import judge_version, load_spec, with_label
from distillery.runtime.kafka import consumer_lag, topic_counts
from distillery_cli import pipeline, stack
from distillery_cli.output import RUN_DIR, console

app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                  help="Re-judge all candidates under a new judge version; 'replay diff' compares two versions.")

NEW_SPEC = typer.Option(None, "--spec", help="Spec with the new rules (default: the pipeline's).")
LABEL = re.compile(r"^[A-Za-z0-9._-]+$")  # what the judge accepts as a label
READY_TIMEOUT_S = 120.0


# --- versions ----------------------------------------------------------------------------------------


def version_of(spec_path: Path, label: str | None) -> str:
    """The version a judge would run under: the same function the judge names itself with."""
    return judge_version(with_label(load_spec(spec_path), label))


def running_version(state: stack.StackState) -> str:
    """The version the stack's judge runs: its spec, under its label override if it has one."""
    judge = _judge_process(state)
    label = judge.env.get("DISTILLERY_JUDGE_LABEL") if judge else None
    return version_of(Path(state.spec_path), label or None)


def _judge_process(state: stack.StackState) -> stack.ProcessInfo | None:
    return next((p for p in state.processes if p.name == "judge"), None)


@dataclass(frozen=True)
class ReplayPlan:
    label: str
    spec_path: Path
    old_version: str  # the running judge's
    new_version: str

    @property
    def process_name(self) -> str:
        return f"judge-replay-{self.label}"


def plan_replay(state: stack.StackState, label: str, spec_path: Path | None = None) -> ReplayPlan:
    """Check the label and the spec, and that the replay would name a version the judge does not run."""
    if not LABEL.match(label):
        raise ConfigError(f"judge label '{label}' may only use letters, digits, '.', '_' and '-'")
    spec_path = Path(spec_path or state.spec_path)
    old, new = running_version(state), version_of(spec_path, label)
    if old == new:
        raise ConfigError(f"judge version {new} is the one the pipeline already runs; "
                          "choose another --judge-version label or change the rules in --spec")
    return ReplayPlan(label, spec_path.resolve(), old, new)


# --- the replay judge process ------------------------------------------------------------------------


def start_replay_judge(state: stack.StackState, plan: ReplayPlan) -> stack.ProcessInfo:
    """Start the judge under the new label in replay mode, and record it so 'distillery down' stops it."""
    previous = next((p for p in state.processes if p.name == plan.process_name), None)
    if previous and stack.pid_alive(previous.pid):
        raise ConfigError(f"a replay '{plan.label}' is already running (pid {previous.pid}); "
                          "wait for it or stop the pipeline with 'distillery down'")
    template = _judge_process(state)
    if template is None:
        raise ConfigError("the running pipeline has no judge process to copy the settings from")
    env = {**template.env, "DISTILLERY_SPEC_PATH": str(plan.spec_path), "DISTILLERY_JUDGE_LABEL": plan.label,
           "DISTILLERY_REPLAY": "true"}
    env.pop("DISTILLERY_HTTP_PORT", None)
    proc = stack.start_process(plan.process_name, template.module, env, Path(state.run_dir))
    state.processes = [p for p in state.processes if p.name != plan.process_name] + [proc]
    state.save()
    return proc


def stop_replay_judge(state: stack.StackState, proc: stack.ProcessInfo, timeout_s: float = 15) -> None:
    """SIGTERM (SIGKILL after ``timeout_s``) the replay judge and drop it from the stack state."""
    stack.stop_process(proc.pid, timeout_s)
    state.processes = [p for p in state.processes if p.name != proc.name]
    state.save()


def wait_replay_ready(state: stack.StackState, proc: stack.ProcessInfo, plan: ReplayPlan) -> str:
    """Wait for the replay judge's health; check it runs the planned version; return its consumer group."""
    stack.wait_ready(dataclasses.replace(state, processes=[proc]), timeout_s=READY_TIMEOUT_S)
    version = pipeline.metric_value(state, proc.name, "distillery_judge_group_info", label="judge_version")
    if version and version != plan.new_version:
        raise ConfigError(f"the replay judge runs version {version}, expected {plan.new_version}")
    group = pipeline.metric_value(state, proc.name, "distillery_judge_group_info", label="group")
    return group or f"distillery-judge-{plan.new_version}"


# --- progress ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayProgress:
    consumed: int  # candidates committed by the replay judge's group
    total: int  # candidates on the topic (its end offsets)
    open_tasks: int | None  # the replay judge's gauge; None while it does not answer
    editor_lag: int  # verdicts the editor has not processed yet

    @property
    def done(self) -> bool:
        return self.consumed >= self.total and self.open_tasks == 0 and self.editor_lag == 0


def replay_progress(state: stack.StackState, proc: stack.ProcessInfo, group: str) -> ReplayProgress:
    settings = pipeline.settings_for(state)
    topics = settings.topics
    total = asyncio.run(topic_counts(settings, [topics.candidates]))[topics.candidates]
    lag = asyncio.run(consumer_lag(settings, group, [topics.candidates]))[topics.candidates]
    editor_group = settings.group("editor")
    editor_lag = asyncio.run(consumer_lag(settings, editor_group, [topics.verdicts]))[topics.verdicts]
    open_tasks = pipeline.metric_value(state, proc.name, "distillery_judge_open_tasks")
    return ReplayProgress(max(0, total - lag), total, None if open_tasks is None else int(open_tasks), editor_lag)


def wait_replay_done(state: stack.StackState, proc: stack.ProcessInfo, group: str, timeout_s: float,
                     on_progress: Callable[[ReplayProgress], None] | None = None) -> ReplayProgress:
    """Poll until the replay judge consumed every candidate, holds no open task, and the editor caught up."""
    deadline = time.monotonic() + timeout_s
    while True:
        progress = replay_progress(state, proc, group)
        if on_progress:
            on_progress(progress)
        if progress.done:
            return progress
        if not stack.pid_alive(proc.pid):
            raise ConfigError(f"the replay judge exited: {stack.last_line(proc.log)}")
        if time.monotonic() > deadline:
            raise ConfigError(f"replay not finished after {timeout_s:.0f}s ({progress.consumed}/{progress.total} "
                              f"candidates, {progress.open_tasks} open tasks, editor lag {progress.editor_lag}); "
                              f"see {proc.log}")
        time.sleep(1)


def run_replay(state: stack.StackState, label: str, spec_path: Path | None = None, keep: bool = False,
               timeout_s: float = 900, on_progress: Callable[[ReplayProgress], None] | None = None) -> ReplayPlan:
    """The whole replay: start the judge under ``label``, wait until it and the editor are done, stop it."""
    plan = plan_replay(state, label, spec_path)
    proc = start_replay_judge(state, plan)
    try:
        group = wait_replay_ready(state, proc, plan)
        wait_replay_done(state, proc, group, timeout_s, on_progress)
    finally:
        if not keep:
            stop_replay_judge(state, proc)
    return plan


# --- diff -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """A candidate whose pool differs between two judge versions; ``reasons`` are the new version's."""

    unit: str
    task_id: str
    candidate_id: str
    old_pool: str
    new_pool: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class UnitDiff:
    unit: str
    judged_both: int
    moves: tuple[Move, ...]

    @property
    def transitions(self) -> list[tuple[tuple[str, str, tuple[str, ...]], int]]:
        """(old pool, new pool, reasons) -> count, most frequent first."""
        counts = Counter((m.old_pool, m.new_pool, m.reasons) for m in self.moves)
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


@dataclass(frozen=True)
class VerdictDiff:
    old_version: str
    new_version: str
    units: tuple[UnitDiff, ...]

    @property
    def moves(self) -> list[Move]:
        return [m for u in self.units for m in u.moves]

    @property
    def judged_both(self) -> int:
        return sum(u.judged_both for u in self.units)


def versions_on_topic(verdicts: Iterable[CandidatesJudged]) -> list[str]:
    return list(dict.fromkeys(v.judge_version for v in verdicts))


def resolve_version(given: str, known: list[str]) -> str:
    """A full judge version, or a label (``<label>-<10 hex>``), or a unique prefix of a version."""
    for stage in (lambda v: v == given, lambda v: v.rsplit("-", 1)[0] == given, lambda v: v.startswith(given)):
        matches = [v for v in known if stage(v)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ConfigError(f"judge version '{given}' is ambiguous: {', '.join(matches)}")
    listed = ", ".join(known) if known else "none yet"
    raise ConfigError(f"no verdicts of judge version '{given}' (versions on the topic: {listed})")


def candidates_of(verdicts: Iterable[CandidatesJudged], version: str) -> dict[str, tuple[CandidatesJudged, JudgedCandidate]]:
    """Candidate id -> (verdict, judged candidate) under ``version``; a later verdict wins."""
    out: dict[str, tuple[CandidatesJudged, JudgedCandidate]] = {}
    for verdict in verdicts:
        if verdict.judge_version == version and not verdict.shadow:  # teachers' answers only
            for jc in verdict.candidates:
                out[jc.candidate_id] = (verdict, jc)
    return out


def diff_verdicts(verdicts: list[CandidatesJudged], old: str, new: str) -> VerdictDiff:
    """Per unit: candidates judged under both versions, and those whose pool changed."""
    before, after = candidates_of(verdicts, old), candidates_of(verdicts, new)
    both: Counter[str] = Counter()
    moves: dict[str, list[Move]] = {}
    for cid in sorted(before.keys() & after.keys()):
        (verdict, old_jc), (_, new_jc) = before[cid], after[cid]
        unit = verdict.task.unit
        both[unit] += 1
        if old_jc.pool != new_jc.pool:
            moves.setdefault(unit, []).append(Move(unit, verdict.task.task_id, cid, old_jc.pool, new_jc.pool,
                                                   tuple(new_jc.reasons)))
    units = tuple(UnitDiff(u, both[u], tuple(moves.get(u, []))) for u in sorted(both))
    return VerdictDiff(old, new, units)


def load_diff(settings: ServiceSettings, old: str, new: str) -> VerdictDiff:
    """Read the verdicts topic, resolve both versions, and diff them."""
    verdicts = pipeline.events(settings, settings.topics.verdicts, CandidatesJudged)
    known = versions_on_topic(verdicts)
    old_version, new_version = resolve_version(old, known), resolve_version(new, known)
    if old_version == new_version:
        raise ConfigError(f"both names resolve to the same judge version {old_version}")
    return diff_verdicts(verdicts, old_version, new_version)


def diff_table(diff: VerdictDiff) -> Table:
    table = Table("unit", "judged by both", "changed", "transition", "reasons", "n",
                  title=f"judge versions {diff.old_version} → {diff.new_version}")
    for unit in diff.units:
        transitions = unit.transitions or [(("-", "-", ()), 0)]
        for i, ((old_pool, new_pool, reasons), n) in enumerate(transitions):
            first = i == 0
            table.add_row(unit.unit if first else "", str(unit.judged_both) if first else "",
                          str(len(unit.moves)) if first else "",
                          f"{old_pool} → {new_pool}" if n else "-", ", ".join(reasons) or "-", str(n) if n else "")
    table.add_section()
    table.add_row("all", str(diff.judged_both), str(len(diff.moves)), "", "", "")
    return table


def print_diff(diff: VerdictDiff) -> None:
    if not diff.units:
        console.print(f"no candidate was judged by both {diff.old_version} and {diff.new_version}")
        return
    console.print(diff_table(diff))


# --- commands -------------------------------------------------------------------------------------------


@app.callback()
def replay(
    ctx: typer.Context,
    judge_version: str | None = typer.Option(None, "--judge-version", help="Label of the new judge version."),
    spec: Path | None = NEW_SPEC,
    keep: bool = typer.Option(False, "--keep", help="Leave the replay judge running afterwards."),
    timeout: float = typer.Option(900, "--timeout", min=1, help="Seconds to wait for the replay to finish."),
    run_dir: Path = RUN_DIR,
) -> None:
    """Re-judge every candidate on the topic under a new judge version, then show what changed."""
    if ctx.invoked_subcommand is not None:
        return
    if not judge_version:
        raise ConfigError("say which version to replay: --judge-version LABEL (or 'distillery replay diff OLD NEW')")
    state = stack.StackState.load(run_dir)
    plan = _run_with_progress(state, judge_version, spec, keep, timeout)
    print_diff(load_diff(pipeline.settings_for(state), plan.old_version, plan.new_version))
    if keep:
        console.print(f"replay judge '{plan.process_name}' left running ('distillery down' stops it)")


def _run_with_progress(state: stack.StackState, label: str, spec: Path | None, keep: bool,
                       timeout: float) -> ReplayPlan:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    plan = plan_replay(state, label, spec)  # fails fast, before the progress bar
    console.print(f"replaying judge {plan.old_version} → {plan.new_version}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bars:
        bar = bars.add_task("starting the replay judge", total=None)

        def show(progress: ReplayProgress) -> None:
            bars.update(bar, total=progress.total or None, completed=progress.consumed,
                        description=f"candidates re-judged (open tasks {progress.open_tasks if progress.open_tasks is not None else '?'}, "
                                    f"editor lag {progress.editor_lag})")

        return run_replay(state, label, spec, keep, timeout, show)


@app.command("diff")
def diff_command(
    old: str = typer.Argument(..., help="Old judge version, or its label."),
    new: str = typer.Argument(..., help="New judge version, or its label."),
    run_dir: Path = RUN_DIR,
) -> None:
    """Per unit: candidates judged under both versions, pool changes and their reasons."""
    settings = pipeline.settings_for(stack.StackState.load(run_dir))
    print_diff(load_diff(settings, old, new))
