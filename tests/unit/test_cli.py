"""The CLI: task-line validation (distillery.contracts.submission) and the command as a user runs it.

The subprocess tests only exercise paths that fail before any broker is contacted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distillery.contracts import ids
from distillery.contracts.submission import parse_tasks
from distillery_cli.workload import build_workload

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "examples" / "spec.yaml"
MAX = 1024 * 1024
COMMANDS = ("up", "submit", "status", "train", "report", "down", "demo")


@pytest.fixture(scope="module")
def lines() -> list[dict]:
    return build_workload(2, 1)


def jsonl(*items: object) -> str:
    return "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items)


# --- parse_tasks -----------------------------------------------------------------------------


def test_valid_workload_lines_are_all_submitted(spec, lines) -> None:
    events, errors = parse_tasks(jsonl(*lines), spec, MAX, "cli@submit")
    assert errors == []
    assert [e.task_id for e in events] == [line["task_id"] for line in lines]
    for event, line in zip(events, lines):
        assert event.task.unit == line["unit"] and event.task.split == line["split"]
        assert event.trace.task_id == event.task_id == event.event_id
        assert event.produced_by == "cli@submit"


def test_task_id_is_computed_when_absent(spec, lines) -> None:
    bare = [{k: v for k, v in line.items() if k != "task_id"} for line in lines]
    events, errors = parse_tasks(jsonl(*bare), spec, MAX, "cli@submit")
    assert errors == []
    assert [e.task_id for e in events] == [line["task_id"] for line in lines]
    assert events[0].task_id == ids.task_id_for(bare[0]["unit"], bare[0]["prompt"], bare[0]["tools"])


def test_a_given_task_id_is_kept(spec) -> None:
    (event,), _ = parse_tasks(jsonl({"task_id": "mine-1", "unit": "math_steps", "prompt": "1+1?"}), spec, MAX, "x")
    assert event.task_id == "mine-1"


def test_each_bad_line_is_reported_with_its_number_and_the_good_ones_still_go(spec, lines) -> None:
    text = jsonl(
        lines[0],                                       # 1 ok
        "{not json",                                     # 2 bad JSON
        "[1, 2, 3]",                                     # 3 not an object
        "",                                              # 4 blank: skipped, still counted
        {"unit": "math_steps", "prompt": "2+2?", "split": "test"},  # 5 bad field value
        {"unit": "poetry", "prompt": "Write a haiku"},  # 6 unknown unit
        lines[2],                                       # 7 ok
    )
    events, errors = parse_tasks(text, spec, MAX, "cli@submit")
    assert [e.task_id for e in events] == [lines[0]["task_id"], lines[2]["task_id"]]
    assert [e.line for e in errors] == [2, 3, 5, 6]
    reasons = {e.line: e.reason for e in errors}
    assert reasons[2].startswith("not valid JSON")
    assert "JSON object" in reasons[3]
    assert "field 'split'" in reasons[5]
    assert "unknown capability unit 'poetry'" in reasons[6] and "math_steps" in reasons[6]


def test_oversized_line_is_reported_not_truncated(spec) -> None:
    big = {"unit": "math_steps", "prompt": "x" * 2000}
    small = {"unit": "math_steps", "prompt": "1+1?"}
    events, errors = parse_tasks(jsonl(big, small), spec, 1024, "cli@submit")
    assert [e.task.prompt for e in events] == ["1+1?"]
    assert [e.line for e in errors] == [1]
    assert "1024-byte limit" in errors[0].reason


def test_a_field_of_the_wrong_type_is_named(spec) -> None:
    line = {"unit": "math_steps", "prompt": "1+1?", "metadata": {"difficulty": 3}}
    _, (error,) = parse_tasks(jsonl(line), spec, MAX, "cli@submit")
    assert error.line == 1 and "field 'metadata.difficulty'" in error.reason


def test_without_a_spec_any_unit_is_accepted() -> None:
    (event,), errors = parse_tasks(jsonl({"unit": "poetry", "prompt": "haiku"}), None, MAX, "x")
    assert errors == [] and event.task.unit == "poetry"


@pytest.mark.parametrize("line, missing", [({"unit": "math_steps"}, "prompt"), ({"prompt": "1+1?"}, "unit")])
def test_a_missing_field_is_named(spec, line: dict, missing: str) -> None:
    _, (error,) = parse_tasks(jsonl(line), spec, MAX, "cli@submit")
    assert error.line == 1
    assert f"field '{missing}'" in error.reason


def test_a_unicode_line_separator_inside_a_string_does_not_split_the_line(spec) -> None:
    first = json.dumps({"unit": "math_steps", "prompt": "Line one\u2028line two: 1+1?"}, ensure_ascii=False)
    text = first + "\n" + json.dumps({"unit": "poetry", "prompt": "haiku"}) + "\n"
    events, errors = parse_tasks(text, spec, MAX, "cli@submit")
    assert [e.task.prompt for e in events] == ["Line one\u2028line two: 1+1?"]
    assert [e.line for e in errors] == [2]


def test_a_missing_field_is_reported_with_its_line(spec) -> None:
    _, errors = parse_tasks(jsonl({"unit": "math_steps"}), spec, MAX, "cli@submit")
    assert [e.line for e in errors] == [1]
    assert "Field required" in errors[0].reason


# --- the command as a user sees it ----------------------------------------------------------------


def cli(*args: str, cwd: Path, columns: int = 80) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DISTILLERY_") and k not in ("KAFKA_BOOTSTRAP_SERVERS", "FORCE_COLOR")}
    env.update(COLUMNS=str(columns), NO_COLOR="1", TERM="dumb")
    return subprocess.run([sys.executable, "-m", "distillery_cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    for needle in needles:
        assert needle in lines[0]


def fake_state(run_dir: Path) -> None:
    """A state file of a pipeline that is not reachable; enough for checks done before any I/O."""
    run_dir.mkdir()
    (run_dir / "state.json").write_text(json.dumps({
        "run_dir": str(run_dir), "bootstrap": "127.0.0.1:1", "topic_prefix": "t", "spec_path": str(SPEC_PATH),
        "broker_pid": None, "processes": [],
    }))


def test_status_without_a_pipeline_is_one_error_line(tmp_path) -> None:
    (tmp_path / "run").mkdir()  # an empty run dir
    assert_one_line_error(cli("status", "--run-dir", "run", cwd=tmp_path), "no running pipeline")


def test_submit_without_a_pipeline_is_one_error_line(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    assert_one_line_error(cli("submit", "missing.jsonl", "--run-dir", "run", cwd=tmp_path), "no running pipeline")


def test_train_without_a_pipeline_is_one_error_line(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    assert_one_line_error(cli("train", "--run-dir", "run", cwd=tmp_path), "no running pipeline")


def test_submit_of_a_missing_file_is_one_error_line(tmp_path) -> None:
    fake_state(tmp_path / "run")
    assert_one_line_error(cli("submit", "missing.jsonl", "--run-dir", "run", cwd=tmp_path),
                          "no such file", "missing.jsonl")


def test_train_of_an_unknown_student_is_one_error_line(tmp_path) -> None:
    fake_state(tmp_path / "run")
    assert_one_line_error(cli("train", "--student", "huge", "--run-dir", "run", cwd=tmp_path),
                          "unknown student 'huge'", "tiny")


def test_a_long_error_stays_on_one_line(tmp_path) -> None:
    deep = tmp_path / ("a-run-directory-with-a-rather-long-name-" * 2)
    assert_one_line_error(cli("status", "--run-dir", str(deep), cwd=tmp_path), "no running pipeline")


def test_help_lists_every_command(tmp_path) -> None:
    result = cli("--help", cwd=tmp_path, columns=120)
    assert result.returncode == 0, result.stderr
    listed = {line.strip("│ ").split(" ")[0] for line in result.stdout.splitlines()}
    assert set(COMMANDS) <= listed


def test_waiting_for_training_stops_with_the_reason_the_trainer_refused(tmp_path, monkeypatch) -> None:
    """`train --wait` and the demo must not wait half an hour for a request the trainer dead-lettered."""
    from distillery.contracts.events import EventDeadLettered
    from distillery.contracts.settings import ConfigError
    from distillery_cli import main, pipeline, stack

    fake_state(tmp_path / "run")
    state = stack.StackState.load(tmp_path / "run")
    refusal = EventDeadLettered(
        dead_letter_id="d1", service="trainer", source_topic="t.training.requests.v1", partition=0, offset=3,
        record_key="train_abc", payload="{}", error="student 'tiny': the snapshot has no samples for unit(s) "
        "['math_steps']", produced_by="trainer@test")
    monkeypatch.setattr(pipeline, "counts", lambda settings, teachers: {settings.topics.students: 0})
    monkeypatch.setattr(pipeline, "metrics", lambda state, service: {})
    monkeypatch.setattr(pipeline, "events", lambda settings, topic, model: [refusal])
    monkeypatch.setattr(main.session, "check_alive", lambda state, name: None)
    with pytest.raises(ConfigError, match=r"the trainer refused the request: student 'tiny': the snapshot has no "
                                          r"samples for unit\(s\) \['math_steps'\]"):
        main._wait_trained(state, "tiny", request_id="train_abc", timeout_s=5)


def test_a_line_that_is_not_utf8_is_reported_and_every_other_line_still_parses(spec) -> None:
    good = json.dumps({"unit": "math_steps", "prompt": "What is 2 + 2?"}).encode()
    other = json.dumps({"unit": "math_steps", "prompt": "Combien font 3 + 4 ? (é)"}, ensure_ascii=False).encode()
    broken = b'{"unit": "math_steps", "prompt": "caf\xe9"}'  # Latin-1, not UTF-8
    events, errors = parse_tasks(b"\n".join([good, broken, other, b""]), spec, MAX, "cli@submit")
    assert [e.task.prompt for e in events] == ["What is 2 + 2?", "Combien font 3 + 4 ? (é)"]
    column = broken.index(b"\xe9") + 1
    assert [(e.line, e.reason) for e in errors] == [(2, f"not valid UTF-8 (byte 0xe9 at column {column})")]


def test_a_line_nested_too_deeply_is_reported_not_raised(spec) -> None:
    deep = '{"unit": "math_steps", "prompt": ' + "[" * 200_000 + "]" * 200_000 + "}"
    events, errors = parse_tasks(deep + "\n" + json.dumps({"unit": "math_steps", "prompt": "1 + 1?"}), spec, 10**7, "x")
    assert len(events) == 1 and [(e.line, e.reason) for e in errors] == [(1, "JSON nested too deeply")]
