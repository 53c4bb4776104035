"""The ``distillery`` command: run, feed, watch and report on the pipeline.

Errors are one readable line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import typer
from rich.table import Table

from distillery.contracts import ids
from distillery.contracts.events import EvaluationCompleted, StudentTrained, TrainingRequested, subject_order
from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import load_spec
from distillery.runtime.kafka import produce_all
from distillery_cli import (
    attribute,
    experiment,
    loop,
    pipeline,
    replay,
    review,
    samples,
    session,
    specs,
    stack,
    students,
)
from distillery_cli.output import RUN_DIR, console, err

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distillery: teacher-to-student distillation as an event-driven pipeline.")
app.add_typer(review.app, name="review")
app.add_typer(replay.app, name="replay")
app.add_typer(samples.app, name="samples")
app.add_typer(students.app, name="students")
app.add_typer(specs.app, name="spec")
app.command("attribute")(attribute.attribute)
app.command("experiment")(experiment.experiment)
app.command("resume")(loop.resume)
app.command("timeline")(loop.timeline)

SPEC = typer.Option(Path("examples/spec.yaml"), "--spec", help="Capability spec (YAML).")


@app.command()
def up(spec: Path = SPEC, run_dir: Path = RUN_DIR, prefix: str = typer.Option("distill", help="Topic prefix.")) -> None:
    """Start the broker (unless KAFKA_BOOTSTRAP_SERVERS is set) and the six services."""
    state = session.start_pipeline(spec, run_dir, prefix)
    console.print(f"[green]pipeline up[/green] on {state.bootstrap}; logs in {run_dir}/logs")


@app.command()
def down(run_dir: Path = RUN_DIR) -> None:
    """Stop the services and the embedded broker."""
    stack.stop(stack.StackState.load(run_dir))
    console.print("pipeline stopped")


@app.command()
def submit(file: Path = typer.Argument(..., help="JSONL file, one task per line."), run_dir: Path = RUN_DIR) -> None:
    """Validate every line and submit the valid ones; bad lines are listed with their reason."""
    state = stack.StackState.load(run_dir)
    sent, bad = session.submit_file(state, file)
    console.print(f"submitted {sent} task(s)")
    if bad:
        raise typer.Exit(1)


@app.command()
def status(run_dir: Path = RUN_DIR) -> None:
    """Counts per topic and per pool, lag per service, and the closed loop (rounds, held-out units, promotions)."""
    state = stack.StackState.load(run_dir)
    settings = pipeline.settings_for(state)
    spec = load_spec(state.spec_path)
    topics = Table("topic", "events", title="topics")
    for topic, count in pipeline.counts(settings, spec.routed_teachers()).items():
        topics.add_row(topic, str(count))
    counted = pipeline.pools(settings)
    teachers = sorted({teacher for _, teacher in counted})
    pools = Table("pool", *teachers, "candidates", title="judge pools per teacher")
    for pool in sorted({pool for pool, _ in counted}):
        row = [counted.get((pool, t), 0) for t in teachers]
        pools.add_row(pool, *map(str, row), str(sum(row)))
    services = Table("service", "version", "pid", "alive", "lag", title="services")
    lags = pipeline.lags(state)
    for proc in state.processes:
        lag = str(lags.get(proc.name, "-"))
        if proc.name == "editor" and "editor-reviews" in lags:  # the editor reads two topics
            lag += f" (+{lags['editor-reviews']} reviews)"
        alive = stack.pid_alive(proc.pid)
        version = pipeline.service_version(state, proc) if alive else None
        services.add_row(proc.name, version or "-", str(proc.pid), "yes" if alive else "[red]no[/red]", lag)
    for table in (topics, pools, services):
        console.print(table)
    loop.print_loop(settings, spec)


@app.command()
def train(student: str = typer.Option(None, help="Student name from the spec (default: the first declared)."),
          run_dir: Path = RUN_DIR,
          wait: bool = typer.Option(False, help="Wait for the student and its evaluation ('report' then shows it).")) -> None:
    """Ask the trainer to snapshot the samples topic and train a student."""
    state = stack.StackState.load(run_dir)
    student = pipeline.resolve_student(load_spec(state.spec_path), student)
    request_id = _request_training(state, student)
    console.print(f"training of '{student}' requested")
    if wait:
        trained = _wait_trained(state, student, request_id=request_id)
        _wait_evaluation(state, trained.student_id)
        console.print(f"{trained.student_id} trained and evaluated: 'distillery report' shows it")


def _request_training(state: stack.StackState, student: str) -> str:
    settings = pipeline.settings_for(state)
    request_id = ids.content_id("train", student, time.time_ns())
    event = TrainingRequested(request_id=request_id, student=student, produced_by="cli@train")
    asyncio.run(produce_all(settings, [(settings.topics.training_requests, request_id, event.model_dump_json().encode())]))
    return request_id


def _refused(state: stack.StackState, request_id: str) -> str | None:
    """Why the trainer dead-lettered this request (e.g. a recipe unit without samples), if it did."""
    return pipeline.refusals(pipeline.settings_for(state), [request_id]).get(request_id)


def _wait_trained(state: stack.StackState, student: str, request_id: str, timeout_s: float = 1800) -> StudentTrained:
    """The student this request trained (it names the request as its cause), with the trainer's
    progress meanwhile; a refused request is one readable line."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    settings = pipeline.settings_for(state)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task(f"training '{student}'", total=None)
        deadline = time.monotonic() + timeout_s
        while (trained := _trained_by(settings, request_id)) is None:
            session.check_alive(state, "trainer")
            refused = _refused(state, request_id)
            if refused:
                raise ConfigError(f"the trainer refused the request: {refused}")
            m = pipeline.metrics(state, "trainer")
            total = _labelled(m, "distillery_trainer_total_steps", student)
            loss = _labelled(m, "distillery_trainer_loss", student)
            if total and loss is not None:
                progress.update(bar, total=total, completed=_labelled(m, "distillery_trainer_step", student) or 0,
                                description=f"training '{student}' (loss {loss:.3f})")
            if time.monotonic() > deadline:
                raise ConfigError("training did not finish in time; see the trainer log")
            time.sleep(1)
        progress.update(bar, completed=progress.tasks[0].total or 1)
    return trained


