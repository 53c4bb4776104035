"""``distillery samples import`` on the real broker: real samples land on the samples topic beside the
editor's, exactly once however often the file is imported, and ``distillery samples`` counts them as real.
"""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from distillery.contracts.events import SampleCurated, live_samples, parse_sample_record
from distillery.contracts.spec import load_spec
from distillery.runtime.kafka import ensure_topics, read_snapshot
from distillery_cli import main
from distillery_cli import samples as sm
from tests.service.test_samples_export import publish_history
from tests.support import ROOT
from tests.unit.test_cli_samples import sample_history
from tests.unit.test_samples_import import CONTRAST, CORRECTION, TOOL_FAILURE, jsonl

SPEC_PATH = ROOT / "examples" / "spec.yaml"
VALID = [CORRECTION, TOOL_FAILURE, CONTRAST]


def topic_events(settings) -> list:
    """Every record of the samples topic that parses, in topic order per partition (the junk one is skipped)."""
    snapshot = asyncio.run(read_snapshot(settings, settings.topics.samples))
    events = []
    for record in snapshot.records:
        try:
            events.append(parse_sample_record(record.value))
        except ValueError:
            continue
    return events


def imported(events: list) -> list[SampleCurated]:
    return [e for e in events if isinstance(e, SampleCurated) and e.provenance.verdict_id.startswith("import:")]


def end_offsets(settings) -> dict[int, int]:
    return sm.read_samples(settings).end_offsets


def state_dir(tmp_path, settings, kafka_bootstrap):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "state.json").write_text(json.dumps({
        "run_dir": str(run_dir), "bootstrap": kafka_bootstrap, "topic_prefix": settings.topic_prefix,
        "spec_path": str(SPEC_PATH), "broker_pid": None, "processes": [],
    }))
    return run_dir


def per_unit_row(output: str, unit: str) -> list[str]:
    """The cells of ``unit``'s row in the 'per unit' table."""
    line = next(line for line in output.splitlines() if f" {unit} " in line and line.count("│") > 8)
    return [cell.strip() for cell in line.split("│")[1:-1]]


def test_the_valid_lines_land_once_as_real_samples(tmp_path, settings) -> None:
    asyncio.run(ensure_topics(settings, settings.topics.all_topics([])))
    file = tmp_path / "real.jsonl"
    file.write_bytes(jsonl(CORRECTION, {**CORRECTION, "unit": "poetry"}, TOOL_FAILURE, "{oops", CONTRAST))
    spec = load_spec(SPEC_PATH)

    dry = sm.import_samples(settings, spec, file, dry_run=True)
    assert (len(dry.new), len(dry.present), [e.line for e in dry.rejected]) == (3, 0, [2, 4])
    assert topic_events(settings) == []  # a dry run publishes nothing

    plan = sm.import_samples(settings, spec, file)
    assert (len(plan.new), len(plan.present), [e.line for e in plan.rejected]) == (3, 0, [2, 4])
    on_topic = imported(topic_events(settings))
    assert sorted(s.prompt for s in on_topic) == sorted(line["prompt"] for line in VALID)
    assert {s.origin for s in on_topic} == {"real"}
    assert {s.sample_id for s in on_topic} == {s.sample_id for s in plan.new}
    assert {s.sample_id: s.provenance.task_id for s in on_topic} == {s.sample_id: s.key for s in plan.new}
    offsets = end_offsets(settings)

    again = sm.import_samples(settings, spec, file)
    assert (again.new, len(again.present)) == ([], 3)
    assert end_offsets(settings) == offsets  # nothing new on the topic


def test_the_command_imports_beside_the_editors_samples_and_the_overview_counts_them_real(
        tmp_path, settings, kafka_bootstrap) -> None:
    publish_history(settings, sample_history())  # the editor's samples (one real already), a retraction, a junk record
    run_dir = state_dir(tmp_path, settings, kafka_bootstrap)
    file = tmp_path / "real.jsonl"
    file.write_bytes(jsonl(CORRECTION, TOOL_FAILURE, {**CONTRAST, "pool": "review"}, CONTRAST))
    runner = CliRunner()

    first = runner.invoke(main.app, ["samples", "import", str(file), "--run-dir", str(run_dir)])
    assert first.exit_code == 1, first.output
    assert f"{file}:3: pool 'review' does not hold samples" in first.output
    assert (f"imported 3 sample(s) into {settings.topics.samples}, 0 already in the repository, "
            "1 line(s) rejected") in first.output
    events = topic_events(settings)
    assert sorted(s.prompt for s in imported(events)) == sorted(line["prompt"] for line in VALID)
    live = live_samples(events)
    assert sum(s.origin == "real" for s in live) == 4  # the three imported and the one already there

    second = runner.invoke(main.app, ["samples", "import", str(file), "--run-dir", str(run_dir)])
    assert second.exit_code == 1, second.output
    assert "imported 0 sample(s)" in second.output and "3 already in the repository" in second.output
    assert len(topic_events(settings)) == len(events)

    overview = runner.invoke(main.app, ["samples", "--run-dir", str(run_dir)])
    assert overview.exit_code == 0, overview.output
    assert "10 live, 1 retracted sample(s)" in overview.output
    assert "┃ teacher ┃ real ┃" in overview.output  # the per-unit table's origin columns
    assert per_unit_row(overview.output, "math_steps")[1:3] == ["5", "1"]
    assert per_unit_row(overview.output, "math_steps")[-2:] == ["3", "2"]
    assert per_unit_row(overview.output, "tool_call")[-2:] == ["2", "2"]
