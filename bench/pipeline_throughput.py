"""End-to-end pipeline throughput on the embedded broker (issue 17's flow).

    python bench/pipeline_throughput.py [--tasks 10000] [--json out.json] [--against-distilabel]
                                        [--teacher-latency 0.004]

N tasks of one unit through the router (competition of two replay teachers), the two teachers,
the rule-floor judge (format and reference check) and the editor (exact and MinHash dedup at
0.85). Each service runs as its own process, as in production; the tasks are produced onto the
tasks topic at once. It reports:

* tasks/s: from the first task produced until the editor has read every verdict, once every
  service is ready and its consumer group has its partitions;
* CPU seconds per 1,000 tasks per service (user + system, over the same interval; startup
  excluded, it is reported apart);
* peak RSS per service (``VmHWM``);
* the bytes each topic holds per task (record keys and values), for the capacity model in
  docs/operations.md.

``--teacher-latency S`` makes each replay teacher sleep S per request (``replay_pace``), one after
another: a teacher replica that serves 1/S requests per second, as a model server would.
``--replay`` then runs ``distillery replay`` under a new judge label over every recorded candidate
(rules only) and reports candidates/s through the replay judge and the editor.

The tasks are templated word problems with a tenth planted as near-duplicates of earlier ones
(same numbers, one word changed), so the editor's MinHash has real work. Teacher ``alpha`` answers
every task right, ``beta`` gets one in eight wrong: the judge has both pools to fill.

``--against-distilabel`` then runs the same tasks and teacher texts through distilabel 1.5.3
(bench/distilabel_flow.py, in its own venv: ``make bench-distilabel``), at distilabel's default
batch size and at 500, and prints each one's rows/s with the ratio Distillery tasks/s / distilabel
rows/s. distilabel's rows/s is taken over ``pipeline.run()``, its start-up included, and also from
its first batch to its last row (start-up excluded, as Distillery's tasks/s is).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from distillery.contracts.events import TaskSubmitted, new_task
from distillery.contracts.settings import ServiceSettings
from distillery.contracts.spec import load_spec
from distillery.runtime.kafka import consumer_lag, produce_all, read_snapshot, topic_counts
from distillery_cli import replay, stack
from distillery_cli.broker import EmbeddedBroker

UNIT = "qa"
TEACHERS = ("alpha", "beta")
SERVICES = ("router", "judge", "editor")
NAMES = ["Alice", "Bruno", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Julia", "Kofi", "Lena"]
ITEMS = ["apple", "notebook", "ticket", "candle", "shirt", "battery", "plant", "mug", "cable", "lamp"]
TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[1]
DISTILABEL_FLOW = ROOT / "bench" / "distilabel_flow.py"
DISTILABEL_PYTHON = ROOT / ".venv-distilabel" / "bin" / "python"  # made by `make bench-distilabel`
DISTILABEL_BATCHES = (None, 500)  # None: distilabel's default batch sizes


@dataclass(frozen=True)
class Workload:
    tasks: list[dict]  # task lines, as `distillery submit` reads them
    recordings: dict[str, list[dict]]  # teacher -> replay rows


def workload(n: int, seed: int = 0, planted: float = 0.1, latency_s: float = 0.0) -> Workload:
    """``n`` word problems with a reference answer and both teachers' recorded answers."""
    r = random.Random(seed)
    tasks, alpha, beta = [], [], []
    drawn: list[tuple] = []
    for i in range(n):
        if drawn and r.random() < planted:  # a near-duplicate: an earlier problem, one word changed
            name, item, a, b = r.choice(drawn)
            verb = "purchases"
        else:
            name, item, a, b = r.choice(NAMES), r.choice(ITEMS), r.randint(2, 900), r.randint(2, 900)
            verb = "buys"
            drawn.append((name, item, a, b))
        prompt = f"Problem {i}: {name} has {a} {item}s and {verb} {b} more. How many {item}s does {name} have now?"
        task = new_task(UNIT, prompt, reference={"answer": str(a + b)})
        tasks.append({"task_id": task.task_id, "unit": UNIT, "prompt": prompt, "reference": {"answer": str(a + b)}})
        wrong = r.random() < 0.125
        alpha.append(_row(task.task_id, f"{name} starts with {a} {item}s and {verb} {b} more: {a} + {b} = {a + b}.\n"
                                        f"#### {a + b}", latency_s))
        beta.append(_row(task.task_id, f"Add the {b} new {item}s to the {a} {name} has: {a + b + wrong}.\n"
                                       f"#### {a + b + wrong}", latency_s))
    return Workload(tasks, {"alpha": alpha, "beta": beta})


