"""The judge's use cases: gather candidates per task, judge complete and timed-out tasks, ask again
where nothing was accepted, remember what this judge version already judged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import ConsumerRebalanceListener
from pydantic import Field

from distillery.contracts.events import CandidateGenerated, CandidatesJudged, SourceOffset, event_id_of
from distillery.contracts.settings import ServiceSettings
from distillery.contracts.spec import judge_version
from distillery.runtime.counting import child, count_by
from distillery.runtime.wiring import Context, DeadLetter, In, Out, Subscription, after_rebuild
from distillery_judge import metrics
from distillery_judge.aggregate import Aggregator, OpenTask
from distillery_judge.logic import TaskInput, judge_batch, regeneration_for, shadow_verdicts
from distillery_judge.scorers import Scorers
from distillery_judge.selfcheck import SelfCheckMonitor, check_of

T = TypeVar("T")


class JudgeSettings(ServiceSettings):
    judge_label: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$",
                                    description="overrides the spec's judge.label (a replay under a new name)")
    replay: bool = Field(default=False, description="re-judge recorded candidates: never ask for regeneration")
    device: str = Field(default="cpu", description="where the judge's own models run (cpu, cuda)")


@dataclass(kw_only=True)
class JudgeDeps(Context):
    """``spec`` is the spec with the judge label applied; version, aggregator and monitor follow from it
    unless given. ``lock`` serialises candidate batches, the flusher and rebalances (all touch the aggregator)."""

    settings: JudgeSettings = field(default_factory=JudgeSettings)
    version: str = ""  # judge_version(spec): names the consumer group, so a new version replays from the start
    aggregator: Aggregator | None = None  # a task's candidates gathered until complete or timed out
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    scorers: Scorers = field(default_factory=Scorers)  # rules only unless the spec names models
    monitor: SelfCheckMonitor | None = None
    # Every replica follows the verdicts topic (the "-peers" broadcast consumer). What the start-up
    # rebuild already read (partition -> end offset), and verdicts this replica judged and recorded
    # itself, are not counted again when the follower reads them.
    rebuilt_to: dict[int, int] = field(default_factory=dict)
    recorded_here: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.version = self.version or judge_version(self.spec)
        self.params.setdefault("judge_version", self.version)
        if self.aggregator is None:
            self.aggregator = Aggregator(self.spec.judge.aggregation_timeout_s)
        if self.monitor is None:
            self.monitor = SelfCheckMonitor(self.spec)

    @property
    def group(self) -> str:
        """The group the judge reads candidates with (DISTILLERY_CONSUMER_GROUP overrides it)."""
        return self.settings.group("judge", **self.params)


class DropRevoked(ConsumerRebalanceListener):
    """On a rebalance, forget the open tasks of partitions this instance no longer owns."""

    def __init__(self, deps: JudgeDeps) -> None:
        self.deps = deps

    async def on_partitions_revoked(self, revoked):
        async with self.deps.lock:
            self.deps.aggregator.drop_partitions(set(revoked))

    async def on_partitions_assigned(self, assigned):
        return None


def count_verdicts(verdicts: list[CandidatesJudged]) -> None:
    """Relations, self-checks, pools and checks of a batch's verdicts (added once per label set)."""
    count_by(metrics.RELATIONS, ((v.task.unit, v.relation or "single") for v in verdicts))
    count_by(metrics.SELF_CHECKS, ((v.task.unit, check, "pass" if ok else "fail")
                                   for v in verdicts for check, ok in v.self_checks.items()))
    count_by(metrics.VERDICTS, ((v.task.unit, jc.pool) for v in verdicts for jc in v.candidates))
    count_by(metrics.CHECKS, ((v.task.unit, check, "pass" if ok else "fail")
                              for v in verdicts for jc in v.candidates for check, ok in jc.checks.items()))


def export_self_checks(deps: JudgeDeps) -> None:
    for (unit, check), rate in deps.monitor.rates().items():
        metrics.RATE_GAUGES[check].labels(unit).set(rate)
    for unit in deps.spec.units:
        metrics.GATE.labels(unit).set(int(deps.monitor.gate_closed(unit)))


