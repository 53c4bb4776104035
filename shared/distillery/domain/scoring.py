"""Reference checks shared by the judge and the evaluator (pure functions, no I/O).

Output conventions the teachers are prompted for and the student learns:

* **tool call**: one JSON object ``{"name": "<function>", "arguments": {...}}``,
  possibly inside ```json fences or ``<tool_call>...</tool_call>`` tags, possibly
  a JSON list of such objects for several calls. Function names may contain dots.
* **tool boundary** (irrelevance): when no tool fits, call nothing and say so in
  plain text. "No call" means no parseable tool call in the output.
* **math**: key steps, then a last line ``#### <number>``.

Tool-call matching follows the BFCL AST checker: a possible answer is a list of
``{function: {argument: [allowed values]}}``; the allowed value ``""`` marks an
argument that may be omitted; numbers compare numerically, strings after BFCL's
normalisation (case, spaces and ``,./-_*^`` ignored), lists element by element
in order, dicts key by key (their values are again lists of allowed values).
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, Iterable

from distillery.contracts.events import Task, ToolCall, ToolSpec

__all__ = [
    "ReferenceResult",
    "answers_equal",
    "check_reference",
    "extract_final_answer",
    "match_tool_calls",
    "normalize_answer",
    "parse_tool_calls",
    "validate_tool_calls",
]

REFERENCE_KINDS = ("none", "final_answer", "tool_call")

# --- tool-call parsing ---------------------------------------------------------

# Wrappers removed before scanning: ``` fences (with a language tag), tool-call tags.
_FENCE = re.compile(r"```[A-Za-z0-9_+-]*")
_TAGS = re.compile(r"</?\s*(?:tool_call|tool_calls|function_call|functioncall)\s*>|<\|python_tag\|>", re.I)
# A key "name" in JSON-ish text: the sign that the output tries to call a tool.
_NAME_KEY = re.compile(r"""["']name["']\s*:""")
_ARG_KEYS = ("arguments", "parameters", "args")
_CALL_EXTRA_KEYS = {"type", "id", "call_id"}


class _Malformed(Exception):
    """A JSON value that looks like a tool call but is not a well-formed one."""


def parse_tool_calls(text: str | None, strict: bool = False) -> list[ToolCall] | None:
    """Tool calls in a model output.

    Returns ``[]`` when the text holds no tool-call-like JSON at all (a plain
    text answer), ``None`` when it tries to call (a ``"name"`` key, a
    ``<tool_call>`` tag) but the JSON is broken or malformed (truncated, flat
    arguments, a non-object ``arguments``), else the calls in order.
    Accepts one object or a list of them, in fences, tags or prose; the OpenAI
    shapes ``{"function": {...}}`` / ``{"tool_calls": [...]}`` with string
    arguments; and, unless ``strict``, Python-literal dicts (single quotes,
    True/False/None, trailing commas).
    """
    if not text:
        return []
    tagged = bool(_TAGS.search(text))
    s = _TAGS.sub(" ", _FENCE.sub(" ", text))
    calls: list[ToolCall] = []
    malformed = False
    leftover: list[str] = []  # text outside the JSON values that parsed
    budget = [_LENIENT_BUDGET]  # characters the lenient bracket matcher may still scan
    i, last = 0, 0
    n = len(s)
    while i < n:
        c = s[i]
        if c not in "{[":
            i += 1
            continue
        value, end = _value_at(s, i, strict, budget)
        if value is _FAIL:
            i += 1
            continue
        leftover.append(s[last:i])
        last = i = end
        try:
            calls.extend(_calls_in(value))
        except _Malformed:
            malformed = True
    leftover.append(s[last:])
    if malformed:
        return None
    rest = "".join(leftover)
    if _NAME_KEY.search(rest):
        return None  # a call-like fragment that never parsed (broken or truncated JSON)
    if not calls and tagged:
        return None  # a <tool_call> tag without a call in it
    return calls


def _calls_in(value: Any) -> list[ToolCall]:
    """The calls in one parsed JSON value; raises _Malformed for broken call shapes."""
    if isinstance(value, list):
        out: list[ToolCall] = []
        for item in value:
            if isinstance(item, (dict, list)):
                out.extend(_calls_in(item))
        return out
    if not isinstance(value, dict):
        return []
    if "tool_calls" in value and isinstance(value["tool_calls"], list):
        return _calls_in(value["tool_calls"])
    for wrapper in ("function_call", "function"):
        inner = value.get(wrapper)
        if isinstance(inner, dict) and "name" in inner and "name" not in value:
            return [_one_call(inner)]
    if "name" in value:
        return [_one_call(value)]
    if "arguments" in value:
        raise _Malformed  # call-shaped but without a function name
    return []


def _one_call(obj: dict[str, Any]) -> ToolCall:
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _Malformed
    arg_keys = [k for k in _ARG_KEYS if k in obj]
    if not arg_keys:
        if set(obj) - {"name"} - _CALL_EXTRA_KEYS:
            raise _Malformed  # flat arguments next to "name"
        return ToolCall(name=name.strip(), arguments={})
    args = obj[arg_keys[0]]
    if isinstance(args, str):  # OpenAI wire form: arguments as a JSON string
        args = _load(args) if args.strip() else {}
        if args is _FAIL:
            raise _Malformed
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise _Malformed
    return ToolCall(name=name.strip(), arguments=args)


_FAIL = object()
_DECODER = json.JSONDecoder()
_JSON_START = re.compile(r'\{\s*["}]|\[\s*[-\d"{\[\]tfn]')
# Python-literal fallback: total characters the bracket matcher may scan per text
# (keeps parsing linear on long prose full of stray brackets).
_LENIENT_BUDGET = 200_000


def _value_at(s: str, i: int, strict: bool, budget: list[int]) -> tuple[Any, int]:
    """The JSON (or, unless strict, Python-literal) value starting at ``s[i]`` and its end."""
    if _JSON_START.match(s, i):  # skip prose brackets cheaply (a decode error costs O(i))
        try:
            return _DECODER.raw_decode(s, i)
        except (ValueError, RecursionError):
            pass
    if strict or budget[0] <= 0:
        return _FAIL, i
    end = _matching_close(s, i, budget)
    if end is None:
        return _FAIL, i
    value = _load(s[i : end + 1], strict)
    return value, end + 1


_PY_WORDS = re.compile(r"\b(true|false|null)\b")


def _load(span: str, strict: bool = False) -> Any:
    try:
        return json.loads(span)
    except ValueError:
        if strict:
            return _FAIL
    try:
        value = ast.literal_eval(span)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if not _PY_WORDS.search(span):
            return _FAIL  # the retry below would see the same text
        try:
            fixed = _PY_WORDS.sub(lambda m: {"true": "True", "false": "False", "null": "None"}[m.group(1)], span)
            value = ast.literal_eval(fixed)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return _FAIL
    if isinstance(value, (dict, list)):
        return _jsonable(value)
    return _FAIL


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, set):
        return [_jsonable(v) for v in value]
    return value


