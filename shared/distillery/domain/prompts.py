"""How a task becomes a chat prompt: one function, used by teachers and students alike,
so the student is evaluated on exactly the prompt form it was trained on."""

from __future__ import annotations

from distillery.contracts.events import Chain, Task, ToolSpec
from distillery.contracts.spec import UnitSpec


def system_prompt(unit: UnitSpec, task: Task, compact: bool = False) -> str:
    """The unit's instruction plus the declared functions, if the task has any.

    Functions are listed as signatures, ``name(arg: type, opt?: type)``, with their
    descriptions for teachers. Full JSON schemas cost several hundred prompt tokens
    per task (prefill dominates generation time on CPU) and tempt models to copy the
    schema into the arguments. ``compact`` (students) drops the descriptions: a small
    model's context is short and its capacity is better spent on the mapping.
    """
    parts = [unit.system_prompt.strip()] if unit.system_prompt else []
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
