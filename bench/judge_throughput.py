"""Judge throughput and the judge's own consistency, with rules only and with the model scorers.

    python bench/judge_throughput.py [--tasks 120] [--llm-tasks 8] [--llm qwen2.5-coder-0.5b-instruct]

Candidates are built from the example workload (tool_call, tool_boundary, math_steps): per task
one right answer (from the task's reference) and one wrong one (a changed number or argument),
so every verdict exercises the floor, the reference check, the relation and the ranking.
Rows (candidates per second through ``judge_batch``, the code the judge service runs, models
loaded and warmed up beforehand; ratio against the rules-only row of the same run):
  rules                   rule floor + reference (the default dimensions)
  rules + MiniLM          plus an embedding-similarity dimension (all-MiniLM-L6-v2, CPU)
  rules + LLM judge       plus an llm dimension scored by --llm (greedy, batch 8), on --llm-tasks
Then the LLM judge's self-checks on the same right/wrong pairs: position-swap agreement (the
pair asked in both orders), the share of right answers it scores above their wrong twin, and
the share of unreadable outputs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import yaml

from distillery.contracts import ids
from distillery.contracts.events import CandidateGenerated, Task, Trace
from distillery.contracts.spec import (
    judge_version,
    parse_spec,
)
from distillery_cli.workload import build_workload
from distillery_judge.logic import TaskInput, judge_batch
from distillery_judge.scorers import PairRequest, build_scorers, reference_text
from distillery_judge.selfcheck import perturb

ROOT = Path(__file__).resolve().parents[1]


def candidate(task: Task, text: str, teacher: str) -> CandidateGenerated:
    request_id = ids.request_id_for(task.task_id, teacher)
    return CandidateGenerated(
        candidate_id=ids.candidate_id_for(request_id), request_id=request_id, task=task, teacher_id=teacher,
        strategy="competition", route_reason="bench", expected_candidates=2, text=text, produced_by="bench",
        trace=Trace(task_id=task.task_id, causation_id=request_id),
    )


def right_and_wrong(task: Task) -> tuple[str, str]:
    right = reference_text(task) or ""
    if task.reference and task.reference.no_call:
        return right, json.dumps({"name": task.tools[0].name, "arguments": {}})
    form = "tool_call" if task.reference and task.reference.tool_calls else "final_answer"
    return right, perturb(right, form) or right + " (changed)"


def inputs_for(tasks: list[Task]) -> list[TaskInput]:
    out = []
    for task in tasks:
        right, wrong = right_and_wrong(task)
        cands = [candidate(task, right, "teacher-a"), candidate(task, wrong, "teacher-b")]
        out.append(TaskInput(task, [(c, None) for c in cands], 2))
    return out


def spec_with(base: dict, extra_dim: dict | None, llm: str | None):
    data = copy.deepcopy(base)
    if llm:
        data["teachers"]["grader"] = {"backend": "transformers", "model": llm, "batch_size": 8}
        data["judge"] = {"model": "grader", "max_new_tokens": 24, "retries": 1}
    if extra_dim:
        for unit in data["units"].values():
            unit["judge"] = {"dimensions": [{"name": "rules", "scorer": "rules", "weight": 0.4},
                                            {"name": "reference", "scorer": "reference", "weight": 0.6},
                                            extra_dim]}
    return parse_spec(data)


def throughput(spec, inputs: list[TaskInput]) -> tuple[float, list]:
    scorers = build_scorers(spec)
    version = judge_version(spec)
    judge_batch(inputs[:2], spec, version, "bench", scorers)  # load models, warm up
    started = time.perf_counter()
    verdicts = judge_batch(inputs, spec, version, "bench", scorers)
    seconds = time.perf_counter() - started
    return sum(len(i.candidates) for i in inputs) / seconds, verdicts


def self_checks(spec, inputs: list[TaskInput]) -> dict[str, float]:
    scorers = build_scorers(spec)
    pairs = []
    for ti in inputs:
        (a, _), (b, _) = ti.candidates
        pairs += [PairRequest(f"p{a.candidate_id}", ti.task, a.text, b.text),
                  PairRequest(f"p{a.candidate_id}:s", ti.task, b.text, a.text)]
    choices = scorers.model.compare(pairs)
    agree = [fwd is not None and {"A": "B", "B": "A", "tie": "tie"}.get(bwd or "") == fwd
             for fwd, bwd in zip(choices[::2], choices[1::2])]
    prefers_right = [fwd == "A" and bwd == "B" for fwd, bwd in zip(choices[::2], choices[1::2])]
    return {"position_swap_agreement": sum(agree) / len(agree),
            "picks_right_in_both_orders": sum(prefers_right) / len(prefers_right),
            "first_answer_chosen": sum(c == "A" for c in choices) / len(choices)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=120)
    parser.add_argument("--llm-tasks", type=int, default=8)
    parser.add_argument("--llm", default="qwen2.5-coder-0.5b-instruct")
    args = parser.parse_args()
    base = yaml.safe_load((ROOT / "examples" / "spec.yaml").read_text())
    lines = build_workload(per_unit=-(-args.tasks // 3), eval_per_unit=0)[: args.tasks]
    tasks = [Task.model_validate(line) for line in lines]
    inputs = inputs_for(tasks)

    rows = []
    rules_rate, verdicts = throughput(spec_with(base, None, None), inputs)
    rows.append(("rules", len(inputs) * 2, rules_rate))
    rate, _ = throughput(spec_with(base, {"name": "similarity", "scorer": "embedding", "weight": 0.5}, None), inputs)
    rows.append(("rules + MiniLM", len(inputs) * 2, rate))
    llm_spec = spec_with(base, {"name": "correctness", "scorer": "llm", "weight": 1.0,
                                "description": "the answer is right for the task"}, args.llm)
    few = inputs[: args.llm_tasks]
    rate, llm_verdicts = throughput(llm_spec, few)
    rows.append((f"rules + LLM judge ({args.llm})", len(few) * 2, rate))

    print(f"judge throughput: {len(inputs)} tasks, 2 candidates each; torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(f"{'scorers':44} {'cands':>6} {'cands/s':>10} {'vs rules':>9}")
    for name, n, rate in rows:
        print(f"{name:44} {n:6d} {rate:10.2f} {rate / rules_rate:9.3g}")
    pools = [jc.pool for v in verdicts for jc in v.candidates]
    print("rules-only pools:", {p: pools.count(p) for p in sorted(set(pools))})
    unreadable = sum(jc.pool == "failure" and "judge_malformed" in jc.reasons for v in llm_verdicts for jc in v.candidates)
    print(f"LLM judge unreadable outputs: {unreadable}/{len(few) * 2}")
    checks = self_checks(llm_spec, few)
    print(f"LLM judge self-checks on {len(few)} right/wrong pairs: " + ", ".join(f"{k} {v:.2f}" for k, v in checks.items()))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