def _matching_close(s: str, start: int, budget: list[int]) -> int | None:
    """Index of the bracket closing the one at ``start``, skipping quoted strings
    (double or single quotes; an apostrophe inside a word is not a quote).
    Charges the characters it scans to ``budget[0]``."""
    stack: list[str] = []
    quote: str | None = None
    pairs = {"{": "}", "[": "]"}
    n = len(s)
    i = start
    try:
        while i < n:
            c = s[i]
            if quote:
                if c == "\\":
                    i += 2
                    continue
                if c == quote:
                    quote = None
                elif c == "\n" and quote == "'":
                    return None  # an apostrophe in prose, not a string
            elif c in "\"'":
                if not (c == "'" and 0 < i < n - 1 and s[i - 1].isalnum() and s[i + 1].isalnum()):
                    quote = c
            elif c in pairs:
                stack.append(pairs[c])
            elif c in "}]":
                if not stack or stack[-1] != c:
                    return None
                stack.pop()
                if not stack:
                    return i
            i += 1
        return None
    finally:
        budget[0] -= i - start + 1


# --- tool-call validation -------------------------------------------------------------

_OPTIONAL_TRUE = {True, "true", "True", "yes", "1"}


def validate_tool_calls(calls: Iterable[ToolCall], tools: Iterable[ToolSpec]) -> list[str]:
    """Reason tags for calls that break the declared signatures ([] when all are valid).

    Tags: ``unknown_function:<fn>``, ``missing_required_argument:<fn>.<arg>``,
    ``unexpected_argument:<fn>.<arg>``, ``wrong_type:<fn>.<arg>`` and
    ``invalid_enum_value:<fn>.<arg>`` (nested arguments as ``<fn>.<arg>.<key>``).
    BFCL types: ``dict`` (object), ``integer``, ``float`` (int accepted),
    ``string``, ``boolean``, ``array``, ``tuple`` (a JSON list), ``any``;
    the JSON-Schema names ``object``, ``number``, ``null`` are accepted too.
    """
    specs: dict[str, ToolSpec] = {}
    for tool in tools:
        spec = tool if isinstance(tool, ToolSpec) else ToolSpec.model_validate(tool)
        specs.setdefault(spec.name, spec)
    reasons: list[str] = []
    for call in calls:
        spec = specs.get(call.name)
        if spec is None:
            reasons.append(f"unknown_function:{call.name}")
            continue
        _check_object(call.arguments, spec.parameters or {}, call.name, reasons)
    return _dedupe(reasons)


