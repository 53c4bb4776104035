"""Issue 17's flow in distilabel 1.5.3, for ``bench/pipeline_throughput.py --against-distilabel``.

    .venv-distilabel/bin/python bench/distilabel_flow.py WORKLOAD.json [--batch-size 500]

Run by distilabel's own venv (``make bench-distilabel``): it needs the stdlib and distilabel only,
never ``distillery``. WORKLOAD.json holds ``{"tasks": [{"task_id", "prompt", "reference"}],
"teachers": {"alpha": {task_id: text}, "beta": {task_id: text}}}``. The mapping to Distillery's flow:

* tasks produced onto the tasks topic -> ``LoadDataFromDicts`` (one row per task);
* router, competition of two replay teachers -> ``alpha`` and ``beta``, two ``Teacher`` stub steps
  that run in parallel (each in its own process, both fed every batch of the loader) and answer with
  the recorded text (a dict lookup by task id, loaded from the workload file in ``load()``, as
  Distillery's replay teacher reads its file), then ``CombineOutputs`` puts both answers on one row;
* judge with the rule floor -> ``Judge``: a candidate passes when it has at most 400 characters and
  ends with a line ``#### <number>`` whose number equals the task's reference answer;
* the editor's pick of the best passing candidate -> ``KeepBest`` (alpha's when it passes, else
  beta's; a task with none passing is dropped), which writes ``text`` = prompt + answer, the text
  Distillery's editor compares for near-duplicates;
* the editor's MinHash at 0.85 -> ``MinHashDedup(tokenizer="ngrams", threshold=0.85)`` (character
  5-grams: the default ``words`` tokenizer needs an nltk download). It flags rows; the rows not
  flagged as duplicates are kept after the run, as distilabel's docs do (``kept``).

It prints one JSON line: rows (tasks), kept, seconds (``pipeline.run()`` from call to return:
distilabel's start-up of the step processes and writing the Distiset are included), rows_per_s
(rows / seconds), and, start-up excluded, flow_s (from the loader's first batch to the last row
out of the dedup step) with flow_rows_per_s. ``--batch-size`` omitted is distilabel's defaults
(50 rows a batch for the loader and every step); given, it is the loader's and every step's.
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

# distilabel's cache and the datasets cache it loads the Distiset through: a fresh temp folder
# (removed by main()), set before `datasets` is imported, which reads it once
os.environ["DISTILABEL_CACHE_DIR"] = tempfile.mkdtemp(prefix="distilabel-bench-")
os.environ["HF_DATASETS_CACHE"] = os.path.join(os.environ["DISTILABEL_CACHE_DIR"], "datasets")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import distilabel
from distilabel.pipeline import Pipeline
from distilabel.steps import CombineOutputs, LoadDataFromDicts, MinHashDedup, Step, StepInput, step
from pydantic import PrivateAttr

MAX_CHARS = 400
THRESHOLD = 0.85
TEACHERS = ("alpha", "beta")
FINAL = re.compile(r"^####\s*(-?\d[\d,]*(?:\.\d+)?)\s*$")


def passes(text: str, reference: str) -> bool:
    """The rule floor: at most MAX_CHARS, last line ``#### <number>`` equal to the reference."""
    lines = text.strip().splitlines()
    found = FINAL.match(lines[-1].strip()) if lines and len(text) <= MAX_CHARS else None
    return found is not None and float(found.group(1).replace(",", "")) == float(reference)


def reference_of(task: dict) -> str:
    ref = task["reference"]
    return str(ref["answer"] if isinstance(ref, dict) else ref)


# Steps are pickled into distilabel's step processes: they live at module level.

class Stamped(LoadDataFromDicts):
    """LoadDataFromDicts that stamps each row with the wall time its batch left the loader."""

    def process(self, offset: int = 0):
        for batch, last in super().process(offset):
            now = time.time()
            yield [{**row, "loaded_at": now} for row in batch], last


class Teacher(Step):
    """An instant stub teacher: the recorded answer of ``teacher`` for each task (a dict lookup)."""

    teacher: str
    workload: str
    _answers: dict = PrivateAttr(default_factory=dict)

    def load(self) -> None:
        super().load()
        self._answers = json.loads(Path(self.workload).read_text())["teachers"][self.teacher]

    @property
    def inputs(self) -> list[str]:
        return ["task_id"]

    @property
    def outputs(self) -> list[str]:
        return [self.teacher]

    def process(self, inputs: StepInput):
        yield [{**row, self.teacher: self._answers[row["task_id"]]} for row in inputs]


