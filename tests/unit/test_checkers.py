"""The built-in reference checkers and metrics (distillery.domain.checkers), run the way the judge,
the editor and the evaluator run them: through :func:`run_checker` with a unit parsed from a spec.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distillery.contracts.events import Reference, Task, ToolSpec
from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import UnitSpec, load_spec, parse_spec
from distillery.domain.checkers import (
    CheckResult,
    Scored,
    accuracy,
    field_accuracy,
    invented_value_rate,
    metric_values,
    missing_field_recall,
    run_checker,
)

TICKET_FIELDS = {"category": "text", "order_id": "text", "amount": "number", "date": "date"}


# --- plugins of this module, named as module:function in specs ---------------------------------------


def boom(text: str, task: Task) -> bool:
    """A checker with a bug: it raises on every answer."""
    raise RuntimeError("plugin bug")


def not_a_bool(text: str, task: Task) -> str:
    """A checker that returns something that is neither bool nor CheckResult."""
    return "yes"


def needs_fields(text: str, task: Task) -> bool:
    """A checker that compares with reference.fields (so it must not run without them)."""
    return text == json.dumps(task.reference.fields)


needs_fields.reference = "fields"


def broken_metric(scored) -> float:
    raise ZeroDivisionError("plugin bug")


def some_not_numbers(scored) -> dict:
    return {"good": 0.5, "text": "high", "nan": float("nan")}


HERE = __name__  # the module as sys.modules knows it: what a spec's module:function imports


# --- helpers ----------------------------------------------------------------------------------------


def spec_data(**unit: object) -> dict:
    """A minimal spec with one unit ``u`` answered by one replay teacher."""
    return {"teachers": {"t": {"backend": "replay", "replay_path": "t.jsonl"}},
            "units": {"u": {"description": "Extract the ticket's fields.",
                            "routing": {"strategy": "single", "teachers": ["t"]}, **unit}}}


def unit_with(checker: object, **unit: object) -> UnitSpec:
    return parse_spec(spec_data(checker=checker, **unit)).units["u"]


def spec_error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_spec(data, "s.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("s.yaml: ")
    return message


def task(reference: Reference | None = None, task_id: str = "task_1") -> Task:
    return Task(task_id=task_id, unit="u", prompt="a ticket", reference=reference)


def fields_task(**fields: object) -> Task:
    return task(Reference(fields=fields))


@pytest.fixture(scope="module")
def tickets() -> UnitSpec:
    """The example's ticket unit: category and order_id required, amount and date may be missing."""
    return unit_with({"name": "json_fields", "params": {"fields": TICKET_FIELDS}},
                     required_fields=["category", "order_id"], may_be_missing=["amount", "date"])


# --- none, final_answer, tool_call --------------------------------------------------------------------


def test_none_compares_nothing() -> None:
    unit = unit_with("none")
    assert run_checker(unit, task(Reference(answer="7")), "anything").correct is None


def test_final_answer_passes_and_fails() -> None:
    unit = unit_with("final_answer")
    assert run_checker(unit, task(Reference(answer="42")), "6 x 7\n#### 42").correct is True
    wrong = run_checker(unit, task(Reference(answer="42")), "6 x 7\n#### 41")
    assert wrong.correct is False and wrong.reasons


def test_tool_call_passes_and_fails() -> None:
    unit = unit_with("tool_call")
    weather = ToolSpec(name="get_weather", parameters={"type": "object", "required": ["city"],
                                                       "properties": {"city": {"type": "string"}}})
    t = task(Reference(tool_calls=[{"get_weather": {"city": ["Paris"]}}])).model_copy(update={"tools": [weather]})
    assert run_checker(unit, t, '{"name": "get_weather", "arguments": {"city": "Paris"}}').correct is True
    wrong = run_checker(unit, t, '{"name": "get_weather", "arguments": {"city": "Rome"}}')
    assert wrong.correct is False and wrong.reasons


# --- json_fields ------------------------------------------------------------------------------------


