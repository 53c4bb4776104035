"""Students learn and run the teachers' act-observe loop: the per-turn training pairs are the
loop's own prompts, the trainer teaches each turn, and the evaluator runs the student in the loop."""

from __future__ import annotations

import json

import pytest

from distillery.contracts.events import Provenance, SampleCurated, StudentTrained, Task, Trace, TrajectoryStep
from distillery.contracts.spec import StudentSpec
from distillery.domain.generate import Generation, render_chat
from distillery.domain.tools import calculator, convert_units
from distillery.domain.trajectory import LoopItem, closure_line, recorded_step, run_loops, training_turns
from distillery_evaluator.students import (
    AFTER,
    BEFORE,
    base_outputs_path,
    cached_answers,
    loop_answers,
    outputs_key,
    read_cached,
    save_cached,
    student_outputs,
)
from distillery_trainer.training import Inputs, examples_of, plan

pytestmark = pytest.mark.model  # loads or trains a real model

CONVERT = {"name": "convert_units", "arguments": {"value": 3, "from_unit": "km", "to_unit": "m"}}
MULTIPLY = {"name": "calculator", "arguments": {"expression": "3000 * 2"}}
CLOSURE = "FINAL: 6000"


def generation(text: str) -> Generation:
    return Generation(text=text, prompt_tokens=10, completion_tokens=5, finish_reason="stop", mean_token_prob=None,
                      seconds=0.5)


