"""The judge's deps (spec under its label, version, aggregator, scorers, self-checks) and its hooks:
the judged tasks rebuilt from the verdicts topic, and the flusher that judges timed-out tasks."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRebalanceListener
from pydantic import Field

from distillery.contracts.events import CandidatesJudged
from distillery.contracts.settings import ServiceSettings, load_settings
from distillery.contracts.spec import load_spec
from distillery.runtime.bus import Bus
from distillery.runtime.kafka import replay
from distillery.runtime.wiring import Context
from distillery_judge import metrics
from distillery_judge.aggregate import Aggregator
from distillery_judge.logic import judge_version, with_label
from distillery_judge.scorers import Scorers, build_scorers
from distillery_judge.selfcheck import SelfCheckMonitor

FLUSH_EVERY_S = 0.5


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


def bootstrap() -> JudgeDeps:
    settings = load_settings(JudgeSettings)
    spec = with_label(load_spec(settings.spec_path), settings.judge_label)
    deps = JudgeDeps(spec=spec, settings=settings, scorers=build_scorers(spec, settings.device))
    metrics.GROUP.info({"judge_version": deps.version, "group": deps.group})
    for unit in spec.units:
        metrics.GATE.labels(unit).set(0)
    return deps


class DropRevoked(ConsumerRebalanceListener):
    """On a rebalance, forget the open tasks of partitions this instance no longer owns."""

    def __init__(self, deps: JudgeDeps) -> None:
        self.deps = deps

    async def on_partitions_revoked(self, revoked):
        async with self.deps.lock:
            self.deps.aggregator.drop_partitions(set(revoked))

    async def on_partitions_assigned(self, assigned):
        return None


async def flush_expired(deps: JudgeDeps, bus: Bus) -> None:
    """Judge timed-out tasks with what arrived, then move commits forward."""
    while True:
        await asyncio.sleep(FLUSH_EVERY_S)
        async with deps.lock:
            if await publish_expired(deps, bus):
                await commit_safe_offsets(deps, bus)


async def publish_expired(deps: JudgeDeps, bus: Bus) -> bool:
    """The verdicts of timed-out tasks, published; their tasks count as judged once the broker has them."""
    from distillery_judge.handlers import flush_expired_once

    try:
        outs = await flush_expired_once(deps)
        if outs:
            await bus.publish(outs)
    except Exception:  # noqa: BLE001 - broker trouble: try again next tick
        deps.aggregator.restore()
        return False
    if not outs:
        return False
    deps.aggregator.confirm()
    metrics.OPEN_TASKS.set(len(deps.aggregator.open))
    return True


async def commit_safe_offsets(deps: JudgeDeps, bus: Bus) -> None:
    """Judged tasks no longer hold their partitions back: commit as far as the open ones allow."""
    consumer = bus.consumers.get(deps.group)
    offsets = deps.aggregator.safe_offsets()
    if consumer is not None and offsets:
        with contextlib.suppress(Exception):  # a rebalance in between: next batch commits
            await consumer.commit(offsets)


def hooks(deps: JudgeDeps, bus: Bus) -> dict[str, Any]:
    """Tasks already judged are rebuilt before consuming; the flusher runs while the service does."""
    from distillery_judge.handlers import mark_judged

    async def rebuild_judged() -> None:
        """Tasks this judge version already judged, from the verdicts topic: no double verdicts after a crash."""
        for verdict in (await replay(deps.settings, deps.topics.verdicts, CandidatesJudged)).events:
            mark_judged(verdict, deps)

    tasks: list[asyncio.Task] = []

    async def start_flusher() -> None:
        tasks.append(asyncio.create_task(flush_expired(deps, bus)))

    async def stop_flusher() -> None:
        for task in tasks:
            task.cancel()

    return {"on_startup": [rebuild_judged, start_flusher], "on_shutdown": [stop_flusher]}