def test_json_fields_normalisers_accept_the_same_value_written_differently(tickets) -> None:
    t = fields_task(category="billing", order_id="ORD-1", amount=42.5, date="2026-03-03")
    answer = json.dumps({"category": "  Billing ", "order_id": "ord-1", "amount": "$42.50", "date": "March 3, 2026"})
    result = run_checker(tickets, t, answer)
    assert result.correct is True and result.reasons == []
    assert result.fields == dict.fromkeys(TICKET_FIELDS, "correct")
    assert result.score == 1.0 and result.gaps == []
    assert result.final == json.dumps(json.loads(answer), sort_keys=True)  # canonical: sorted keys


@pytest.mark.parametrize("field, got, want", [
    ("amount", "$42.51", 42.5),          # number: a cent off is wrong
    ("date", "March 4, 2026", "2026-03-03"),
    ("category", "shipping", "billing"),  # text: case-folded, not fuzzy
])
def test_json_fields_a_different_value_is_wrong_value(tickets, field, got, want) -> None:
    ref = {"category": "billing", "order_id": "ORD-1", "amount": 42.5, "date": "2026-03-03"}
    answer = {**ref, field: got}
    result = run_checker(tickets, fields_task(**{**ref, field: want}), json.dumps(answer))
    assert result.correct is False
    assert result.reasons == [f"wrong_value:{field}"]
    assert result.fields[field] == "wrong"
    assert result.score == 0.75  # partial credit: three of four fields right


@pytest.mark.parametrize("said", [None, "not stated", "Not Stated ", "unknown", "n/a", ""])
def test_json_fields_null_and_not_stated_both_mean_not_stated(said) -> None:
    unit = unit_with({"name": "json_fields", "params": {"fields": TICKET_FIELDS}}, may_be_missing=["amount"])
    t = fields_task(category="billing", order_id="ORD-1", amount=None, date="2026-03-03")
    answer = {"category": "billing", "order_id": "ORD-1", "amount": said, "date": "2026-03-03"}
    result = run_checker(unit, t, json.dumps(answer))
    assert result.correct is True
    assert result.fields["amount"] == "not_stated"
    assert result.gaps == []  # amount may be missing: not a required detail, so no boundary


def test_json_fields_invented_missing_and_wrong_values_are_named(tickets) -> None:
    t = fields_task(category="billing", order_id=None, amount=42.5, date="2026-03-03")
    answer = {"category": "shipping", "order_id": "ORD-77777", "amount": None, "date": "2026-03-03"}
    result = run_checker(tickets, t, json.dumps(answer))
    assert result.correct is False
    assert sorted(result.reasons) == ["invented_value:order_id", "missing_field:amount", "wrong_value:category"]
    assert result.fields == {"category": "wrong", "order_id": "invented", "amount": "omitted", "date": "correct"}
    assert result.score == 0.25
    assert result.checks["json_parses"] is True and result.checks["field:date"] is True
    assert result.checks["field:order_id"] is False


def test_json_fields_gaps_are_only_the_required_fields_the_input_lacks(tickets) -> None:
    # order_id (required) and date (may be missing) are both absent from the ticket and both left null
    t = fields_task(category="technical", order_id=None, amount=19.99, date=None)
    answer = {"category": "technical", "order_id": None, "amount": 19.99, "date": "not stated"}
    result = run_checker(tickets, t, json.dumps(answer))
    assert result.correct is True and result.score == 1.0
    assert result.fields["order_id"] == result.fields["date"] == "not_stated"
    assert result.gaps == ["order_id"]


def test_json_fields_a_missing_key_counts_as_not_given(tickets) -> None:
    t = fields_task(category="account", order_id="ORD-5", amount=None, date=None)
    result = run_checker(tickets, t, '{"category": "account"}')
    assert result.reasons == ["missing_field:order_id"]
    assert result.fields["amount"] == result.fields["date"] == "not_stated"


def test_json_fields_finds_the_object_inside_fences_and_prose(tickets) -> None:
    t = fields_task(category="account", order_id="ORD-5", amount=None, date=None)
    text = 'Here it is:\n```json\n{"category": "account", "order_id": "ORD-5"}\n```\nHope that helps.'
    assert run_checker(tickets, t, text).correct is True


