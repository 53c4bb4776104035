"""Judge wiring: candidates in (aggregated per task), verdicts out, commits held behind open tasks."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka import ConsumerRebalanceListener
from prometheus_client import Counter, Gauge, Info
from pydantic import Field

from distillery.bus import In, Out
from distillery.events import CandidateGenerated, CandidatesJudged, parse_event
from distillery.kafka import read_snapshot
from distillery.service import make_app, make_bus
from distillery.settings import ServiceSettings, load_settings
from distillery.spec import load_spec
from distillery_judge import __version__
from distillery_judge.aggregate import Aggregator, OpenTask
from distillery_judge.logic import judge_task, judge_version, regeneration_for, with_label

VERDICTS = Counter("distillery_judge_candidates_pooled_total", "Candidates per pool", ["unit", "pool"])
RULE_FAILURES = Counter("distillery_judge_rule_failures_total", "Failed checks", ["unit", "check"])
OPEN_TASKS = Gauge("distillery_judge_open_tasks", "Tasks waiting for candidates")
LATE = Counter("distillery_judge_late_candidates_total", "Candidates of tasks already judged")
GROUP = Info("distillery_judge_group", "Judge version and the consumer group it reads candidates with")
CHAIN_STEPS = Counter("distillery_judge_chain_steps_skipped_total", "Intermediate chain steps (judged with the final)")
REGENERATIONS = Counter("distillery_judge_regenerations_total", "Bounded retries asked of the router", ["unit"])
TIMEOUTS = Counter("distillery_judge_timeouts_total", "Tasks judged incomplete after the timeout")


class JudgeSettings(ServiceSettings):
    judge_label: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$",
                                    description="overrides the spec's judge.label (a replay under a new name)")
    replay: bool = Field(default=False, description="re-judge recorded candidates: never ask for regeneration")


def build():
    settings = load_settings(JudgeSettings)
    spec = with_label(load_spec(settings.spec_path), settings.judge_label)
    bus = make_bus(settings, "judge", __version__)
    version = judge_version(spec)
    group = settings.consumer_group or f"distillery-judge-{version}"  # a new version replays from the start
    GROUP.info({"judge_version": version, "group": group})
    agg = Aggregator(spec.judge.aggregation_timeout_s)
    lock = asyncio.Lock()

    def verdict_for(entry: OpenTask) -> list[Out]:
        """The verdict, and a bounded regeneration request when nothing was accepted."""
        cands = sorted(entry.candidates.values(), key=lambda cs: cs[0].candidate_id)
        verdict = judge_task(entry.task, cands, entry.expected, spec, version, bus.produced_by, entry.attempt)
        for jc in verdict.candidates:
            VERDICTS.labels(entry.task.unit, jc.pool).inc()
            for check, ok in jc.checks.items():
                if not ok:
                    RULE_FAILURES.labels(entry.task.unit, check).inc()
        outs = [Out(bus.topics.verdicts, verdict)]
        retry = None if settings.replay else regeneration_for(verdict, spec, bus.produced_by)
        if retry:
            REGENERATIONS.labels(entry.task.unit).inc()
            outs.append(Out(bus.topics.regeneration, retry))
        return outs

    async def on_candidates(items: list[In[CandidateGenerated]]) -> list[Out]:
        now = time.monotonic()
        outs = []
        for item in items:
            cand = item.event
            if cand.chain and not cand.chain.is_final and not cand.error:
                CHAIN_STEPS.inc()  # an intermediate step: the router moves the chain on; the final one carries it
                continue
            result = agg.add(cand, item.record, now)
            LATE.inc(result.late)
            if result.ready:
                outs.extend(verdict_for(result.ready))
        OPEN_TASKS.set(len(agg.open))
        return outs

    async def flush_expired() -> None:
        """Judge timed-out tasks with what arrived, then move commits forward."""
        while True:
            await asyncio.sleep(0.5)
            async with lock:
                due = agg.expired(time.monotonic())
                if due:
                    TIMEOUTS.inc(len(due))
                    try:
                        await bus.publish([out for entry in due for out in verdict_for(entry)])
                    except Exception:  # noqa: BLE001 - broker trouble: try again next tick
                        agg.restore()
                        continue
                    agg.confirm()
                    OPEN_TASKS.set(len(agg.open))
                consumer = bus.consumers.get(group)
                offsets = agg.safe_offsets()
                if consumer is not None and offsets and due:
                    with contextlib.suppress(Exception):  # a rebalance in between: next batch commits
                        await consumer.commit(offsets)

    async def rebuild_judged() -> None:
        """Tasks this judge version already judged, from the verdicts topic: no double verdicts after a crash."""
        snapshot = await read_snapshot(settings, bus.topics.verdicts)
        for record in snapshot.records:
            with contextlib.suppress(Exception):
                verdict = parse_event(CandidatesJudged, record.value)
                if verdict.judge_version == version:
                    agg.mark_judged(verdict.task.task_id, verdict.attempt)

    class DropRevoked(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked):
            async with lock:
                agg.drop_partitions(set(revoked))

        async def on_partitions_assigned(self, assigned):
            return None

    bus.subscribe(
        bus.topics.candidates, CandidateGenerated, on_candidates,
        group_id=group, commit_limit=agg.commit_limit, lock=lock, listener=DropRevoked(),
        on_published=agg.confirm, on_failed=agg.restore,
    )
    tasks: list[asyncio.Task] = []

    async def start_flusher() -> None:
        tasks.append(asyncio.create_task(flush_expired()))

    async def stop_flusher() -> None:
        for task in tasks:
            task.cancel()

    return make_app(bus, spec, on_startup=[rebuild_judged, start_flusher], on_shutdown=[stop_flusher]), settings
