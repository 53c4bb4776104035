"""Stop signals fire on histories built to trigger them and stay silent otherwise; error classes."""

from __future__ import annotations

import json

import pytest

from distillery.contracts.events import Reference, Task, ToolSpec
from distillery.domain.scoring import check_reference
from distillery_evaluator.signals import Round, StopConfig, classify_error, stop_signals

CONFIG = StopConfig()
NAMES = ["marginal_gain", "agreement_without_accuracy", "maintenance_cost", "error_shift"]


def rnd(i: int, samples: int, acc: float, agree: float = 0.5, offline: float = 1.0, teacher: float = 100.0,
        errors: dict[str, int] | None = None) -> Round:
    return Round(f"s{i}", samples, {"a": acc, "b": acc}, {"a": agree, "b": agree}, offline, teacher,
                 errors if errors is not None else {"reasoning": 3, "format": 1})


def by_name(rounds: list[Round], config: StopConfig = CONFIG) -> dict:
    signals = stop_signals(rounds, config)
    assert [s.name for s in signals] == NAMES  # all four, every time, in order
    return {s.name: s for s in signals}


HEALTHY = [rnd(0, 1000, 0.30, 0.40), rnd(1, 2000, 0.50, 0.50), rnd(2, 3000, 0.65, 0.60)]


def test_healthy_history_fires_nothing():
    signals = by_name(HEALTHY)
    assert not any(s.fired for s in signals.values())
    assert all(s.advice == "" for s in signals.values())
    assert signals["marginal_gain"].reason == "gain_0.2_per_1k_at_or_above_0.02"


def test_one_round_is_not_enough_for_trend_signals():
    signals = by_name([rnd(0, 1000, 0.5)])
    assert signals["marginal_gain"].reason == "not_enough_rounds"
    assert signals["agreement_without_accuracy"].reason == "not_enough_rounds"
    assert not signals["marginal_gain"].fired and not signals["agreement_without_accuracy"].fired
    # the point-in-time signals still answer from one round
    assert signals["maintenance_cost"].reason != "not_enough_rounds"
    assert signals["error_shift"].reason != "not_enough_rounds"


def test_no_rounds_at_all():
    assert all(s.reason == "not_enough_rounds" and not s.fired for s in by_name([]).values())


def test_marginal_gain_fires_when_every_step_is_small():
    rounds = [rnd(0, 1000, 0.60), rnd(1, 3000, 0.605), rnd(2, 5000, 0.608)]
    s = by_name(rounds)["marginal_gain"]
    assert s.fired
    assert s.reason == "gain_0.0025_per_1k_below_0.02"
    assert "samples import" in s.advice
    assert "0.0025" in s.detail


def test_marginal_gain_silent_when_one_step_still_gains():
    rounds = [rnd(0, 1000, 0.60), rnd(1, 2000, 0.601), rnd(2, 3000, 0.70)]
    assert not by_name(rounds)["marginal_gain"].fired


def test_marginal_gain_looks_only_at_the_last_k_rounds():
    early_jump = [rnd(0, 0, 0.0), rnd(1, 1000, 0.5)]
    rounds = early_jump + [rnd(2, 2000, 0.501), rnd(3, 3000, 0.502)]
    assert by_name(rounds)["marginal_gain"].fired


def test_marginal_gain_skips_steps_without_new_samples():
    rounds = [rnd(0, 1000, 0.5), rnd(1, 1000, 0.9), rnd(2, 2000, 0.901)]  # retrain on the same data: skipped
    assert by_name(rounds)["marginal_gain"].fired
    same = [rnd(0, 1000, 0.5), rnd(1, 1000, 0.5), rnd(2, 1000, 0.5)]
    s = by_name(same)["marginal_gain"]
    assert not s.fired and s.reason == "no_new_samples"


def test_agreement_without_accuracy_fires_when_copying_rises():
    rounds = [rnd(0, 1000, 0.50, 0.50), rnd(1, 2000, 0.51, 0.60), rnd(2, 3000, 0.505, 0.70)]
    s = by_name(rounds)["agreement_without_accuracy"]
    assert s.fired
    assert "teacher" in s.advice
    assert "+0.200" in s.detail


