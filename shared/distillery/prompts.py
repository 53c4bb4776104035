"""How a task becomes a chat prompt: one function, used by teachers and students alike,
so the student is evaluated on exactly the prompt form it was trained on."""

from __future__ import annotations

import json

from distillery.events import Task, ToolSpec
from distillery.spec import UnitSpec


def system_prompt(unit: UnitSpec, task: Task, compact: bool = False) -> str:
    """The unit's instruction plus the declared functions, if the task has any.

    Teachers get the full JSON schemas. ``compact`` (students) lists each function
    as ``name(arg: type, ...)``: a small model's context is short and its capacity
    is better spent on the mapping than on reading schema boilerplate.
    """
    parts = [unit.system_prompt.strip()] if unit.system_prompt else []
    if task.tools and compact:
        parts.append("Functions:\n" + "\n".join(_signature(t) for t in task.tools))
    elif task.tools:
        tools = [t.model_dump(mode="json") for t in task.tools]
        parts.append("Functions:\n" + json.dumps(tools, separators=(",", ":")))
    return "\n\n".join(parts)


def _signature(tool: ToolSpec) -> str:
    props = tool.parameters.get("properties", {}) if isinstance(tool.parameters, dict) else {}
    required = set(tool.parameters.get("required", [])) if isinstance(tool.parameters, dict) else set()
    args = [f"{name}{'' if name in required else '?'}: {p.get('type', 'any')}" for name, p in props.items()]
    return f"{tool.name}({', '.join(args)})"
