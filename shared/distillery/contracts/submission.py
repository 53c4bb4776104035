"""Validating a JSONL file of tasks: every bad line is reported with its number and reason."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from distillery.contracts import ids
from distillery.contracts.events import Task, TaskSubmitted, ToolSpec, Trace, load_json, parse_event
from distillery.contracts.spec import CapabilitySpec


@dataclass
class LineError:
    line: int
    reason: str


def parse_tasks(text: str | bytes, spec: CapabilitySpec | None, max_bytes: int,
                produced_by: str) -> tuple[list[TaskSubmitted], list[LineError]]:
    """Valid lines become TaskSubmitted events; the others are reported, not fatal. Given bytes,
    each line is decoded on its own, so one line that is not UTF-8 costs only that line."""
    events: list[TaskSubmitted] = []
    errors: list[LineError] = []
    for number, line in _lines(text):
        try:
            line = _decoded(line)
            if not line.strip():
                continue
            events.append(_parse_line(line, spec, max_bytes, produced_by))
        except ValueError as exc:
            errors.append(LineError(number, str(exc)))
    return events, errors


def _lines(text: str | bytes):
    """(line number, line) split on \n only: U+2028 and friends are valid inside JSON strings."""
    newline, cr = ("\n", "\r") if isinstance(text, str) else (b"\n", b"\r")
    return enumerate((raw.rstrip(cr) for raw in text.split(newline)), start=1)


def _decoded(line: str | bytes) -> str:
    if isinstance(line, str):
        return line
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1})") from None


def _task_id(data: dict) -> str:
    """The deterministic id of a task given without one (same hash as ``events.new_task``)."""
    try:
        tools = [ToolSpec.model_validate(t).model_dump() for t in data.get("tools") or []]
    except (ValidationError, TypeError):
        tools = data.get("tools") or []
    return ids.task_id_for(str(data.get("unit", "")), str(data.get("prompt", "")), tools)


def _parse_line(line: str, spec: CapabilitySpec | None, max_bytes: int, produced_by: str) -> TaskSubmitted:
    size = len(line.encode())
    check_size(size, max_bytes)
    try:
        data = load_json(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    return validate_task(data, spec, max_bytes, produced_by, size=size)


def check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ValueError(f"task is {size} bytes, over the {max_bytes}-byte limit")


def json_size(data: object) -> int:
    """Bytes of ``data`` as one compact JSONL line: the size of a task that did not arrive as a line."""
    return len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))


def validate_task(data: object, spec: CapabilitySpec | None, max_bytes: int, produced_by: str,
                  size: int | None = None) -> TaskSubmitted:
    """The rules every task obeys however it arrives (a JSONL line, the router's gRPC ingest):
    a bounded size, a JSON object that validates as a Task (its id computed when absent), a unit
    of the spec. Raises ValueError with the reason. ``size``: bytes as received (a line's
    length); None measures ``data`` as a compact JSON line."""
    if not isinstance(data, dict):
        raise ValueError("a task line must be a JSON object")
    check_size(json_size(data) if size is None else size, max_bytes)
    if "task_id" not in data:
        data = {**data, "task_id": _task_id(data)}
    try:
        task = Task.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = next((e for e in errors if e["loc"][:1] != ("task_id",)), errors[0])
        field = ".".join(str(p) for p in first["loc"]) or "(line)"
        raise ValueError(f"field '{field}': {first['msg']}") from None
    if spec is not None and task.unit not in spec.units:
        raise ValueError(f"unknown capability unit '{task.unit}' (spec has {', '.join(sorted(spec.units))})")
    if spec is not None:
        check_reference_fits(task, spec)
    return TaskSubmitted(task_id=task.task_id, task=task, produced_by=produced_by, trace=Trace(task_id=task.task_id))


def check_reference_fits(task: Task, spec: CapabilitySpec) -> None:
    """A reference must hold what the unit's checker compares with: a ``json_fields`` unit's task
    carries ``reference.fields``, a ``final_answer`` one ``reference.answer``. Raises ValueError."""
    ref = task.reference
    unit = spec.units[task.unit]
    needs = unit.reference_needed()
    if ref is None or needs is None:
        return
    has = ref.tool_calls is not None or ref.no_call if needs == "tool_calls" else getattr(ref, needs) is not None
    if not has:
        given = [name for name, value in ref.model_dump(exclude_defaults=True).items() if value is not None]
        raise ValueError(f"field 'reference': unit '{task.unit}' checks answers with "
                         f"'{unit.reference_checker.name}', which needs reference.{needs} "
                         f"(this task's reference gives {', '.join(given) or 'nothing'})")


# The producer named on a bare task's envelope: it came from outside the pipeline.
UPSTREAM = "upstream"


def parse_task_record(payload: bytes, spec: CapabilitySpec | None, max_bytes: int) -> TaskSubmitted:
    """A record on the tasks topic: a ``TaskSubmitted`` event, or a bare task object as an upstream
    system writes it (the JSONL line format, ``task_id`` optional), validated as ``submit`` validates
    a line and wrapped in the envelope. Raises ValueError with the reason (the record is dead-lettered)."""
    data = load_json(payload)
    if isinstance(data, dict) and "task" in data:  # an envelope: the event model decides
        return parse_event(TaskSubmitted, data)
    return validate_task(data, spec, max_bytes, UPSTREAM, size=len(payload))