async def off_loop_if_blocking(deps: JudgeDeps, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread when model scorers make it slow and blocking (the event loop
    keeps the consumer's heartbeats going); with rules only, right here: the hand-off to a thread
    cost more than the rules (bench/hot_path.py)."""
    if deps.scorers.blocking:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


def verdicts_for(entries: list[OpenTask], deps: JudgeDeps) -> list[Out]:
    """The verdicts, and a bounded regeneration request where nothing was accepted."""
    inputs = [TaskInput(e.task, sorted(e.candidates.values(), key=lambda cs: cs[0].candidate_id), e.expected,
                        e.attempt) for e in entries]
    outs = []
    verdicts = judge_batch(inputs, deps.spec, deps.version, deps.produced_by, deps.scorers, deps.monitor)
    count_verdicts(verdicts)
    for verdict in verdicts:
        deps.recorded_here.add(verdict.verdict_id)
        outs.append(Out(deps.topics.verdicts, verdict))
        retry = None if deps.settings.replay else regeneration_for(verdict, deps.spec, deps.produced_by)
        if retry:
            child(metrics.REGENERATIONS, verdict.task.unit).inc()
            outs.append(Out(deps.topics.regeneration, retry))
    export_self_checks(deps)
    return outs


async def on_candidate_generated(items: list[In[CandidateGenerated]], deps: JudgeDeps) -> list[Out | DeadLetter]:
    """Gather each candidate with its task's others; judge the tasks whose last expected candidate arrived."""
    now = time.monotonic()
    outs: list[Out | DeadLetter] = []
    ready = []
    shadows = []
    for item in items:
        cand = item.event
        if cand.task.unit not in deps.spec.units:
            outs.append(DeadLetter(item.record, "unknown_unit", f"unknown unit '{cand.task.unit}': not in the judge's spec"))
            continue
        if cand.shadow:  # a promoted student's live answer: judged alone, right away
            record = item.record
            shadows.append((cand, SourceOffset(topic=record.topic, partition=record.partition, offset=record.offset)))
            continue
        if cand.chain and not cand.chain.is_final and not cand.error:
            metrics.CHAIN_STEPS.inc()  # an intermediate step: the router moves the chain on; the final one carries it
            continue
        result = deps.aggregator.add(cand, item.record, now)
        metrics.LATE.inc(result.late)
        if result.ready:
            ready.append(result.ready)
    if ready:  # one batch for all ready tasks
        outs.extend(await off_loop_if_blocking(deps, verdicts_for, ready, deps))
    if shadows:
        verdicts = await off_loop_if_blocking(deps, shadow_verdicts, shadows, deps.spec, deps.version,
                                              deps.produced_by, deps.scorers)
        for verdict in verdicts:
            metrics.SHADOW.labels(verdict.task.unit, verdict.candidates[0].pool).inc()
        outs.extend(Out(deps.topics.verdicts, v) for v in verdicts)
    metrics.OPEN_TASKS.set(len(deps.aggregator.open))
    return outs


async def flush_expired_once(deps: JudgeDeps, now: float | None = None) -> list[Out]:
    """The verdicts of tasks that waited past the timeout, judged with what arrived. Their tasks stay
    in flight until the caller confirms (published) or restores (publishing failed) the aggregator."""
    due = deps.aggregator.expired(time.monotonic() if now is None else now)
    if not due:
        return []
    metrics.TIMEOUTS.inc(len(due))
    return await off_loop_if_blocking(deps, verdicts_for, due, deps)


def mark_judged(verdict: CandidatesJudged, deps: JudgeDeps) -> None:
    """A verdict of this judge version (from the verdicts topic): its task is not judged again, and
    its self-check outcomes refill the rolling windows, so a gate closed before a restart stays
    closed (the windows are refilled in the topic's order)."""
    if verdict.judge_version != deps.version or verdict.shadow:  # a shadow verdict judged no teacher
        return
    deps.aggregator.mark_judged(verdict.task.task_id, verdict.attempt)
    if verdict.task.unit in deps.spec.units:
        for outcome, ok in verdict.self_checks.items():
            deps.monitor.record(verdict.task.unit, check_of(outcome), ok)


async def on_peer_verdicts(items: list[In[CandidatesJudged]], deps: JudgeDeps) -> list[Out | DeadLetter]:
    """Every replica's verdicts, as they land: a task another replica judged is not judged here (its
    partition may move here in a rebalance), and the self-check windows and gates see every replica's
    outcomes, so N replicas gate a unit as one judge would."""
    for item in items:
        if item.event.verdict_id in deps.recorded_here:
            deps.recorded_here.discard(item.event.verdict_id)  # this replica's own: recorded when judged
            continue
        mark_judged(item.event, deps)
    metrics.OPEN_TASKS.set(len(deps.aggregator.open))
    export_self_checks(deps)
    return []


def follow_peers(deps: JudgeDeps) -> dict[str, Any]:
    """The follower goes on from where the start-up rebuild read to (``after_rebuild``) and passes
    over this replica's own verdicts before decoding them: it recorded them when it judged, and
    decoding each one again cost about a tenth of the judge's CPU (bench/hot_path.py)."""
    options = after_rebuild(deps)
    read_at_start = options["skip"]

    def skip(record: Any) -> bool:
        if read_at_start(record):
            return True
        own = event_id_of(record.value or b"")
        if own is not None and own in deps.recorded_here:
            deps.recorded_here.discard(own)
            return True
        return False

    return {**options, "skip": skip}


def held_commits(deps: JudgeDeps) -> dict[str, Any]:
    """Commits stay behind the oldest open task; a task counts as judged once its verdict is durable."""
    agg = deps.aggregator
    return {"commit_limit": agg.commit_limit, "lock": deps.lock, "listener": DropRevoked(deps),
            "on_published": agg.confirm, "on_failed": agg.restore}


SUBSCRIPTIONS = [
    Subscription("candidates", CandidateGenerated, on_candidate_generated, batch=True, options=held_commits),
    # No lock: the follower changes state without awaiting, so no batch or flush sees it half done (and
    # an in-memory broker delivers the judge's own verdicts while the publishing batch holds the lock).
    Subscription("verdicts", CandidatesJudged, on_peer_verdicts, "-peers", batch=True, options=follow_peers),
]
