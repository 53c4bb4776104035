"""``distillery samples`` on the real broker: the samples topic as the editor writes it, read and exported.

Curated samples and retractions are published keyed by task id, as the editor does, plus one
record that is no sample at all; the export must hold exactly the live samples, and two exports
of the same topic must be byte-identical whatever order the partitions were read in.
"""

from __future__ import annotations

import asyncio
import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from distillery.contracts.events import live_samples
from distillery.runtime.kafka import ensure_topics, produce_all
from distillery_cli import main
from distillery_cli import samples as sm
from tests.support import ROOT
from tests.unit.test_cli_samples import sample_history


def publish_history(settings, history: list) -> None:
    """The samples topic as the editor leaves it, and one record no reader can parse."""
    asyncio.run(ensure_topics(settings, settings.topics.all_topics([])))
    items = [(settings.topics.samples, event.key, event.model_dump_json().encode()) for event in history]
    items.append((settings.topics.samples, "junk", b"\xff not a sample"))
    asyncio.run(produce_all(settings, items))


def test_the_export_holds_exactly_the_live_samples(tmp_path, settings) -> None:
    history = sample_history()
    publish_history(settings, history)
    live_ids = sorted(s.sample_id for s in live_samples(history))

    manifest = sm.export_samples(settings, tmp_path / "a")
    rows = [json.loads(line) for line in (tmp_path / "a" / "samples.jsonl").read_text().splitlines()]
    assert [r["sample_id"] for r in rows] == live_ids
    assert pq.read_table(tmp_path / "a" / "samples.parquet").to_pylist() == rows
    assert manifest["topic"] == settings.topics.samples
    assert sum(manifest["end_offsets"].values()) == len(history) + 1
    assert (manifest["rows"], manifest["live_samples"], manifest["retracted_samples"],
            manifest["unreadable_records"]) == (7, 7, 1, 1)

    again = sm.export_samples(settings, tmp_path / "b")  # same topic, same offsets: same bytes
    for name in ("samples.jsonl", "samples.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert again["files"] == manifest["files"] and again["end_offsets"] == manifest["end_offsets"]

    math = sm.export_samples(settings, tmp_path / "math", files=sm.formats_for("parquet"),
                             units=["math_steps"], pools=["train"])
    assert math["rows"] == 3 and math["counts"]["per_unit"] == {"math_steps": 3}


def test_the_commands_read_the_running_pipelines_topic(tmp_path, settings, kafka_bootstrap) -> None:
    publish_history(settings, sample_history())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "state.json").write_text(json.dumps({
        "run_dir": str(run_dir), "bootstrap": kafka_bootstrap, "topic_prefix": settings.topic_prefix,
        "spec_path": str(ROOT / "examples" / "spec.yaml"), "broker_pid": None, "processes": [],
    }))
    runner = CliRunner()
    overview = runner.invoke(main.app, ["samples", "--run-dir", str(run_dir)])
    assert overview.exit_code == 0, overview.output
    assert f"{settings.topics.samples} at offsets" in overview.output
    assert "7 live, 1 retracted sample(s)" in overview.output
    assert "dedup rates: the editor is not reachable" in overview.output

    exported = runner.invoke(main.app, ["samples", "export", str(tmp_path / "out"), "--format", "jsonl",
                                        "--run-dir", str(run_dir)])
    assert exported.exit_code == 0, exported.output
    assert "exported 7 sample(s)" in exported.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "samples.jsonl"]
