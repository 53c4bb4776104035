"""``distillery review``: the human review pool, and the decisions a reviewer publishes on it.

The pool is read from the topics, never from a service: a candidate waits for review when the
latest verdict of its task put it in ``review``, or when the editor put one of its live samples in
``review`` (over the token budget, unmet style, unparseable, a contrast without a correction, a
low tier), and the reviews topic holds no decision on it.
A decision is a ``ReviewDecided`` event on the reviews topic, keyed by unit like verdicts; the editor
honours it (accept: a sample in the chosen pool; reject: the candidate's samples retracted).
"""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.table import Column, Table

from distillery import __version__
from distillery.contracts.events import (
    SAMPLE_POOLS,
    CandidatesJudged,
    JudgedCandidate,
    ReviewDecided,
    SampleEvent,
    Trace,
    decision_id_for,
    live_samples,
    parse_sample_record,
)
from distillery.contracts.settings import ConfigError, ServiceSettings
from distillery.runtime.kafka import produce_all, replay
from distillery_cli import pipeline, stack
from distillery_cli.output import RUN_DIR, console, err, resolve_by_prefix, short_id

app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                  help="List the review pool (most uncertain first); 'review decide' records a human decision.")

ACCEPT_POOLS = SAMPLE_POOLS  # the pools an accept turns into a sample
EXCERPT_CHARS = 60


@dataclass(frozen=True)
class ReviewItem:
    """One judged candidate with the verdict that judged it; ``editor_reason`` when the editor, not the
    judge, sent it to review."""

    verdict: CandidatesJudged
    candidate: JudgedCandidate
    editor_reason: str = ""

    @property
    def reasons(self) -> str:
        judge = ", ".join(self.candidate.reasons)
        return f"editor: {self.editor_reason}; judge: {judge}" if self.editor_reason else judge

    @property
    def candidate_id(self) -> str:
        return self.candidate.candidate_id

    @property
    def unit(self) -> str:
        return self.verdict.task.unit

    @property
    def uncertainty_rank(self) -> tuple[float, str]:
        """Sort key: a score nearest 0.5 is the judge's least sure call; ties by candidate id."""
        return abs(self.candidate.score - 0.5), self.candidate_id


# --- plain functions over events ------------------------------------------------------------------


def latest_verdicts(verdicts: Iterable[CandidatesJudged]) -> dict[str, CandidatesJudged]:
    """Task id -> the task's latest verdict (any judge version).

    Verdicts are keyed by unit, so all verdicts of a task share one partition and arrive in
    offset order: the last one read is the one with the highest offset.
    """
    latest: dict[str, CandidatesJudged] = {}
    for verdict in verdicts:
        if not verdict.shadow:  # a promoted student's live answer is never reviewed into a sample
            latest[verdict.task.task_id] = verdict
    return latest


def judged_items(latest: dict[str, CandidatesJudged]) -> list[ReviewItem]:
    return [ReviewItem(v, jc) for v in latest.values() for jc in v.candidates]


def latest_decisions(decisions: Iterable[ReviewDecided]) -> dict[str, ReviewDecided]:
    """Candidate id -> the last decision on it (a later decision supersedes an earlier one)."""
    return {d.candidate.candidate_id: d for d in decisions}


def editor_review_items(latest: dict[str, CandidatesJudged], samples: Iterable[SampleEvent]) -> list[ReviewItem]:
    """Candidates with a live sample the editor put in ``review``, under the verdict that governs them
    (a sample of a superseded judge version is not waiting for anyone)."""
    items: dict[str, ReviewItem] = {}
    for sample in live_samples(list(samples)):
        prov = sample.provenance
        verdict = latest.get(prov.task_id)
        if sample.pool != "review" or verdict is None or verdict.judge_version != prov.judge_version:
            continue
        jc = next((c for c in verdict.candidates if c.candidate_id == prov.candidate_id), None)
        if jc is not None and prov.candidate_id not in items:
            reason = sample.metadata.get("review_reason", "sent to review by the editor")
            items[prov.candidate_id] = ReviewItem(verdict, jc, f"{sample.pathway}: {reason}")
    return list(items.values())