def test_json_fields_unparseable_answer_marks_every_field_unparsed(tickets) -> None:
    t = fields_task(category="account", order_id="ORD-5", amount=None, date=None)
    result = run_checker(tickets, t, "category: account, order ORD-5")
    assert result.correct is False
    assert result.reasons == ["unparseable_json"]
    assert result.checks == {"json_parses": False}
    assert result.fields == dict.fromkeys(TICKET_FIELDS, "unparsed")
    assert result.score == 0.0


def test_json_fields_unknown_normaliser_is_a_spec_error() -> None:
    message = spec_error(spec_data(checker={"name": "json_fields", "params": {"fields": {"amount": "money"}}}))
    assert "unit 'u'" in message and "field 'checker'" in message and "money" in message


# --- json_schema ------------------------------------------------------------------------------------

SCHEMA = {"type": "object", "required": ["name", "age"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}}


def test_json_schema_inline_passes_and_fails_without_a_reference() -> None:
    unit = unit_with({"name": "json_schema", "params": {"schema": SCHEMA}})
    ok = run_checker(unit, task(None), '{"age": 3, "name": "Ada"}')
    assert ok.correct is True and ok.checks == {"json_parses": True, "schema_valid": True}
    assert ok.final == '{"age": 3, "name": "Ada"}'
    bad = run_checker(unit, task(None), '{"age": "three"}')
    assert bad.correct is False
    assert bad.reasons == ["schema:(root):required", "schema:age:type"]
    unparsed = run_checker(unit, task(None), "no object")
    assert unparsed.correct is False and unparsed.reasons == ["unparseable_json"]


def test_json_schema_file_is_read_relative_to_the_spec(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "person.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "schemas" / "person.yaml").write_text(yaml.safe_dump(SCHEMA))
    for name in ("person.json", "person.yaml"):
        path = tmp_path / f"spec-{name}.yaml"
        data = spec_data(checker={"name": "json_schema", "params": {"schema_file": f"schemas/{name}"}})
        path.write_text(yaml.safe_dump(data))
        unit = load_spec(path).units["u"]
        assert unit.checker_params() == {"schema": SCHEMA}
        assert run_checker(unit, task(None), '{"name": "Ada", "age": 36}').correct is True
        assert run_checker(unit, task(None), '{"name": "Ada", "age": -1}').reasons == ["schema:age:minimum"]


def test_json_schema_file_that_is_missing_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_data(checker={"name": "json_schema", "params": {"schema_file": "no.json"}})))
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message
    assert "unit 'u'" in message and "field 'checker'" in message and "schema_file not found" in message
    assert str(tmp_path / "no.json") in message  # resolved against the spec's folder


@pytest.mark.parametrize("params", [{"schema": {"type": "nonsense"}}, {"schema": {"required": "name"}}, {}])
def test_json_schema_invalid_or_absent_schema_is_a_spec_error(params) -> None:
    message = spec_error(spec_data(checker={"name": "json_schema", "params": params}))
    assert "unit 'u'" in message and "field 'checker'" in message and "json_schema" in message


# --- regex_match ------------------------------------------------------------------------------------


def test_regex_match_with_the_spec_pattern() -> None:
    unit = unit_with({"name": "regex_match", "params": {"pattern": r"ORD-\d{5}", "fullmatch": True}})
    assert unit.reference_needed() is None  # the pattern is in the spec: tasks need no reference
    assert run_checker(unit, task(Reference(answer="ignored")), " ord-12345 ").correct is True  # trimmed, any case
    miss = run_checker(unit, task(Reference(answer="ignored")), "order ORD-12345")
    assert miss.correct is False and miss.reasons == ["no_regex_match"]


def test_regex_match_spec_pattern_checks_tasks_without_a_reference() -> None:
    unit = unit_with({"name": "regex_match", "params": {"pattern": r"^ORD-\d+$"}})
    assert run_checker(unit, task(None), "ORD-1").correct is True
    assert run_checker(unit, task(None), "no order").correct is False
    assert run_checker(unit, fields_task(order_id="ORD-1"), "no order").correct is False


