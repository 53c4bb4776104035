"""``distillery experiment``: does curation beat naive distillation? One command, from a recording.

An experiment folder holds ``spec.yaml`` (units, teachers, students), ``workload.jsonl`` (the
fixed train and held-out tasks) and ``recording.jsonl`` (every routed teacher's answers to them,
written once by ``python -m distillery_teacher.record``). The command:

1. checks that the recording answers every (task, routed teacher) pair of the workload, and stops
   before anything runs when it does not, listing what is missing;
2. starts all six services on the embedded broker with each teacher's backend swapped for a replay
   of the recording (nothing else in the spec changes), submits the workload and follows it until
   every task is judged and curated;
3. asks the trainer for every variant x seed from one snapshot (``distillery attribute``) and
   waits for the evaluator's attribution table;
4. writes ``results.json`` beside the recording: the scores of every subject (each teacher, the
   student before training, each variant and seed) per unit, the differences against ``full``
   with their 95% paired bootstrap intervals, the command, the wall time and the date.

Resumable: artifacts live under ``--run-dir``; a rerun trains only the runs that have no artifact
yet (a run's id is the hash of its recipe, variant and data) and re-uses cached student outputs.
"""

from __future__ import annotations

import datetime
import json
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path
from statistics import mean

import typer
import yaml
from rich.table import Table

from distillery.contracts.events import EvaluationCompleted, Task
from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import CapabilitySpec, load_spec
from distillery.domain.recording import read_tasks, recorded_pairs, recorded_teachers
from distillery_cli import attribute, pipeline, session, stack
from distillery_cli.output import console

DEFAULT_VARIANTS = "full,naive,judge_filtered,no_boundary"
REFERENCE = "full"  # every difference is a variant's accuracy minus this one's


def select_tasks(tasks: list[Task], train_per_unit: int | None, eval_per_unit: int | None) -> list[Task]:
    """The first ``train_per_unit`` training and ``eval_per_unit`` held-out tasks of each unit, in
    workload order (None: all): a smaller experiment on the same recording."""
    limits = {"train": train_per_unit, "eval": eval_per_unit}
    taken: dict[tuple[str, str], int] = defaultdict(int)
    chosen = []
    for task in tasks:
        key = (task.unit, task.split)
        limit = limits.get(task.split)
        if limit is None or taken[key] < limit:
            taken[key] += 1
            chosen.append(task)
    return chosen


def missing_answers(spec: CapabilitySpec, tasks: list[Task], recording: Path) -> list[str]:
    """``task_id/teacher`` for every routed teacher's answer the recording lacks."""
    unknown = sorted({t.unit for t in tasks} - set(spec.units))
    if unknown:
        raise ConfigError(f"the workload has unit(s) {unknown} that the experiment's spec does not declare")
    if not recording.is_file():
        raise ConfigError(f"no recording at {recording}: record the teachers first (make record)")
    have = recorded_pairs(recording)
    return [f"{t.task_id}/{teacher}" for t in tasks for teacher in recorded_teachers(t.unit, spec.units[t.unit])
            if (t.task_id, teacher) not in have]