@step(inputs=["reference", *TEACHERS], outputs=[f"{t}_pass" for t in TEACHERS])
def Judge(inputs: StepInput):
    for row in inputs:
        for teacher in TEACHERS:
            row[f"{teacher}_pass"] = passes(row[teacher], row["reference"])
    yield inputs


@step(inputs=["prompt", *TEACHERS, *(f"{t}_pass" for t in TEACHERS)], outputs=["teacher", "text"])
def KeepBest(inputs: StepInput):
    """The first passing candidate in teacher order (both stubs score alike on the rule floor)."""
    kept = []
    for row in inputs:
        teacher = next((t for t in TEACHERS if row[f"{t}_pass"]), None)
        if teacher:
            kept.append({**row, "teacher": teacher, "text": f"{row['prompt']}\n{row[teacher]}"})
    yield kept


class Dedup(MinHashDedup):
    """MinHashDedup that stamps each row with the wall time it was flagged."""

    def process(self, inputs: StepInput):
        for rows in super().process(inputs):
            now = time.time()
            yield [{**row, "done_at": now} for row in rows]


def build(workload: Path, tasks: list[dict], batch_size: int | None) -> Pipeline:
    rows = [{"task_id": t["task_id"], "prompt": t["prompt"], "reference": reference_of(t)} for t in tasks]
    sized = {"input_batch_size": batch_size} if batch_size else {}
    with Pipeline(name="distillery-issue-17", cache_dir=os.environ["DISTILABEL_CACHE_DIR"]) as pipeline:
        load = Stamped(data=rows, **({"batch_size": batch_size} if batch_size else {}))
        teachers = [Teacher(name=t, teacher=t, workload=str(workload), **sized) for t in TEACHERS]
        combine = CombineOutputs(**sized)
        dedup = Dedup(tokenizer="ngrams", threshold=THRESHOLD, storage="dict", **sized)
        load >> teachers >> combine >> Judge(**sized) >> KeepBest(**sized) >> dedup
    return pipeline


def run(workload: Path, batch_size: int | None) -> dict:
    data = json.loads(workload.read_text())
    pipeline = build(workload, data["tasks"], batch_size)
    t0 = time.time()
    distiset = pipeline.run(use_cache=False)
    seconds = time.time() - t0
    out = distiset["default"]["train"].to_list()
    check(out, data)
    flow = max(r["done_at"] for r in out) - min(r["loaded_at"] for r in out)
    n = len(data["tasks"])
    return {"rows": n, "kept": sum(r["keep_row_after_minhash_filtering"] for r in out),
            "seconds": round(seconds, 2), "rows_per_s": round(n / seconds, 1),
            "flow_s": round(flow, 2), "flow_rows_per_s": round(n / flow, 1),
            "batch_size": batch_size or "default", "distilabel": distilabel.__version__}


def check(out: list[dict], data: dict) -> None:
    """One row out per task with a passing candidate (none lost, none doubled), as the rule floor says."""
    answers = data["teachers"]
    expected = {t["task_id"] for t in data["tasks"]
                if any(passes(answers[name][t["task_id"]], reference_of(t)) for name in TEACHERS)}
    got = [r["task_id"] for r in out]
    if len(got) != len(set(got)) or set(got) != expected:
        raise SystemExit(f"distilabel's output has {len(got)} rows ({len(set(got))} tasks), "
                         f"expected one for each of {len(expected)} tasks with a passing candidate")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", type=Path)
    parser.add_argument("--batch-size", type=int, help="every step's batch size (omitted: distilabel's defaults)")
    args = parser.parse_args(argv)
    # distilabel logs to stdout (rich); keep stdout for the one JSON line, send the rest to stderr
    result_out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        result = run(args.workload.resolve(), args.batch_size)
    finally:
        shutil.rmtree(os.environ["DISTILABEL_CACHE_DIR"], ignore_errors=True)
    print(json.dumps(result), file=result_out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
