"""How a task becomes a chat prompt: one function, used by teachers and students alike,
so the student is evaluated on exactly the prompt form it was trained on."""

from __future__ import annotations

import re

from distillery.contracts.events import Chain, Task, ToolSpec
from distillery.contracts.spec import DEFAULT_PROMPT_TEMPLATE, UnitSpec
from distillery.domain.checkers import declared_fields


def system_prompt(unit: UnitSpec, task: Task, compact: bool = False) -> str:
    """The unit's instruction plus the declared functions, if the task has any.

    Functions are listed as signatures, ``name(arg: type, opt?: type)``, with their
    descriptions for teachers. Full JSON schemas cost several hundred prompt tokens
    per task (prefill dominates generation time on CPU) and tempt models to copy the
    schema into the arguments. ``compact`` (students) drops the descriptions: a small
    model's context is short and its capacity is better spent on the mapping; for the same reason
    a student's prompt carries the unit's ``system_prompt`` only, a teacher's its responsibilities too.
    """
    instruction = unit.system_prompt.strip() if compact else unit_instruction(unit)
    parts = [instruction] if instruction else []
    if task.tools:
        parts.append("Functions:\n" + "\n".join(signature(t, with_docs=not compact) for t in task.tools))
    return "\n\n".join(parts)


def teacher_messages(unit: UnitSpec, task: Task, chain: Chain | None = None, feedback: str | None = None) -> tuple[str, str]:
    """(system, user) for a teacher request. A retry carries the judge's feedback; a chain
    step adds its role and every earlier step's output."""
    system, user = system_prompt(unit, task), task.prompt
    if feedback:
        user = f"{user}\n\n{feedback}. Answer again, following the instructions exactly."
    if chain is None:
        return system, user
    instruction = unit.routing.role_prompts.get(chain.role, f"Your role in this pipeline: {chain.role}.")
    system = f"{system}\n\n{instruction}".strip()
    if chain.prior:
        earlier = "\n\n".join(f"[{step.role}]\n{step.text.strip()}" for step in chain.prior)
        user = f"{user}\n\nEarlier steps:\n{earlier}"
    return system, user


def signature(tool: ToolSpec, with_docs: bool = True) -> str:
    params = tool.parameters if isinstance(tool.parameters, dict) else {}
    required = set(params.get("required", []))
    args = []
    for name, prop in params.get("properties", {}).items():
        arg = f"{name}{'' if name in required else '?'}: {prop.get('type', 'any')}"
        if with_docs and prop.get("description"):
            arg += f" ({prop['description'].strip()})"
        args.append(arg)
    line = f"{tool.name}({', '.join(args)})"
    if with_docs and tool.description:
        line += f" - {tool.description.strip()}"
    return line


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {item.strip()}" for item in items)


def answer_fields(unit: UnitSpec) -> str:
    """For a JSON unit, the fields to give and how to say one is not stated ("" otherwise)."""
    if unit.output_form != "json":
        return ""
    names = declared_fields(unit)
    if not names:
        return "Answer with one JSON object."
    return (f"Answer with one JSON object with the fields {', '.join(names)}. Use null for a field the input "
            "does not state; never guess a value.")


_INSTRUCTIONS: dict[int, tuple[UnitSpec, str]] = {}


def unit_instruction(unit: UnitSpec) -> str:
    """:func:`render_instruction`, once per unit object (a spec is frozen; every teacher request asks)."""
    cached = _INSTRUCTIONS.get(id(unit))
    if cached is None or cached[0] is not unit:  # an id is reused only once its unit is gone
        cached = _INSTRUCTIONS[id(unit)] = (unit, render_instruction(unit))
    return cached[1]


def render_instruction(unit: UnitSpec) -> str:
    """The teachers' instruction for a unit: its system prompt and its responsibilities (description,
    must, may, must not, and a JSON unit's fields), through the spec's ``prompt_template`` or
    :data:`DEFAULT_PROMPT_TEMPLATE`. A heading left with nothing under it ("You may:" for a unit
    with no ``may``) is dropped. ``distillery spec show UNIT`` prints the result."""
    values = {"system_prompt": unit.system_prompt.strip(), "description": unit.description.strip(),
              "must": _bullets(unit.must), "may": _bullets(unit.may), "must_not": _bullets(unit.must_not),
              "fields": answer_fields(unit)}
    lines = (unit.prompt_template or DEFAULT_PROMPT_TEMPLATE).format(**values).splitlines()
    kept, dropped = [], False
    for i, line in enumerate(lines):
        if _empty_heading(line, lines[i + 1:i + 2]) or (dropped and not line.strip()):
            dropped = True  # and the empty list line under it
            continue
        kept.append(line)
        dropped = False
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


def _empty_heading(line: str, following: list[str]) -> bool:
    nxt = following[0].strip() if following else ""
    return line.rstrip().endswith(":") and (not nxt or nxt.endswith(":"))