def _trained_by(settings, request_id: str) -> StudentTrained | None:
    return next((t for t in pipeline.events(settings, settings.topics.students, StudentTrained)
                 if t.trace.causation_id == request_id), None)


def _labelled(metrics: dict, name: str, student: str) -> float | None:
    for labels, value in metrics.get(name, []):
        if labels.get("student") == student:
            return value
    return None


@app.command()
def report(run_dir: Path = RUN_DIR,
           open_: bool = typer.Option(None, "--open/--no-open", help="Open the HTML report (default: on a terminal).")) -> None:
    """Print the latest evaluation and the path of its HTML report (plots included)."""
    state = stack.StackState.load(run_dir)
    evaluation = pipeline.latest_evaluation(pipeline.settings_for(state))
    if evaluation is None:
        raise ConfigError("no evaluation yet (run 'distillery train' and wait for the evaluator)")
    _print_report(evaluation)
    if open_ if open_ is not None else sys.stdout.isatty():
        import webbrowser

        webbrowser.open(Path(evaluation.report_path).resolve().as_uri())


def _print_report(evaluation) -> None:
    subjects = sorted({s.subject for s in evaluation.scores}, key=subject_order)
    label = {s: s.removeprefix("teacher:").replace("student:", "student ") for s in subjects}
    table = Table("unit", *[label[s] for s in subjects], title=f"held-out accuracy per capability unit ({evaluation.student_id})")
    by = {(s.unit, s.subject): s for s in evaluation.scores}
    for unit in sorted({s.unit for s in evaluation.scores}):
        table.add_row(unit, *[f"{by[(unit, s)].accuracy:.2f} (n={by[(unit, s)].n})" if (unit, s) in by else "-"
                              for s in subjects])
    console.print(table)
    for s in evaluation.scores:  # counted wrong in the table above; here is why
        if s.unanswered:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(s.unanswered.items()))
            console.print(f"{label[s.subject]} on {s.unit}: {sum(s.unanswered.values())} of {s.n} unanswered ({reasons})")
    costs = Table("subject", "latency s/request", "cost USD/request", "output tokens", title="latency and cost")
    for subject in subjects:
        rows = [s for s in evaluation.scores if s.subject == subject]
        n = sum(r.n for r in rows)
        costs.add_row(label[subject], f"{sum(r.mean_latency_s * r.n for r in rows) / n:.3f}",
                      f"{sum(r.cost_per_request_usd * r.n for r in rows) / n:.6f}",
                      f"{sum(r.mean_output_tokens * r.n for r in rows) / n:.1f}")
    console.print(costs)
    _print_metrics(evaluation, subjects, label)
    roi = Table("ROI ledger", "value")
    for key, value in evaluation.roi.items():
        roi.add_row(key, str(value))
    console.print(roi)
    fired = ", ".join(f"{name} ({reason})" for name, reason in sorted(evaluation.signals.items()))
    console.print(f"stop signals: {fired or 'none fired'}")
    console.print(f"report: {evaluation.report_path}")


