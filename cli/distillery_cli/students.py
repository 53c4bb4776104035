"""``distillery students``: every trained student artifact, and the full lineage of one.

Both views are read from the topics, never from a service: the students topic holds one
``StudentTrained`` per training run (recipe, dataset manifest, loss curve, cost), the
evaluations topic the ``EvaluationCompleted`` of each evaluated student. The student id is a
hash of the recipe and the dataset, so a redelivered training request re-announces the same
student id: that is one artifact and one row. Its first announcement is kept, because it
describes the snapshot the student was trained on (a re-announcement carries the retraction
count of a later snapshot). When a student was evaluated more than once, the latest
evaluation counts.

The artifact folder itself (``lineage.json``, ``manifest.json``, ``dataset.jsonl``, ``model/``,
``loss.png``, and ``evaluation/`` once evaluated) lives on the trainer's disk; both views say
whether it is still there.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.table import Column, Table

from distillery.contracts.events import POOLS, EvaluationCompleted, StudentTrained
from distillery.contracts.settings import ServiceSettings
from distillery.contracts.spec import load_spec
from distillery_cli import loop, pipeline, stack
from distillery_cli.output import RUN_DIR, console, resolve_by_prefix, short_id

app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                  help="Every trained student artifact, newest first; 'students show ID' prints one's full lineage.")

AFTER = "student:after"  # the evaluator's subject for the trained student
ARTIFACT_FILES = ("lineage.json", "manifest.json", "dataset.jsonl", "model", "loss.png")  # what the trainer writes
ON_DISK, PARTIAL, MISSING = "yes", "partial", "missing"
DROPPED_SHOWN = 5
OPTIONAL_COUNTS = ("tier", "origin")
TIERS = ("high", "medium", "low")
TABLE_CAPTION = (f"dataset: samples, judge versions, pools, units, sha256 · training: base model, schedule, loss, "
                 f"time, cost · evaluation: mean {AFTER} accuracy over units, report")


# --- one row per artifact ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StudentRow:
    """One trained artifact: its first announcement, how often it was announced, its latest evaluation."""

    trained: StudentTrained
    announcements: int
    evaluation: EvaluationCompleted | None
    on_disk: str  # ON_DISK, PARTIAL or MISSING

    @property
    def student_id(self) -> str:
        return self.trained.student_id

    @property
    def manifest(self) -> dict[str, Any]:
        return self.trained.manifest

    @property
    def after_accuracy(self) -> float | None:
        return mean_after_accuracy(self.evaluation) if self.evaluation else None


def first_announcements(trained: Iterable[StudentTrained]) -> dict[str, tuple[StudentTrained, int]]:
    """Student id -> (its earliest StudentTrained, how many times it was announced)."""
    by_id: dict[str, tuple[StudentTrained, int]] = {}
    for event in trained:
        earlier, count = by_id.get(event.student_id, (event, 0))
        first = event if event.produced_at < earlier.produced_at else earlier
        by_id[event.student_id] = (first, count + 1)
    return by_id


def latest_evaluations(evaluations: Iterable[EvaluationCompleted]) -> dict[str, EvaluationCompleted]:
    """Student id -> its most recent evaluation."""
    latest: dict[str, EvaluationCompleted] = {}
    for evaluation in evaluations:
        known = latest.get(evaluation.student_id)
        if known is None or evaluation.produced_at >= known.produced_at:
            latest[evaluation.student_id] = evaluation
    return latest


def mean_after_accuracy(evaluation: EvaluationCompleted) -> float | None:
    """The trained student's accuracy, averaged over units (each unit counts once); None if it has none."""
    scores = [s.accuracy for s in evaluation.scores if s.subject == AFTER]
    return sum(scores) / len(scores) if scores else None


def artifact_state(artifact_dir: str | Path) -> str:
    """Whether the artifact folder is on this disk: all of it, part of it, or not at all."""
    folder = Path(artifact_dir)
    if not folder.is_dir():
        return MISSING
    return ON_DISK if all((folder / name).exists() for name in ARTIFACT_FILES) else PARTIAL