def review_queue(latest: dict[str, CandidatesJudged], decided: Collection[str],
                 unit: str | None = None, samples: Iterable[SampleEvent] = ()) -> list[ReviewItem]:
    """Candidates in ``review`` under their task's latest verdict or in the editor's review pool
    (``samples``: the samples topic), not yet decided; most uncertain first.

    Held-out (eval) tasks never become samples, so their candidates are not worth a reviewer's time.
    """
    judge_review = [item for item in judged_items(latest) if item.candidate.pool == "review"]
    in_review = {item.candidate_id for item in judge_review}
    editor_review = [item for item in editor_review_items(latest, samples) if item.candidate_id not in in_review]
    waiting = [item for item in judge_review + editor_review
               if item.candidate_id not in decided
               and item.verdict.task.split == "train" and (unit is None or item.unit == unit)]
    return sorted(waiting, key=lambda item: item.uncertainty_rank)


def resolve_candidate(prefix: str, items: list[ReviewItem]) -> ReviewItem:
    """The one judged candidate whose id starts with ``prefix`` (with or without the ``cand_`` part)."""
    return resolve_by_prefix(
        prefix, items, lambda item: item.candidate_id, noun="candidate id",
        empty="give a candidate id (or a unique prefix of one)",
        missing="no judged candidate with id '{given}' (see 'distillery review' for the pool)",
        shown_of=lambda item: short_id(item.candidate_id))


def choose_decision(pool: str | None, accept: bool, reject: bool) -> tuple[str, str | None]:
    """(decision, pool) from the command's flags: reject, or accept into a pool (default train)."""
    if reject and (accept or pool):
        raise ConfigError("choose one: --reject, or --accept / --pool POOL")
    if reject:
        return "reject", None
    if not accept and not pool:
        raise ConfigError("say what to do: --accept (into train), --pool POOL (accept into POOL) or --reject")
    pool = pool or "train"
    if pool not in ACCEPT_POOLS:
        raise ConfigError(f"--pool must be one of {', '.join(ACCEPT_POOLS)} (got '{pool}')")
    return "accept", pool


def build_decision(item: ReviewItem, decision: str, pool: str | None, note: str, reviewer: str) -> ReviewDecided:
    """The ReviewDecided event: the verdict's candidate as judged, and what the human said."""
    cid = item.candidate_id
    return ReviewDecided(
        decision_id=decision_id_for(cid, decision, pool, note, reviewer),
        task=item.verdict.task,
        candidate=item.candidate,
        judge_version=item.verdict.judge_version,
        verdict_id=item.verdict.verdict_id,
        decision=decision,
        pool=pool,
        note=note,
        reviewer=reviewer,
        produced_by=f"cli@{__version__}",
        trace=Trace(task_id=item.verdict.task.task_id, causation_id=item.verdict.event_id),
    )


def decision_warnings(item: ReviewItem, earlier: ReviewDecided | None) -> list[str]:
    """What the reviewer should know before the decision goes out; none of it blocks it."""
    warnings = []
    if item.candidate.pool != "review" and not item.editor_reason:
        warnings.append(f"candidate {short_id(item.candidate_id)} is in pool '{item.candidate.pool}', not 'review' "
                        f"(judge {item.verdict.judge_version}); the human decision overrides it")
    if item.verdict.task.split == "eval":
        warnings.append(f"candidate {short_id(item.candidate_id)} answers a held-out task: it never becomes a sample")
    if earlier is not None:
        warnings.append(f"candidate {short_id(item.candidate_id)} was already decided "
                        f"({describe(earlier)} by {earlier.reviewer or 'unknown'}); this decision supersedes it")
    return warnings


def describe(decision: ReviewDecided) -> str:
    return f"accept into {decision.pool}" if decision.decision == "accept" else "reject"


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def default_reviewer() -> str:
    """$USER, else the login name of the process owner."""
    if os.environ.get("USER"):
        return os.environ["USER"]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# --- topic I/O ----------------------------------------------------------------------------------------


def read_verdicts(settings: ServiceSettings) -> list[CandidatesJudged]:
    return pipeline.events(settings, settings.topics.verdicts, CandidatesJudged)


def read_decisions(settings: ServiceSettings) -> list[ReviewDecided]:
    return pipeline.events(settings, settings.topics.reviews, ReviewDecided)


