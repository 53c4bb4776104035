"""Record teachers once over a fixed workload, so every later step can replay them.

    python -m distillery_teacher.record --spec experiments/tool-calling/record.yaml \\
        --workload experiments/tool-calling/workload.jsonl --out experiments/tool-calling/recording.jsonl

Each task goes to the teachers its unit routes to (``single``: the first; every other strategy:
all of them), through the teacher service's own :func:`~distillery_teacher.logic.answer`, so tool
trajectories run their act-observe loop exactly as in the pipeline. Every model turn is written as
one step of the row for (task, teacher): text, usage, latency, confidence, finish reason and, for a
teacher with ``logprobs: k``, its top-k token logprobs. The replay backend serves those rows back
(:class:`distillery.domain.backends.ReplayBackend`), and replaying yields the same candidates.

Resumable: rows already in ``--out`` are kept and their (task, teacher) pairs skipped, so an
interrupted recording goes on where it stopped. Any backend works: local transformers, or an
OpenAI-compatible server (vLLM on a GPU) declared in the spec.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distillery.contracts import ids
from distillery.contracts.events import CandidateGenerated, GenerationRequested, Task
from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import CapabilitySpec, load_spec
from distillery.domain.backends import Backend, generation_row, make_backend
from distillery.domain.generate import Generation
from distillery.domain.recording import read_tasks, recorded_pairs, recorded_teachers
from distillery_teacher.logic import answer

PRODUCED_BY = "teacher@record"


class RecordingBackend:
    """Passes generations through and keeps each one under its request key (``<task>#<step>``)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.turns: dict[str, Generation] = {}

    def generate(self, requests: list[tuple[str, str, str]], max_new_tokens: int) -> list[Generation]:
        gens = self.inner.generate(requests, max_new_tokens)
        for (key, _, _), gen in zip(requests, gens, strict=True):
            self.turns[key] = gen
        return gens

    def steps(self, task_id: str) -> list[Generation]:
        """The turns of one task in step order (step 0 is keyed by the bare task id)."""
        out, step = [], 0
        while (key := task_id if step == 0 else f"{task_id}#{step}") in self.turns:
            out.append(self.turns.pop(key))
            step += 1
        return out


def request_for(task: Task, teacher_id: str, spec: CapabilitySpec) -> GenerationRequested:
    """The first-attempt request the router would send (same deterministic ids)."""
    unit = spec.units[task.unit]
    return GenerationRequested(
        request_id=ids.request_id_for(task.task_id, teacher_id), task=task, teacher_id=teacher_id,
        strategy=unit.routing.strategy, route_reason=f"recording of unit '{task.unit}'",
        expected_candidates=len(recorded_teachers(task.unit, unit)),
        max_new_tokens=unit.routing.max_new_tokens or spec.teachers[teacher_id].max_new_tokens,
        produced_by=PRODUCED_BY,
    )


def record_batch(requests: list[GenerationRequested], backend: Backend, spec: CapabilitySpec, teacher_id: str,
                 ) -> tuple[list[dict], list[CandidateGenerated]]:
    """Answer ``requests`` through the teacher logic; the rows to write and the candidates made."""
    recorder = RecordingBackend(backend)
    candidates = answer(requests, recorder, spec, spec.teachers[teacher_id], PRODUCED_BY)
    rows = []
    for request in requests:
        steps = recorder.steps(request.task.task_id)
        rows.append({"task_id": request.task.task_id, "teacher_id": teacher_id, "unit": request.task.unit,
                     "split": request.task.split, "steps": [generation_row(g) for g in steps]})
    return rows, candidates


def record(spec: CapabilitySpec, tasks: list[Task], out: Path, teachers: list[str] | None = None,
           chunk: int = 16, device: str = "cpu", progress=None) -> list[CandidateGenerated]:
    """Record every (task, routed teacher) pair not yet in ``out``; returns the candidates made."""
    unknown = sorted({t.unit for t in tasks} - set(spec.units))
    if unknown:
        raise ConfigError(f"the workload has unit(s) {unknown} that the spec does not declare")
    done = recorded_pairs(out)
    todo: dict[str, list[Task]] = {}
    for task in tasks:
        for teacher_id in recorded_teachers(task.unit, spec.units[task.unit]):
            if (teachers is None or teacher_id in teachers) and (task.task_id, teacher_id) not in done:
                todo.setdefault(teacher_id, []).append(task)
    out.parent.mkdir(parents=True, exist_ok=True)
    made: list[CandidateGenerated] = []
    with out.open("a") as sink:
        for teacher_id, mine in todo.items():
            backend = make_backend(spec.teachers[teacher_id], teacher_id, device)
            for start in range(0, len(mine), chunk):
                requests = [request_for(t, teacher_id, spec) for t in mine[start:start + chunk]]
                rows, candidates = record_batch(requests, backend, spec, teacher_id)
                sink.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
                sink.flush()  # an interrupted recording keeps every finished batch
                made += candidates
                if progress is not None:
                    progress(teacher_id, min(start + chunk, len(mine)), len(mine))
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, type=Path, help="capability spec whose teachers answer")
    parser.add_argument("--workload", required=True, type=Path, help="tasks, one JSON object per line")
    parser.add_argument("--out", required=True, type=Path, help="recording (JSONL); appended to, resumable")
    parser.add_argument("--teachers", default=None, help="comma-separated teacher ids (default: all routed)")
    parser.add_argument("--chunk", type=int, default=16, help="requests per generate call and per write")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        spec = load_spec(args.spec)
        tasks = read_tasks(args.workload)
        teachers = [t.strip() for t in args.teachers.split(",")] if args.teachers else None
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
            bars: dict[str, int] = {}

            def progress(teacher_id: str, done: int, total: int) -> None:
                if teacher_id not in bars:
                    bars[teacher_id] = bar.add_task(f"recording {teacher_id}", total=total)
                bar.update(bars[teacher_id], completed=done)

            made = record(spec, tasks, args.out, teachers, args.chunk, args.device, progress)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"recorded {len(made)} candidates into {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