def test_agreement_without_accuracy_silent_when_accuracy_follows():
    rounds = [rnd(0, 1000, 0.50, 0.50), rnd(1, 2000, 0.55, 0.60), rnd(2, 3000, 0.62, 0.70)]
    assert not by_name(rounds)["agreement_without_accuracy"].fired
    flat = [rnd(0, 1000, 0.50, 0.50), rnd(1, 2000, 0.50, 0.51), rnd(2, 3000, 0.50, 0.52)]
    assert not by_name(flat)["agreement_without_accuracy"].fired  # agreement barely moved


def test_maintenance_cost():
    s = by_name([rnd(0, 1000, 0.5, offline=50.0, teacher=20.0)])["maintenance_cost"]
    assert s.fired and s.reason == "offline_50_above_teacher_20"
    assert "teacher" in s.advice
    assert not by_name([rnd(0, 1000, 0.5, offline=5.0, teacher=20.0)])["maintenance_cost"].fired


def test_error_shift():
    shifted = {"missing_knowledge": 4, "missing_tool_result": 2, "reasoning": 3, "format": 1}
    s = by_name([rnd(0, 1000, 0.5, errors=shifted)])["error_shift"]
    assert s.fired and s.reason == "knowledge_share_0.6_at_or_above_0.5"
    assert "retrieval" in s.advice
    skill = {"missing_knowledge": 1, "reasoning": 5, "format": 2}
    assert not by_name([rnd(0, 1000, 0.5, errors=skill)])["error_shift"].fired
    none = by_name([rnd(0, 1000, 0.5, errors={})])["error_shift"]
    assert not none.fired and none.reason == "no_errors"


def test_config_k_is_respected():
    rounds = [rnd(0, 1000, 0.60), rnd(1, 3000, 0.605)]
    assert by_name(rounds, StopConfig(rounds=2))["marginal_gain"].fired
    assert by_name(rounds, StopConfig(rounds=3))["marginal_gain"].reason == "not_enough_rounds"


# --- classify_error ---------------------------------------------------------------------------

WEATHER = ToolSpec(name="get_weather", parameters={
    "type": "dict", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                   "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city"]})
STOCK = ToolSpec(name="get_stock", parameters={"type": "dict", "properties": {"ticker": {"type": "string"}},
                                               "required": ["ticker"]})


def call(name: str, **arguments) -> str:
    return json.dumps({"name": name, "arguments": arguments})


def tool_task(prompt: str, calls: list[dict], no_call: bool = False) -> Task:
    return Task(task_id="t", unit="tool_call", prompt=prompt, tools=[WEATHER, STOCK],
                reference=Reference(tool_calls=None if no_call else calls, no_call=no_call),
                metadata={"scenario": "tool_selection"})


BERLIN = tool_task("What is the weather in Berlin for the next 3 days?",
                   [{"get_weather": {"city": ["Berlin"], "days": [3], "unit": ["", "c"]}}])
# The ticker is not in the prompt: the student had to know Apple's symbol.
APPLE = tool_task("What is Apple's share price?", [{"get_stock": {"ticker": ["AAPL"]}}])


def classify(task: Task, text: str, form: str = "tool_call", kind: str = "tool_call", **kw) -> str:
    result = check_reference(task, text, kind)
    assert result.correct is False, result
    return classify_error(form, task, text, result.reasons, **kw)


@pytest.mark.parametrize("text", ["I would check the weather.", '{"name": "get_weather", "arguments": [1, 2'])
def test_format_no_or_broken_call(text):
    assert classify(BERLIN, text) == "format"


def test_format_validation_errors():
    assert classify(BERLIN, call("get_weather", city="Berlin", days="three")) == "format"  # wrong_type
    assert classify(BERLIN, call("get_weather", days=3)) == "format"  # missing_required_argument
    assert classify(BERLIN, call("get_weather", city="Berlin", days=3, unit="k")) == "format"  # invalid enum


def test_format_no_final_answer():
    task = Task(task_id="m", unit="math_steps", prompt="What is 2 + 3?", reference=Reference(answer="5"))
    assert classify(task, "I am not sure.", "final_answer", "final_answer") == "format"