def read_sample_history(settings: ServiceSettings) -> list[SampleEvent]:
    return asyncio.run(replay(settings, settings.topics.samples, parse_sample_record)).events


def load_queue(settings: ServiceSettings, unit: str | None = None) -> list[ReviewItem]:
    decided = latest_decisions(read_decisions(settings))
    return review_queue(latest_verdicts(read_verdicts(settings)), decided, unit, read_sample_history(settings))


def publish_decision(settings: ServiceSettings, event: ReviewDecided) -> None:
    item = (settings.topics.reviews, event.key, event.model_dump_json().encode())
    asyncio.run(produce_all(settings, [item]))


def decide(settings: ServiceSettings, candidate: str, decision: str, pool: str | None, note: str = "",
           reviewer: str | None = None) -> tuple[ReviewDecided, list[str]]:
    """Resolve the candidate, publish the decision; returns the event and the warnings shown to the user."""
    latest = latest_verdicts(read_verdicts(settings))
    editor_items = {i.candidate_id: i for i in editor_review_items(latest, read_sample_history(settings))}
    item = resolve_candidate(candidate, [editor_items.get(i.candidate_id, i) for i in judged_items(latest)])
    earlier = latest_decisions(read_decisions(settings)).get(item.candidate_id)
    event = build_decision(item, decision, pool, note, reviewer or default_reviewer())
    publish_decision(settings, event)
    return event, decision_warnings(item, earlier)


# --- commands -------------------------------------------------------------------------------------------


@app.callback()
def review(
    ctx: typer.Context,
    unit: str | None = typer.Option(None, "--unit", help="Only this capability unit."),
    limit: int = typer.Option(20, "--limit", min=1, help="Show at most this many candidates."),
    run_dir: Path = RUN_DIR,
) -> None:
    """The review pool: candidates whose latest verdict says 'review' and that no human decided yet."""
    if ctx.invoked_subcommand is not None:
        return
    settings = pipeline.settings_for(stack.StackState.load(run_dir))
    print_queue(load_queue(settings, unit), limit)


def print_queue(queue: list[ReviewItem], limit: int) -> None:
    if not queue:
        console.print("review pool is empty")
        return
    shown = queue[:limit]
    table = Table(Column("candidate", no_wrap=True, min_width=len("cand_01234567")), Column("unit", no_wrap=True),
                  "teacher", "score", Column("reasons", overflow="fold"),
                  Column("text", no_wrap=True, overflow="ellipsis", max_width=EXCERPT_CHARS // 2 + 10),
                  title=f"review pool: {len(queue)} waiting, most uncertain first (showing {len(shown)})")
    for item in shown:
        jc = item.candidate
        table.add_row(short_id(jc.candidate_id), item.unit, jc.teacher_id, f"{jc.score:.2f}",
                      item.reasons, excerpt(jc.text))
    console.print(table)


@app.command("decide")
def decide_command(
    candidate: str = typer.Argument(..., help="Candidate id, or a unique prefix of one (e.g. cand_1a2b3c4d)."),
    pool: str | None = typer.Option(None, "--pool", help="Accept into this pool: train, hard_case or refusal."),
    accept: bool = typer.Option(False, "--accept", help="Accept into train (same as --pool train)."),
    reject: bool = typer.Option(False, "--reject", help="Reject: the candidate never becomes (or stops being) a sample."),
    note: str = typer.Option("", "--note", help="Why; kept with the decision."),
    reviewer: str | None = typer.Option(None, "--reviewer", help="Who decided (default: $USER)."),
    run_dir: Path = RUN_DIR,
) -> None:
    """Record a human decision on a judged candidate (published to the reviews topic)."""
    decision, chosen_pool = choose_decision(pool, accept, reject)
    settings = pipeline.settings_for(stack.StackState.load(run_dir))
    event, warnings = decide(settings, candidate, decision, chosen_pool, note, reviewer)
    for warning in warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"{describe(event)}: {short_id(event.candidate.candidate_id)} ({event.task.unit}, "
                  f"task {event.task.task_id}) by {event.reviewer}; decision {event.decision_id}", soft_wrap=True)
