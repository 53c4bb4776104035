"""A unit's responsibilities in prompts (distillery.domain.prompts): the teachers' instruction
rendered from the spec's template, the student's prompt without them, the LLM judge's rubric, the
judge version they enter, and ``distillery spec show``.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from distillery.contracts.events import Reference, Task
from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import DEFAULT_PROMPT_TEMPLATE, judge_version, load_spec, parse_spec
from distillery.domain.prompts import system_prompt, teacher_messages, unit_instruction
from distillery.domain.students import student_prompt
from distillery_cli import main
from distillery_judge.scorers import score_prompt
from tests.support import assert_config_error

ROOT = Path(__file__).resolve().parents[2]
TICKET_SPEC = ROOT / "examples" / "custom_unit" / "spec.yaml"

DESCRIPTION = "Triage a support ticket and extract its order number."
MUST = ["pick exactly one category", "copy each value as the ticket states it"]
MAY = ["write dates as YYYY-MM-DD"]
MUST_NOT = ["invent an order number the ticket does not state"]


def unit_data(**extra: object) -> dict:
    return {"description": DESCRIPTION, "must": list(MUST), "may": list(MAY), "must_not": list(MUST_NOT),
            "system_prompt": "You triage tickets for an online shop.",
            "routing": {"strategy": "single", "teachers": ["t"]}, **extra}


def spec_data(unit: dict | None = None, **top: object) -> dict:
    return {"teachers": {"t": {"backend": "replay", "replay_path": "t.jsonl"},
                         "grader": {"backend": "replay", "replay_path": "g.jsonl"}},
            "units": {"triage": unit if unit is not None else unit_data()}, **top}


def unit_of(**extra: object):
    return parse_spec(spec_data(unit_data(**extra))).units["triage"]


def task() -> Task:
    return Task(task_id="task_1", unit="triage", prompt="My parcel has not arrived.",
                reference=Reference(fields={"category": "shipping", "order_id": None}))


# --- unit_instruction ---------------------------------------------------------------------------------


def test_the_default_template_renders_every_responsibility() -> None:
    text = unit_instruction(unit_of())
    assert text == (
        "You triage tickets for an online shop.\n\n"
        f"Your task: {DESCRIPTION}\n"
        "You must:\n- pick exactly one category\n- copy each value as the ticket states it\n"
        "You may:\n- write dates as YYYY-MM-DD\n"
        "You must not:\n- invent an order number the ticket does not state"
    )


def test_a_json_unit_names_its_fields_and_how_to_say_not_stated() -> None:
    unit = unit_of(output_form="json", required_fields=["category", "order_id"], may_be_missing=["date"],
                   checker={"name": "json_fields", "params": {"fields": {"amount": "number", "date": "date"}}})
    text = unit_instruction(unit)
    assert text.endswith("Answer with one JSON object with the fields category, order_id, date, amount. "
                         "Use null for a field the input does not state; never guess a value.")
    assert "- invent an order number the ticket does not state\n\nAnswer with one JSON object" in text


def test_a_json_unit_without_declared_fields_asks_for_one_object() -> None:
    assert unit_instruction(unit_of(output_form="json")).endswith("\n\nAnswer with one JSON object.")
    assert "JSON" not in unit_instruction(unit_of())  # a text unit gets no fields line


def test_empty_sections_are_dropped() -> None:
    text = unit_instruction(unit_of(may=[], must_not=[], system_prompt=""))
    assert "You may:" not in text and "You must not:" not in text
    assert text == (f"Your task: {DESCRIPTION}\n"
                    "You must:\n- pick exactly one category\n- copy each value as the ticket states it")
    bare = unit_instruction(unit_of(must=[], may=[], must_not=[], system_prompt=""))
    assert bare == f"Your task: {DESCRIPTION}"


def test_a_custom_prompt_template_is_used() -> None:
    template = ("{system_prompt}\n## Job\n{description}\n## Never\n{must_not}\n## Allowed\n{may}\n"
                "Reply in one line.")
    unit = unit_of(prompt_template=template)
    assert unit_instruction(unit) == (
        "You triage tickets for an online shop.\n## Job\n"
        f"{DESCRIPTION}\n## Never\n- invent an order number the ticket does not state\n"
        "## Allowed\n- write dates as YYYY-MM-DD\nReply in one line."
    )
    assert "You must:" not in unit_instruction(unit)  # the default template is not used


def test_a_custom_template_drops_its_own_empty_colon_headings() -> None:
    unit = unit_of(prompt_template="Rules:\n{must}\nForbidden:\n{must_not}\nDone.", must_not=[])
    assert unit_instruction(unit) == "Rules:\n- pick exactly one category\n- copy each value as the ticket states it\nDone."


def test_default_template_uses_every_placeholder() -> None:
    for name in ("system_prompt", "description", "must", "may", "must_not", "fields"):
        assert "{" + name + "}" in DEFAULT_PROMPT_TEMPLATE


# --- who sees the responsibilities ------------------------------------------------------------------------


def test_teachers_get_the_responsibilities_and_students_do_not() -> None:
    unit = unit_of()
    system, user = teacher_messages(unit, task())
    assert system == unit_instruction(unit)
    for line in [DESCRIPTION, *MUST, *MAY, *MUST_NOT]:
        assert line in system
    assert user == "My parcel has not arrived."

    compact = system_prompt(unit, task(), compact=True)
    assert compact == "You triage tickets for an online shop."
    rendered = student_prompt(SimpleNamespace(chat_template=None), unit, task())
    assert rendered == "System: You triage tickets for an online shop.\nUser: My parcel has not arrived.\nAssistant:"
    for line in [DESCRIPTION, *MUST, *MAY, *MUST_NOT]:
        assert line not in rendered


def test_a_retry_keeps_the_responsibilities() -> None:
    system, user = teacher_messages(unit_of(), task(), feedback="The previous answer was rejected: invented_value:x")
    assert MUST_NOT[0] in system
    assert user.startswith("My parcel has not arrived.\n\nThe previous answer was rejected: invented_value:x.")


def test_the_llm_judge_rubric_carries_the_responsibilities() -> None:
    unit = unit_of()
    _, prompt = score_prompt(task(), '{"category": "shipping"}', [], unit)
    assert f"The answer's job: {DESCRIPTION}" in prompt
    assert "It must pick exactly one category" in prompt
    assert "It may write dates as YYYY-MM-DD" in prompt
    assert f"It must not {MUST_NOT[0]} (an answer that does scores 0 on every dimension)" in prompt


# --- judge_version -----------------------------------------------------------------------------------------


def llm_spec(**unit_changes: object) -> dict:
    unit = unit_data(judge={"dimensions": [{"name": "faithful", "scorer": "llm", "description": "states only facts"},
                                           {"name": "rules", "scorer": "rules"}]}, **unit_changes)
    return spec_data(unit, judge={"label": "llm", "model": "grader"})


def test_judge_version_follows_must_not_when_an_llm_judge_reads_it() -> None:
    base = judge_version(parse_spec(llm_spec()))
    assert judge_version(parse_spec(llm_spec())) == base
    assert judge_version(parse_spec(llm_spec(must_not=["invent anything"]))) != base
    assert judge_version(parse_spec(llm_spec(must=[*MUST, "be brief"]))) != base
    assert judge_version(parse_spec(llm_spec(description="Something else."))) != base


def test_judge_version_ignores_responsibilities_on_a_rules_only_unit() -> None:
    base = judge_version(parse_spec(spec_data()))
    assert judge_version(parse_spec(spec_data(unit_data(must_not=["invent anything"])))) == base
    assert judge_version(parse_spec(spec_data(unit_data(may=[], must=[])))) == base
    assert judge_version(parse_spec(spec_data(unit_data(prompt_template="{description}")))) == base


def test_an_llm_unit_needs_a_judge_model() -> None:
    data = llm_spec()
    del data["judge"]["model"]
    with pytest.raises(ConfigError, match="llm scoring or position_swap needs judge.model"):
        parse_spec(data)


@pytest.mark.parametrize("change", [
    {"checker": {"name": "json_fields", "params": {"fields": {"amount": "text"}}}},
    {"checker": {"name": "json_fields", "params": {"fields": {"amount": "number", "date": "date"}}}},
    {"checker": {"name": "json_fields", "params": {"fields": {"amount": "number"}}}, "required_fields": ["amount"]},
    {"checker": {"name": "json_fields", "params": {"fields": {"amount": "number"}}}, "may_be_missing": ["amount"]},
    {"checker": {"name": "choice", "params": {"labels": ["a", "b"]}}},
])
def test_judge_version_follows_the_checker_and_its_params(change) -> None:
    base = parse_spec(spec_data(unit_data(checker={"name": "json_fields", "params": {"fields": {"amount": "number"}}})))
    changed = parse_spec(spec_data(unit_data(**change)))
    assert judge_version(changed) != judge_version(base)
    assert judge_version(changed).startswith("rules-")


def test_judge_version_ignores_metrics() -> None:
    data = spec_data(unit_data(checker="json_fields"))
    more = copy.deepcopy(data)
    more["units"]["triage"]["metrics"] = ["field_accuracy", "category_macro_f1"]
    assert judge_version(parse_spec(more)) == judge_version(parse_spec(data))


# --- distillery spec show -------------------------------------------------------------------------------------

runner = CliRunner()


def squeezed(text: str) -> str:
    """The output with rich's line wrapping undone."""
    return re.sub(r"\s+", " ", text)