def student_rows(trained: Iterable[StudentTrained], evaluations: Iterable[EvaluationCompleted],
                 student: str | None = None, state_of: Callable[[str], str] = artifact_state) -> list[StudentRow]:
    """One row per student id (of ``student`` only, if given), newest first; ties by student id."""
    evaluated = latest_evaluations(evaluations)
    rows = [StudentRow(first, count, evaluated.get(student_id), state_of(first.artifact_dir))
            for student_id, (first, count) in first_announcements(trained).items()
            if student is None or first.student == student]
    rows.sort(key=lambda row: row.student_id)
    rows.sort(key=lambda row: row.trained.produced_at, reverse=True)
    return rows


def resolve_student(given: str, rows: Sequence[StudentRow]) -> StudentRow:
    """The one row whose student id starts with ``given`` (with or without ``student_``; a version works too)."""
    return resolve_by_prefix(
        given, rows, lambda row: row.student_id, noun="student id",
        empty="give a student id (or a unique prefix of one, or its version)",
        missing="no trained student with id '{given}' (see 'distillery students' for the list)",
        shown_of=lambda row: f"{short_id(row.student_id)} ({row.trained.student})")


# --- the lineage of one artifact -----------------------------------------------------------------------


@dataclass(frozen=True)
class LossSummary:
    points: int
    first: float
    lowest: float
    lowest_step: int  # 1-based, as the trainer's loss.png counts steps
    last: float


def loss_summary(curve: Sequence[float]) -> LossSummary | None:
    if not curve:
        return None
    lowest_index = min(range(len(curve)), key=lambda i: curve[i])
    return LossSummary(len(curve), curve[0], curve[lowest_index], lowest_index + 1, curve[-1])


@dataclass(frozen=True)
class ArtifactFile:
    path: str  # relative to the artifact folder, "/" separated
    size: int


def artifact_files(artifact_dir: str | Path) -> list[ArtifactFile]:
    """Every file under the artifact folder, sorted by path; empty if the folder is gone."""
    folder = Path(artifact_dir)
    if not folder.is_dir():
        return []
    return [ArtifactFile(path.relative_to(folder).as_posix(), path.stat().st_size)
            for path in sorted(folder.rglob("*")) if path.is_file()]


def absent_artifact_files(artifact_dir: str | Path) -> list[str]:
    folder = Path(artifact_dir)
    return [name for name in ARTIFACT_FILES if not (folder / name).exists()]


def on_disk_lineage(artifact_dir: str | Path) -> dict[str, Any] | None:
    """The artifact's lineage.json (it also holds the steps and tokens trained); None if absent or unreadable."""
    path = Path(artifact_dir) / "lineage.json"
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return None


# --- formatting ---------------------------------------------------------------------------------------


def short_sha(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def compact_counts(counts: Mapping[str, int] | None, order: Sequence[str] = ()) -> str:
    """``{"refusal": 5, "train": 12}`` -> ``"train 12, refusal 5"``: names in ``order`` first, then the rest by name."""
    if not counts:
        return "-"
    rank = {name: i for i, name in enumerate(order)}
    names = sorted(counts, key=lambda name: (rank.get(name, len(rank)), name))
    return ", ".join(f"{name} {counts[name]}" for name in names)


def schedule(recipe: Mapping[str, Any]) -> str:
    """Epochs and the step cap of a recipe: ``"40 epochs, ≤200 steps"``."""
    epochs = recipe.get("epochs")
    text = f"{epochs} epoch{'s' if epochs != 1 else ''}" if epochs is not None else "-"
    if recipe.get("max_steps"):
        text += f", ≤{recipe['max_steps']} steps"
    return text


def format_loss(curve: Sequence[float]) -> str:
    return f"{curve[-1]:.3f}" if curve else "-"


def format_accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_cost(usd: float) -> str:
    return f"${usd:.4f}" if usd else "$0"


def format_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 ** 2:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 ** 2:.1f} MiB"


def display_path(path: str | Path, base: Path | None = None) -> str:
    """``path`` relative to ``base`` (default: the current folder) when it lies under it, else as given."""
    base = base or Path.cwd()
    with contextlib.suppress(ValueError):
        return Path(path).relative_to(base).as_posix()
    return str(path)


def report_text(row: StudentRow) -> str:
    """The evaluation report's path, relative to the artifact folder when it lies in it."""
    if row.evaluation is None:
        return "-"
    return display_path(row.evaluation.report_path, Path(row.trained.artifact_dir))