class ScriptedBackend:
    """Answers each task's turns from a script, and records every (key, system, user) it is asked."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.requests: list[tuple[str, str, str]] = []

    def generate(self, requests: list[tuple[str, str, str]], max_new_tokens: int) -> list[Generation]:
        self.requests += requests
        return [generation(self.script[key.partition("#")[0]][int(key.partition("#")[2] or 0)])
                for key, _, _ in requests]


class PlainTokenizer:
    """Just enough tokenizer to render and fingerprint prompts: no chat template (plain fallback)."""

    chat_template = None
    all_special_ids: list[int] = []

    def get_vocab(self) -> dict[str, int]:
        return {"a": 0}


def tool_task(task_id: str = "t1", prompt: str = "How many metres are 3 km, twice?") -> Task:
    return Task(task_id=task_id, unit="tool_use", prompt=prompt)


def two_step_script() -> list[str]:
    return [json.dumps(CONVERT), json.dumps(MULTIPLY), CLOSURE]


@pytest.mark.parametrize("compact", [False, True])  # the teachers' prompts, and the students'
def test_training_turns_are_exactly_the_prompts_the_loop_sends(spec, compact) -> None:
    backend = ScriptedBackend({"t1": two_step_script()})
    (run,) = run_loops([LoopItem(key="t1", task=tool_task())], backend, spec, max_new_tokens=48, compact=compact)
    assert [key for key, _, _ in backend.requests] == ["t1", "t1#1", "t1#2"]  # the replay backend's keys
    assert run.closure == CLOSURE and [s.tool for s in run.steps] == ["convert_units", "calculator"]
    turns = training_turns(spec.units["tool_use"], tool_task(), run.steps, run.closure, compact=compact)
    assert [(system, user) for system, user, _ in turns] == [(system, user) for _, system, user in backend.requests]
    assert [target for _, _, target in turns] == two_step_script()
    assert "Tools:\ncalculator(" in turns[0][0] and "Result: 3000" in turns[1][1]
    assert (" - " in turns[0][0].split("Tools:")[1]) is not compact  # compact: bare signatures


def test_a_recorded_step_and_the_closure_line_read_the_editors_sample_form() -> None:
    entry = {"trigger": "needs ...", "tool": "calculator", "arguments": {"expression": "1+1"}, "observation": "2",
             "error": None, "recovery_of": 0}
    assert recorded_step(entry) == TrajectoryStep(tool="calculator", arguments={"expression": "1+1"}, observation="2")
    assert closure_line("#### 6000") == closure_line("6000") == closure_line("FINAL: 6000") == CLOSURE


def trajectory_sample(spec) -> SampleCurated:
    """A tool_trajectory sample as the editor writes one (steps as dicts, the final as ``#### <n>``)."""
    backend = ScriptedBackend({"t1": two_step_script()})
    (run,) = run_loops([LoopItem(key="t1", task=tool_task())], backend, spec, max_new_tokens=48)
    steps = [{"trigger": "needs it", **step.model_dump()} for step in run.steps]
    return SampleCurated(
        sample_id="s-traj", unit="tool_use", pathway="tool_trajectory", pool="hard_case", prompt=tool_task().prompt,
        final="#### 6000", tool_steps=steps, content_hash="h", weight=2.0,
        provenance=Provenance(task_id="t1", candidate_id="c1", teacher_id="qwen-coder", judge_version="j",
                              verdict_id="v1"),
        produced_by="editor@test", trace=Trace(task_id="t1"),
    )


def test_the_trainer_teaches_a_trajectory_one_example_per_turn(spec) -> None:
    traj = trajectory_sample(spec)
    answer = traj.model_copy(update={"sample_id": "s-answer", "pathway": "answer", "tool_steps": []})
    recipe = StudentSpec(units=["tool_use"], pathways=["answer", "tool_trajectory"], pools=["hard_case"])
    student_spec = spec.model_copy(update={"students": {"t": recipe}})
    inputs = Inputs([traj, answer], offsets={"samples": {0: 2}})
    tokenizer = PlainTokenizer()
    p = plan("t", student_spec, inputs, "samples", tokenizer)
    examples = examples_of(p, recipe, inputs, tokenizer)

    assert len(examples) == len(p["lines"]) == p["manifest"]["examples"] == 1 + 3
    answer_example, *turns = examples
    assert answer_example.target == "#### 6000" and "Tools:" not in answer_example.prompt  # other pathways unchanged
    assert [e.target for e in turns] == two_step_script()
    steps = [recorded_step(s) for s in traj.tool_steps]
    expected = training_turns(spec.units["tool_use"], tool_task(), steps, CLOSURE, compact=True)
    assert [e.prompt for e in turns] == [render_chat(tokenizer, system, user) for system, user, _ in expected]
    assert all(e.weight == 2.0 and e.teacher is None for e in turns)
    assert {e.unit for e in examples} == {"tool_use"}
    assert [json.loads(line)["target"] for line in p["lines"]][1:] == two_step_script()


def test_the_student_loop_calls_real_tools_and_answers_with_its_closure(spec) -> None:
    recipe = StudentSpec(units=["tool_use"], max_new_tokens=48)
    tasks = [tool_task("t1"), tool_task("t2", "Say something.")]
    backend = ScriptedBackend({"t1": two_step_script(), "t2": [json.dumps(CONVERT)] * 4})
    solved, unclosed = loop_answers(backend, BEFORE, recipe, spec, tasks)

    assert solved.text == CLOSURE and solved.tool_calls == 2 and solved.missing is None
    assert solved.latency_s == pytest.approx(1.5) and solved.output_tokens == 15  # three turns summed
    users = {key: user for key, _, user in backend.requests}
    assert f"Result: {convert_units(3, 'km', 'm')}" in users["t1#1"]  # the tool's true result
    assert f"Result: {calculator('3000 * 2')}" in users["t1#2"]
    max_steps = spec.units["tool_use"].max_tool_steps
    assert unclosed.text == "" and unclosed.missing == "error: no_closure" and unclosed.tool_calls == max_steps


def test_student_outputs_are_cached_and_reused(spec, tmp_path) -> None:
    recipe = StudentSpec(units=["tool_use"], max_new_tokens=48)
    tasks = [tool_task("t1")]
    path = tmp_path / "evaluation" / "outputs.after.json"

    def load():
        raise AssertionError("the cache should have answered")

    first = loop_answers(ScriptedBackend({"t1": two_step_script()}), AFTER, recipe, spec, tasks)
    save_cached(path, outputs_key(recipe, spec, tasks), first)
    assert cached_answers(path, AFTER, recipe, spec, tasks, "cpu", load) == first
    other = recipe.model_copy(update={"max_new_tokens": 16})
    assert read_cached(path, outputs_key(other, spec, tasks), AFTER, tasks) is None


@pytest.mark.model
def test_a_tiny_student_runs_the_loop_end_to_end_and_resumes_from_its_cache(spec, tmp_path, monkeypatch) -> None:
    from distillery.domain import models
    from distillery.domain import students as recipes
    from distillery_cli.workload import build_workload
    from distillery_trainer.sft import save_student

    tasks = [Task.model_validate(line) for line in build_workload(0, 2, units=["tool_use"])]
    recipe = StudentSpec(units=["tool_use"], hidden_size=64, layers=1, max_new_tokens=8, batch_size=2)
    artifact = tmp_path / "tiny" / "student_x"
    save_student(*models.build_tiny_student(hidden_size=64, layers=1), artifact / "model")
    trained = StudentTrained(student_id="student_x", student="tiny", version="x", artifact_dir=str(artifact),
                             base_model="tiny-llama", recipe=recipe.model_dump(mode="json"), manifest={},
                             produced_by="trainer@test")
    outputs = student_outputs(trained, recipe, spec, tasks)

    assert [(o.subject, o.task.task_id) for o in outputs] == [(s, t.task_id) for s in (BEFORE, AFTER) for t in tasks]
    max_steps = spec.units["tool_use"].max_tool_steps
    for out in outputs:  # an untrained model's closure may well be empty; a loop without one says why
        assert out.missing is None or (out.text == "" and out.missing.startswith("error: ")), out
        assert out.output_tokens > 0 and out.latency_s > 0 and 0 <= out.tool_calls <= max_steps
    assert (artifact / "evaluation" / "outputs.after.json").is_file()
    base_outputs = base_outputs_path(artifact, recipe)
    assert base_outputs.is_file() and base_outputs.parent.parent == artifact.parent  # <artifact_root>/<student>

    def no_model(*args, **kwargs):
        raise AssertionError("a resumed evaluation must not load (or run) a model")

    monkeypatch.setattr(models, "load_model", no_model)
    monkeypatch.setattr(recipes, "load_base", no_model)
    assert student_outputs(trained, recipe, spec, tasks) == outputs
