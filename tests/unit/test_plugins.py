"""The checker and metric registry (distillery.contracts.plugins): a team's entry-point plugin and
``module:function`` names, used by the judge and the evaluator; and the spec errors a bad name,
signature or unit declaration gives (one line naming unit and field).

The plugin is the example's ``ticket_metrics`` package (examples/custom_unit/plugin, installed
editable in the venv): it registers the metric ``category_macro_f1`` by entry point and has the
checker ``ticket_metrics:category_only``.
"""

from __future__ import annotations

import json

import pytest

from distillery.contracts import plugins
from distillery.contracts.events import Reference, Task
from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import parse_spec
from distillery.domain.checkers import CheckResult, Scored, metric_values, run_checker, unit_metric_names
from distillery_evaluator.logic import Output, unit_metrics
from distillery_judge.logic import judge_candidate
from tests.support import candidate

HERE = __name__  # the module as sys.modules knows it: what a spec's module:function imports


# --- functions of the wrong shape, named as module:function ------------------------------------------


def takes_nothing() -> bool:
    return True


def takes_one(text: str) -> bool:
    return True


def strict_params(text: str, task: Task, *, labels: list[str]) -> bool:
    return True


def two_required(scored, other) -> float:
    return 0.0


def bad_reference(text: str, task: Task) -> bool:
    return True


bad_reference.reference = "labels"  # not a reference field

NOT_CALLABLE = 3


# --- helpers ----------------------------------------------------------------------------------------


def spec_data(**unit: object) -> dict:
    return {"teachers": {"t": {"backend": "replay", "replay_path": "t.jsonl"}},
            "units": {"triage": {"description": "Triage a ticket.",
                                 "routing": {"strategy": "single", "teachers": ["t"]}, **unit}}}