def on_disk_text(state: str) -> str:
    return {ON_DISK: "on disk", PARTIAL: "[yellow]partial[/yellow]", MISSING: "[red]missing[/red]"}.get(state, state)


def student_cell(row: StudentRow) -> str:
    t = row.trained
    return f"{t.student}\n{t.version}\n{short_id(t.student_id)}"


def dataset_cell(row: StudentRow) -> str:
    """Samples and judge versions, the pools, the units, the dataset's sha256: one line each."""
    man = row.manifest
    judges = ", ".join(man.get("judge_versions") or []) or "-"
    return "\n".join([f"{man.get('samples', '-')} samples; judge {judges}", compact_counts(man.get("per_pool"), POOLS),
                      compact_counts(man.get("per_unit")), f"sha256 {short_sha(man.get('sha256'))}"])


def training_cell(row: StudentRow) -> str:
    """Base model, epochs and step cap, final loss, seconds and cost."""
    t = row.trained
    return "\n".join([t.base_model, schedule(t.recipe), f"final loss {format_loss(t.loss_curve)}",
                      f"{t.train_seconds:.1f} s, {format_cost(t.train_cost_usd)}"])


def evaluation_cell(row: StudentRow) -> str:
    if row.evaluation is None:
        return "-"
    return f"{AFTER} {format_accuracy(row.after_accuracy)}\n{report_text(row)}"


def artifact_cell(row: StudentRow) -> str:
    return f"{on_disk_text(row.on_disk)}\n{display_path(row.trained.artifact_dir)}"


def row_cells(row: StudentRow) -> list[str]:
    return [student_cell(row), dataset_cell(row), training_cell(row), evaluation_cell(row), artifact_cell(row)]


def students_table(rows: Sequence[StudentRow]) -> Table:
    table = Table(Column("student", no_wrap=True), Column("dataset", overflow="fold"),
                  Column("training", overflow="fold"), Column("evaluation", overflow="fold"),
                  Column("artifact", overflow="fold"),
                  title=f"trained students, newest first ({len(rows)})", caption=TABLE_CAPTION, show_lines=True)
    for row in rows:
        table.add_row(*row_cells(row))
    return table


def print_students(rows: Sequence[StudentRow], student: str | None = None) -> None:
    if not rows:
        which = f" of student '{student}'" if student else ""
        console.print(f"no trained artifact{which} yet (run 'distillery train')")
        return
    console.print(students_table(rows))


def manifest_table(manifest: Mapping[str, Any]) -> Table:
    """Samples per pool, unit and pathway, one line each kind."""
    table = Table("counted by", Column("samples", overflow="fold"), title="dataset")
    table.add_row("pool", compact_counts(manifest.get("per_pool"), POOLS))
    table.add_row("unit", compact_counts(manifest.get("per_unit")))
    table.add_row("pathway", compact_counts(manifest.get("per_pathway")))
    for kind in OPTIONAL_COUNTS:  # manifests of newer trainers count more
        if manifest.get(f"per_{kind}"):
            table.add_row(kind, compact_counts(manifest[f"per_{kind}"], TIERS if kind == "tier" else ()))
    return table


def files_table(files: Sequence[ArtifactFile]) -> Table:
    table = Table("file", Column("size", justify="right"), title=f"artifact files ({len(files)})")
    for f in files:
        table.add_row(f.path, format_size(f.size))
    return table


