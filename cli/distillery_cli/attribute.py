"""``distillery attribute``: what each part of the sample design is worth.

The command fixes one snapshot of the samples and candidates topics, asks the trainer for a run
per variant and seed from that snapshot, and waits for the evaluator, which writes the table
(difference against the full recipe with a 95% bootstrap interval) when the last run is scored.
The experiment id is a hash of student, variants, seeds and snapshot: the same command on the same
snapshot finds the same runs instead of training them again.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import typer
from rich.table import Table

from distillery.contracts import ids
from distillery.contracts.events import EvaluationCompleted, TrainingRequested, Variant
from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import StudentSpec, load_spec
from distillery.runtime.kafka import end_offsets, produce_all
from distillery_cli import pipeline, session, stack
from distillery_cli.output import RUN_DIR, console

# name -> (bucket, recipe overrides as a function of the recipe, match the full recipe's count per unit)
CATALOGUE = {
    "full": ("curated", lambda r: {}, False),
    # the train pool only: a unit whose accepted answers are all refusals or corrections gets none
    "judge_filtered": ("judge_filtered", lambda r: {"require_every_unit": False}, True),
    # no refusal and no contrastive samples: what the boundary and correction samples are worth
    "no_boundary": ("curated", lambda r: {"pools": [p for p in r.pools if p not in ("refusal", "contrastive")],
                                          "pool_mix": {}, "require_every_unit": False}, True),
    "naive": ("multi_teacher", lambda r: {}, True),
    "single_teacher": ("single_teacher", lambda r: {}, True),
    "no_rationale": ("curated", lambda r: {"fields": [f for f in r.fields if f != "rationale"]}, False),
    "no_limits": ("curated", lambda r: {"fields": [f for f in r.fields if f != "limits"]}, False),
    "no_tool_steps": ("curated", lambda r: {"pathways": [p for p in r.pathways if p != "tool_trajectory"]}, False),
    "without_real": ("curated", lambda r: {"real_share": 0.0}, False),
}
DEFAULT_VARIANTS = "full,naive,single_teacher,judge_filtered,no_rationale,no_limits"
# samples_<n>: the curated recipe with at most n samples per unit, a point of the learning curve
CURVE_PREFIX = "samples_"


def catalogue_entry(name: str):
    """(bucket, overrides, match) of a variant name, learning-curve points included."""
    if name.startswith(CURVE_PREFIX) and name.removeprefix(CURVE_PREFIX).isdigit():
        n = int(name.removeprefix(CURVE_PREFIX))
        return "curated", lambda r: {"max_samples_per_unit": n}, False
    return CATALOGUE.get(name)


def variants_for(recipe: StudentSpec, names: list[str], seeds: int, max_steps: int | None,
                 experiment_id: str) -> list[Variant]:
    """One Variant per (name, seed); an ablation that changes nothing for this recipe is an error."""
    unknown = [n for n in names if catalogue_entry(n) is None]
    if unknown:
        raise ConfigError(f"unknown variant(s) {unknown}; choose from {', '.join(CATALOGUE)}, "
                          f"or {CURVE_PREFIX}<n> (at most n samples per unit)")
    if "full" not in names:
        raise ConfigError("the variants must include 'full' (the reference of every difference)")
    out = []
    for name in names:
        bucket, overrides, match = catalogue_entry(name)
        changes = overrides(recipe)
        if bucket == "curated" and changes and all(getattr(recipe, k) == v for k, v in changes.items()):
            raise ConfigError(f"variant '{name}' changes nothing for this recipe ({changes})")
        for i in range(seeds):
            o = {**changes, "seed": recipe.seed + i, **({"max_steps": max_steps} if max_steps else {})}
            out.append(Variant(name=name, bucket=bucket, overrides=o, match=match, experiment_id=experiment_id,
                               members=len(names) * seeds))
    return out


def attribute(
    student: str = typer.Option(None, help="Student name from the spec (default: the first declared)."),
    variants: str = typer.Option(DEFAULT_VARIANTS, help=f"Comma-separated, from: {', '.join(CATALOGUE)}."),
    seeds: int = typer.Option(3, min=1, help="Runs per variant (seed, seed+1, ...)."),
    max_steps: int = typer.Option(None, min=1, help="Override the recipe's max_steps in every run."),
    wait: bool = typer.Option(True, help="Wait for the table."),
    run_dir: Path = RUN_DIR,
    timeout_s: float = typer.Option(7200, help="Give up waiting after this long."),
) -> None:
    """Train every variant from one snapshot and print the attribution table."""
    state = stack.StackState.load(run_dir)
    names = [n.strip() for n in variants.split(",") if n.strip()]
    experiment_id, requests = request_variants(state, student, names, seeds, max_steps)
    console.print(f"experiment {experiment_id}: {len(requests)} runs requested ({len(names)} variants x {seeds} seeds)")
    if wait:
        done = _wait(state, pipeline.settings_for(state), experiment_id, requests, timeout_s)
        print_table(Path(done.attribution_path or ""))


def request_variants(state: stack.StackState, student: str | None, names: list[str], seeds: int,
                     max_steps: int | None) -> tuple[str, list[TrainingRequested]]:
    """Fix one snapshot of the samples and candidates topics and ask the trainer for every
    (variant, seed) run from it; returns the experiment id and the requests."""
    spec = load_spec(state.spec_path)
    student = pipeline.resolve_student(spec, student)
    settings = pipeline.settings_for(state)
    topics = [settings.topics.samples, settings.topics.candidates]
    snapshot = {t: {str(p): o for p, o in asyncio.run(end_offsets(settings, t)).items()} for t in topics}
    experiment_id = ids.content_id("experiment", student, names, seeds, max_steps, snapshot)
    runs = variants_for(spec.students[student], names, seeds, max_steps, experiment_id)
    # seed by seed: after the first round of runs every variant has one result to look at
    runs.sort(key=lambda v: v.overrides["seed"])
    requests = [TrainingRequested(request_id=ids.content_id("train", experiment_id, v.name, v.overrides["seed"]),
                                  student=student, reason="attribution", variant=v, snapshot=snapshot,
                                  produced_by="cli@attribute") for v in runs]
    asyncio.run(produce_all(settings, [(settings.topics.training_requests, r.request_id, r.model_dump_json().encode())
                                       for r in requests]))
    return experiment_id, requests


def experiment_evaluations(settings, experiment_id: str) -> list[EvaluationCompleted]:
    """The evaluations of an experiment's runs, one per run (a redelivered evaluation counts once)."""
    runs: dict[str, EvaluationCompleted] = {}
    for e in pipeline.events(settings, settings.topics.evaluations, EvaluationCompleted):
        if e.variant is not None and e.variant.experiment_id == experiment_id:
            runs.setdefault(e.student_id + e.variant.name, e)
    return list(runs.values())