def _print_metrics(evaluation, subjects: list[str], label: dict[str, str]) -> None:
    """Every metric the units declare (and a json_fields unit's field metrics), per subject, as the
    evaluator wrote them next to its report."""
    path = Path(evaluation.report_path).parent / "metrics.json"
    if not path.is_file():
        return
    cells = {(m["unit"], m["metric"], m["subject"]): m["value"] for m in json.loads(path.read_text())}
    table = Table("unit", "metric", *[label[s] for s in subjects], title="metrics")
    for unit, metric in sorted({(u, m) for u, m, _ in cells}):
        table.add_row(unit, metric, *[f"{cells[(unit, metric, s)]:g}" if (unit, metric, s) in cells else "-"
                                      for s in subjects])
    console.print(table)


@app.command()
def demo(
    tasks: int = typer.Option(12, "--tasks", min=1, help="Training tasks per capability unit."),
    eval_tasks: int = typer.Option(6, "--eval-tasks", min=1, help="Held-out evaluation tasks per unit."),
    spec: Path = SPEC, run_dir: Path = RUN_DIR, keep: bool = typer.Option(False, help="Leave the pipeline running."),
) -> None:
    """All of it: start, submit the example workload, judge, curate, train, evaluate, report."""
    from distillery_cli.workload import build_workload

    started = time.monotonic()
    state = session.start_pipeline(spec, run_dir, "distill")
    try:
        workload = run_dir / "workload.jsonl"
        lines = build_workload(tasks, eval_tasks)
        workload.write_text("".join(json.dumps(line) + "\n" for line in lines))
        session.submit_file(state, workload)
        session.follow(state, len(lines))
        student = pipeline.resolve_student(load_spec(state.spec_path), None)
        request_id = _request_training(state, student)
        trained = _wait_trained(state, student, request_id=request_id)
        evaluation = _wait_evaluation(state, trained.student_id)
        _print_report(evaluation)
        console.print(f"demo finished in {time.monotonic() - started:.0f}s")
    finally:
        if not keep:
            stack.stop(state)


def _wait_evaluation(state: stack.StackState, student_id: str, timeout_s: float = 1800):
    """The evaluation of this student (the evaluator names the student as its cause)."""
    settings = pipeline.settings_for(state)
    deadline = time.monotonic() + timeout_s
    with console.status("evaluating student and teachers on held-out tasks"):
        while (evaluation := _evaluation_of(settings, student_id)) is None:
            session.check_alive(state, "evaluator")
            if time.monotonic() > deadline:
                raise ConfigError("evaluation did not finish in time; see the evaluator log")
            time.sleep(1)
    return evaluation


def _evaluation_of(settings, student_id: str):
    return next((e for e in pipeline.events(settings, settings.topics.evaluations, EvaluationCompleted)
                 if e.student_id == student_id), None)


def run() -> None:
    """Entry point: any expected failure is one line on stderr and exit code 2."""
    try:
        app()
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("DISTILLERY_DEBUG"):
            raise
        err.print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
        sys.exit(2)


if __name__ == "__main__":
    run()
