"""Each service's CPU per task on the pipeline benchmark's flow, in one process, without a broker.

    python bench/hot_path.py [--tasks 10000] [--batch 500] [--profile FILE]

The flow and workload of ``bench/pipeline_throughput.py`` (two replay teachers in competition, the
rule-floor judge, the editor with MinHash dedup), hop by hop through the code each service runs on
a batch: the records validated into events (``Bus.decode``), the service's handler as ``wire``
adapts it, and every output serialised as ``Bus.publish`` serialises it. One hop's outputs are the
next hop's records. What is left out is the broker, aiokafka and FastStream: the figures are each
service's own work per task, steady from run to run (the full run's spread on two cores is about
15%), so a change to a hot path shows its effect here first. ``--profile`` writes a cProfile of
the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from aiokafka import ConsumerRecord

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_throughput import TEACHERS, workload, write_spec

from distillery.runtime.bus import Bus, Out
from distillery.runtime.service import tune_gc
from distillery.runtime.wiring import _adapt
from distillery_cli import stack

HOPS = ["router", "teacher", "judge", "editor"]


def service(name: str, env: dict[str, str]) -> tuple[Any, Any, Bus]:
    """A service's deps (its own bootstrap, under ``env``), its main subscription and a bus."""
    os.environ.update(env)
    module = __import__(f"distillery_{name}.bootstrap", fromlist=["bootstrap"])
    handlers = __import__(f"distillery_{name}.handlers", fromlist=["SUBSCRIPTIONS"])
    deps = module.bootstrap()
    deps.topics = deps.settings.topics
    bus = Bus(None, deps.settings, name if name != "teacher" else f"teacher_{deps.teacher_id}", "bench")  # type: ignore[arg-type]
    return deps, handlers.SUBSCRIPTIONS[0], bus


class Hop:
    """One service reading one channel: decode, handle, serialise, as a batch."""

    def __init__(self, name: str, deps: Any, sub: Any, bus: Bus) -> None:
        self.name, self.deps, self.sub, self.bus = name, deps, sub, bus
        self.options = sub.options(deps)
        self.handle = _adapt(bus, sub, deps)
        self.offsets: dict[str, int] = defaultdict(int)
        self.cpu_s = 0.0

    async def run(self, records: list[ConsumerRecord]) -> list[Out]:
        started = time.process_time()  # the whole process, worker threads included
        skip = self.options.get("skip")
        records = [r for r in records if not skip(r)] if skip else records  # as Bus.subscribe passes over
        items, dead = self.bus.decode(records, self.sub.model, self.options.get("max_bytes"), self.options.get("parse"))
        outs = [*(await self.handle(items)), *dead] if items else dead
        payloads = [(out.topic, out.partition_key.encode(), out.event.model_dump_json().encode()) for out in outs]
        for out in outs:
            self.bus.published.labels(out.topic).inc()
        if self.options.get("on_published"):
            self.options["on_published"]()
        self.cpu_s += time.process_time() - started
        self.payloads = payloads
        return outs

    def records(self, payloads: list[tuple[str, bytes, bytes]]) -> list[ConsumerRecord]:
        out = []
        for topic, key, value in payloads:
            offset = self.offsets[topic]
            self.offsets[topic] += 1
            out.append(ConsumerRecord(topic, 0, offset, 0, 0, key, value, None, len(key), len(value), ()))
        return out


def batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


async def flow(n: int, batch: int, folder: Path) -> dict[str, float]:
    load = workload(n)
    spec_path = write_spec(folder, load, min(batch, 256))  # the teachers' batch size is at most 256
    env = stack.service_env("127.0.0.1:9", "hot", spec_path, folder)
    env.pop("DISTILLERY_STATE_DIR", None)
    router = Hop("router", *service("router", env))
    teachers = {t: Hop(f"teacher-{t}", *service("teacher", {**env, "DISTILLERY_TEACHER_ID": t})) for t in TEACHERS}
    judge = Hop("judge", *service("judge", env))
    # the judge also reads the verdicts topic back ("-peers"): every replica's verdicts, its own included
    peers = Hop("judge-peers", judge.deps, __import__("distillery_judge.handlers", fromlist=["x"]).SUBSCRIPTIONS[1],
                judge.bus)
    editor = Hop("editor", *service("editor", env))
    tune_gc()  # as every service does once started
    tasks = [(router.deps.topics.tasks, t["task_id"].encode(), json.dumps(t).encode()) for t in load.tasks]
    to_teacher: dict[str, list] = defaultdict(list)
    candidates: list = []
    for chunk in batches(tasks, batch):
        await router.run(router.records(chunk))
        for topic, key, value in router.payloads:
            to_teacher[topic].append((topic, key, value))
    for teacher in teachers.values():
        topic = teacher.deps.topics.generation_requests(teacher.deps.teacher_id)
        for chunk in batches(to_teacher[topic], batch):
            await teacher.run(teacher.records(chunk))
            candidates += teacher.payloads
    # the judge reads both teachers' candidates interleaved, as one partition would hold them
    order = {t["task_id"]: i for i, t in enumerate(load.tasks)}
    candidates.sort(key=lambda p: order[p[1].decode()] if p[1].decode() in order else 0)
    verdicts: list = []
    for chunk in batches(candidates, batch):
        await judge.run(judge.records(chunk))
        verdicts += judge.payloads
        await peers.run(peers.records([v for v in judge.payloads if v[0] == judge.deps.topics.verdicts]))
    samples = 0
    for chunk in batches([v for v in verdicts if v[0] == judge.deps.topics.verdicts], batch):
        await editor.run(editor.records(chunk))
        samples += len(editor.payloads)
    print(f"{n} tasks: {len(candidates)} candidates, {len(verdicts)} judge outputs, {samples} editor outputs")
    return {"tasks": n, "candidates": len(candidates), "judge_outputs": len(verdicts), "editor_outputs": samples,
            "cpu_ms_per_task": {hop.name: round(hop.cpu_s / n * 1000, 3)
                                for hop in [router, *teachers.values(), judge, peers, editor]}}


async def inline(fn, /, *args, **kwargs):
    return fn(*args, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500, help="records per batch at every hop")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the run here")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.batch < 1:
        parser.error("--tasks and --batch must be at least 1")
    with tempfile.TemporaryDirectory(prefix="distillery-hot-") as tmp:
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            asyncio.to_thread = inline  # type: ignore[assignment] - cProfile sees the main thread only
            profiler.enable()
        figures = asyncio.run(flow(args.tasks, args.batch, Path(tmp)))
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
    per_task = figures["cpu_ms_per_task"]
    per_task["all"] = round(sum(per_task.values()), 3)
    print(f"{'service':<16}{'CPU ms / task':>14}")
    for name, ms in per_task.items():
        print(f"{name:<16}{ms:>14.3f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