def _check_object(value: dict[str, Any], schema: dict[str, Any], path: str, reasons: list[str]) -> None:
    props = schema.get("properties")
    required = schema.get("required") or []
    if isinstance(props, dict):
        for arg in required:
            prop = props.get(arg, {})
            if arg not in value and not (isinstance(prop, dict) and prop.get("optional") in _OPTIONAL_TRUE):
                reasons.append(f"missing_required_argument:{path}.{arg}")
        extra_ok = schema.get("additionalProperties") not in (None, False)
        for arg, v in value.items():
            prop = props.get(arg)
            if prop is None:
                if not extra_ok:
                    reasons.append(f"unexpected_argument:{path}.{arg}")
                continue
            _check_value(v, prop, f"{path}.{arg}", reasons)
    else:
        for arg in required:
            if arg not in value:
                reasons.append(f"missing_required_argument:{path}.{arg}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_TYPE_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "str": lambda v: isinstance(v, str),
    "integer": _is_int,
    "int": _is_int,
    "float": _is_number,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "list": lambda v: isinstance(v, list),
    "tuple": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
    "any": lambda v: True,
}


def _check_value(value: Any, schema: dict[str, Any], path: str, reasons: list[str]) -> None:
    if not isinstance(schema, dict):
        return
    declared = schema.get("type")
    types = declared if isinstance(declared, list) else [declared] if declared else []
    checks = [_TYPE_CHECKS[t] for t in types if t in _TYPE_CHECKS]
    if checks and not any(check(value) for check in checks):
        reasons.append(f"wrong_type:{path}")
        return
    enum = schema.get("enum")
    if isinstance(enum, list) and enum and value is not None:
        if not any(_value_equal(value, e) for e in enum):
            reasons.append(f"invalid_enum_value:{path}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for k, item in enumerate(value):
            before = len(reasons)
            _check_value(item, schema["items"], f"{path}[{k}]", reasons)
            if len(reasons) > before:
                break
    elif isinstance(value, dict) and "properties" in schema:
        _check_object(value, schema, path, reasons)


# --- matching against BFCL possible answers --------------------------------------------

_BFCL_STRIP = re.compile(r"[ ,./\-_*^]")


def _norm_str(s: str) -> str:
    """BFCL's string standardisation: drop spaces and ``,./-_*^``, lower case."""
    return _BFCL_STRIP.sub("", s.strip()).lower().replace("'", '"')


def _value_equal(got: Any, allowed: Any) -> bool:
    """One model value against one allowed value (not a list of alternatives)."""
    if isinstance(got, bool) or isinstance(allowed, bool):
        return isinstance(got, bool) and isinstance(allowed, bool) and got == allowed
    if _is_number(got) and _is_number(allowed):
        return math.isclose(float(got), float(allowed), rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(got, str) and isinstance(allowed, str):
        return _norm_str(got) == _norm_str(allowed)
    if isinstance(got, (list, tuple)) and isinstance(allowed, (list, tuple)):
        return len(got) == len(allowed) and all(_value_equal(g, a) for g, a in zip(got, allowed))
    if isinstance(got, dict) and isinstance(allowed, dict):
        return _dict_matches(got, allowed)
    return got is None and allowed is None


def _dict_matches(got: dict[str, Any], allowed: dict[str, Any]) -> bool:
    """A dict value: each key's value among its alternatives (``""`` = may be omitted)."""
    if set(got) - set(allowed):
        return False
    for key, options in allowed.items():
        options = options if isinstance(options, list) else [options]
        if key not in got:
            if "" not in options:
                return False
            continue
        if not _in_options(got[key], options):
            return False
    return True


def _in_options(value: Any, options: list[Any]) -> bool:
    return any(_value_equal(value, option) for option in options if not (option == "" and value != ""))


def _match_one(call: ToolCall, answer: dict[str, dict[str, list[Any]]]) -> str | None:
    """None when ``call`` matches one possible answer ``{function: {arg: [allowed]}}``."""
    if len(answer) != 1:
        return "bad_reference"
    fn, allowed_args = next(iter(answer.items()))
    if call.name != fn:
        return f"wrong_function:{call.name}"
    for arg in call.arguments:
        if arg not in allowed_args:
            return f"unexpected_argument:{fn}.{arg}"
    for arg, options in allowed_args.items():
        options = options if isinstance(options, list) else [options]
        if arg not in call.arguments:
            if "" not in options:
                return f"missing_argument:{fn}.{arg}"
            continue
        if not _in_options(call.arguments[arg], options):
            return f"wrong_value:{fn}.{arg}"
    return None


def match_tool_calls(
    calls: list[ToolCall], possible_answers: list[dict[str, dict[str, list[Any]]]]
) -> tuple[bool, str]:
    """BFCL AST-style match of the calls against the ground truth, order-free.

    Returns ``(True, "")`` or ``(False, reason)`` with reason one of
    ``wrong_number_of_calls:<got>!=<expected>``, ``wrong_function:<name>``,
    ``missing_argument:<fn>.<arg>``, ``unexpected_argument:<fn>.<arg>``,
    ``wrong_value:<fn>.<arg>``, ``bad_reference``.
    """
    expected = list(possible_answers or [])
    if len(calls) != len(expected):
        return False, f"wrong_number_of_calls:{len(calls)}!={len(expected)}"
    if not calls:
        return True, ""
    # Pairwise reasons, then a perfect matching (backtracking; a handful of calls).
    table = [[_match_one(c, a) for a in expected] for c in calls]
    used = [False] * len(expected)

    def assign(i: int) -> bool:
        if i == len(calls):
            return True
        for j, reason in enumerate(table[i]):
            if reason is None and not used[j]:
                used[j] = True
                if assign(i + 1):
                    return True
                used[j] = False
        return False

    if assign(0):
        return True, ""
    # Report the most telling reason: for the first call without a match, the
    # reason against an answer for the same function when there is one.
    for row in table:
        if any(r is None for r in row):
            continue
        same_fn = [r for r in row if not r.startswith("wrong_function:")]
        return False, (same_fn or row)[0]
    return False, table[0][0] or "wrong_function"


# --- final answers -------------------------------------------------------------------------

_NUMBER = re.compile(r"(?:(?<![\w)])-)?\$?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)")
_HASHES = re.compile(r"####")
_ANSWER_CUE = re.compile(r"final answer|answer is|answer:", re.I)
# compiled once: the judge runs these on every candidate, twice or more
_NOISE = re.compile(r"[\s$,%]")
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_RATIO = re.compile(r"-?\d+/\d+")
_DECIMAL = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_SPACES = re.compile(r"\s+")


def normalize_answer(value: str | None) -> str | None:
    """Strip spaces, ``$``, ``%``, commas and a trailing period; write numbers plainly
    (``18.00`` -> ``18``, ``0.50`` -> ``0.5``, ``-0`` -> ``0``). Other text is only stripped."""
    if value is None:
        return None
    s = _NOISE.sub("", str(value)).rstrip(".")
    if _PLAIN_NUMBER.fullmatch(s):
        d = Decimal(s)
        if d == d.to_integral_value():
            return str(int(d))
        return format(d.normalize(), "f")
    return s


def _first_number(text: str) -> str | None:
    m = _NUMBER.search(text)
    return normalize_answer(m.group(0)) if m else None


def extract_final_answer(text: str | None) -> str | None:
    """The number after the last ``####``; else after the last "final answer"/"answer is";
    else the last number in the text. Normalised (see :func:`normalize_answer`)."""
    if not text:
        return None
    marks = list(_HASHES.finditer(text))
    if marks:
        tail = text[marks[-1].end() :]
        line = tail.strip().splitlines()[0] if tail.strip() else ""
        found = _first_number(line)
        if found is not None:
            return found
    cues = list(_ANSWER_CUE.finditer(text))
    if cues:
        found = _first_number(text[cues[-1].end() :])
        if found is not None:
            return found
    numbers = _NUMBER.findall(text)
    return normalize_answer(numbers[-1]) if numbers else None


def _as_number(s: str) -> Fraction | None:
    t = normalize_answer(s)
    if t is None:
        return None
    try:
        if _RATIO.fullmatch(t):
            return Fraction(t)
        if _DECIMAL.fullmatch(t):
            return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def answers_equal(a: str | None, b: str | None) -> bool:
    """Numeric equality when both parse as numbers, else normalised string equality."""
    if a is None or b is None:
        return False
    x, y = _as_number(str(a)), _as_number(str(b))
    if x is not None and y is not None:
        if x == y:
            return True
        return math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-9)
    return _SPACES.sub(" ", str(a).strip().lower().rstrip(".")) == _SPACES.sub(" ", str(b).strip().lower().rstrip("."))


# --- the reference check ----------------------------------------------------------------


@dataclass
class ReferenceResult:
    """``correct`` is None when there is nothing to compare with."""

    correct: bool | None
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    final: str | None = None
    tool_calls: list[ToolCall] | None = None
    # partial credit in [0, 1] (None: ``correct`` as 0 or 1); per-field outcomes of a structured
    # answer (``json_fields``); required information the input lacks and the answer says is not
    # stated (a boundary the student learns)
    score: float | None = None
    fields: dict[str, str] = field(default_factory=dict)
    gaps: list[str] = field(default_factory=list)


DECLINE_CUE = re.compile(
    r"\b(no|none of the|not any)\b[^.\n]{0,40}\b(function|tool)s?\b|\b(can ?not|can't|unable to|not able to)\b"
    r"|\bwill not call\b|\bdoes not (fit|apply|match)\b",
    re.IGNORECASE,
)


def is_decline(text: str | None, calls: list[ToolCall] | None = None) -> bool:
    """A refusal: no parseable tool call, and a stated decline (``calls``: already parsed ones)."""
    calls = parse_tool_calls(text) if calls is None else calls
    return not calls and bool(DECLINE_CUE.search(text or ""))


def check_reference(task: Task, text: str, kind: str) -> ReferenceResult:
    """Check one output against the task's reference.

    ``kind`` is ``"none"`` (nothing checked), ``"final_answer"`` (extract and
    compare with ``reference.answer``) or ``"tool_call"`` (a ``reference.no_call``
    task is correct iff the output holds no parseable call and states the decline; otherwise parse,
    validate against ``task.tools`` and match ``reference.tool_calls``).

    Reason tags: ``no_final_answer``, ``wrong_final_answer``,
    ``called_tool_when_none_fits``, ``no_tool_call``, ``unparseable_tool_call``,
    the validation tags of :func:`validate_tool_calls`, ``wrong_arguments`` or
    ``wrong_function`` or ``wrong_number_of_calls`` plus the detailed tag of
    :func:`match_tool_calls`. Check names: ``final_answer_present``,
    ``final_answer_marked`` (a ``####`` line), ``final_answer_matches``,
    ``no_call``, ``tool_call_present``, ``tool_call_parses``, ``tool_call_valid``,
    ``tool_call_matches_reference``.
    """
    if kind not in REFERENCE_KINDS:
        raise ValueError(f"unknown reference kind {kind!r}; expected one of {REFERENCE_KINDS}")
    if kind == "none":
        return ReferenceResult(correct=None)
    if kind == "final_answer":
        return _check_final_answer(task, text or "")
    return _check_tool_call(task, text or "")


def _check_final_answer(task: Task, text: str) -> ReferenceResult:
    ref = task.reference
    final = extract_final_answer(text)
    checks = {"final_answer_present": final is not None, "final_answer_marked": _marked(text)}
    reasons: list[str] = []
    if final is None:
        reasons.append("no_final_answer")
    if ref is None or ref.answer is None:
        return ReferenceResult(None, reasons, checks, final, None)
    ok = answers_equal(final, ref.answer)
    checks["final_answer_matches"] = ok
    if final is not None and not ok:
        reasons.append("wrong_final_answer")
    return ReferenceResult(ok, reasons, checks, final, None)


def _check_tool_call(task: Task, text: str) -> ReferenceResult:
    ref = task.reference
    calls = parse_tool_calls(text)
    if ref is not None and ref.no_call:
        # BFCL's irrelevance metric is "no call"; the unit also asks to say so, which
        # separates a decline from an answer made up from memory (or from noise).
        no_call = not calls  # [] or None: no parseable call
        declines = bool(DECLINE_CUE.search(text))
        reasons = ([] if no_call else ["called_tool_when_none_fits"]) + ([] if declines else ["no_decline_stated"])
        return ReferenceResult(no_call and declines, reasons, {"no_call": no_call, "declines": declines}, None, calls)
    reasons = []
    checks = {"tool_call_present": calls is None or bool(calls), "tool_call_parses": calls is not None}
    if calls is None:
        reasons.append("unparseable_tool_call")
    elif not calls:
        reasons.append("no_tool_call")
    valid = False
    if calls:
        problems = validate_tool_calls(calls, task.tools)
        valid = not problems
        checks["tool_call_valid"] = valid
        reasons.extend(problems)
    if ref is None or ref.tool_calls is None:
        return ReferenceResult(None, reasons, checks, None, calls)
    matched = False
    if calls is not None:
        matched, why = match_tool_calls(calls, ref.tool_calls)
        if not matched and calls:
            reasons.extend(_mismatch_reasons(why))
    checks["tool_call_matches_reference"] = matched
    correct = bool(calls) and valid and matched
    if not calls and not ref.tool_calls:
        correct = True  # an empty expected call list: calling nothing is right
    return ReferenceResult(correct, _dedupe(reasons), checks, None, calls)


def _mismatch_reasons(why: str) -> list[str]:
    """The coarse reason (argument problems are all ``wrong_arguments``) and the detailed one."""
    coarse = why.split(":", 1)[0]
    if coarse in ("missing_argument", "unexpected_argument", "wrong_value"):
        coarse = "wrong_arguments"
    return [coarse, why] if coarse != why else [why]


def _marked(text: str) -> bool:
    return any(_first_number(line.split("####", 1)[1]) is not None for line in text.splitlines() if "####" in line)


def _dedupe(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
