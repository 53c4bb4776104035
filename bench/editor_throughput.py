"""Editor throughput: verdicts in, samples out, with and without near-duplicates and clustering.

    python bench/editor_throughput.py [--tasks 600] [--batch 64]

The verdicts are built from the example workload (tool_call, tool_boundary, math_steps), one
accepted candidate each (the reference answer, with a few lines of steps for math), and go
through ``governance.on_verdict``: the code the editor service runs per verdict (curation on
every pathway, compression, token counts, tiers, exact dedup, then the optional checks). Rows,
each on a fresh editor state over the same verdicts (models loaded and warmed up first):
  exact dedup only              near-duplicates off, clustering off (the baseline)
  + MinHash near-duplicates     near_duplicate_threshold 0.85
  + MiniLM clustering           cluster_similarity 0.5, prompts embedded per batch of --batch verdicts
                                (as the service does per consumer batch)
Samples per second and the ratio against the baseline of the same run.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import yaml

from distillery.contracts import ids
from distillery.contracts.events import CandidatesJudged, JudgedCandidate, SourceOffset, Task, Trace
from distillery.contracts.spec import parse_spec
from distillery.domain.embeddings import Embedder, EmbeddingCache
from distillery.domain.tokens import count_tokens
from distillery_cli.workload import build_workload
from distillery_editor.governance import on_verdict
from distillery_editor.state import EditorState
from distillery_judge.scorers import reference_text

ROOT = Path(__file__).resolve().parents[1]


def accepted(task: Task) -> JudgedCandidate:
    answer = reference_text(task) or ""
    pool = "refusal" if task.reference and task.reference.no_call else "train"
    text = answer
    final = None
    if task.reference and task.reference.answer is not None:
        final = task.reference.answer
        text = f"Sure! Let's work it out.\nRead the numbers from the question.\nCombine them step by step.\n#### {final}"
    return JudgedCandidate(candidate_id=ids.content_id("cand", task.task_id), teacher_id="qwen-coder", text=text,
                           pool=pool, rank=1, score=1.0, final=final, reasons=["rules_passed", "reference_match"])


def verdicts(tasks: list[Task]) -> list[CandidatesJudged]:
    return [CandidatesJudged(verdict_id=ids.verdict_id_for(t.task_id, "bench"), task=t, judge_version="bench",
                             candidates=[accepted(t)], produced_by="bench", trace=Trace(task_id=t.task_id))
            for t in tasks]


def spec_with(base: dict, near: float, cluster: float):
    data = copy.deepcopy(base)
    for unit in data["units"].values():
        unit["editor"] = {"near_duplicate_threshold": near, "cluster_similarity": cluster}
    return parse_spec(data)


def run(spec, items: list[CandidatesJudged], embed, batch: int) -> tuple[float, int]:
    cache = EmbeddingCache(embed) if embed is not None else None
    state = EditorState("bench.verdicts", spec, cache)
    samples = 0
    started = time.perf_counter()
    for offset, verdict in enumerate(items):
        if cache is not None and offset % batch == 0:
            cache.prefetch([v.task.prompt for v in items[offset:offset + batch]])
        outcome = on_verdict(state, verdict, SourceOffset(topic="bench.verdicts", partition=0, offset=offset),
                             spec, "bench")
        state.commit()
        samples += len(outcome.samples)
    return time.perf_counter() - started, samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--batch", type=int, default=64, help="verdicts per consumer batch")
    args = parser.parse_args()
    base = yaml.safe_load((ROOT / "examples" / "spec.yaml").read_text())
    lines = build_workload(per_unit=-(-args.tasks // 3), eval_per_unit=0, units=["tool_call", "tool_boundary", "math_steps"])
    items = verdicts([Task.model_validate(line) for line in lines[: args.tasks]])
    embedder = Embedder()
    embedder.embed(["warm up"])
    count_tokens("warm up")
    rows = [("exact dedup only", spec_with(base, 0, 0), None),
            ("+ MinHash near-duplicates (0.85)", spec_with(base, 0.85, 0), None),
            ("+ MiniLM clustering (0.5)", spec_with(base, 0.85, 0.5), embedder.embed)]
    print(f"editor throughput: {len(items)} verdicts, one accepted candidate each; torch threads default")
    print(f"{'checks':34} {'samples':>8} {'seconds':>8} {'samples/s':>10} {'vs exact':>9}")
    baseline = None
    for name, spec, embed in rows:
        seconds, samples = run(spec, items, embed, args.batch)
        rate = samples / seconds
        baseline = baseline or rate
        print(f"{name:34} {samples:8d} {seconds:8.2f} {rate:10.1f} {rate / baseline:9.3f}")


if __name__ == "__main__":
    main()
