"""Chaos: random SIGKILLs of every service while a replay workload flows and a student trains, and the
broker frozen once (SIGSTOP/SIGCONT). Nothing is lost, nothing is doubled, and the samples and the
student's dataset are exactly those of an undisturbed run; the same holds with two replicas of the
router, judge and editor. Run it alone with ``pytest -m chaos``.

Admission that depends on the order verdicts arrive in (near-duplicates, cluster quotas) is off in
this spec: the order in which a judge finishes tasks is not the same from run to run even without
faults, so only order-free admission can be compared run against run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from distillery.contracts import ids
from distillery.contracts.events import (
    CandidatesJudged,
    EvaluationCompleted,
    SampleCurated,
    StudentTrained,
    TrainingRequested,
    live_samples,
    parse_sample_record,
)
from distillery.contracts.settings import ServiceSettings
from distillery.contracts.spec import load_spec
from distillery.contracts.submission import parse_tasks
from distillery.runtime.kafka import consumer_lag, produce_all, replay
from distillery_cli import stack
from distillery_cli.broker import external_bootstrap
from tests.support import replay_spec, restart
from tests.waiting import events, wait_for

pytestmark = pytest.mark.chaos

SEED = 14
KILLS = 12  # per disturbed run, then the stream finishes in peace (each restart costs a process start)
KILLABLE = ("router", "judge", "editor", "teacher-alpha", "teacher-beta")
SCALED = ("router", "judge", "editor")  # the services run twice in the two-replica run


@dataclass
class Outcome:
    verdicts: dict[str, int]  # task id -> verdicts of it on the topic (records)
    samples: dict[str, str]  # live sample id -> content hash
    curated_records: int  # SampleCurated records on the topic (a doubled sample shows here)
    dataset_sha: str
    student_id: str
    evaluated: bool
    kills: list[str] = field(default_factory=list)
    froze_broker: bool = False
    seconds: float = 0.0
    checkpoint_starts: int = 0  # judge and editor rebuilds that started from a checkpoint


def chaos_spec(tmp_path: Path) -> tuple[Path, list[dict]]:
    spec_path, workload = replay_spec(tmp_path, per_unit=8, eval_per_unit=2)
    data = yaml.safe_load(spec_path.read_text())
    for unit in data["units"].values():  # order-free admission only (see the module docstring)
        unit.setdefault("editor", {}).update(near_duplicate_threshold=0, cluster_similarity=0)
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return spec_path, workload


def settings_of(state: stack.StackState) -> ServiceSettings:
    return ServiceSettings.model_validate({"KAFKA_BOOTSTRAP_SERVERS": state.bootstrap, "topic_prefix": state.topic_prefix})


def verdict_counts(settings: ServiceSettings) -> dict[str, int]:
    counts: dict[str, int] = {}
    for verdict in events(settings, settings.topics.verdicts, CandidatesJudged):
        counts[verdict.task.task_id] = counts.get(verdict.task.task_id, 0) + 1
    return counts


def editor_caught_up(settings: ServiceSettings) -> bool:
    lag = asyncio.run(consumer_lag(settings, "distillery-editor", [settings.topics.verdicts]))
    return lag.get(settings.topics.verdicts, 1) == 0


def run_workload(tmp_path: Path, spec_path: Path, workload: list[dict], *, replicas: int, chaos: bool,
                 evaluate: bool = True) -> Outcome:
    rng = random.Random(SEED + replicas)
    started = time.monotonic()
    # Every restart of the judge or the editor that read anything writes a checkpoint, and the next
    # restart starts from it: the kills below restart from checkpoints and the topics' tails.
    state = stack.start(spec_path, tmp_path / "run", f"chaos{replicas}{int(chaos)}",
                        extra_env={"DISTILLERY_CHECKPOINT_AFTER": "1"})
    kills: list[str] = []
    froze = False
    try:
        for name in SCALED[: 3 if replicas == 2 else 0]:
            base = state.process(name)
            state.processes.append(stack.start_process(f"{name}-2", base.module, base.env, Path(state.run_dir)))
        stack.wait_ready(state, timeout_s=120)
        settings = settings_of(state)
        submitted, _ = parse_tasks("\n".join(json.dumps(t) for t in workload), load_spec(spec_path),
                                   settings.max_task_bytes, "test")
        asyncio.run(produce_all(settings, [(settings.topics.tasks, e.key, e.model_dump_json().encode())
                                           for e in submitted]))
        task_ids = {e.task_id for e in submitted}

        def done() -> bool:
            return set(verdict_counts(settings)) >= task_ids and editor_caught_up(settings)

        names = [*KILLABLE, *(f"{n}-2" for n in SCALED[: 3 if replicas == 2 else 0])]
        while chaos and not done():
            if not froze and len(kills) == KILLS // 4 and state.broker_pid:  # once, mid-stream
                os.kill(state.broker_pid, signal.SIGSTOP)
                time.sleep(4)
                os.kill(state.broker_pid, signal.SIGCONT)
                froze = True
            victim = rng.choice(names)
            restart(state, victim)
            kills.append(victim)
            time.sleep(rng.uniform(0.3, 1.0))
            if len(kills) >= KILLS:
                break
        wait_for(done, lambda ok: ok, timeout_s=180, every_s=1)

        # a training round, with the trainer and then the evaluator killed while they work
        request = TrainingRequested(request_id=ids.content_id("train", "chaos"), student="tiny", produced_by="test")
        asyncio.run(produce_all(settings, [(settings.topics.training_requests, request.key,
                                            request.model_dump_json().encode())]))
        if chaos:
            time.sleep(rng.uniform(1.0, 3.0))
            restart(state, "trainer")
            kills.append("trainer")
        trained = wait_for(lambda: events(settings, settings.topics.students, StudentTrained), bool, timeout_s=240)
        evaluated = []
        if evaluate:  # the evaluator is one replica whatever the run: it is killed in one disturbed run
            if chaos:
                time.sleep(rng.uniform(0.2, 1.0))
                restart(state, "evaluator")
                kills.append("evaluator")
            evaluated = wait_for(lambda: events(settings, settings.topics.evaluations, EvaluationCompleted), bool,
                                 timeout_s=240)
        history = asyncio.run(replay(settings, settings.topics.samples, parse_sample_record)).events
        students = events(settings, settings.topics.students, StudentTrained)
        assert len({s.student_id for s in students}) == 1, "one student per request, retrained or not"
        return Outcome(
            verdicts=verdict_counts(settings),
            samples={s.sample_id: s.content_hash for s in live_samples(history)},
            curated_records=sum(isinstance(e, SampleCurated) for e in history),
            dataset_sha=trained[0].manifest["sha256"], student_id=trained[0].student_id,
            evaluated=bool(evaluated), kills=kills, froze_broker=froze, seconds=time.monotonic() - started,
            checkpoint_starts=checkpoint_starts(Path(state.run_dir)))
    finally:
        stack.stop(state)
        if state.broker_pid:
            stack.stop_process(state.broker_pid)


def checkpoint_starts(run_dir: Path) -> int:
    """How many judge and editor rebuilds started from a checkpoint (their logs name it)."""
    marker = f"from {(run_dir / 'state').resolve()}"
    return sum(1 for log in (run_dir / "logs").glob("*.log") for line in log.read_text(errors="replace").splitlines()
               if "rebuilt:" in line and marker in line)


@pytest.mark.skipif(external_bootstrap() is not None, reason="freezes its own embedded broker")
def test_random_kills_and_a_frozen_broker_change_nothing_with_one_or_two_replicas(tmp_path):
    spec_path, workload = chaos_spec(tmp_path)
    calm = run_workload(tmp_path / "calm", spec_path, workload, replicas=1, chaos=False, evaluate=False)
    assert calm.samples and all(n == 1 for n in calm.verdicts.values())
    assert calm.curated_records == len(calm.samples)

    for replicas in (1, 2):
        wild = run_workload(tmp_path / f"chaos-{replicas}", spec_path, workload, replicas=replicas, chaos=True,
                            evaluate=replicas == 1)
        print(f"\nchaos, {replicas} replica(s): {len(wild.kills)} kills ({', '.join(wild.kills)}), broker frozen: "
              f"{wild.froze_broker}, {len(wild.verdicts)} tasks judged, {len(wild.samples)} live samples, "
              f"{wild.curated_records} sample records, {wild.checkpoint_starts} restarts from a checkpoint, "
              f"{wild.seconds:.0f} s (calm run: {calm.seconds:.0f} s)")
        assert wild.kills and wild.froze_broker
        assert set(wild.verdicts) == set(calm.verdicts), "a task without a verdict"
        assert max(wild.verdicts.values()) == 1, "a doubled verdict"
        assert wild.curated_records == len(wild.samples), "a doubled sample"
        assert wild.samples == calm.samples
        assert (wild.dataset_sha, wild.student_id) == (calm.dataset_sha, calm.student_id)
        assert wild.evaluated == (replicas == 1)
