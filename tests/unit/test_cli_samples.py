"""``distillery samples``: the counting functions, the export writer, and the commands' one-line errors.

Topic reads are replaced by lists of events (a ``SamplesSnapshot``), so nothing here needs a
broker; tests/service/test_samples_export.py runs the same export against the real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from distillery.contracts import ids
from distillery.contracts.events import Provenance, SampleCurated, SampleRetracted, SourceOffset, ToolSpec, Trace
from distillery.contracts.settings import ConfigError
from distillery_cli import main
from distillery_cli import samples as sm
from tests.support import assert_config_error

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "examples" / "spec.yaml"
JUDGE = "rules-v1-0123456789"
PRODUCED_AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)  # whole seconds: the JSON reader's trap
NEWS_TOOL = ToolSpec(name="get_news", description="Fetches the latest news on a specific topic.",
                     parameters={"type": "dict", "properties": {"topic": {"type": "string"},
                                                                "quantity": {"type": "integer"}},
                                 "required": ["topic", "quantity"]})


# --- builders ---------------------------------------------------------------------------------------


def curated(prompt: str, unit: str = "tool_call", pathway: str = "answer", pool: str = "train",
            tier: str = "high", teacher: str = "qwen-coder", final: str = "42", offset: int = 0,
            **fields) -> SampleCurated:
    """A sample with the ids the editor would give it (its task, candidate, verdict and judge version)."""
    task_id = ids.task_id_for(unit, prompt)
    candidate_id = ids.candidate_id_for(ids.request_id_for(task_id, teacher))
    verdict_id = ids.verdict_id_for(task_id, JUDGE)
    return SampleCurated(
        sample_id=ids.sample_id_for(candidate_id, JUDGE, pathway), unit=unit, pathway=pathway, pool=pool,
        prompt=prompt, final=final, content_hash=ids.normalized_hash(final), tier=tier,
        provenance=Provenance(task_id=task_id, candidate_id=candidate_id, teacher_id=teacher, judge_version=JUDGE,
                              verdict_id=verdict_id, source=SourceOffset(topic="distill.verdicts.v1", partition=0,
                                                                         offset=offset)),
        produced_by="editor@0.1.0", produced_at=fields.pop("produced_at", PRODUCED_AT),
        trace=Trace(task_id=task_id, causation_id=verdict_id), **fields,
    )


def retraction(sample: SampleCurated, judge_version: str = "rules-v2-abcdefabcd") -> SampleRetracted:
    return SampleRetracted(sample_id=sample.sample_id, judge_version=judge_version, reason=f"rejected by {judge_version}",
                           task_id=sample.provenance.task_id, candidate_id=sample.provenance.candidate_id,
                           produced_by="editor@0.1.0", trace=Trace(task_id=sample.provenance.task_id))


def news_call() -> SampleCurated:
    final = json.dumps({"name": "get_news", "arguments": {"topic": "Bitcoin", "quantity": 5}})
    return curated("Get 5 latest news on Bitcoin in US", final=final, score=1.0, evidence=["bfcl:simple_python_210"],
                   tools=[NEWS_TOOL], tool_steps=[{"tool": "get_news", "arguments": {"topic": "Bitcoin", "quantity": 5}}],
                   metadata={"difficulty": "medium"})


def sample_history() -> list:
    """A repository's topic: tool calls, math with compression and clusters, a refusal, two retractions
    (one of them revived by a later curation)."""
    retracted_math = curated("What is 17 * 23?", unit="math_steps", pathway="process", final="#### 391",
                             tokens_before=200, tokens_after=100, cluster="math-9", weight=2.0)
    revived = curated("What is 6 * 7?", unit="math_steps", pathway="answer", final="#### 42", tier="medium",
                      tokens_before=40, tokens_after=40, cluster="math-3", score=0.8)
    return [
        news_call(),
        curated("Weather in Paris tomorrow", final='{"name": "get_weather", "arguments": {"city": "Paris"}}',
                origin="real", metadata={"source": "production"}),
        curated("Convert 3 miles to km", pool="hard_case", tier="medium", weight=1.5, confidence=0.41,
                final='{"name": "convert", "arguments": {"value": 3, "from": "mi", "to": "km"}}'),
        curated("What is 12 * 4?", unit="math_steps", pathway="process", rationale="12 * 4 = 48.", final="#### 48",
                tokens_before=120, tokens_after=80, cluster="math-3", weight=1.2, score=0.95),
        revived,
        curated("What is 9 + 10?", unit="math_steps", pathway="process", tier="low", final="#### 19",
                cluster="math-7", weight=0.4),
        retracted_math,
        curated("Delete all files on the server", unit="tool_boundary", pool="refusal",
                final="I can't do that with the tools available."),
        retraction(retracted_math),
        retraction(revived),
        revived,  # a later verdict (or a human accept) brought it back
    ]


@pytest.fixture
def history() -> list:
    return sample_history()


def snapshot_of(history: list, topic: str = "distill.samples.v1") -> sm.SamplesSnapshot:
    return sm.SamplesSnapshot(topic, {0: len(history) - 2, 1: 2}, history)


# --- the repository and its counts ------------------------------------------------------------------------


def test_retracted_samples_are_not_live_and_a_revived_one_is(history) -> None:
    repo = sm.repository_of(history)
    assert len(repo.live) == 7
    assert [s.prompt for s in repo.retracted] == ["What is 17 * 23?"]
    assert "What is 6 * 7?" in {s.prompt for s in repo.live}


def test_mix_counts_leave_retracted_samples_out_and_sort_tiers_high_to_low(history) -> None:
    counts = sm.mix_counts(sm.repository_of(history).live)
    assert counts == [
        (("math_steps", "train", "answer", "medium"), 1),
        (("math_steps", "train", "process", "high"), 1),
        (("math_steps", "train", "process", "low"), 1),
        (("tool_boundary", "refusal", "answer", "high"), 1),
        (("tool_call", "hard_case", "answer", "medium"), 1),
        (("tool_call", "train", "answer", "high"), 2),
    ]


def test_compression_is_tokens_after_over_before_where_they_were_counted(history) -> None:
    math = sm.of_units(sm.repository_of(history).live, {"math_steps"})
    assert sm.compression_ratio(math) == pytest.approx((80 + 40) / (120 + 40))  # the retracted 200 -> 100 is out
    assert sm.compression_ratio(sm.of_units(history[:3], {"tool_call"})) is None  # nothing counted tokens
    assert sm.compression_ratio([]) is None
    assert sm.format_compression(0.75) == "0.75 (25% saved)"
    assert sm.format_compression(1.5) == "1.50 (50% longer)"
    assert sm.format_compression(None) == "-"


def test_unit_summaries_count_retractions_weights_clusters_and_origins(history) -> None:
    summaries = {s.unit: s for s in sm.unit_summaries(sm.repository_of(history))}
    assert list(summaries) == ["math_steps", "tool_boundary", "tool_call"]
    math, calls = summaries["math_steps"], summaries["tool_call"]
    assert (math.live, math.retracted, math.clusters) == (3, 1, 2)
    assert math.mean_weight == pytest.approx((1.2 + 1.0 + 0.4) / 3)
    assert (calls.live, calls.retracted, calls.clusters, calls.compression) == (3, 0, 0, None)
    assert calls.origins == Counter(teacher=2, real=1)
    assert [s.unit for s in sm.unit_summaries(sm.repository_of(history), unit="tool_call")] == ["tool_call"]
    assert sm.unit_summaries(sm.repository_of(history), unit="poetry") == []


def editor_metrics(duplicates: dict[str, float], published: dict[tuple[str, str, str], float]) -> sm.Metrics:
    return {
        sm.DUPLICATES_METRIC: [({"reason": r}, v) for r, v in duplicates.items()],
        sm.PUBLISHED_METRIC: [({"unit": u, "pool": p, "pathway": w}, v) for (u, p, w), v in published.items()],
        "distillery_editor_stale_verdicts_total": [({}, 0.0)],
    }


def test_dedup_rate_is_duplicates_over_duplicates_and_published_per_reason() -> None:
    metrics = editor_metrics({"duplicate_id": 2.0, "duplicate_content": 6.0},
                             {("tool_call", "train", "answer"): 10.0, ("math_steps", "train", "process"): 8.0})
    dedup = sm.editor_dedup(metrics)
    assert dedup.published == 18
    assert [(r.reason, r.dropped, r.published) for r in dedup.rates] == [("duplicate_content", 6, 18),
                                                                         ("duplicate_id", 2, 18)]
    assert [r.rate for r in dedup.rates] == [pytest.approx(6 / 24), pytest.approx(2 / 20)]


def test_dedup_without_an_editor_or_without_duplicates(capsys) -> None:
    assert sm.editor_dedup({}) is None  # not reachable: nothing scraped
    quiet = sm.editor_dedup(editor_metrics({}, {("tool_call", "train", "answer"): 3.0}))
    assert (quiet.published, quiet.rates) == (3, [])
    assert sm.DedupRate("duplicate_id", 0, 0).rate == 0.0
    sm.print_dedup(quiet)
    assert capsys.readouterr().out.strip() == ("dedup rates: the editor dropped no duplicates since it started "
                                               "(3 samples published)")


def test_the_overview_prints_the_mix_units_and_dedup_tables(history, capsys) -> None:
    dedup = sm.editor_dedup(editor_metrics({"duplicate_content": 1.0}, {("tool_call", "train", "answer"): 3.0}))
    sm.print_overview(snapshot_of(history), dedup)
    out = capsys.readouterr().out
    assert "distill.samples.v1 at offsets 0:9 1:2: 7 live, 1 retracted sample(s)" in out
    assert "live samples per unit, pool, pathway and tier" in out
    math_row = next(line for line in out.splitlines() if "math_steps" in line and "0.75" in line)
    assert "25% saved" in math_row and "0.87" in math_row  # mean weight (1.2 + 1.0 + 0.4) / 3
    dedup_row = next(line for line in out.splitlines() if "duplicate_content" in line)
    assert dedup_row.split() == ["│", "duplicate_content", "│", "1", "│", "3", "│", "25.0%", "│"]


def test_the_overview_of_one_unit_and_without_an_editor(history, capsys) -> None:
    sm.print_overview(snapshot_of(history), None, unit="tool_boundary")
    out = capsys.readouterr().out
    assert "1 live, 0 retracted sample(s) of unit 'tool_boundary'" in out
    assert "tool_call" not in out and "math_steps" not in out
    assert "dedup rates: the editor is not reachable" in out


# --- the export ------------------------------------------------------------------------------------------------


def test_the_columns_are_the_sample_fields_with_free_form_ones_as_json() -> None:
    schema = sm.export_schema()
    assert schema.names == list(SampleCurated.model_fields)
    assert sm.json_columns() == ["tool_steps", "tools", "metadata"]
    assert str(schema.field("provenance").type) == ("struct<task_id: string, candidate_id: string, teacher_id: string, "
                                                    "judge_version: string, verdict_id: string, source: struct<topic: "
                                                    "string, partition: int64, offset: int64>>")
    assert schema.field("evidence").type == pa.list_(pa.string())
    assert {name: str(schema.field(name).type) for name in ("weight", "tokens_before", "score", "produced_at", "tier")} \
        == {"weight": "double", "tokens_before": "int64", "score": "double", "produced_at": "string", "tier": "string"}
    assert schema.metadata[b"distillery.json_columns"] == b"tool_steps,tools,metadata"


def test_a_row_decodes_back_into_the_sample() -> None:
    sample = news_call().model_copy(update={"produced_at": datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)})
    (row,) = sm.export_rows([sample])
    assert row["produced_at"] == "2024-05-01T12:00:00.123456Z"
    assert json.loads(row["tools"])[0]["parameters"]["required"] == ["topic", "quantity"]
    decoded = {**row, **{name: json.loads(row[name]) for name in sm.json_columns()}}
    assert SampleCurated.model_validate(decoded) == sample


def export(snapshot: sm.SamplesSnapshot, out_dir: Path, **kwargs) -> dict:
    sm.prepare_out_dir(out_dir, kwargs.pop("force", False))
    return sm.write_export(snapshot, out_dir, **kwargs)


def jsonl_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_and_parquet_hold_the_same_live_rows_sorted_by_sample_id(history, tmp_path) -> None:
    export(snapshot_of(history), tmp_path / "out")
    rows = jsonl_rows(tmp_path / "out" / "samples.jsonl")
    table = pq.read_table(tmp_path / "out" / "samples.parquet")
    assert table.to_pylist() == rows
    assert table.schema.names == list(rows[0]) == list(SampleCurated.model_fields)
    live = sm.repository_of(history).live
    assert [r["sample_id"] for r in rows] == sorted(s.sample_id for s in live)
    assert sorted(s.sample_id for s in live) != [s.sample_id for s in live]  # the sort did something


def test_two_exports_of_one_snapshot_are_identical_but_for_exported_at(history, tmp_path) -> None:
    first = export(snapshot_of(history), tmp_path / "a")
    second = export(snapshot_of(list(reversed(history[:8])) + history[8:]), tmp_path / "b")  # other read order
    for name in ("samples.jsonl", "samples.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert {k: v for k, v in first.items() if k != "exported_at"} == {k: v for k, v in second.items() if k != "exported_at"}
    assert datetime.fromisoformat(first["exported_at"]).tzinfo is not None


def test_the_manifest_names_offsets_filters_counts_and_the_files_sha256(history, tmp_path) -> None:
    out = tmp_path / "out"
    manifest = export(snapshot_of(history), out, units=["math_steps", "tool_call"], pools=["train"])
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["topic"] == "distill.samples.v1" and manifest["end_offsets"] == {"0": 9, "1": 2}
    assert manifest["schema_version"] == 2
    assert manifest["filters"] == {"units": ["math_steps", "tool_call"], "pools": ["train"]}
    assert (manifest["rows"], manifest["live_samples"], manifest["retracted_samples"]) == (5, 7, 1)
    assert manifest["counts"] == {"per_unit": {"math_steps": 3, "tool_call": 2}, "per_pool": {"train": 5},
                                  "per_pathway": {"answer": 3, "process": 2},
                                  "per_tier": {"high": 3, "low": 1, "medium": 1}}
    for name in ("samples.jsonl", "samples.parquet"):
        assert manifest["files"][name] == {"sha256": sm.sha256_of(out / name), "bytes": (out / name).stat().st_size}
    import hashlib

    assert manifest["files"]["samples.jsonl"]["sha256"] == hashlib.sha256((out / "samples.jsonl").read_bytes()).hexdigest()
    assert len(jsonl_rows(out / "samples.jsonl")) == pq.read_metadata(out / "samples.parquet").num_rows == 5


def test_one_format_writes_one_data_file(history, tmp_path) -> None:
    manifest = export(snapshot_of(history), tmp_path / "out", files=sm.formats_for("parquet"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "samples.parquet"]
    assert list(manifest["files"]) == ["samples.parquet"]


def test_a_non_empty_folder_is_refused_unless_forced_and_force_clears_stale_files(history, tmp_path) -> None:
    out = tmp_path / "out"
    export(snapshot_of(history), out)
    with pytest.raises(ConfigError, match="is not empty; .* --force"):
        sm.prepare_out_dir(out, force=False)
    (out / "notes.txt").write_text("mine")
    export(snapshot_of(history), out, files=sm.formats_for("jsonl"), force=True)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "notes.txt", "samples.jsonl"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        sm.prepare_out_dir(tmp_path / "file", force=True)


def test_an_empty_export_still_has_the_columns(tmp_path) -> None:
    manifest = export(snapshot_of([]), tmp_path / "out")
    assert manifest["rows"] == 0 and (tmp_path / "out" / "samples.jsonl").read_bytes() == b""
    assert pq.read_table(tmp_path / "out" / "samples.parquet").schema.names == list(SampleCurated.model_fields)


def test_hf_datasets_loads_the_parquet_and_the_jsonl_with_the_same_rows(history, tmp_path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out"
    export(snapshot_of(history), out)
    rows = jsonl_rows(out / "samples.jsonl")
    cache = str(tmp_path / "hf-cache")
    from_parquet = datasets.load_dataset("parquet", data_files=str(out / "samples.parquet"), split="train", cache_dir=cache)
    from_json = datasets.load_dataset("json", data_files=str(out / "samples.jsonl"), split="train", cache_dir=cache)
    assert from_parquet.column_names == from_json.column_names == list(SampleCurated.model_fields)
    assert from_parquet.num_rows == from_json.num_rows == 7
    assert list(from_parquet) == rows
    assert list(from_json) == rows
    assert from_parquet.features["provenance"]["source"]["offset"].dtype == "int64"
    assert from_json.features["produced_at"].dtype == "string"  # fixed-width text is never guessed a timestamp


# --- the commands ----------------------------------------------------------------------------------------------


runner = CliRunner()


def fake_state(run_dir: Path, with_editor: bool = False) -> Path:
    """A state file of an unreachable pipeline; the topic read is replaced in the tests."""
    run_dir.mkdir(exist_ok=True)
    processes = [{"name": "editor", "module": "distillery_editor", "pid": 999999999, "port": 1,
                  "log": str(run_dir / "editor.log"), "env": {}}] if with_editor else []
    (run_dir / "state.json").write_text(json.dumps({
        "run_dir": str(run_dir), "bootstrap": "127.0.0.1:1", "topic_prefix": "t", "spec_path": str(SPEC_PATH),
        "broker_pid": None, "processes": processes,
    }))
    return run_dir


@pytest.fixture
def run_dir(tmp_path, monkeypatch, history) -> Path:
    monkeypatch.setattr(sm, "read_samples", lambda settings: snapshot_of(history, settings.topics.samples))
    return fake_state(tmp_path / "run")


def test_samples_prints_the_tables_and_notes_the_missing_editor(run_dir) -> None:
    result = runner.invoke(main.app, ["samples", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "t.samples.v1 at offsets 0:9 1:2: 7 live, 1 retracted sample(s)" in result.output
    assert "per unit" in result.output and "dedup rates: the editor is not reachable" in result.output


def test_samples_shows_dedup_rates_of_a_running_editor(tmp_path, monkeypatch, history) -> None:
    run_dir = fake_state(tmp_path / "run", with_editor=True)
    monkeypatch.setattr(sm, "read_samples", lambda settings: snapshot_of(history))
    monkeypatch.setattr(sm.stack, "pid_alive", lambda pid: True)
    monkeypatch.setattr(sm.pipeline, "metrics", lambda state, service: editor_metrics(
        {"duplicate_id": 1.0}, {("tool_call", "train", "answer"): 9.0}) if service == "editor" else {})
    result = runner.invoke(main.app, ["samples", "--unit", "tool_call", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "duplicate_id" in result.output and "10.0%" in result.output
    assert "math_steps" not in result.output


def test_an_editor_that_does_not_answer_gives_no_metrics(tmp_path) -> None:
    from distillery_cli import stack

    state = stack.StackState.load(fake_state(tmp_path / "run", with_editor=True))
    assert sm.editor_metrics(state) == {}  # its pid is gone
    assert sm.editor_metrics(stack.StackState.load(fake_state(tmp_path / "bare"))) == {}  # no editor at all


def test_export_writes_the_files_and_says_where(run_dir, tmp_path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(main.app, ["samples", "export", str(out), "--unit", "tool_call", "--pool", "train",
                                      "--pool", "hard_case", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "exported 3 sample(s) from t.samples.v1 at offsets 0:9 1:2" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["filters"] == {"units": ["tool_call"], "pools": ["hard_case", "train"]}
    assert len(jsonl_rows(out / "samples.jsonl")) == 3


def test_an_export_matching_nothing_warns(run_dir, tmp_path) -> None:
    result = runner.invoke(main.app, ["samples", "export", str(tmp_path / "out"), "--unit", "poetry",
                                      "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "exported 0 sample(s)" in result.output


@pytest.mark.parametrize("args, needles", [
    (["--format", "csv"], ["--format must be one of jsonl, parquet, both", "'csv'"]),
    (["--pool", "trian"], ["unknown pool(s) trian", "train, hard_case"]),
])
def test_export_option_errors_are_one_line(run_dir, tmp_path, args, needles) -> None:
    result = runner.invoke(main.app, ["samples", "export", str(tmp_path / "out"), *args, "--run-dir", str(run_dir)])
    assert_config_error(result, *needles)
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_non_empty_folder_without_force(run_dir, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert_config_error(runner.invoke(main.app, ["samples", "export", str(out), "--run-dir", str(run_dir)]),
                        "is not empty", "--force")
    forced = runner.invoke(main.app, ["samples", "export", str(out), "--force", "--run-dir", str(run_dir)])
    assert forced.exit_code == 0, forced.output
    assert (out / "keep.txt").read_text() == "x" and (out / "manifest.json").is_file()


def test_samples_without_a_pipeline_is_an_error(tmp_path) -> None:
    assert_config_error(runner.invoke(main.app, ["samples", "--run-dir", str(tmp_path / "nowhere")]),
                        "no running pipeline")
    assert_config_error(runner.invoke(main.app, ["samples", "export", str(tmp_path / "out"), "--run-dir",
                                                 str(tmp_path / "nowhere")]), "no running pipeline")


def test_an_export_error_is_one_stderr_line_and_exit_code_2(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(COLUMNS="80", NO_COLOR="1", TERM="dumb")
    result = subprocess.run([sys.executable, "-m", "distillery_cli.main", "samples", "export", "out", "--format", "xml"],
                            check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: --format must be one of jsonl, parquet, both (got 'xml')"]
    assert "Traceback" not in result.stdout