def test_regex_match_with_the_reference_answer_as_pattern() -> None:
    unit = unit_with({"name": "regex_match", "params": {"ignore_case": False}})
    assert unit.reference_needed() == "answer"
    t = task(Reference(answer=r"\b(Paris|Lyon)\b"))
    assert run_checker(unit, t, "It is in Paris.").correct is True
    assert run_checker(unit, t, "It is in paris.").correct is False  # case kept when asked
    assert run_checker(unit, task(None), "It is in Paris.").correct is None  # no pattern: nothing compared


def test_regex_match_bad_pattern_is_a_spec_error() -> None:
    message = spec_error(spec_data(checker={"name": "regex_match", "params": {"pattern": "ORD-(\\d+"}}))
    assert "unit 'u'" in message and "field 'checker'" in message and "does not compile" in message


# --- choice -----------------------------------------------------------------------------------------

LABELS = ["billing", "shipping", "technical", "account"]


def test_choice_label_in_set_wrong_label_and_not_a_label() -> None:
    unit = unit_with({"name": "choice", "params": {"labels": LABELS}})
    t = task(Reference(answer="Billing"))
    right = run_checker(unit, t, "**Billing**.\nBecause of the double charge.")
    assert right.correct is True and right.final == "billing" and right.checks == {"label_in_set": True}
    wrong = run_checker(unit, t, "shipping")
    assert wrong.correct is False and wrong.reasons == ["wrong_label"] and wrong.checks == {"label_in_set": True}
    other = run_checker(unit, t, "refund")
    assert other.correct is False and other.reasons == ["not_a_label"] and other.checks == {"label_in_set": False}


def test_choice_reads_the_label_from_a_json_field() -> None:
    unit = unit_with({"name": "choice", "params": {"labels": LABELS, "field": "category"}})
    t = task(Reference(answer="shipping"))
    assert run_checker(unit, t, '{"category": " Shipping ", "order_id": null}').correct is True
    assert run_checker(unit, t, '{"category": "account"}').reasons == ["wrong_label"]
    assert run_checker(unit, t, '{"kind": "shipping"}').reasons == ["not_a_label"]
    assert run_checker(unit, t, "shipping").reasons == ["not_a_label"]  # not JSON: no field to read


@pytest.mark.parametrize("params", [{}, {"labels": []}, {"labels": "billing"}, {"labels": [1, 2]}])
def test_choice_needs_a_list_of_labels(params) -> None:
    message = spec_error(spec_data(checker={"name": "choice", "params": params}))
    assert "unit 'u'" in message and "field 'checker'" in message and "labels" in message


# --- embedding_similarity (loads MiniLM: the model tier) ----------------------------------------------


@pytest.mark.model
def test_embedding_similarity_passes_a_paraphrase_and_fails_an_unrelated_answer() -> None:
    unit = unit_with({"name": "embedding_similarity", "params": {"threshold": 0.6}})
    t = task(Reference(answer="The parcel was delivered to the wrong address."))
    close = run_checker(unit, t, "The package went to the wrong address.")
    assert close.correct is True and close.checks == {"similar_enough": True} and close.score >= 0.6
    far = run_checker(unit, t, "Quarterly revenue grew by four percent.")
    assert far.correct is False and far.reasons == ["low_similarity"] and far.score < 0.6
    assert run_checker(unit, task(None), "anything").correct is None  # no reference: not compared


@pytest.mark.parametrize("threshold", [1.5, -0.1, "high"])
def test_embedding_similarity_threshold_is_checked_at_load(threshold) -> None:
    message = spec_error(spec_data(checker={"name": "embedding_similarity", "params": {"threshold": threshold}}))
    assert "unit 'u'" in message and "threshold" in message


# --- run_checker around plugins -----------------------------------------------------------------------


def test_a_checker_that_raises_is_a_checker_error_not_a_crash() -> None:
    name = f"{HERE}:boom"
    result = run_checker(unit_with(name), task(Reference(answer="x")), "answer")
    assert result.correct is False
    assert result.reasons == [f"checker_error:{name}"]
    assert result.checks == {"checker_ran": False}


