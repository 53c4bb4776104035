"""Teacher backend throughput: transformers in-process, openai against a local server, replay.

    python bench/teacher_throughput.py [--prompts 16] [--max-new-tokens 32] [--threads 2]

All three answer the same prompts (the first ``--prompts`` tasks of the example workload, each
with its unit's system prompt, as the teacher service builds them) with SmolLM2-135M, greedy,
at batch 1 and at batch 8:
  transformers  TransformersBackend, batch_size 1 / 8
  openai        OpenAIBackend (concurrency 1 / 8) against ``python -m distillery_teacher.openai_server``
                on loopback, which batches concurrent requests (--max-batch 8)
  replay        ReplayBackend serving the transformers batch-1 outputs, 1 / 8 requests per call
Each row gives completion tokens per second and candidates per second over the wall time of
all prompts, the ratio of its tokens/s to the transformers batch-1 baseline of the same run, and
how many texts are identical to that baseline's. Model loading and a warm-up pass over every
prompt (2 new tokens; the first pass over a prompt shape is several times slower) are excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from distillery.contracts.events import Task
from distillery.contracts.spec import TeacherSpec, load_spec
from distillery.domain.backends import ReplayBackend, TransformersBackend
from distillery.domain.models import SMOLLM2
from distillery.domain.openai_backend import OpenAIBackend
from distillery.domain.prompts import system_prompt
from distillery.runtime.service import free_port
from distillery_cli.workload import build_workload

ROOT = Path(__file__).resolve().parents[1]


def prompts(n: int) -> list[tuple[str, str, str]]:
    spec = load_spec(ROOT / "examples" / "spec.yaml")
    lines = build_workload(per_unit=-(-n // 3), eval_per_unit=0)[:n]
    tasks = [Task.model_validate(line) for line in lines]
    return [(t.task_id, system_prompt(spec.units[t.unit], t), t.prompt) for t in tasks]


def timed(generate, requests, per_call: int, max_new_tokens: int):
    started = time.perf_counter()
    gens = []
    for i in range(0, len(requests), per_call):
        gens += generate(requests[i : i + per_call], max_new_tokens)
    return gens, time.perf_counter() - started


def start_server(port: int, threads: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "distillery_teacher.openai_server", "--model", SMOLLM2,
                             "--port", str(port), "--threads", str(threads), "--max-batch", "8"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("openai_server did not start") from None
            time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads, both processes")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    requests = prompts(args.prompts)
    load_before = os.getloadavg()[0]
    budget = args.max_new_tokens
    rows = []  # (backend, batch, wall, gens)

    local = TransformersBackend(SMOLLM2, batch_size=1, temperature=0.0)
    local.load()
    local.generate(requests, 2)  # warm-up: the first pass over each prompt shape is several times slower
    for batch in (1, 8):
        local.batch_size = batch
        gens, wall = timed(local.generate, requests, len(requests), budget)
        rows.append(("transformers", batch, wall, gens))
    baseline = rows[0][3]

    port = free_port()
    server = start_server(port, args.threads)
    try:
        for batch in (1, 8):
            remote = OpenAIBackend(TeacherSpec(backend="openai", model=SMOLLM2, base_url=f"http://127.0.0.1:{port}/v1",
                                               concurrency=batch, timeout_s=300), "bench")
            try:
                remote.generate(requests if batch == 1 else requests[:1], 2)  # warm-up, as above (and the connection)
                gens, wall = timed(remote.generate, requests, len(requests), budget)
            finally:
                remote.close()
            if any(g.error for g in gens):
                raise SystemExit(f"openai backend failed: {next(g.error for g in gens if g.error)}")
            rows.append(("openai", batch, wall, gens))
    finally:
        server.terminate()
        server.wait(10)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "replay.jsonl")
        path.write_text("".join(json.dumps({"task_id": r[0], "text": g.text, "prompt_tokens": g.prompt_tokens,
                                            "completion_tokens": g.completion_tokens, "finish_reason": g.finish_reason,
                                            "confidence": g.mean_token_prob, "latency_s": g.seconds}) + "\n"
                                for r, g in zip(requests, baseline, strict=True)))
        replay = ReplayBackend(path, "bench")
        for batch in (1, 8):
            gens, wall = timed(replay.generate, requests, batch, budget)
            rows.append(("replay", batch, wall, gens))

    base_rate = sum(g.completion_tokens for g in baseline) / rows[0][2]
    print(f"\n{len(requests)} prompts, max_new_tokens {budget}, SmolLM2-135M fp32 greedy, "
          f"torch threads {args.threads}, {os.cpu_count()} CPUs, 1-min load average {load_before:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end "
          "(other processes on the machine skew the figures)\n")
    print("| backend | batch | wall s | completion tokens | tokens/s | candidates/s | tokens/s vs transformers b1 "
          "| same text as transformers b1 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, batch, wall, gens in rows:
        tokens = sum(g.completion_tokens for g in gens)
        same = sum(g.text == b.text for g, b in zip(gens, baseline, strict=True))
        print(f"| {name} | {batch} | {wall:.2f} | {tokens} | {tokens / wall:,.1f} | {len(gens) / wall:,.2f} "
              f"| {tokens / wall / base_rate:,.2f} | {same}/{len(gens)} |")


if __name__ == "__main__":
    main()