def test_spec_show_prints_the_rendered_prompt_and_the_checker() -> None:
    result = runner.invoke(main.app, ["spec", "show", "ticket_triage", "--spec", str(TICKET_SPEC)])
    assert result.exit_code == 0, result.output
    out = squeezed(result.output)
    assert "ticket_triage: output form json, risk low" in out
    assert ('checker: json_fields {"fields": {"amount": "number", "category": "text", "date": "date", '
            '"order_id": "text"}, "may_be_missing": ["amount", "date"], "required_fields": ["category", "order_id"]}'
            in out)
    assert "metrics: exact_match, category_macro_f1" in out
    assert "required fields: category, order_id; may be missing: amount, date" in out
    assert "judge version: tickets-v1-" in out
    assert "the default template" in out
    prompt = unit_instruction(load_spec(TICKET_SPEC).units["ticket_triage"])
    assert squeezed(prompt) in out
    assert "You must not: - invent an order number, amount or date the ticket does not state" in out


def test_spec_show_of_an_unknown_unit_is_a_one_line_error() -> None:
    result = runner.invoke(main.app, ["spec", "show", "ticket_routing", "--spec", str(TICKET_SPEC)])
    assert result.exit_code != 0
    assert_config_error(result, "unknown unit 'ticket_routing'", "ticket_triage")


def test_spec_check_lists_the_unit_with_its_checker_and_metrics() -> None:
    result = runner.invoke(main.app, ["spec", "check", "--spec", str(TICKET_SPEC)])
    assert result.exit_code == 0, result.output
    out = squeezed(result.output)
    assert "ticket_triage" in out and "json_fields" in out and "category_macro_f1" in out
    assert "spec OK: 1 unit(s), judge version tickets-v1-" in out