def _row(task_id: str, text: str, latency_s: float = 0.0) -> dict:
    return {"task_id": task_id, "steps": [{"text": text, "prompt_tokens": 60, "completion_tokens": 24,
                                           "latency_s": latency_s, "confidence": 0.9, "finish_reason": "stop"}]}


def write_spec(folder: Path, load: Workload, batch: int, paced: bool = False) -> Path:
    """The flow's spec: competition of two replay teachers, rules only, MinHash at 0.85, no students."""
    teachers = {}
    for name, rows in load.recordings.items():
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        teachers[name] = {"backend": "replay", "replay_path": str(path), "batch_size": batch, "replay_pace": paced}
    spec = {
        "version": 1,
        "teachers": teachers,
        "judge": {"label": "bench", "aggregation_timeout_s": 300},
        "units": {UNIT: {
            "description": "Solve a one-step word problem and end with the number.",
            "system_prompt": "Solve the problem; end with a line '#### <number>'.",
            "output_form": "final_answer",
            "routing": {"strategy": "competition", "teachers": list(TEACHERS)},
            "rules": {"output_format": "final_answer", "max_chars": 400, "reference": "final_answer"},
            "editor": {"near_duplicate_threshold": 0.85},
        }},
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    load_spec(path)  # a spec error stops here with its message, not in five services' logs
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Result:
    tasks: int
    seconds: float
    tasks_per_s: float
    startup_s: float
    cpu_s_per_1k: dict[str, float]
    startup_cpu_s: dict[str, float]
    peak_rss_mib: dict[str, float]
    verdicts: int
    samples: int
    teacher_latency_s: float = 0.0
    bytes_per_task: dict[str, float] | None = None  # topic -> key + value bytes on the broker per task
    # topic -> when its first and last records were produced, in seconds after the first task
    record_span_s: dict[str, tuple[float, float]] | None = None
    replay: dict[str, float] | None = None  # --replay: the judge replay's figures
    # service -> records its consumers read per batch, on average (fixed costs per batch weigh more
    # when batches are small: a pipeline that keeps up reads small ones)
    records_per_batch: dict[str, float] | None = None


async def topic_figures(settings: ServiceSettings, n: int) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Per topic: what it holds per task (record keys and values; the broker adds ~70 bytes of framing
    to each), and when its first and last records were produced, in seconds after the first task's."""
    topics = settings.topics.all_topics(list(TEACHERS))
    sizes, ends = {}, {}
    snapshots = {topic: (await read_snapshot(settings, topic)).records for topic in topics}
    start = min(r.timestamp for r in snapshots[settings.topics.tasks])
    for topic, records in snapshots.items():
        if records:
            sizes[topic] = round(sum(len(r.key or b"") + len(r.value or b"") for r in records) / n, 1)
            stamps = [r.timestamp for r in records]
            ends[topic] = (round((min(stamps) - start) / 1000, 2), round((max(stamps) - start) / 1000, 2))
    return sizes, ends


async def drain(settings: ServiceSettings, groups: dict[str, str], n: int, timeout_s: float) -> int:
    """Wait until the editor has read ``n`` verdicts (every task judged and edited); returns the verdicts."""
    deadline = time.monotonic() + timeout_s
    verdicts_topic = settings.topics.verdicts
    while time.monotonic() < deadline:
        counts = await topic_counts(settings, [verdicts_topic])
        if counts[verdicts_topic] >= n:
            lag = await consumer_lag(settings, groups["editor"], [verdicts_topic])
            if lag[verdicts_topic] == 0:
                return counts[verdicts_topic]
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the pipeline did not finish {n} tasks within {timeout_s:.0f} s")


def start_profilers(pids: dict[str, int], folder: Path) -> list[subprocess.Popen]:
    """py-spy (``pip install py-spy``) sampling each process, as collapsed stacks in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen(["py-spy", "record", "--format", "raw", "--rate", "200", "--nonblocking", "--pid",
                              str(pid), "-o", str(folder / f"{name}.txt")], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for name, pid in pids.items() if name != "broker"]


def stop_profilers(profilers: list[subprocess.Popen]) -> None:
    for proc in profilers:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    for proc in profilers:
        proc.wait(timeout=60)


def top_frames(path: Path, limit: int = 12) -> list[tuple[str, float]]:
    """The functions a collapsed-stack profile spends most samples in, inclusive, as shares."""
    totals: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples += int(count)
        for frame in set(stack.split(";")):
            totals[frame] = totals.get(frame, 0) + int(count)
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])
    return [(frame, round(n / samples, 3)) for frame, n in ranked[:limit]] if samples else []


def replay_judge(state: stack.StackState, timeout_s: float) -> dict[str, float]:
    """``distillery replay`` under a new judge label, once the flow is done: every recorded candidate
    judged again (rules only) and the new verdicts through the editor. Timed from the replay judge
    holding its partitions until the editor has read the last verdict, as the CLI waits."""
    plan = replay.plan_replay(state, "bench-replay")
    proc = replay.start_replay_judge(state, plan)
    try:
        group = replay.wait_replay_ready(state, proc, plan)
        stack.wait_assigned(dataclasses.replace(state, processes=[proc]))
        editor = next(p for p in state.processes if p.name == "editor")
        watched = {"judge-replay": proc.pid, "editor": editor.pid}
        before = {name: cpu_seconds(pid) for name, pid in watched.items()}
        t0 = time.perf_counter()
        done = replay.wait_replay_done(state, proc, group, timeout_s)
        seconds = time.perf_counter() - t0
        after = {name: cpu_seconds(pid) for name, pid in watched.items()}
    finally:
        replay.stop_replay_judge(state, proc)
    return {"candidates": done.total, "seconds": round(seconds, 2), "candidates_per_s": round(done.total / seconds, 1),
            **{f"cpu_s_per_1k_{k}": round((after[k] - before[k]) / done.total * 1000, 3) for k in after}}


def run_distillery(n: int, batch: int, timeout_s: float, seed: int = 0, profile: Path | None = None,
                   latency_s: float = 0.0, with_replay: bool = False) -> Result:
    load = workload(n, seed, latency_s=latency_s)
    with tempfile.TemporaryDirectory(prefix="distillery-bench-") as tmp:
        folder = Path(tmp)
        spec_path = write_spec(folder, load, batch, paced=latency_s > 0)
        broker = EmbeddedBroker(log_path=folder / "broker.log")
        broker.start(detach=True)
        processes = []
        try:
            prefix = "bench"
            env = stack.service_env(broker.bootstrap, prefix, spec_path, folder)
            started = time.perf_counter()
            processes = [stack.start_process(s, f"distillery_{s}", env, folder) for s in SERVICES]
            processes += [stack.start_process(f"teacher-{t}", "distillery_teacher", {**env, "DISTILLERY_TEACHER_ID": t},
                                              folder) for t in TEACHERS]
            state = stack.StackState(str(folder), broker.bootstrap, prefix, str(spec_path), None, processes)
            stack.wait_ready(state, timeout_s=300)
            stack.wait_assigned(state)
            startup = time.perf_counter() - started
            settings = ServiceSettings.model_validate({"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                                                       "topic_prefix": prefix})
            watched = {p.name: p.pid for p in processes} | {"broker": broker.process.pid}
            before = {name: cpu_seconds(pid) for name, pid in watched.items()}
            profilers = start_profilers(watched, profile) if profile else []
            events = [TaskSubmitted(task_id=t["task_id"], task=new_task(UNIT, t["prompt"], reference=t["reference"]),
                                    produced_by="bench") for t in load.tasks]
            records = [(settings.topics.tasks, e.key, e.model_dump_json().encode()) for e in events]
            t0 = time.perf_counter()
            asyncio.run(produce_all(settings, records))
            verdicts = asyncio.run(drain(settings, {"editor": settings.group("editor")}, n, timeout_s))
            seconds = time.perf_counter() - t0
            after = {name: cpu_seconds(pid) for name, pid in watched.items()}
            rss = {name: round(peak_rss_mib(pid), 1) for name, pid in watched.items()}
            stop_profilers(profilers)
            per_batch = records_per_batch(processes)
            samples = asyncio.run(topic_counts(settings, [settings.topics.samples]))[settings.topics.samples]
            result = Result(
                tasks=n, seconds=round(seconds, 2), tasks_per_s=round(n / seconds, 1), startup_s=round(startup, 1),
                cpu_s_per_1k={k: round((after[k] - before[k]) / n * 1000, 3) for k in after},
                startup_cpu_s={k: round(v, 2) for k, v in before.items()}, peak_rss_mib=rss,
                verdicts=verdicts, samples=samples, teacher_latency_s=latency_s, records_per_batch=per_batch,
                **dict(zip(("bytes_per_task", "record_span_s"), asyncio.run(topic_figures(settings, n)))))
            if with_replay:
                result.replay = replay_judge(state, timeout_s)
            return result
        finally:
            for p in processes:
                stack.stop_process(p.pid, timeout_s=10)
            broker.stop()


def records_per_batch(processes: list[stack.ProcessInfo]) -> dict[str, float]:
    """Per service: valid records consumed over batches handled, from its /metrics."""
    out = {}
    for proc in processes:
        metrics = stack.scrape(proc) or {}
        consumed = sum(v for name, samples in metrics.items() if name.endswith("_events_consumed_total")
                       for _, v in samples)
        batches = sum(v for name, samples in metrics.items() if name.endswith("_batch_seconds_count")
                      for _, v in samples)
        out[proc.name] = round(consumed / batches, 1) if batches else 0.0
    return out


def print_result(result: Result) -> None:
    paced = f", teachers paced at {result.teacher_latency_s * 1000:g} ms a request" if result.teacher_latency_s else ""
    print(f"distillery: {result.tasks} tasks in {result.seconds} s = {result.tasks_per_s} tasks/s "
          f"(services ready in {result.startup_s} s{paced}); {result.verdicts} verdicts, {result.samples} sample records")
    per_batch = result.records_per_batch or {}
    print(f"{'service':<16}{'CPU s / 1k tasks':>18}{'startup CPU s':>15}{'peak RSS MiB':>14}{'records/batch':>15}")
    for name in result.cpu_s_per_1k:
        print(f"{name:<16}{result.cpu_s_per_1k[name]:>18}{result.startup_cpu_s[name]:>15}{result.peak_rss_mib[name]:>14}"
              f"{per_batch.get(name, ''):>15}")
    if result.bytes_per_task:
        total = sum(result.bytes_per_task.values())
        print(f"broker bytes per task (keys + values): {total:,.0f}; "
              + ", ".join(f"{t.split('.', 1)[1]} {b:,.0f}" for t, b in result.bytes_per_task.items()))
    if result.replay:
        r = result.replay
        print(f"judge replay (rules only) of {r['candidates']:,} candidates through judge and editor: {r['seconds']} s = "
              f"{r['candidates_per_s']:,} candidates/s; CPU s / 1k candidates: judge-replay "
              f"{r['cpu_s_per_1k_judge-replay']}, editor {r['cpu_s_per_1k_editor']}")
    if result.record_span_s:
        print("records produced, first to last, s after the first task: "
              + ", ".join(f"{t.split('.', 1)[1]} {a}-{b}" for t, (a, b) in result.record_span_s.items()))


def distilabel_workload(load: Workload, path: Path) -> Path:
    """The workload as bench/distilabel_flow.py reads it: the tasks and each teacher's text by task id."""
    tasks = [{key: task[key] for key in ("task_id", "prompt", "reference")} for task in load.tasks]
    teachers = {name: {row["task_id"]: row["steps"][0]["text"] for row in rows} for name, rows in load.recordings.items()}
    path.write_text(json.dumps({"tasks": tasks, "teachers": teachers}))
    return path


def distilabel_venv_missing(python: Path) -> str | None:
    """One line saying what to run when distilabel's venv is not there; None when it is."""
    if python.is_file():
        return None
    venv = python.parent.parent
    shown = venv.relative_to(ROOT) if venv.is_relative_to(ROOT) else venv
    return f"distilabel's venv {shown} is missing (no {python}): run 'make bench-distilabel' first"


def run_distilabel(python: Path, workload_path: Path, batch: int | None, timeout_s: float) -> dict:
    """One run of bench/distilabel_flow.py; its JSON line (rows, kept, seconds, rows_per_s, ...)."""
    command = [str(python), str(DISTILABEL_FLOW), str(workload_path)] + (["--batch-size", str(batch)] if batch else [])
    # its own session: on a timeout the whole group goes, distilabel's step processes with it
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise SystemExit(f"distilabel did not finish within {timeout_s:.0f} s (batch {batch or 'default'})") from None
    if proc.returncode != 0:
        raise SystemExit(f"distilabel failed (batch {batch or 'default'}, exit {proc.returncode}):\n"
                         + "\n".join(err.splitlines()[-20:]))
    return json.loads(out.strip().splitlines()[-1])


def against_distilabel(result: Result, python: Path, timeout_s: float, seed: int = 0) -> list[dict]:
    """distilabel on the same workload at each of DISTILABEL_BATCHES, with Distillery's ratio to each."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="distilabel-workload-") as tmp:
        path = distilabel_workload(workload(result.tasks, seed), Path(tmp) / "workload.json")
        for batch in DISTILABEL_BATCHES:
            run = run_distilabel(python, path, batch, timeout_s)
            run["distillery_ratio"] = round(result.tasks_per_s / run["rows_per_s"], 2)
            run["distillery_ratio_startup_excluded"] = round(result.tasks_per_s / run["flow_rows_per_s"], 2)
            runs.append(run)
    return runs


def print_comparison(result: Result, batch: int, runs: list[dict]) -> None:
    print(f"\n{'system':<12}{'batch':>9}{'tasks or rows/s':>17}{'start-up excl.':>16}{'Distillery ratio':>18}"
          f"{'start-up excl.':>16}")
    print(f"{'distillery':<12}{batch:>9}{'':>17}{result.tasks_per_s:>16}{'':>18}{'':>16}")
    for run in runs:
        print(f"{'distilabel':<12}{run['batch_size']:>9}{run['rows_per_s']:>17}{run['flow_rows_per_s']:>16}"
              f"{run['distillery_ratio']:>18}{run['distillery_ratio_startup_excluded']:>16}")
    print("tasks or rows/s: over distilabel's pipeline.run(), its start-up (step processes) and Distiset included; "
          "start-up excl.: from its first batch to its last row, as Distillery's tasks/s. "
          "Ratio: Distillery tasks/s / distilabel rows/s.")
    kept = ", ".join(f"{run['kept']} (batch {run['batch_size']})" for run in runs)
    print(f"distilabel {runs[0]['distilabel']} kept {kept} of {result.tasks} rows after MinHash; distillery's "
          f"{result.samples} sample records count one per curated pool and pathway (contrastive included), not tasks")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=256, help="the replay teachers' batch size")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--replay", action="store_true",
                        help="then replay every candidate under a new judge label (distillery replay) and time it")
    parser.add_argument("--teacher-latency", type=float, default=0.0,
                        help="seconds each replay teacher sleeps per request, one request after another "
                             "(replay_pace): a teacher serving 1/latency requests/s")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--profile", type=Path, help="py-spy every service over the measured interval into this folder")
    parser.add_argument("--against-distilabel", action="store_true",
                        help="also run the flow in distilabel 1.5.3 (make bench-distilabel) and compare")
    parser.add_argument("--distilabel-python", type=Path, default=DISTILABEL_PYTHON,
                        help="distilabel's venv python (default: .venv-distilabel/bin/python in the repo root)")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.teacher_latency < 0:
        parser.error("--tasks must be at least 1 and --teacher-latency at least 0")
    if args.profile and not shutil.which("py-spy"):
        parser.error("--profile needs py-spy on PATH (pip install py-spy)")
    python = args.distilabel_python.absolute()
    missing = distilabel_venv_missing(python) if args.against_distilabel else None
    if missing:
        print(missing, file=sys.stderr)
        return 2
    result = run_distillery(args.tasks, args.batch, args.timeout, profile=args.profile, latency_s=args.teacher_latency,
                            with_replay=args.replay)
    print_result(result)
    for path in sorted(args.profile.glob("*.txt")) if args.profile else []:
        print(f"\n{path.stem}: where the samples are (inclusive)")
        for frame, share in top_frames(path):
            print(f"  {share:6.1%}  {frame[:150]}")
    runs = against_distilabel(result, python, args.timeout) if args.against_distilabel else []
    if runs:
        print_comparison(result, args.batch, runs)
    if args.json:
        figures = {"distillery": asdict(result)} | ({"distilabel": runs} if runs else {})
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
