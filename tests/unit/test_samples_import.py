"""``distillery samples import``: validating, building and de-duplicating real samples, without a broker.

The repository read is a list of events and the publisher a recorder;
tests/service/test_samples_import_broker.py runs the same import against the real broker.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distillery import __version__
from distillery.contracts import ids
from distillery.contracts.events import (
    CandidatesJudged,
    JudgedCandidate,
    SampleCurated,
    SourceOffset,
    Task,
    ToolCall,
    Trace,
    TrajectoryStep,
    new_task,
    parse_sample_record,
)
from distillery.contracts.submission import LineError
from distillery.domain.samples import hashed_tool_names
from distillery_cli import main
from distillery_cli import samples as sm
from distillery_editor.logic import build_sample
from tests.support import assert_config_error
from tests.unit.test_cli_samples import SPEC_PATH, curated, fake_state, retraction, snapshot_of

MAX_BYTES = 4096
NEWS_TOOL = {"name": "get_news", "description": "Fetches the latest news on a topic.",
             "parameters": {"type": "dict", "properties": {"topic": {"type": "string"}}, "required": ["topic"]}}

CORRECTION = {"unit": "math_steps", "prompt": "What is 17 * 23?", "final": "#### 391",
              "metadata": {"source": "support-desk", "ticket": "SUP-1042"}}
TOOL_FAILURE = {"unit": "tool_call", "prompt": "Get the news on Bitcoin", "pool": "hard_case",
                "final": '{"name": "get_news", "arguments": {"topic": "Bitcoin"}}', "tools": [NEWS_TOOL],
                "tool_steps": [{"tool": "get_news", "arguments": {"topic": "Bitcoin"}}], "evidence": ["prod:log-77"]}
CONTRAST = {"unit": "math_steps", "prompt": "What is 6 * 7?", "final": "#### 42", "pool": "contrastive",
            "contrast": "#### 48", "limits": "Wrong because: 6 * 8 is not 6 * 7.", "tier": "medium", "weight": 0.5,
            "task_id": "task_the_one_it_corrects"}


def jsonl(*lines: dict | str) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


def parse(data: bytes, spec, max_bytes: int = MAX_BYTES) -> tuple[list[SampleCurated], list[LineError]]:
    return sm.parse_real_samples(data, spec, max_bytes, "cli@test")


# --- valid lines ---------------------------------------------------------------------------------------------


def test_a_valid_line_becomes_a_real_sample_with_deterministic_ids_and_provenance(spec) -> None:
    data = jsonl(CORRECTION)
    (sample,), errors = parse(data, spec)
    assert errors == []
    assert (sample.origin, sample.unit, sample.pathway, sample.pool, sample.tier) == ("real", "math_steps", "answer",
                                                                                     "train", "high")
    assert (sample.prompt, sample.final, sample.rationale, sample.limits, sample.contrast) == (
        "What is 17 * 23?", "#### 391", "", "", "")
    assert sample.sample_id == sample.event_id == ids.content_id("real", "math_steps", "answer", "What is 17 * 23?",
                                                                 "#### 391", "", "", "")
    task_id = new_task("math_steps", "What is 17 * 23?").task_id  # the id `submit` gives the same prompt
    assert sample.provenance.model_dump() == {
        "task_id": task_id, "candidate_id": f"real:{sample.content_hash}", "teacher_id": "support-desk",
        "judge_version": "human", "verdict_id": f"import:{hashlib.sha256(data).hexdigest()[:12]}", "source": None}
    assert sample.trace == Trace(task_id=task_id) and sample.key == task_id
    assert (sample.score, sample.confidence, sample.tokens_before, sample.tokens_after) == (None, None, 0, 0)
    assert sample.metadata == {"source": "support-desk", "ticket": "SUP-1042"} and sample.weight == 1.0
    assert sample.produced_by == "cli@test"
    assert parse_sample_record(sample.model_dump_json()) == sample  # what goes on the wire reads back


def test_optional_fields_are_kept_and_defaults_are_the_editors(spec) -> None:
    (failure, contrast), errors = parse(jsonl(TOOL_FAILURE, CONTRAST), spec)
    assert errors == []
    assert failure.weight == spec.units["tool_call"].editor.hard_case_weight  # hard cases are upsampled
    assert [t.name for t in failure.tools] == ["get_news"] and failure.tool_steps == TOOL_FAILURE["tool_steps"]
    assert failure.evidence == ["prod:log-77"] and failure.provenance.teacher_id == "human"
    assert failure.provenance.task_id == new_task("tool_call", TOOL_FAILURE["prompt"], tools=[NEWS_TOOL]).task_id
    assert (contrast.pool, contrast.contrast, contrast.tier, contrast.weight) == ("contrastive", "#### 48", "medium", 0.5)
    assert contrast.provenance.task_id == contrast.key == "task_the_one_it_corrects"


def test_the_same_file_gives_the_same_samples_and_another_file_only_another_verdict_id(spec) -> None:
    first, _ = parse(jsonl(CORRECTION, TOOL_FAILURE), spec)
    again, _ = parse(jsonl(CORRECTION, TOOL_FAILURE), spec)
    other, _ = parse(jsonl(TOOL_FAILURE, CORRECTION), spec)
    assert [s.model_dump(exclude={"produced_at"}) for s in first] == [s.model_dump(exclude={"produced_at"}) for s in again]
    assert {s.sample_id for s in first} == {s.sample_id for s in other}
    assert first[0].provenance.verdict_id != other[1].provenance.verdict_id


def test_blank_lines_are_skipped_but_counted_and_crlf_is_accepted(spec) -> None:
    data = b"\n" + json.dumps(CORRECTION).encode() + b"\r\n   \r\n{oops}\r\n"
    samples, errors = parse(data, spec)
    assert len(samples) == 1
    assert [e.line for e in errors] == [4]


# --- bad lines -----------------------------------------------------------------------------------------------


BAD_LINES = {
    "not json": ("{oops", ["not valid JSON", "column 2"]),
    "not an object": ("[1, 2]", ["a sample line must be a JSON object"]),
    "unknown field": ({**CORRECTION, "answer": "391", "score": 1}, ["unknown field(s) 'answer', 'score'", "allowed: unit"]),
    "missing final": ({"unit": "math_steps", "prompt": "What is 1 + 1?"}, ["field 'final': Field required"]),
    "empty prompt": ({**CORRECTION, "prompt": "  \n"}, ["field 'prompt' is empty"]),
    "empty final": ({**CORRECTION, "final": ""}, ["field 'final' is empty"]),
    "wrong type": ({**CORRECTION, "final": 391}, ["field 'final'", "valid string"]),
    "unknown unit": ({**CORRECTION, "unit": "poetry"}, ["unknown capability unit 'poetry'", "math_steps"]),
    "undeclared pathway": ({**CORRECTION, "pathway": "style"}, ["unit 'math_steps' has no pathway 'style'",
                                                                "it declares answer, process"]),
    "unknown pool": ({**CORRECTION, "pool": "trian"}, ["pool 'trian' does not hold samples", "train, hard_case"]),
    "pool without samples": ({**CORRECTION, "pool": "review"}, ["pool 'review' does not hold samples"]),
    "contrastive without contrast": ({**CONTRAST, "contrast": " "}, ["pool 'contrastive' needs 'contrast'"]),
    "contrast outside its pool": ({**CORRECTION, "contrast": "#### 390"}, ["'contrast' belongs to pool 'contrastive'"]),
    "contrastive process": ({**CONTRAST, "pathway": "process", "rationale": "6 * 7 = 42"},
                            ["'answer' pathway only", "'process'"]),
    "process without rationale": ({**CORRECTION, "pathway": "process"}, ["pathway 'process' needs a 'rationale'"]),
    "trajectory without steps": ({"unit": "tool_use", "prompt": "5 km in miles?", "final": "#### 3.11",
                                  "pathway": "tool_trajectory"}, ["pathway 'tool_trajectory' needs 'tool_steps'"]),
    "negative weight": ({**CORRECTION, "weight": -1}, ["field 'weight'", "greater than or equal to 0"]),
    "infinite weight": ({**CORRECTION, "weight": 1e999}, ["field 'weight'", "finite"]),
    "unknown tier": ({**CORRECTION, "tier": "top"}, ["field 'tier'"]),
    "metadata not text": ({**CORRECTION, "metadata": {"ticket": 1042}}, ["field 'metadata.ticket'"]),
    "evidence not a list": ({**CORRECTION, "evidence": "log-77"}, ["field 'evidence'"]),
    "tool without a name": ({**TOOL_FAILURE, "tools": [{"description": "no name"}]}, ["field 'tools.0.name'"]),
    "empty task id": ({**CORRECTION, "task_id": ""}, ["field 'task_id'"]),
}


@pytest.mark.parametrize("bad, needles", list(BAD_LINES.values()), ids=list(BAD_LINES))
def test_a_bad_line_is_reported_with_its_number_and_reason_and_the_others_still_import(spec, bad, needles) -> None:
    samples, errors = parse(jsonl(CORRECTION, bad, TOOL_FAILURE), spec)
    assert [s.prompt for s in samples] == [CORRECTION["prompt"], TOOL_FAILURE["prompt"]]
    (error,) = errors
    assert error.line == 2
    for needle in needles:
        assert needle in error.reason
    assert "\n" not in error.reason


def test_lines_over_the_size_limit_and_lines_not_utf8_are_rejected(spec) -> None:
    long = {**CORRECTION, "final": "#### 391 " + "x" * 2000}
    size = len(json.dumps(long).encode())
    samples, errors = parse(jsonl(long, CORRECTION) + b'{"unit": "\xff"}\n', spec, max_bytes=1024)
    assert [s.prompt for s in samples] == [CORRECTION["prompt"]]
    assert errors == [LineError(1, f"line is {size} bytes, over the 1024-byte limit"), LineError(3, "not valid UTF-8")]


def test_a_line_repeating_an_earlier_one_is_rejected(spec) -> None:
    shouted = {**CORRECTION, "prompt": "WHAT IS 17  *  23?", "metadata": {}}  # the same once case and spaces are aside
    samples, errors = parse(jsonl(CORRECTION, TOOL_FAILURE, CORRECTION, shouted), spec)
    assert len(samples) == 2
    assert errors == [LineError(3, "the same sample as line 1"),
                      LineError(4, "the same content as line 1 (case and whitespace aside)")]


# --- the editor's content hash -------------------------------------------------------------------------------


def judged(cid: str, pool: str, text: str, **fields) -> JudgedCandidate:
    return JudgedCandidate(candidate_id=cid, teacher_id="alpha", text=text, pool=pool, rank=1, score=1.0, **fields)


def editor_samples(spec, task: Task, jc: JudgedCandidate) -> list[SampleCurated]:
    verdict = CandidatesJudged(verdict_id=ids.verdict_id_for(task.task_id, "rules-v1"), task=task,
                               judge_version="rules-v1", candidates=[jc], produced_by="judge@test",
                               trace=Trace(task_id=task.task_id))
    source = SourceOffset(topic="distill.verdicts.v1", partition=0, offset=3)
    unit = spec.units[task.unit]
    built = (build_sample(verdict, jc, unit, pathway, source, "editor@test", lambda text: len(text.split()))
             for pathway in unit.pathways)
    return [s for s in built if s is not None]


def test_the_content_hash_is_the_one_the_editor_computes(spec, tasks) -> None:
    math_text = "Let me see.\n194 * 490 = 95060\n194 * 150 = 29100\n95060 - 29100 = 65960\n#### 65960"
    tool_use = new_task("tool_use", "How many miles is 5 km?")
    trajectory = [TrajectoryStep(tool="convert_units", arguments={"value": 5, "from": "km", "to": "mi"},
                                 observation="3.10686")]
    samples = [
        *editor_samples(spec, tasks["tool_call"], judged("c1", "train", '{"name": "get_news"}',
                                                         tool_calls=[ToolCall(name="get_news", arguments={"topic": "x"})])),
        *editor_samples(spec, tasks["math_steps"], judged("c2", "train", math_text, final="65960")),
        *editor_samples(spec, tasks["math_steps"], judged("c3", "contrastive", "#### 7", final="7",
                                                          correction="#### 65960", reasons=["reference_mismatch"])),
        *editor_samples(spec, tasks["tool_boundary"], judged("c4", "refusal", "I cannot.")),
        *editor_samples(spec, tool_use, judged("c5", "train", "It is 3.11 miles.\n#### 3.11", final="3.11",
                                                    trajectory=trajectory)),
    ]
    assert {(s.unit, s.pathway, s.pool) for s in samples} >= {
        ("tool_call", "answer", "train"), ("math_steps", "process", "train"), ("math_steps", "answer", "contrastive"),
        ("tool_boundary", "answer", "refusal"), ("tool_use", "tool_trajectory", "train")}
    for s in samples:
        unit = spec.units[s.unit]
        assert ids.sample_content_hash(s.unit, s.pathway, hashed_tool_names(s.tools, unit), s.prompt, s.final,
                                       s.rationale, s.limits, s.tool_steps, s.contrast) == s.content_hash, s.pathway


def test_a_real_line_with_a_teacher_samples_content_has_its_content_hash(spec, tasks) -> None:
    (teacher,) = editor_samples(spec, tasks["tool_call"], judged(
        "c1", "train", "call", tool_calls=[ToolCall(name="get_news", arguments={"topic": "Bitcoin", "quantity": 5})]))
    line = {"unit": "tool_call", "prompt": teacher.prompt.upper(), "final": teacher.final,
            "tools": [t.model_dump() for t in teacher.tools], "tool_steps": teacher.tool_steps}
    (real,), _ = parse(jsonl(line), spec)
    assert real.content_hash == teacher.content_hash and real.sample_id != teacher.sample_id


# --- what the repository holds already -------------------------------------------------------------------------


def test_reimporting_imports_nothing_new(spec) -> None:
    data = jsonl(CORRECTION, TOOL_FAILURE, CONTRAST)
    first = sm.plan_import(data, spec, MAX_BYTES, sm.present_in([]))
    assert (len(first.new), len(first.present), first.rejected) == (3, 0, [])
    again = sm.plan_import(data, spec, MAX_BYTES, sm.present_in(first.new))  # the topic now holds them
    assert (again.new, [s.sample_id for s in again.present]) == ([], [s.sample_id for s in first.new])
    by_ids = sm.plan_import(data, spec, MAX_BYTES, sm.Present(frozenset({first.new[1].sample_id}), frozenset()))
    assert [s.sample_id for s in by_ids.new] == [first.new[0].sample_id, first.new[2].sample_id]


def test_a_retracted_id_stays_out_but_a_retracted_content_is_free_again(spec) -> None:
    (real,), _ = parse(jsonl(CORRECTION), spec)
    plan = sm.plan_import(jsonl(CORRECTION), spec, MAX_BYTES, sm.present_in([real, retraction(real, "human")]))
    assert (plan.new, len(plan.present)) == ([], 1)  # as the editor: a redelivery never brings back a retracted id
    teacher = curated(CORRECTION["prompt"], unit="math_steps", final="x").model_copy(
        update={"content_hash": real.content_hash})
    assert len(sm.plan_import(jsonl(CORRECTION), spec, MAX_BYTES, sm.present_in([teacher])).present) == 1  # live content
    assert len(sm.plan_import(jsonl(CORRECTION), spec, MAX_BYTES,
                              sm.present_in([teacher, retraction(teacher)])).new) == 1


def test_the_summary_line_counts_imported_present_and_rejected() -> None:
    plan = sm.ImportPlan(new=[object()] * 2, present=[object()], rejected=[LineError(3, "bad")])
    assert sm.import_summary(plan, "t.samples.v1", dry_run=False) == (
        "imported 2 sample(s) into t.samples.v1, 1 already in the repository, 1 line(s) rejected")
    assert sm.import_summary(plan, "t.samples.v1", dry_run=True) == (
        "would import 2 sample(s) into t.samples.v1, 1 already in the repository, 1 line(s) rejected "
        "(dry run: nothing published)")


# --- the command -----------------------------------------------------------------------------------------------


runner = CliRunner()


@pytest.fixture
def published(monkeypatch) -> list[list[SampleCurated]]:
    """What the command publishes, call by call (the topic read holds one of CORRECTION's samples already)."""
    calls: list[list[SampleCurated]] = []
    monkeypatch.setattr(sm, "publish_samples", lambda settings, samples: calls.append(list(samples)))
    (already,), _ = parse(jsonl(CORRECTION), sm.load_spec(SPEC_PATH))
    monkeypatch.setattr(sm, "read_samples", lambda settings: snapshot_of([already], settings.topics.samples))
    return calls


def import_file(tmp_path: Path, *lines: dict | str) -> Path:
    path = tmp_path / "real.jsonl"
    path.write_bytes(jsonl(*lines))
    return path


def test_import_publishes_the_new_samples_and_exits_0(tmp_path, published) -> None:
    file = import_file(tmp_path, CORRECTION, TOOL_FAILURE, CONTRAST)
    result = runner.invoke(main.app, ["samples", "import", str(file), "--run-dir", str(fake_state(tmp_path / "run"))])
    assert result.exit_code == 0, result.output
    assert "imported 2 sample(s) into t.samples.v1, 1 already in the repository, 0 line(s) rejected" in result.output
    (batch,) = published
    assert [s.prompt for s in batch] == [TOOL_FAILURE["prompt"], CONTRAST["prompt"]]
    assert {s.origin for s in batch} == {"real"} and {s.produced_by for s in batch} == {f"cli@{__version__}"}


def test_rejected_lines_are_listed_and_exit_1_while_the_valid_ones_import(tmp_path, published) -> None:
    file = import_file(tmp_path, TOOL_FAILURE, {**CORRECTION, "unit": "poetry"}, "{oops", CONTRAST)
    result = runner.invoke(main.app, ["samples", "import", str(file), "--run-dir", str(fake_state(tmp_path / "run"))])
    assert result.exit_code == 1, result.output
    assert f"{file}:2: unknown capability unit 'poetry'" in result.output
    assert f"{file}:3: not valid JSON" in result.output
    assert "imported 2 sample(s) into t.samples.v1, 0 already in the repository, 2 line(s) rejected" in result.output
    assert [len(batch) for batch in published] == [2]


def test_a_dry_run_validates_and_reports_but_publishes_nothing(tmp_path, published) -> None:
    file = import_file(tmp_path, CORRECTION, TOOL_FAILURE, {**CONTRAST, "contrast": ""})
    result = runner.invoke(main.app, ["samples", "import", str(file), "--dry-run",
                                      "--run-dir", str(fake_state(tmp_path / "run"))])
    assert result.exit_code == 1, result.output
    assert "would import 1 sample(s) into t.samples.v1, 1 already in the repository, 1 line(s) rejected " \
           "(dry run: nothing published)" in result.output
    assert f"{file}:3: pool 'contrastive' needs 'contrast'" in result.output
    assert published == []


def test_nothing_new_publishes_nothing(tmp_path, published) -> None:
    file = import_file(tmp_path, CORRECTION)
    result = runner.invoke(main.app, ["samples", "import", str(file), "--run-dir", str(fake_state(tmp_path / "run"))])
    assert result.exit_code == 0, result.output
    assert "imported 0 sample(s) into t.samples.v1, 1 already in the repository" in result.output
    assert published == []


def test_a_missing_file_or_pipeline_is_a_one_line_error(tmp_path, published) -> None:
    run_dir = str(fake_state(tmp_path / "run"))
    assert_config_error(runner.invoke(main.app, ["samples", "import", str(tmp_path / "nope.jsonl"), "--run-dir", run_dir]),
                        "no such file", "nope.jsonl")
    file = import_file(tmp_path, CORRECTION)
    assert_config_error(runner.invoke(main.app, ["samples", "import", str(file), "--run-dir", str(tmp_path / "nowhere")]),
                        "no running pipeline")
    assert published == []