def test_boundary():
    task = tool_task("Tell me a joke about cats.", [], no_call=True)
    assert classify(task, call("get_weather", city="Paris")) == "boundary"
    assert classify(task, "Here is a joke: ...") == "boundary"  # no call, but no decline stated either


def test_tool_choice():
    assert classify(BERLIN, call("get_stock", ticker="Berlin")) == "tool_choice"  # wrong_function
    two = call("get_weather", city="Berlin", days=3)
    assert classify(BERLIN, f"[{two}, {two}]") == "tool_choice"  # wrong_number_of_calls
    assert classify_error("tool_call", BERLIN, "", ["unknown_function:get_news", "wrong_function",
                                                     "wrong_function:get_news"]) == "tool_choice"


def test_missing_knowledge_argument_not_in_prompt():
    assert classify(APPLE, call("get_stock", ticker="APPL")) == "missing_knowledge"  # wrong_value, AAPL not in prompt


def test_wrong_arguments_value_in_prompt():
    assert classify(BERLIN, call("get_weather", city="Berlin", days=5)) == "wrong_arguments"  # 3 is in the prompt
    assert classify(BERLIN, call("get_weather", city="Munich", days=3)) == "wrong_arguments"  # Berlin is too


def test_missing_argument_classes():
    # a missing optional-by-schema argument the reference wants: its value is in the prompt
    assert classify(BERLIN, call("get_weather", city="Berlin")) == "wrong_arguments"


def test_numbers_are_normalised_in_prompt():
    task = tool_task("Weather in Oslo over 1,000 days please",
                     [{"get_weather": {"city": ["Oslo"], "days": [1000]}}])
    assert classify(task, call("get_weather", city="Oslo", days=10)) == "wrong_arguments"


def test_unexpected_argument_is_wrong_arguments():
    loose = ToolSpec(name="get_weather", parameters={"type": "dict", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"], "additionalProperties": True})
    task = Task(task_id="t", unit="tool_call", prompt="Weather in Rome?", tools=[loose],
                reference=Reference(tool_calls=[{"get_weather": {"city": ["Rome"]}}]))
    assert classify(task, call("get_weather", city="Rome", hours=2)) == "wrong_arguments"


LOOKUP = Task(task_id="l", unit="tool_use", prompt="How many kilometres are two marathons?",
              reference=Reference(answer="84.39"), metadata={"scenario": "lookup"})
ARITH = Task(task_id="r", unit="tool_use", prompt="What is (10 + 2) * 3?",
             reference=Reference(answer="36"), metadata={"scenario": "arithmetic"})
TOOLS = ("calculator", "convert_units", "lookup")


def test_missing_tool_result_when_answered_from_memory():
    assert classify(ARITH, "FINAL: 32", "final_answer", "final_answer", unit_tools=TOOLS) == "missing_tool_result"


def test_tool_step_present_is_reasoning_not_missing_tool():
    text = 'Tool call: {"name": "calculator", "arguments": {"expression": "10 + 2"}}\nResult: 12\nFINAL: 32'
    assert classify(ARITH, text, "final_answer", "final_answer", unit_tools=TOOLS) == "reasoning"


def test_missing_knowledge_final_answer_for_lookup():
    text = "Observation: marathon is 42 km\nFINAL: 84"
    assert classify(LOOKUP, text, "final_answer", "final_answer", unit_tools=TOOLS) == "missing_knowledge"
    # without tools declared, the lookup rule applies directly
    assert classify(LOOKUP, "FINAL: 84", "final_answer", "final_answer") == "missing_knowledge"


def test_reasoning_for_plain_math():
    task = Task(task_id="m", unit="math_steps", prompt="Tom has 3 apples and buys 4. How many?",
                reference=Reference(answer="7"), metadata={"scenario": "word_problem"})
    assert classify(task, "3 + 4 = 8\n#### 8", "final_answer", "final_answer") == "reasoning"


def test_other():
    assert classify_error("text", BERLIN, "whatever", []) == "other"
    assert classify_error("text", BERLIN, "whatever", ["style_violation"]) == "other"