def _wait(state, settings, experiment_id: str, requests: list[TrainingRequested], timeout_s: float) -> EvaluationCompleted:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


    deadline = time.monotonic() + timeout_s
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        bar = progress.add_task("trained and evaluated", total=len(requests))
        while True:
            mine = experiment_evaluations(settings, experiment_id)
            progress.update(bar, completed=len(mine))
            finished = [e for e in pipeline.events(settings, settings.topics.evaluations, EvaluationCompleted)
                        if e.variant is not None and e.variant.experiment_id == experiment_id and e.attribution_path]
            if finished:
                return finished[-1]
            _stop_if_refused(settings, requests)
            session.check_alive(state, "trainer")
            session.check_alive(state, "evaluator")
            if time.monotonic() > deadline:
                raise ConfigError("the experiment did not finish in time; see the trainer and evaluator logs")
            time.sleep(2)


def _stop_if_refused(settings, requests: list[TrainingRequested]) -> None:
    """A variant the trainer cannot train (e.g. a bucket with no samples for a unit) ends the
    experiment: its table would never be complete. The other runs' artifacts stay and are found
    again by a new experiment without that variant."""
    dead = pipeline.refusals(settings, [r.request_id for r in requests])
    for request in requests:
        if request.request_id in dead:
            raise ConfigError(f"the trainer refused variant '{request.variant.name}': {dead[request.request_id]} "
                              "(run again without it)")


def print_table(report_html: Path) -> None:
    rows = json.loads((report_html.parent / "attribution.json").read_text())
    table = Table("unit", "variant", "accuracy", "diff vs full", "95% CI", "seeds", "samples",
                  title="attribution: the same snapshot, the same held-out tasks")
    for r in rows:
        ci = "" if r["variant"] == "full" else f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
        table.add_row(r["unit"], r["variant"], f"{r['accuracy']:.2f}", f"{r['diff']:+.2f}", ci, str(r["n_seeds"]),
                      str(r["samples"]))
    console.print(table)
    console.print(f"report: {report_html}")
