"""Running the local pipeline from the CLI: start it, submit a task file, follow it to the end.

Shared by ``distillery demo``, ``experiment`` and ``attribute``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import load_spec
from distillery.contracts.submission import parse_tasks
from distillery.runtime.kafka import produce_all
from distillery_cli import pipeline, stack
from distillery_cli.output import console, err


def start_pipeline(spec: Path, run_dir: Path, prefix: str) -> stack.StackState:
    state = stack.start(spec, run_dir, prefix)
    try:
        with console.status("starting services (first run converts the teacher models, ~1-2 min)") as status:
            stack.wait_ready(state, on_tick=lambda done, total: status.update(f"services ready: {done}/{total}"))
    except BaseException:
        stack.stop(state)
        raise
    return state


def submit_file(state: stack.StackState, file: Path) -> tuple[int, int]:
    if not file.is_file():
        raise ConfigError(f"no such file: {file}")
    settings = pipeline.settings_for(state)
    events, errors = parse_tasks(file.read_bytes(), load_spec(state.spec_path), settings.max_task_bytes, "cli@submit")
    for error in errors:
        err.print(f"[red]{file}:{error.line}[/red]: {error.reason}")
    items = [(settings.topics.tasks, e.task_id, e.model_dump_json().encode()) for e in events]
    asyncio.run(produce_all(settings, items))
    return len(events), len(errors)


def check_alive(state: stack.StackState, name: str) -> None:
    proc = state.process(name)
    if not stack.pid_alive(proc.pid):
        raise ConfigError(f"service {name} is not running: {stack.last_line(proc.log)}")


def follow(state: stack.StackState, n_tasks: int, timeout_s: float = 3600) -> None:
    """Progress bars until every task is judged and the editor has caught up."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    settings = pipeline.settings_for(state)
    spec = load_spec(state.spec_path)
    teacher_ids = spec.routed_teachers()
    topics = settings.topics
    with Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        routed = progress.add_task("routed", total=n_tasks)
        answered = progress.add_task("teacher candidates", total=None)
        judged = progress.add_task("judged tasks", total=n_tasks)
        deadline = time.monotonic() + timeout_s
        while True:
            counts = pipeline.counts(settings, teacher_ids)
            requests = sum(counts[topics.generation_requests(t)] for t in teacher_ids)
            progress.update(routed, completed=min(n_tasks, lag_done(state, "router", n_tasks)))
            progress.update(answered, total=requests or None, completed=counts[topics.candidates])
            progress.update(judged, completed=counts[topics.verdicts])
            if counts[topics.verdicts] >= n_tasks and pipeline.lags(state).get("editor", 1) == 0:
                break
            for name in ("router", "judge", "editor", *(f"teacher-{t}" for t in teacher_ids)):
                check_alive(state, name)
            if time.monotonic() > deadline:
                raise ConfigError("the pipeline did not finish the workload in time; see 'distillery status'")
            time.sleep(1)


def lag_done(state: stack.StackState, service: str, total: int) -> int:
    return total - pipeline.lags(state).get(service, total)