def test_a_checker_that_returns_a_non_bool_is_a_checker_error() -> None:
    name = f"{HERE}:not_a_bool"
    result = run_checker(unit_with(name), task(Reference(answer="x")), "answer")
    assert result.correct is False and result.reasons == [f"checker_error:{name}"]


def test_a_plugin_checker_is_not_called_without_the_reference_it_needs() -> None:
    unit = unit_with(f"{HERE}:needs_fields")
    assert unit.reference_needed() == "fields"
    assert run_checker(unit, task(None), "x").correct is None
    assert run_checker(unit, task(Reference(answer="7")), "x").correct is None
    t = fields_task(category="billing")
    assert run_checker(unit, t, json.dumps({"category": "billing"})).correct is True
    miss = run_checker(unit, t, "{}")
    assert miss.correct is False and miss.reasons == ["reference_mismatch"]


# --- metrics ----------------------------------------------------------------------------------------


def scored(ref_fields: dict, statuses: dict[str, str], correct: bool | None = None, missing: bool = False,
           task_id: str = "task_1") -> Scored:
    if correct is None:
        correct = all(s in ("correct", "not_stated") for s in statuses.values())
    return Scored(task(Reference(fields=ref_fields), task_id), "{}", CheckResult(correct, fields=statuses),
                  missing=missing)


@pytest.fixture
def answers() -> list[Scored]:
    """Three answers to tickets; two of the tickets leave order_id unstated."""
    return [
        # complete ticket, all right
        scored({"category": "billing", "order_id": "ORD-1"}, {"category": "correct", "order_id": "correct"}, True,
               task_id="task_a"),
        # order_id unstated and correctly left null
        scored({"category": "account", "order_id": None}, {"category": "correct", "order_id": "not_stated"}, True,
               task_id="task_b"),
        # order_id unstated but invented; category wrong
        scored({"category": "shipping", "order_id": None}, {"category": "wrong", "order_id": "invented"}, False,
               task_id="task_c"),
    ]


def test_accuracy_counts_unanswered_tasks_wrong(answers) -> None:
    assert accuracy(answers) == pytest.approx(2 / 3)
    unanswered = Scored(task(None, "task_d"), "", CheckResult(True), missing=True)  # even if "correct"
    assert accuracy([*answers, unanswered]) == 0.5
    assert accuracy([]) == 0.0


def test_field_accuracy_overall_and_per_field(answers) -> None:
    assert field_accuracy(answers) == {"field_accuracy": round(4 / 6, 4), "field_accuracy:category": round(2 / 3, 4),
                                       "field_accuracy:order_id": round(2 / 3, 4)}
    assert field_accuracy([]) == {"field_accuracy": 0.0}


def test_invented_value_rate_is_over_answers_that_could_invent(answers) -> None:
    assert invented_value_rate(answers) == 0.5  # of the two tickets without order_id, one answer invents it
    assert invented_value_rate(answers[:1]) == 0.0  # nothing unstated: nothing to invent


def test_missing_field_recall_is_over_unstated_fields(answers) -> None:
    assert missing_field_recall(answers) == 0.5
    assert missing_field_recall(answers[:2]) == 1.0
    # "omitted" is about stated fields: it does not enter recall
    omitted = scored({"category": "billing", "order_id": "ORD-2"}, {"category": "correct", "order_id": "omitted"})
    assert missing_field_recall([*answers[:2], omitted]) == 1.0


def test_metric_values_names_the_rows() -> None:
    rows = [scored({"category": "billing", "order_id": None}, {"category": "correct", "order_id": "not_stated"})]
    assert metric_values("exact_match", rows) == {"exact_match": 1.0}
    assert metric_values("field_accuracy", rows) == {"field_accuracy": 1.0, "field_accuracy:category": 1.0,
                                                     "field_accuracy:order_id": 1.0}
    assert metric_values("missing_field_recall", rows) == {"missing_field_recall": 1.0}


def test_metric_values_drops_a_metric_that_raises_and_values_that_are_not_numbers(answers) -> None:
    assert metric_values(f"{HERE}:broken_metric", answers) == {}
    assert metric_values(f"{HERE}:some_not_numbers", answers) == {"good": 0.5}
