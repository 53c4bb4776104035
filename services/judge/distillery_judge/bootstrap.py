"""Building the judge's deps (spec under its label, scorers) and its hooks: the judged tasks rebuilt
from the verdicts topic, and the flusher that judges timed-out tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from distillery.contracts.settings import load_settings
from distillery.contracts.spec import load_spec, with_label
from distillery.runtime.bus import Bus
from distillery.runtime.checkpoint import rebuild
from distillery_judge import metrics
from distillery_judge.checkpoints import judged_fold, store_of
from distillery_judge.handlers import JudgeDeps, JudgeSettings, export_self_checks, flush_expired_once
from distillery_judge.scorers import build_scorers

FLUSH_EVERY_S = 0.5
log = logging.getLogger("distillery.judge")


def bootstrap() -> JudgeDeps:
    settings = load_settings(JudgeSettings)
    spec = with_label(load_spec(settings.spec_path), settings.judge_label)
    deps = JudgeDeps(spec=spec, settings=settings, scorers=build_scorers(spec, settings.device))
    metrics.GROUP.info({"judge_version": deps.version, "group": deps.group})
    for unit in spec.units:
        metrics.GATE.labels(unit).set(0)
    return deps


async def flush_expired(deps: JudgeDeps, bus: Bus) -> None:
    """Judge timed-out tasks with what arrived, then move commits forward."""
    while True:
        await asyncio.sleep(FLUSH_EVERY_S)
        async with deps.lock:
            if await publish_expired(deps, bus):
                await commit_safe_offsets(deps, bus)


async def publish_expired(deps: JudgeDeps, bus: Bus) -> bool:
    """The verdicts of timed-out tasks, published; their tasks count as judged once the broker has them."""
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
    async def rebuild_judged() -> None:
        """Tasks this judge version already judged, from the verdicts topic (after the newest checkpoint,
        when there is one): no double verdicts after a crash."""
        rebuilt = await rebuild(deps.settings, judged_fold(deps), store_of(deps), deps.settings.checkpoint_after)
        deps.rebuilt_to = rebuilt.offsets[deps.topics.verdicts]  # the "-peers" follower goes on from here
        export_self_checks(deps)
        log.info("judged tasks rebuilt: %d, from %s and %d record(s) after it%s", len(deps.aggregator.judged),
                 rebuilt.loaded or "the start", rebuilt.tail, f"; checkpoint {rebuilt.saved}" if rebuilt.saved else "")

    tasks: list[asyncio.Task] = []

    async def start_flusher() -> None:
        tasks.append(asyncio.create_task(flush_expired(deps, bus)))

    async def stop_flusher() -> None:
        for task in tasks:
            task.cancel()

    return {"on_startup": [rebuild_judged, start_flusher], "on_shutdown": [stop_flusher]}
