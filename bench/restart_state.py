"""How long the judge and the editor take to rebuild their state at start: a full read of the
topics, and a restart from a checkpoint plus the records after it (issue 17).

    python bench/restart_state.py [--events 100000] [--tail 10000] [--check]

N verdicts go onto the verdicts topic and N samples onto the samples topic of an embedded broker
(synthetic: the golden wire events with their ids, prompts and numbers varied; every sample is
distinct, a tenth are near-duplicates of an earlier one that were admitted anyway, as samples of
an older spec would be). Then, in this process, with the services' own functions and
checkpoints on (``state_dir`` in a temporary directory):

* full read: the judge's start-up hook (the verdicts of its version, its judged rounds and
  self-check windows) and the editor's ``rebuild_state`` (live samples, content hashes,
  published ids, governing verdicts, the near-duplicate index), each from an empty state
  directory; each writes a checkpoint at the end (timed apart: "save s");
* then ``--tail`` more verdicts and samples are produced;
* restart: the same again, which loads the checkpoint, checks the topics still hold its
  records, and folds only the tail.

``--check`` also rebuilds both from a full read after the tail and asserts the restarted state
equals it. Each phase is timed from the call to its return; peak RSS is the process's after it.
The events are produced first and not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from distillery.contracts.settings import ServiceSettings
from distillery.contracts.spec import load_spec
from distillery.runtime.checkpoint import Rebuilt, rebuild
from distillery.runtime.kafka import ensure_topics, produce_all
from distillery_cli.broker import EmbeddedBroker
from distillery_editor.handlers import EditorDeps, rebuild_state
from distillery_judge.checkpoints import judged_fold, store_of
from distillery_judge.handlers import JudgeDeps, JudgeSettings

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
NAMES = ["Alice", "Bruno", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Julia", "Kofi", "Lena"]
CHUNK = 20_000  # events produced per producer call


def prompt(r: random.Random, i: int) -> str:
    name, other = r.sample(NAMES, 2)
    a, b, c = r.randint(2, 900), r.randint(2, 900), r.randint(2, 90)
    return (f"Request {i}: {name} has {a} stamps, buys {b} more from {other} and gives {c} away. "
            f"How many stamps does {name} have now?")


def verdicts(start: int, n: int, version: str, seed: int = 0) -> Iterator[list[tuple[str, bytes]]]:
    """(key, value) of verdicts ``start`` to ``start + n`` of ``version``, one per task, in chunks."""
    template = json.loads((GOLDEN / "CandidatesJudged.v1.json").read_text())
    r = random.Random(seed + start)
    out = []
    for i in range(start, start + n):
        event = json.loads(json.dumps(template))
        task_id, verdict_id = f"task_{i:024x}", f"verdict_{i:024x}"
        event.update(event_id=verdict_id, verdict_id=verdict_id, judge_version=version)
        event["trace"]["task_id"] = event["task"]["task_id"] = task_id
        event["task"]["prompt"] = prompt(r, i)
        out.append((event["task"]["unit"], json.dumps(event).encode()))
        if len(out) == CHUNK:
            yield out
            out = []
    yield out


def samples(start: int, n: int, verdicts_topic: str, texts: list[str], seed: int = 1,
            planted: float = 0.1) -> Iterator[list[tuple[str, bytes]]]:
    """(key, value) of distinct curated samples ``start`` to ``start + n``, in chunks; a ``planted`` share
    are near-duplicates of earlier ones (``texts``: the earlier samples' prompts, extended here)."""
    template = json.loads((GOLDEN / "SampleCurated.v2.json").read_text())
    r = random.Random(seed + start)
    out = []
    for i in range(start, start + n):
        event = json.loads(json.dumps(template))
        sample_id = f"sample_{i:024x}"
        text = texts[r.randrange(len(texts))] + " Thanks." if texts and r.random() < planted else prompt(r, i)
        texts.append(text)
        event.update(event_id=sample_id, sample_id=sample_id, prompt=text, content_hash=f"{i:032x}")
        event["trace"]["task_id"] = event["provenance"]["task_id"] = f"task_{i:024x}"
        event["provenance"]["source"] = {"topic": verdicts_topic, "partition": 0, "offset": i}
        out.append((event["unit"], json.dumps(event).encode()))
        if len(out) == CHUNK:
            yield out
            out = []
    yield out


async def produce(settings: ServiceSettings, topic: str, chunks: Iterable[list[tuple[str, bytes]]]) -> None:
    for chunk in chunks:
        if chunk:
            await produce_all(settings, [(topic, key, value) for key, value in chunk])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def history(settings: ServiceSettings, start: int, n: int, version: str, texts: list[str]) -> float:
    """Produce verdicts and samples ``start`` to ``start + n``; the seconds it took."""
    started = time.perf_counter()
    await produce(settings, settings.topics.verdicts, verdicts(start, n, version))
    await produce(settings, settings.topics.samples, samples(start, n, settings.topics.verdicts, texts))
    return time.perf_counter() - started


async def rebuild_judge(spec, settings: JudgeSettings) -> tuple[JudgeDeps, dict[str, Any]]:
    judge = JudgeDeps(spec=spec, settings=settings, topics=settings.topics)
    started = time.perf_counter()
    rebuilt = await rebuild(settings, judged_fold(judge), store_of(judge), settings.checkpoint_after)
    return judge, figures_of(rebuilt, time.perf_counter() - started, len(judge.aggregator.judged))


async def rebuild_editor(spec, settings: ServiceSettings) -> tuple[EditorDeps, dict[str, Any]]:
    editor = EditorDeps(spec=spec, settings=settings, topics=settings.topics)
    started = time.perf_counter()
    rebuilt = await rebuild_state(editor)
    return editor, figures_of(rebuilt, time.perf_counter() - started, len(editor.state.published))


def figures_of(rebuilt: Rebuilt, seconds: float, state: int) -> dict[str, Any]:
    return {"seconds": seconds, "load_seconds": rebuilt.load_seconds, "save_seconds": rebuilt.save_seconds,
            "phases": rebuilt.seconds, "read": rebuilt.tail,
            "from_checkpoint": rebuilt.loaded is not None, "state": state, "peak_rss_mib": peak_rss_mib()}


def same_editor_state(a: EditorDeps, b: EditorDeps) -> bool:
    sa, sb = a.state, b.state
    return (sa.live, sa.live_hashes, sa.published, sa.governing, sa.superseded) == \
        (sb.live, sb.live_hashes, sb.published, sb.governing, sb.superseded) and \
        sorted(sa.near.export()[1]) == sorted(sb.near.export()[1])


async def run(n: int, tail: int, check: bool) -> dict[str, dict[str, Any]]:
    spec = load_spec(ROOT / "examples" / "spec.yaml")
    with tempfile.TemporaryDirectory(prefix="distillery-restart-") as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "broker.log")
        broker.start(detach=True)
        try:
            plain = ServiceSettings.model_validate({"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                                                    "topic_prefix": "restart"})
            settings = JudgeSettings.model_validate({**plain.model_dump(), "state_dir": Path(tmp) / "state",
                                                    "checkpoint_after": 1})
            await ensure_topics(settings, settings.topics.all_topics([]))  # the partition counts of production
            version = JudgeDeps(spec=spec).version
            texts: list[str] = []
            seconds = await history(settings, 0, n, version, texts)
            print(f"produced {n:,} verdicts and {n:,} samples in {seconds:.1f} s", flush=True)
            figures: dict[str, dict[str, Any]] = {}
            _, figures["judge, full read"] = await rebuild_judge(spec, settings)
            _, figures["editor, full read"] = await rebuild_editor(spec, settings)
            seconds = await history(settings, n, tail, version, texts)
            print(f"produced a tail of {tail:,} verdicts and {tail:,} samples in {seconds:.1f} s", flush=True)
            judge, figures["judge, restart"] = await rebuild_judge(spec, settings)
            editor, figures["editor, restart"] = await rebuild_editor(spec, settings)
            if check:
                unsaved = JudgeSettings.model_validate(plain.model_dump())
                full_judge, _ = await rebuild_judge(spec, unsaved)
                full_editor, _ = await rebuild_editor(spec, unsaved)
                assert full_judge.aggregator.judged == judge.aggregator.judged, "judge: restart != full read"
                assert same_editor_state(full_editor, editor), "editor: restart != full read"
                print("check: both restarted states equal a full read of the same topics", flush=True)
            return figures
        finally:
            broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="verdicts, and samples, on the topics")
    parser.add_argument("--tail", type=int, default=10_000, help="verdicts, and samples, produced after the checkpoint")
    parser.add_argument("--check", action="store_true", help="assert the restarted states equal a full read")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.events < 1 or args.tail < 0:
        parser.error("--events must be at least 1 and --tail at least 0")
    figures = asyncio.run(run(args.events, args.tail, args.check))
    print(f"{'':<18}{'records read':>13}{'seconds':>9}{'load':>7}{'save':>7}{'state':>11}{'peak RSS MiB':>14}")
    for name, f in figures.items():
        print(f"{name:<18}{f['read']:>13,}{f['seconds']:>9.1f}{f['load_seconds']:>7.1f}{f['save_seconds']:>7.1f}"
              f"{f['state']:>11,}{f['peak_rss_mib']:>14,.0f}")
    phases = ["find", "restore", "tail", "export", "marks", "write"]
    print(f"\nseconds by phase\n{'':<18}" + "".join(f"{p:>9}" for p in phases))
    for name, f in figures.items():
        print(f"{name:<18}" + "".join(f"{f['phases'].get(p, 0.0):>9.2f}" for p in phases))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