def lineage_lines(row: StudentRow, lineage: Mapping[str, Any] | None) -> list[str]:
    """The header and manifest facts of ``students show``, as plain lines."""
    t, man = row.trained, row.manifest
    offsets = " ".join(f"{p}:{o}" for p, o in sorted((man.get("end_offsets") or {}).items())) or "-"
    dropped = man.get("dropped_over_max_seq_len") or []
    lines = [
        f"student {t.student}  version {t.version}  id {t.student_id}",
        f"base model {t.base_model}; trained at {t.produced_at:%Y-%m-%d %H:%M:%S} UTC by {t.produced_by}"
        + (f"; announced {row.announcements} times" if row.announcements > 1 else ""),
        f"artifact {t.artifact_dir} (on disk: {row.on_disk})",
        f"snapshot of {man.get('topic', '-')} at offsets {offsets}",
        f"judge versions: {', '.join(man.get('judge_versions') or []) or '-'}",
        f"samples {man.get('samples', '-')} from {len(man.get('task_ids') or [])} task(s)"
        + (f", {man['examples']} training examples" if "examples" in man else "") + "; "
        f"retracted at the snapshot: {man.get('retracted', '-')}",
        f"dataset sha256 {man.get('sha256', '-')}",
        f"dropped over max_seq_len: {len(dropped)}"
        + (f" ({', '.join(dropped[:DROPPED_SHOWN])}{' …' if len(dropped) > DROPPED_SHOWN else ''})" if dropped else ""),
        f"train {t.train_seconds:.1f} s, cost {format_cost(t.train_cost_usd)}"
        + (f", {lineage['steps']} steps, {lineage['tokens']} tokens" if lineage and "steps" in lineage else ""),
    ]
    return lines + [loss_line(t.loss_curve), evaluation_line(row)]


def loss_line(curve: Sequence[float]) -> str:
    summary = loss_summary(curve)
    if summary is None:
        return "loss curve: empty"
    return (f"loss curve: {summary.points} points; first {summary.first:.3f}, "
            f"min {summary.lowest:.3f} (step {summary.lowest_step}), last {summary.last:.3f}")


def evaluation_line(row: StudentRow) -> str:
    if row.evaluation is None:
        return "evaluation: none yet"
    units = sum(1 for s in row.evaluation.scores if s.subject == AFTER)
    return (f"evaluation: mean {AFTER} accuracy {format_accuracy(row.after_accuracy)} over {units} unit(s); "
            f"report {row.evaluation.report_path}")


def recipe_text(recipe: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(recipe), sort_keys=False, default_flow_style=None).rstrip()


def print_lineage(row: StudentRow) -> None:
    artifact_dir = row.trained.artifact_dir
    for line in lineage_lines(row, on_disk_lineage(artifact_dir)):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print("recipe:", markup=False)
    console.print(recipe_text(row.trained.recipe), markup=False, highlight=False)
    console.print(manifest_table(row.manifest))
    files = artifact_files(artifact_dir)
    if files:
        console.print(files_table(files))
    absent = absent_artifact_files(artifact_dir)
    if absent and row.on_disk != MISSING:
        console.print(f"absent from the artifact folder: {', '.join(absent)}", markup=False)
    if row.on_disk == MISSING:
        console.print("the artifact folder is not on this disk (deleted, or trained on another machine)",
                      markup=False)


# --- topic I/O ------------------------------------------------------------------------------------------


def read_trained(settings: ServiceSettings) -> list[StudentTrained]:
    return pipeline.events(settings, settings.topics.students, StudentTrained)


def read_evaluations(settings: ServiceSettings) -> list[EvaluationCompleted]:
    return pipeline.events(settings, settings.topics.evaluations, EvaluationCompleted)


def load_rows(settings: ServiceSettings, student: str | None = None) -> list[StudentRow]:
    """What ``distillery students`` lists, given the pipeline's settings."""
    return student_rows(read_trained(settings), read_evaluations(settings), student)


# --- commands -------------------------------------------------------------------------------------------


@app.callback()
def list_students(
    ctx: typer.Context,
    student: str | None = typer.Option(None, "--student", help="Only artifacts of this student (name in the spec)."),
    run_dir: Path = RUN_DIR,
) -> None:
    """Every trained student artifact, newest first, with its dataset, training and evaluation."""
    if ctx.invoked_subcommand is not None:
        return
    state = stack.StackState.load(run_dir)
    settings = pipeline.settings_for(state)
    print_students(load_rows(settings, student), student)
    loop.print_loop(settings, load_spec(state.spec_path))  # rounds, held-out units, promotions and demotions


@app.command("show")
def show_command(
    student_id: str = typer.Argument(..., help="Student id, a unique prefix of one, or its version."),
    run_dir: Path = RUN_DIR,
) -> None:
    """The full lineage of one artifact: recipe, dataset manifest, loss curve, evaluation and files."""
    settings = pipeline.settings_for(stack.StackState.load(run_dir))
    print_lineage(resolve_student(student_id, load_rows(settings)))