def replay_spec(spec_path: Path, recording: Path, out: Path) -> Path:
    """The experiment's spec with every teacher served from the recording (its price, token budget,
    logprobs and tokenizer family kept, so costs and logit distillation read as recorded)."""
    spec = load_spec(spec_path)
    data = yaml.safe_load(spec_path.read_text())
    for teacher_id, teacher in spec.teachers.items():
        data["teachers"][teacher_id] = {
            **teacher.model_dump(mode="json", exclude={"base_url", "api_key_env"}),
            "backend": "replay", "replay_path": str(recording.resolve()), "replay_pace": False,
            "tokenizer": teacher.tokenizer_family(),
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    load_spec(out)  # a spec we cannot load must fail here, not in six services
    return out


def results(members: list[EvaluationCompleted], rows: list[dict], command: str, wall_s: float) -> dict:
    """The experiment's raw results in the documented shape (README, experiments/README.md)."""
    scores: dict[tuple, dict] = {}
    for e in sorted(members, key=lambda m: (m.variant.name, m.variant.overrides.get("seed", 0))):
        seed = e.variant.overrides.get("seed")
        for s in e.scores:
            if s.subject.startswith("teacher:"):
                key, row_seed = (s.unit, s.subject), None  # the same recorded answers in every run
            elif s.subject == "student:before":
                key, row_seed = (s.unit, s.subject, seed), seed
            else:
                key, row_seed = (s.unit, f"variant:{e.variant.name}", seed), seed
            row = {"unit": s.unit, "subject": key[1], "seed": row_seed, "accuracy": s.accuracy, "n": s.n}
            if s.unanswered:
                row["unanswered"] = s.unanswered
            scores.setdefault(key, row)
    samples = {r["variant"]: r["samples"] for r in rows if r["unit"] == "all"}
    return {
        "scores": sorted(scores.values(), key=lambda r: (r["unit"], r["subject"], r["seed"] or 0)),
        "differences": [{"unit": r["unit"], "variant": r["variant"], "against": REFERENCE,
                         "diff": r["diff"], "lo": r["ci_low"], "hi": r["ci_high"]}
                        for r in rows if r["variant"] != REFERENCE],
        "samples_per_run": samples,
        "command": command,
        "wall_s": round(wall_s, 1),
        "date": datetime.date.today().isoformat(),
    }


def print_results(res: dict) -> None:
    """Per unit: the student before, each variant (mean over seeds, diff vs full with its interval), each teacher."""
    by: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in res["scores"]:
        by[(row["unit"], row["subject"])].append(row["accuracy"])
    diffs = {(d["unit"], d["variant"]): d for d in res["differences"]}
    subjects = sorted({s for _, s in by}, key=lambda s: (not s.startswith("student"), not s.startswith("variant"), s))
    table = Table("unit", *[s.replace("variant:", "").replace("student:", "student ").replace("teacher:", "")
                            for s in subjects], title="held-out accuracy (mean over seeds; diff vs full [95% CI])")
    for unit in sorted({u for u, _ in by}):
        cells = []
        for subject in subjects:
            values = by.get((unit, subject))
            cell = "-" if not values else f"{mean(values):.2f}"
            d = diffs.get((unit, subject.removeprefix("variant:")))
            if values and d:
                cell += f" ({d['diff']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}])"
            cells.append(cell)
        table.add_row(unit, *cells)
    console.print(table)


def plot_results(res: dict, path: Path) -> Path:
    """Bars per unit: the student before, each variant (mean over seeds, the seeds as dots) and each
    teacher, so the whole experiment reads at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in res["scores"]:
        by[(row["unit"], row["subject"])].append(row["accuracy"])
    units = sorted({u for u, _ in by})
    subjects = sorted({s for _, s in by}, key=lambda s: (not s.startswith("student"), not s.startswith("variant"), s))
    width = 0.8 / len(subjects)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(units) * len(subjects) / 3, 3.6))
    for i, subject in enumerate(subjects):
        xs = [u + (i - (len(subjects) - 1) / 2) * width for u in range(len(units))]
        means = [mean(by.get((unit, subject), [0.0])) for unit in units]
        ax.bar(xs, means, width, label=subject.replace("variant:", "").replace("student:", "student "))
        for x, unit in zip(xs, units):
            seeds = by.get((unit, subject), [])
            if len(seeds) > 1:
                ax.plot([x] * len(seeds), seeds, "k.", markersize=3)
    ax.set_xticks(range(len(units)), units)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out accuracy")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    ax.set_title(f"experiment of {res['date']}: mean over seeds (dots: each seed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def experiment(
    directory: Path = typer.Argument(Path("experiments/tool-calling"),
                                     help="Folder with spec.yaml, workload.jsonl and recording.jsonl."),
    student: str = typer.Option("smollm2", help="Student name from the experiment's spec."),
    variants: str = typer.Option(DEFAULT_VARIANTS, help=f"Comma-separated, from: {', '.join(attribute.CATALOGUE)}."),
    seeds: int = typer.Option(3, min=1, help="Runs per variant."),
    max_steps: int = typer.Option(None, min=1, help="Override the recipe's max_steps in every run."),
    train_per_unit: int = typer.Option(None, min=1, help="Use the first N training tasks per unit (default all)."),
    eval_per_unit: int = typer.Option(None, min=1, help="Use the first N held-out tasks per unit (default all)."),
    out: Path = typer.Option(None, help="Where results.json goes (default: <directory>/results.json)."),
    run_dir: Path = typer.Option(Path(".distillery/experiment"), "--run-dir",
                                 help="Logs, state and artifacts; keep it to resume."),
    timeout_s: float = typer.Option(6 * 3600, help="Give up waiting after this long."),
    prefix: str = typer.Option("distill", help="Topic prefix (on a shared Kafka, one per experiment)."),
) -> None:
    """Replay the recorded teachers through all six services, train every variant, write results.json."""

    started = time.monotonic()
    command = shlex.join(["distillery", *sys.argv[1:]])
    spec = load_spec(directory / "spec.yaml")
    tasks = select_tasks(read_tasks(directory / "workload.jsonl"), train_per_unit, eval_per_unit)
    missing = missing_answers(spec, tasks, directory / "recording.jsonl")
    if missing:
        raise ConfigError(f"the recording lacks {len(missing)} answer(s) of the workload (task/teacher): "
                          f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}; record them with "
                          f"'python -m distillery_teacher.record' (it resumes)")
    _stop_leftover(run_dir)
    spec_path = replay_spec(directory / "spec.yaml", directory / "recording.jsonl", run_dir / "spec.yaml")
    workload = run_dir / "workload.jsonl"
    workload.write_text("".join(t.model_dump_json() + "\n" for t in tasks))
    state = session.start_pipeline(spec_path, run_dir, prefix)
    try:
        session.submit_file(state, workload)
        session.follow(state, len(tasks))
        names = [n.strip() for n in variants.split(",") if n.strip()]
        experiment_id, requests = attribute.request_variants(state, student, names, seeds, max_steps)
        console.print(f"experiment {experiment_id}: {len(requests)} runs ({len(names)} variants x {seeds} seeds)")
        settings = pipeline.settings_for(state)
        done = attribute._wait(state, settings, experiment_id, requests, timeout_s)
        rows = json.loads((Path(done.attribution_path or "").parent / "attribution.json").read_text())
        members = attribute.experiment_evaluations(settings, experiment_id)
    finally:
        stack.stop(state)
    res = results(members, rows, command, time.monotonic() - started)
    target = out or directory / "results.json"
    target.write_text(json.dumps(res, indent=2) + "\n")
    plot = plot_results(res, target.with_suffix(".png"))
    print_results(res)
    console.print(f"results: {target} (plot {plot}); report: {done.attribution_path}")
    console.print(f"experiment finished in {res['wall_s']:.0f} s")


def _stop_leftover(run_dir: Path) -> None:
    """A killed experiment may leave its services running: stop them, keep the artifacts."""
    if (run_dir / "state.json").exists():
        state = stack.StackState.load(run_dir)
        if any(stack.pid_alive(p.pid) for p in state.processes):
            console.print(f"stopping the services a previous run left in {run_dir}")
        stack.stop(state)
