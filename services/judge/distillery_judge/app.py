"""Judge wiring: candidates in (aggregated per task), verdicts out, commits held behind open tasks."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka import ConsumerRebalanceListener
from prometheus_client import Counter, Gauge, Info
from pydantic import Field

from distillery.runtime.bus import In, Out
from distillery.contracts.events import CandidateGenerated, CandidatesJudged, parse_event
from distillery.runtime.kafka import read_snapshot
from distillery.runtime.service import make_app, make_bus
from distillery.contracts.settings import ServiceSettings, load_settings
from distillery.contracts.spec import load_spec
from distillery_judge import __version__
from distillery_judge.aggregate import Aggregator, OpenTask
from distillery_judge.logic import TaskInput, judge_batch, judge_version, regeneration_for, with_label
from distillery_judge.scorers import build_scorers
from distillery_judge.selfcheck import SelfCheckMonitor

VERDICTS = Counter("distillery_judge_candidates_pooled_total", "Candidates per pool", ["unit", "pool"])
CHECKS = Counter("distillery_judge_checks_total", "Rule-floor and reference checks by outcome (pass rate per rule)",
                 ["unit", "check", "outcome"])
OPEN_TASKS = Gauge("distillery_judge_open_tasks", "Tasks waiting for candidates")
LATE = Counter("distillery_judge_late_candidates_total", "Candidates of tasks already judged")
GROUP = Info("distillery_judge_group", "Judge version and the consumer group it reads candidates with")
CHAIN_STEPS = Counter("distillery_judge_chain_steps_skipped_total", "Intermediate chain steps (judged with the final)")
REGENERATIONS = Counter("distillery_judge_regenerations_total", "Bounded retries asked of the router", ["unit"])
TIMEOUTS = Counter("distillery_judge_timeouts_total", "Tasks judged incomplete after the timeout")
RELATIONS = Counter("distillery_judge_relations_total", "Multi-teacher relation of judged tasks", ["unit", "relation"])
SELF_CHECKS = Counter("distillery_judge_self_checks_total", "Self-check outcomes", ["unit", "check", "outcome"])
POSITION_SWAP = Gauge("distillery_judge_position_swap_agreement", "Share of pairwise judgments that survive swapping the order (rolling)", ["unit"])
PERTURBATION = Gauge("distillery_judge_perturbation_catch_rate", "Share of planted-error variants the judge failed (rolling)", ["unit"])
TWO_JUDGES = Gauge("distillery_judge_two_judge_agreement", "Share of candidates two judge models agree on (rolling)", ["unit"])
GATE = Gauge("distillery_judge_gate_closed", "1 while the unit's self-checks are below its threshold (train goes to review)", ["unit"])
RATE_GAUGES = {"position_swap": POSITION_SWAP, "perturbation": PERTURBATION, "two_judge": TWO_JUDGES}


class JudgeSettings(ServiceSettings):
    judge_label: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$",
                                    description="overrides the spec's judge.label (a replay under a new name)")
    replay: bool = Field(default=False, description="re-judge recorded candidates: never ask for regeneration")
    device: str = Field(default="cpu", description="where the judge's own models run (cpu, cuda)")


def build():
    settings = load_settings(JudgeSettings)
    spec = with_label(load_spec(settings.spec_path), settings.judge_label)
    bus = make_bus(settings, "judge", __version__)
    version = judge_version(spec)
    group = settings.consumer_group or f"distillery-judge-{version}"  # a new version replays from the start
    GROUP.info({"judge_version": version, "group": group})
    agg = Aggregator(spec.judge.aggregation_timeout_s)
    lock = asyncio.Lock()
    scorers = build_scorers(spec, settings.device)
    monitor = SelfCheckMonitor(spec)
    for unit in spec.units:
        GATE.labels(unit).set(0)

    def count(verdict) -> None:
        unit = verdict.task.unit
        RELATIONS.labels(unit, verdict.relation or "single").inc()
        for check, ok in verdict.self_checks.items():
            SELF_CHECKS.labels(unit, check, "pass" if ok else "fail").inc()
        for jc in verdict.candidates:
            VERDICTS.labels(unit, jc.pool).inc()
            for check, ok in jc.checks.items():
                CHECKS.labels(unit, check, "pass" if ok else "fail").inc()

    def verdicts_for(entries: list[OpenTask]) -> list[Out]:
        """The verdicts, and a bounded regeneration request where nothing was accepted."""
        inputs = [TaskInput(e.task, sorted(e.candidates.values(), key=lambda cs: cs[0].candidate_id), e.expected,
                            e.attempt) for e in entries]
        outs = []
        for verdict in judge_batch(inputs, spec, version, bus.produced_by, scorers, monitor):
            count(verdict)
            outs.append(Out(bus.topics.verdicts, verdict))
            retry = None if settings.replay else regeneration_for(verdict, spec, bus.produced_by)
            if retry:
                REGENERATIONS.labels(verdict.task.unit).inc()
                outs.append(Out(bus.topics.regeneration, retry))
        for (unit, check), rate in monitor.rates().items():
            RATE_GAUGES[check].labels(unit).set(rate)
        for unit in spec.units:
            GATE.labels(unit).set(int(monitor.gate_closed(unit)))
        return outs

    async def on_candidates(items: list[In[CandidateGenerated]]) -> list[Out]:
        now = time.monotonic()
        outs, ready = [], []
        for item in items:
            cand = item.event
            if cand.task.unit not in spec.units:
                outs.append(bus.dead_letter(item.record, f"unknown unit '{cand.task.unit}': not in the judge's spec",
                                            "unknown_unit"))
                continue
            if cand.chain and not cand.chain.is_final and not cand.error:
                CHAIN_STEPS.inc()  # an intermediate step: the router moves the chain on; the final one carries it
                continue
            result = agg.add(cand, item.record, now)
            LATE.inc(result.late)
            if result.ready:
                ready.append(result.ready)
        if ready:  # model scorers are slow and blocking: off the event loop, one batch for all ready tasks
            outs.extend(await asyncio.to_thread(verdicts_for, ready))
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
                        await bus.publish(await asyncio.to_thread(verdicts_for, due))
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
