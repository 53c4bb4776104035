"""How long the judge and the editor take to rebuild their state from the topics at start (issue 17).

    python bench/restart_state.py [--events 100000]

N verdicts go onto the verdicts topic and N samples onto the samples topic of an embedded broker
(synthetic: the golden wire events with their ids, prompts and numbers varied; every sample is
distinct, a tenth are near-duplicates of an earlier one that were admitted anyway, as samples of
an older spec would be). Then, in this process, with the services' own functions:

* judge: the start-up hook that reads the verdicts topic and marks every task of its version judged;
* editor: ``handlers.rebuild_state``, which reads the samples and reviews topics and rebuilds the
  live samples, content hashes, published ids, governing verdicts and the near-duplicate index.

Each is timed from the call to its return, with the process's peak RSS after it. The events are
produced first and not timed.
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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from distillery.contracts.settings import ServiceSettings
from distillery.contracts.spec import load_spec
from distillery.runtime.kafka import ensure_topics, produce_all
from distillery_cli.broker import EmbeddedBroker
from distillery_editor.handlers import EditorDeps, rebuild_state
from distillery_judge.bootstrap import hooks
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


def verdicts(n: int, version: str, seed: int = 0) -> list[tuple[str, bytes]]:
    """(key, value) of ``n`` verdicts of ``version``, one per task."""
    template = json.loads((GOLDEN / "CandidatesJudged.v1.json").read_text())
    r = random.Random(seed)
    out = []
    for i in range(n):
        event = json.loads(json.dumps(template))
        task_id, verdict_id = f"task_{i:024x}", f"verdict_{i:024x}"
        event.update(event_id=verdict_id, verdict_id=verdict_id, judge_version=version)
        event["trace"]["task_id"] = event["task"]["task_id"] = task_id
        event["task"]["prompt"] = prompt(r, i)
        out.append((event["task"]["unit"], json.dumps(event).encode()))
    return out


def samples(n: int, verdicts_topic: str, seed: int = 1, planted: float = 0.1) -> list[tuple[str, bytes]]:
    """(key, value) of ``n`` distinct curated samples; a ``planted`` share are near-duplicates of earlier ones."""
    template = json.loads((GOLDEN / "SampleCurated.v2.json").read_text())
    r = random.Random(seed)
    texts: list[str] = []
    out = []
    for i in range(n):
        event = json.loads(json.dumps(template))
        sample_id = f"sample_{i:024x}"
        text = texts[r.randrange(len(texts))] + " Thanks." if texts and r.random() < planted else prompt(r, i)
        texts.append(text)
        event.update(event_id=sample_id, sample_id=sample_id, prompt=text, content_hash=f"{i:032x}")
        event["trace"]["task_id"] = event["provenance"]["task_id"] = f"task_{i:024x}"
        event["provenance"]["source"] = {"topic": verdicts_topic, "partition": 0, "offset": i}
        out.append((event["unit"], json.dumps(event).encode()))
    return out


async def produce(settings: ServiceSettings, topic: str, items: list[tuple[str, bytes]]) -> None:
    for start in range(0, len(items), CHUNK):
        await produce_all(settings, [(topic, key, value) for key, value in items[start:start + CHUNK]])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(n: int) -> dict[str, dict[str, float]]:
    spec = load_spec(ROOT / "examples" / "spec.yaml")
    with tempfile.TemporaryDirectory(prefix="distillery-restart-") as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "broker.log")
        broker.start(detach=True)
        try:
            settings = ServiceSettings.model_validate({"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                                                       "topic_prefix": "restart"})
            topics = settings.topics
            await ensure_topics(settings, topics.all_topics([]))  # the partition counts of production
            judge = JudgeDeps(spec=spec, settings=JudgeSettings.model_validate(settings.model_dump()), topics=topics)
            started = time.perf_counter()
            await produce(settings, topics.verdicts, verdicts(n, judge.version))
            await produce(settings, topics.samples, samples(n, topics.verdicts))
            print(f"produced {n:,} verdicts and {n:,} samples in {time.perf_counter() - started:.1f} s", flush=True)
            figures = {}

            started = time.perf_counter()
            await hooks(judge, None)["on_startup"][0]()  # type: ignore[arg-type]
            figures["judge"] = {"seconds": time.perf_counter() - started, "state": len(judge.aggregator.judged),
                                "peak_rss_mib": peak_rss_mib()}

            editor = EditorDeps(spec=spec, settings=settings, topics=topics)
            started = time.perf_counter()
            await rebuild_state(editor)
            figures["editor"] = {"seconds": time.perf_counter() - started, "state": len(editor.state.published),
                                 "peak_rss_mib": peak_rss_mib()}
            return figures
        finally:
            broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="verdicts, and samples, on the topics")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.events))
    print(f"{'service':<8}{'events':>10}{'rebuild s':>11}{'events/s':>10}{'state':>10}{'peak RSS MiB':>14}")
    for name, f in figures.items():
        print(f"{name:<8}{args.events:>10,}{f['seconds']:>11.1f}{args.events / f['seconds']:>10,.0f}"
              f"{f['state']:>10,}{f['peak_rss_mib']:>14,.0f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