def spec_error(**unit: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_spec(spec_data(**unit), "team.yaml")
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith("team.yaml: unit 'triage': field '"), message
    return message


def ticket(category: str, task_id: str, **fields: object) -> Task:
    return Task(task_id=task_id, unit="triage", prompt="a ticket", split="eval",
                reference=Reference(fields={"category": category, **fields}))


def answer(category: str | None) -> str:
    return json.dumps({"category": category, "order_id": None})


# --- the entry-point metric ---------------------------------------------------------------------------


def test_the_team_metric_is_registered_by_entry_point() -> None:
    import ticket_metrics

    assert "category_macro_f1" in plugins.registered_names("metric")
    assert plugins.registered("metric")["category_macro_f1"].value == "ticket_metrics:category_macro_f1"
    assert plugins.resolve("metric", "category_macro_f1") is ticket_metrics.category_macro_f1
    assert plugins.check_metric("category_macro_f1") is ticket_metrics.category_macro_f1


def test_category_macro_f1_on_crafted_answers() -> None:
    # billing: 1 right, 1 called shipping -> F1 2/3; shipping: 1 right, 1 false positive -> F1 2/3;
    # account: never answered (missing) -> F1 0
    scored = [Scored(ticket("billing", "task_1"), answer("Billing"), CheckResult(True)),
              Scored(ticket("billing", "task_2"), answer("shipping"), CheckResult(False)),
              Scored(ticket("shipping", "task_3"), f"Sure: {answer('shipping')}", CheckResult(True)),
              Scored(ticket("account", "task_4"), answer("account"), CheckResult(True), missing=True)]
    assert metric_values("category_macro_f1", scored) == {"category_macro_f1": round((2 / 3 + 2 / 3 + 0) / 3, 4)}
    assert metric_values("category_macro_f1", scored[:1]) == {"category_macro_f1": 1.0}
    assert metric_values("category_macro_f1", []) == {"category_macro_f1": 0.0}


def test_a_unit_declares_the_team_metric_and_the_evaluator_reports_it() -> None:
    spec = parse_spec(spec_data(output_form="json", checker="json_fields", metrics=["category_macro_f1"]))
    unit = spec.units["triage"]
    assert unit.metric_names() == ["exact_match", "category_macro_f1"]
    assert unit_metric_names(unit) == ["exact_match", "category_macro_f1", "field_accuracy", "invented_value_rate",
                                       "missing_field_recall"]
    tasks = [ticket("billing", "task_1", order_id=None), ticket("shipping", "task_2", order_id=None)]
    outputs = [Output(tasks[0], "teacher:t", answer("billing"), 0.1, 0.0, 5),
               Output(tasks[1], "teacher:t", answer("billing"), 0.1, 0.0, 5)]
    rows = {r["metric"]: r["value"] for r in unit_metrics(outputs, spec)}
    assert rows["exact_match"] == 0.5
    assert rows["category_macro_f1"] == round((2 / 3 + 0) / 2, 4)
    assert rows["field_accuracy:category"] == 0.5 and rows["missing_field_recall"] == 1.0


# --- the module:function checker ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def category_spec():
    return parse_spec(spec_data(output_form="json", checker="ticket_metrics:category_only",
                                rules={"output_format": "json"}))


def test_a_module_function_checker_resolves_and_declares_its_reference(category_spec) -> None:
    import ticket_metrics

    unit = category_spec.units["triage"]
    assert unit.reference_checker.name == "ticket_metrics:category_only"
    assert plugins.resolve("checker", "ticket_metrics:category_only") is ticket_metrics.category_only
    assert unit.reference_needed() == "fields"


def test_run_checker_uses_the_module_function_checker(category_spec) -> None:
    unit = category_spec.units["triage"]
    t = ticket("billing", "task_1", order_id="ORD-1")
    assert run_checker(unit, t, answer("billing")) == CheckResult(True, [])
    assert run_checker(unit, t, answer("shipping")) == CheckResult(False, ["reference_mismatch"])
    # a task without reference.fields is not compared
    no_fields = Task(task_id="task_2", unit="triage", prompt="p", reference=Reference(answer="billing"))
    assert run_checker(unit, no_fields, answer("billing")).correct is None


def test_the_judge_pools_with_the_module_function_checker(category_spec) -> None:
    unit = category_spec.units["triage"]
    t = ticket("billing", "task_1", order_id="ORD-1").model_copy(update={"split": "train"})
    right = judge_candidate(t, candidate(t, answer("billing"), teacher="t"), unit)
    assert right.pool == "train" and right.reasons == ["rules_passed", "reference_match"]
    assert right.scorers["reference"] == "reference:ticket_metrics:category_only"
    wrong = judge_candidate(t, candidate(t, answer("account"), teacher="t"), unit)
    assert wrong.pool == "discard" and wrong.reasons == ["reference_mismatch"]


def test_the_evaluator_scores_with_the_module_function_checker(category_spec) -> None:
    tasks = [ticket("billing", "task_1"), ticket("shipping", "task_2"), ticket("account", "task_3")]
    outputs = [Output(tasks[0], "teacher:t", answer("billing"), 0.1, 0.0, 5),
               Output(tasks[1], "teacher:t", answer("shipping"), 0.1, 0.0, 5),
               Output(tasks[2], "teacher:t", answer("billing"), 0.1, 0.0, 5)]
    rows = {r["metric"]: r["value"] for r in unit_metrics(outputs, category_spec)}
    assert rows["exact_match"] == round(2 / 3, 4)
    assert "field_accuracy" not in rows  # field metrics come with the json_fields checker only


# --- spec errors: one line naming unit and field ------------------------------------------------------


def test_unknown_checker_name() -> None:
    message = spec_error(checker="json_feilds")
    assert "field 'checker'" in message and "unknown checker 'json_feilds'" in message
    assert "json_fields" in message  # the registered names are listed


def test_unknown_metric_names() -> None:
    message = spec_error(eval_metric="category_f1")
    assert "field 'eval_metric'" in message and "unknown metric 'category_f1'" in message
    assert "category_macro_f1" in message
    message = spec_error(metrics=["field_accuracy", "macro_f1"])
    assert "field 'metrics'" in message and "unknown metric 'macro_f1'" in message


def test_a_module_that_does_not_import() -> None:
    message = spec_error(checker="nosuchmodule:fn")
    assert "field 'checker'" in message and "module 'nosuchmodule' does not import" in message
    assert "ModuleNotFoundError" in message
    message = spec_error(metrics=["nosuchmodule:fn"])
    assert "field 'metrics'" in message and "does not import" in message


def test_a_module_without_the_attribute() -> None:
    message = spec_error(checker="json:nosuchattr")
    assert "field 'checker'" in message and "module 'json' has no attribute 'nosuchattr'" in message
    message = spec_error(eval_metric="json:nosuchattr")
    assert "field 'eval_metric'" in message and "has no attribute 'nosuchattr'" in message


def test_an_attribute_that_is_not_a_function() -> None:
    message = spec_error(checker=f"{HERE}:NOT_CALLABLE")
    assert "field 'checker'" in message and "is not a function" in message


@pytest.mark.parametrize("name", ["takes_nothing", "takes_one"])
def test_a_checker_with_the_wrong_signature(name) -> None:
    message = spec_error(checker=f"{HERE}:{name}")
    assert "field 'checker'" in message and "wrong signature for fn(text, task, **params)" in message


def test_a_checker_whose_params_do_not_bind() -> None:
    assert parse_spec(spec_data(checker={"name": f"{HERE}:strict_params", "params": {"labels": ["a"]}}))
    message = spec_error(checker={"name": f"{HERE}:strict_params", "params": {"labelz": ["a"]}})
    assert "field 'checker'" in message and "wrong signature" in message and "labelz" in message
    # a unit's field boundaries are parameters too: a checker that takes none cannot have them
    message = spec_error(checker={"name": f"{HERE}:strict_params", "params": {"labels": ["a"]}},
                         required_fields=["category"])
    assert "field 'checker'" in message and "required_fields" in message


def test_a_checker_that_declares_an_unknown_reference_field() -> None:
    message = spec_error(checker=f"{HERE}:bad_reference")
    assert "field 'checker'" in message and "attribute 'reference' must be one of" in message


def test_a_metric_with_the_wrong_signature() -> None:
    message = spec_error(metrics=[f"{HERE}:two_required"])
    assert "field 'metrics'" in message and "wrong signature for fn(scored)" in message
    message = spec_error(eval_metric=f"{HERE}:takes_nothing")
    assert "field 'eval_metric'" in message and "wrong signature for fn(scored)" in message


def test_checker_and_rules_reference_together() -> None:
    message = spec_error(checker="json_fields", rules={"reference": "final_answer"})
    assert "field 'checker'" in message and "either checker or rules.reference" in message


def test_rules_reference_alone_names_the_checker() -> None:
    unit = parse_spec(spec_data(rules={"reference": "final_answer"})).units["triage"]
    assert unit.reference_checker.name == "final_answer" and unit.reference_needed() == "answer"


def test_required_fields_overlapping_may_be_missing() -> None:
    message = spec_error(checker="json_fields", required_fields=["category", "order_id"],
                         may_be_missing=["order_id", "date"])
    assert "field 'may_be_missing'" in message and "['order_id'] are also required_fields" in message


@pytest.mark.parametrize("template, bad", [("{system_prompt}\n{duties}", "duties"),
                                            ("Do {description} for {customer}", "customer")])
def test_unknown_placeholder_in_the_prompt_template(template, bad) -> None:
    message = spec_error(prompt_template=template)
    assert "field 'prompt_template'" in message and f"unknown placeholder(s) ['{bad}']" in message
    assert "must_not" in message  # the placeholders it may use are listed


def test_a_prompt_template_that_does_not_parse() -> None:
    message = spec_error(prompt_template="Do {description")
    assert "field 'prompt_template'" in message and "does not parse" in message


def test_resolve_error_is_a_plugin_error() -> None:
    with pytest.raises(plugins.PluginError, match="unknown checker 'nope'"):
        plugins.resolve("checker", "nope")
    with pytest.raises(plugins.PluginError, match="unknown metric 'nope'"):
        plugins.check_metric("nope")
