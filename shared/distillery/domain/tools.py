"""The registry of declared tools teachers may call in tool trajectories.

Each tool is a name, a JSON-schema of its parameters and a pure Python function.
Model text is never executed: a call is parsed, its arguments are checked against the
schema, and only then is the registered function run, under a time limit.
"""

from __future__ import annotations

import ast
import json
import operator
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from distillery.contracts.events import ToolCall, ToolSpec


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)


# --- calculator: arithmetic through the AST, never eval -------------------------------

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.Mod: operator.mod, ast.FloorDiv: operator.floordiv,
        ast.USub: operator.neg, ast.UAdd: operator.pos}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return _OPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_evaluate(node.operand))
    raise ValueError(f"unsupported expression element: {type(node).__name__}")


def calculator(expression: str) -> float:
    """Evaluate + - * / ** % // and parentheses over numbers."""
    if len(expression) > 200:
        raise ValueError("expression too long")
    value = _evaluate(ast.parse(expression.replace("^", "**"), mode="eval"))
    return round(value, 10) if isinstance(value, float) else value


# --- unit conversion -----------------------------------------------------------------

_LINEAR = {  # unit -> (dimension, factor to the SI unit)
    "m": ("length", 1.0), "meter": ("length", 1.0), "metre": ("length", 1.0), "km": ("length", 1000.0),
    "kilometer": ("length", 1000.0), "kilometre": ("length", 1000.0), "cm": ("length", 0.01),
    "mile": ("length", 1609.344), "ft": ("length", 0.3048), "foot": ("length", 0.3048), "inch": ("length", 0.0254),
    "kg": ("mass", 1.0), "kilogram": ("mass", 1.0), "g": ("mass", 0.001), "gram": ("mass", 0.001),
    "lb": ("mass", 0.45359237), "pound": ("mass", 0.45359237),
    "s": ("time", 1.0), "second": ("time", 1.0), "minute": ("time", 60.0), "min": ("time", 60.0),
    "hour": ("time", 3600.0), "h": ("time", 3600.0), "day": ("time", 86400.0),
}
_TEMPERATURE = {"c": "celsius", "celsius": "celsius", "f": "fahrenheit", "fahrenheit": "fahrenheit",
                "k": "kelvin", "kelvin": "kelvin"}


def _unit(name: str) -> str:
    key = name.strip().lower()
    return key[:-1] if key.endswith("s") and key[:-1] in {**_LINEAR, **_TEMPERATURE} else key


def convert_units(value: float, from_unit: str, to_unit: str) -> float:
    """Convert between length, mass, time or temperature units."""
    src, dst = _unit(from_unit), _unit(to_unit)
    if src in _TEMPERATURE and dst in _TEMPERATURE:
        kelvin = {"celsius": value + 273.15, "fahrenheit": (value - 32) * 5 / 9 + 273.15, "kelvin": value}[_TEMPERATURE[src]]
        out = {"celsius": kelvin - 273.15, "fahrenheit": (kelvin - 273.15) * 9 / 5 + 32, "kelvin": kelvin}[_TEMPERATURE[dst]]
        return round(out, 6)
    if src not in _LINEAR or dst not in _LINEAR:
        raise ValueError(f"unknown unit: {from_unit if src not in _LINEAR else to_unit}")
    if _LINEAR[src][0] != _LINEAR[dst][0]:
        raise ValueError(f"cannot convert {_LINEAR[src][0]} to {_LINEAR[dst][0]}")
    return round(value * _LINEAR[src][1] / _LINEAR[dst][1], 6)


# --- knowledge-base lookup -------------------------------------------------------------

@cache
def knowledge_base() -> dict[str, str]:
    text = resources.files("distillery.domain").joinpath("data/knowledge_base.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def lookup(topic: str) -> str:
    """The knowledge-base entry whose key best matches the topic (word overlap)."""
    words = set(topic.lower().replace("?", " ").split())
    best = max(knowledge_base(), key=lambda key: len(words & set(key.split())))
    if not words & set(best.split()):
        raise LookupError(f"no entry about '{topic}'")
    return knowledge_base()[best]


# Read-only: the tools are this code's functions, chosen by the spec's unit; nothing a task or
# an event carries can add one or swap one (a task's `tools` only describe them to the model).
REGISTRY: Mapping[str, Tool] = MappingProxyType({
    tool.name: tool for tool in (
        Tool("calculator", "Evaluate an arithmetic expression with + - * / ** and parentheses.",
             {"type": "object", "properties": {"expression": {"type": "string", "description": "e.g. (3 + 4) * 2"}},
              "required": ["expression"]}, calculator),
        Tool("convert_units", "Convert a value between length, mass, time or temperature units.",
             {"type": "object", "properties": {
                 "value": {"type": "number"}, "from_unit": {"type": "string", "description": "e.g. km, mile, hour, celsius"},
                 "to_unit": {"type": "string"}}, "required": ["value", "from_unit", "to_unit"]}, convert_units),
        Tool("lookup", "Look a fact up in the knowledge base.",
             {"type": "object", "properties": {"topic": {"type": "string", "description": "e.g. marathon"}},
              "required": ["topic"]}, lookup),
    )
})


def specs(names: list[str]) -> list[ToolSpec]:
    return [REGISTRY[name].spec for name in names]


_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tool")


def call_tool(call: ToolCall, allowed: list[str], timeout_s: float) -> tuple[str, str | None]:
    """Run one declared tool call: (observation, error). Invalid calls never run."""
    from distillery.domain.scoring import validate_tool_calls

    if call.name not in allowed or call.name not in REGISTRY:
        return "", f"unknown_function:{call.name}"
    tool = REGISTRY[call.name]
    problems = validate_tool_calls([call], [tool.spec])
    if problems:
        return "", "invalid_arguments: " + ", ".join(problems)
    future = _POOL.submit(tool.fn, **call.arguments)
    try:
        return str(future.result(timeout=timeout_s)), None
    except FutureTimeout:
        return "", f"timeout after {timeout_s}s"
    except Exception as exc:  # noqa: BLE001 - the tool's own error is the observation the model must see
        return "", f"{type(exc).__name__}: {exc}"
