"""What the teacher recorder (``distillery_teacher.record``) and ``distillery experiment`` agree on:
the task files they read, which teachers answer a unit's tasks, and which answers a recording holds."""

from __future__ import annotations

import json
from pathlib import Path

from distillery.contracts.events import Task
from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import UnitSpec


def read_tasks(path: Path) -> list[Task]:
    """Tasks of a JSONL file; a line that is not a task stops with its file and line number."""
    if not path.is_file():
        raise ConfigError(f"no task file at {path}")
    tasks = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                tasks.append(Task.model_validate_json(line))
            except ValueError as exc:
                raise ConfigError(f"{path}:{number}: not a task: {str(exc).splitlines()[0]}") from None
    return tasks


def recorded_teachers(unit_name: str, unit: UnitSpec) -> list[str]:
    """The teachers a unit's tasks are recorded from: the one a ``single`` unit routes to, else all."""
    if unit.routing.strategy == "chain":
        raise ConfigError(f"unit '{unit_name}': a chain's later steps depend on earlier outputs; record its "
                          "teachers with a single or competition routing")
    teachers = unit.routing.all_teachers()
    return teachers[:1] if unit.routing.strategy == "single" else teachers


def recorded_pairs(path: Path) -> set[tuple[str, str]]:
    """(task id, teacher id) of every answer a recording holds (none when there is no file)."""
    if not path.is_file():
        return set()
    return {(row["task_id"], row["teacher_id"]) for row in map(json.loads, path.read_text().splitlines()) if row}
