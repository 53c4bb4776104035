"""Stop signals: when distilling more samples of the same kind stops paying.

Plain functions over the history of one student recipe (no metrics, no Kafka), so the
evaluator, the CLI and the tests read the same verdicts. Each signal says *why* it fired
and what to do instead, because "stop" alone is not actionable: the usual answer is real
data (``distillery samples import``), retrieval or tool access, or simply keeping the teacher.

:func:`classify_error` sorts the student's wrong held-out answers into error classes; the
``error_shift`` signal reads their counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from statistics import mean
from typing import Any, Iterable, Sequence

from distillery.contracts.events import Task
from distillery.domain.scoring import normalize_answer, parse_tool_calls

__all__ = [
    "ERROR_CLASSES",
    "KNOWLEDGE_CLASSES",
    "Round",
    "Signal",
    "StopConfig",
    "classify_error",
    "stop_signals",
]

ERROR_CLASSES = ("format", "boundary", "tool_choice", "missing_knowledge", "missing_tool_result",
                 "wrong_arguments", "reasoning", "other")
# Errors more distilled samples do not fix: the student lacks facts or tool results, not skill.
KNOWLEDGE_CLASSES = frozenset({"missing_knowledge", "missing_tool_result"})
NOT_ENOUGH = "not_enough_rounds"

ADVICE = {
    "marginal_gain": "Stop adding distilled samples of this kind; import real corrections and failures "
                     "(`distillery samples import`) or change the unit.",
    "agreement_without_accuracy": "The student copies the teacher, errors included: add reference-checked real "
                                  "data, use a stronger judge, or a better teacher.",
    "maintenance_cost": "Keep calling the teacher for this traffic; distil only when the volume grows.",
    "error_shift": "The student lacks facts or tool results, not skill: add retrieval or tool access, or real "
                   "data, rather than more distilled samples.",
}


@dataclass(frozen=True)
class Round:
    """One evaluated student of the same recipe, in training order."""

    student_id: str
    samples: int  # training samples in its dataset
    accuracy: dict[str, float]  # unit -> held-out reference accuracy of the trained student
    agreement: dict[str, float]  # unit -> share of held-out tasks where student and best teacher agree
    offline_cost_usd: float  # producing/maintaining this round's samples + training
    teacher_cost_horizon_usd: float  # calling the teacher for the student's traffic over the horizon
    error_classes: dict[str, int]  # error class -> count of the student's wrong held-out answers


@dataclass(frozen=True)
class StopConfig:
    min_gain_per_1k: float = 0.02  # accuracy points (0..1) per 1,000 new samples
    rounds: int = 3  # k: look at the last k rounds (k-1 steps)
    agreement_rise: float = 0.05  # agreement up by at least this ...
    flat_tolerance: float = 0.02  # ... while accuracy moved by at most this
    error_shift_share: float = 0.5  # share of errors in knowledge/tool classes that counts as a shift


@dataclass(frozen=True)
class Signal:
    name: str  # marginal_gain | agreement_without_accuracy | maintenance_cost | error_shift
    fired: bool
    reason: str  # short machine label
    detail: str  # one human sentence with the figures
    advice: str  # what to do instead when fired; "" otherwise


# --- stop signals -----------------------------------------------------------------------------


def stop_signals(rounds: list[Round], config: StopConfig | None = None) -> list[Signal]:
    """All four signals, fired or not, in a fixed order (a report always lists every one)."""
    config = config or StopConfig()
    return [
        marginal_gain(rounds, config),
        agreement_without_accuracy(rounds, config),
        maintenance_cost(rounds),
        error_shift(rounds, config),
    ]


def _num(x: float) -> str:
    """A figure short enough for a machine label (``0.004``, ``0.02``, ``-0.1``)."""
    return f"{round(x, 4):g}"


def _usd(x: float) -> str:
    return f"${x:,.2f}" if abs(x) >= 1 else f"${x:.4g}"


def _mean(values: dict[str, float]) -> float | None:
    """Unweighted mean over units: every unit counts the same, whatever its task count."""
    return mean(values.values()) if values else None


def _signal(name: str, fired: bool, reason: str, detail: str) -> Signal:
    return Signal(name, fired, reason, detail, ADVICE[name] if fired else "")


def _window(rounds: list[Round], config: StopConfig) -> list[Round] | None:
    """The last k rounds, or None when the history is shorter (one step is too noisy to stop on)."""
    k = max(2, config.rounds)
    return rounds[-k:] if len(rounds) >= k else None


def _too_short(name: str, rounds: list[Round], config: StopConfig) -> Signal:
    need = max(2, config.rounds)
    return _signal(name, False, NOT_ENOUGH, f"{len(rounds)} round(s) evaluated; this signal needs {need}.")


def _gains_per_1k(window: list[Round]) -> list[float]:
    """Accuracy gain per 1,000 new samples for each step; steps that added no samples are skipped."""
    gains = []
    for prev, cur in zip(window, window[1:]):
        new = cur.samples - prev.samples
        a, b = _mean(prev.accuracy), _mean(cur.accuracy)
        if new <= 0 or a is None or b is None:
            continue
        gains.append((b - a) / (new / 1000))
    return gains


def marginal_gain(rounds: list[Round], config: StopConfig) -> Signal:
    """Fires when every step of the last k rounds gained less than ``min_gain_per_1k``."""
    name = "marginal_gain"
    window = _window(rounds, config)
    if window is None:
        return _too_short(name, rounds, config)
    gains = _gains_per_1k(window)
    if not gains:
        return _signal(name, False, "no_new_samples", f"None of the last {len(window)} rounds added samples.")
    best, floor = max(gains), config.min_gain_per_1k
    fired = best < floor
    steps = ", ".join(_num(g) for g in gains)
    reason = f"gain_{_num(best)}_per_1k_{'below' if fired else 'at_or_above'}_{_num(floor)}"
    detail = (f"Accuracy gain per 1,000 new samples over the last {len(window)} rounds: {steps} "
              f"(threshold {_num(floor)}).")
    return _signal(name, fired, reason, detail)


def agreement_without_accuracy(rounds: list[Round], config: StopConfig) -> Signal:
    """Fires when agreement with the teacher rose while accuracy stayed flat: the student
    learns to copy the teacher (its mistakes too) rather than to be right."""
    name = "agreement_without_accuracy"
    window = _window(rounds, config)
    if window is None:
        return _too_short(name, rounds, config)
    first, last = window[0], window[-1]
    ag0, ag1 = _mean(first.agreement), _mean(last.agreement)
    ac0, ac1 = _mean(first.accuracy), _mean(last.accuracy)
    if None in (ag0, ag1, ac0, ac1):
        return _signal(name, False, "no_agreement_data", "Agreement or accuracy was not recorded for these rounds.")
    rise, moved = ag1 - ag0, ac1 - ac0
    fired = rise >= config.agreement_rise and abs(moved) <= config.flat_tolerance
    reason = f"agreement_{_num(rise)}_accuracy_{_num(moved)}"
    detail = (f"Over the last {len(window)} rounds agreement with the best teacher moved {rise:+.3f} "
              f"(fires at >= {_num(config.agreement_rise)}) while accuracy moved {moved:+.3f} "
              f"(flat within {_num(config.flat_tolerance)}).")
    return _signal(name, fired, reason, detail)


def maintenance_cost(rounds: list[Round]) -> Signal:
    """Fires when the latest round cost more offline than the teacher would cost for its traffic."""
    name = "maintenance_cost"
    if not rounds:
        return _signal(name, False, NOT_ENOUGH, "No round evaluated yet.")
    last = rounds[-1]
    offline, teacher = last.offline_cost_usd, last.teacher_cost_horizon_usd
    fired = offline > teacher
    reason = f"offline_{_num(offline)}_{'above' if fired else 'within'}_teacher_{_num(teacher)}"
    detail = f"Offline cost {_usd(offline)} against {_usd(teacher)} for calling the teacher over the horizon."
    return _signal(name, fired, reason, detail)


def error_shift(rounds: list[Round], config: StopConfig) -> Signal:
    """Fires when most of the latest round's errors are missing facts or tool results."""
    name = "error_shift"
    if not rounds:
        return _signal(name, False, NOT_ENOUGH, "No round evaluated yet.")
    counts = rounds[-1].error_classes
    total = sum(counts.values())
    if total <= 0:
        return _signal(name, False, "no_errors", "The latest student made no held-out errors.")
    knowledge = sum(n for cls, n in counts.items() if cls in KNOWLEDGE_CLASSES)
    share = knowledge / total
    fired = share >= config.error_shift_share
    reason = f"knowledge_share_{_num(share)}_{'at_or_above' if fired else 'below'}_{_num(config.error_shift_share)}"
    detail = (f"{knowledge} of {total} held-out errors ({share:.0%}) are missing knowledge or missing tool "
              f"results (fires at {config.error_shift_share:.0%}).")
    return _signal(name, fired, reason, detail)


# --- error classes ----------------------------------------------------------------------------

_FORMAT_TAGS = {"no_final_answer", "unparseable_tool_call", "no_tool_call", "unparseable_json", "not_a_label",
                "checker_error"}
_VALIDATION_TAGS = {"missing_required_argument", "unexpected_argument", "wrong_type", "invalid_enum_value"}
_BOUNDARY_TAGS = {"called_tool_when_none_fits", "no_decline_stated", "invented_value"}
# check_reference appends the tool-call match result as "<coarse>", "<coarse>:<detail>"
_MATCH_TAGS = {"wrong_arguments", "wrong_function", "wrong_number_of_calls", "bad_reference"}
_KNOWLEDGE_SCENARIOS = {"lookup", "knowledge"}
# A tool step in the text: the trajectory transcript's markers, or a ReAct-style observation.
_TOOL_STEP = re.compile(r"\b(observation|result|tool call|tool result)\s*:", re.IGNORECASE)
_PROMPT_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def classify_error(unit_form: str, task: Task, text: str, reasons: list[str],
                   unit_tools: Sequence[str] = ()) -> str:
    """The class of one wrong held-out answer, from its ``check_reference`` reason tags.

    ``unit_form`` is the unit's ``output_form`` (``tool_call`` | ``text`` | ``final_answer``);
    ``unit_tools`` the registry tools the unit declares (``tool_use`` units list their tools in
    the spec, not on the task). Rules, first match wins:

    1. ``format``: ``no_final_answer``, ``unparseable_tool_call``, ``no_tool_call``,
       ``unparseable_json``, ``not_a_label``, ``checker_error``, or a
       signature-validation tag (``missing_required_argument``, ``unexpected_argument``,
       ``wrong_type``, ``invalid_enum_value``) *before* the match tags. A malformed answer is a
       format error whatever else is wrong with it.
    2. ``boundary``: ``called_tool_when_none_fits`` or ``no_decline_stated`` (a no-call task), or
       ``invented_value:<field>`` (a value the input does not state).
    3. ``tool_choice``: ``wrong_function``, ``wrong_number_of_calls``, or ``unknown_function``
       (a function the task does not declare is a choice mistake, not a syntax one).
    4. ``missing_knowledge`` / ``wrong_arguments``: ``wrong_arguments`` with detail
       ``wrong_value:<fn>.<arg>`` or ``missing_argument:<fn>.<arg>``: ``missing_knowledge`` when
       no allowed value of that argument in ``reference.tool_calls`` (``{fn: {arg: [allowed]}}``)
       occurs in the prompt (strings case-insensitively, numbers normalised: ``1,000.0`` = ``1000``;
       booleans and ``None`` never count as knowledge). Any other argument mistake, e.g.
       ``unexpected_argument``: ``wrong_arguments``.
    5. ``missing_tool_result``: ``wrong_final_answer`` on a ``final_answer`` unit whose task
       declares tools (``task.tools`` or ``unit_tools``) and whose text shows no tool step:
       no ``Observation:``/``Result:``/``Tool call:``/``Tool result:`` marker and no parseable
       tool call. A heuristic: the student answered from memory instead of asking a tool.
    6. ``missing_knowledge``: ``wrong_final_answer`` on a task with metadata ``scenario`` in
       ``lookup``/``knowledge`` whose reference number occurs nowhere in the prompt.
    7. ``reasoning``: any other ``wrong_final_answer``.
    8. ``other``: anything else (no tags, or tags this function does not know).
    """
    tags = {r.split(":", 1)[0] for r in reasons}
    if tags & _FORMAT_TAGS or _validation_tags(reasons):
        return "format"
    if tags & _BOUNDARY_TAGS:
        return "boundary"
    if tags & {"wrong_function", "wrong_number_of_calls", "unknown_function"}:
        return "tool_choice"
    if "wrong_arguments" in tags:
        return _argument_class(task, reasons)
    if "wrong_final_answer" in tags:
        return _final_answer_class(unit_form, task, text, unit_tools)
    return "other"


def _validation_tags(reasons: list[str]) -> list[str]:
    """The signature-validation tags: those before the first match tag (check_reference's order)."""
    out = []
    for r in reasons:
        coarse = r.split(":", 1)[0]
        if coarse in _MATCH_TAGS:
            break
        if coarse in _VALIDATION_TAGS:
            out.append(r)
    return out


def _argument_class(task: Task, reasons: list[str]) -> str:
    """missing_knowledge when a wrong or missing argument's expected value is not in the prompt."""
    for r in reasons:
        coarse, _, where = r.partition(":")
        if coarse not in ("wrong_value", "missing_argument") or "." not in where:
            continue
        fn, arg = _split_fn_arg(where, task)
        allowed = _allowed_values(task, fn, arg)
        if allowed and not any(_in_prompt(v, task.prompt) for v in allowed):
            return "missing_knowledge"
    return "wrong_arguments"


def _split_fn_arg(where: str, task: Task) -> tuple[str, str]:
    """``fn.arg`` where function names may contain dots: the longest expected function prefix wins."""
    names = {fn for call in (task.reference.tool_calls or []) for fn in call} if task.reference else set()
    for fn in sorted(names, key=len, reverse=True):
        if where.startswith(fn + "."):
            return fn, where[len(fn) + 1:]
    fn, _, arg = where.rpartition(".")
    return fn, arg


def _allowed_values(task: Task, fn: str, arg: str) -> list[Any]:
    """Every non-empty allowed value of ``fn.arg`` over the expected calls (``""`` means optional)."""
    calls = (task.reference.tool_calls or []) if task.reference else []
    values: list[Any] = []
    for call in calls:
        options = call.get(fn, {}).get(arg, [])
        values.extend(o for o in (options if isinstance(options, list) else [options]) if o != "")
    return values


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _in_prompt(value: Any, prompt: str) -> bool:
    """Whether every scalar of ``value`` can be read off the prompt (so the student had the fact)."""
    numbers = {normalize_answer(m.group(0)) for m in _PROMPT_NUMBER.finditer(prompt)}
    for leaf in _leaves(value):
        if leaf is None or isinstance(leaf, bool):
            continue  # a flag or a null is a choice, not a fact from somewhere
        if isinstance(leaf, (int, float)) or _is_numeric(str(leaf)):
            if normalize_answer(str(leaf)) not in numbers:
                return False
        elif str(leaf).strip().lower() not in prompt.lower():
            return False
    return True


def _is_numeric(s: str) -> bool:
    return bool(re.fullmatch(r"\s*-?\d[\d,]*(?:\.\d+)?\s*|\s*-?\.\d+\s*", s))


def _final_answer_class(unit_form: str, task: Task, text: str, unit_tools: Sequence[str]) -> str:
    if unit_form == "final_answer" and (task.tools or unit_tools) and not _has_tool_step(text):
        return "missing_tool_result"
    ref = task.reference.answer if task.reference else None
    if task.metadata.get("scenario") in _KNOWLEDGE_SCENARIOS and ref is not None and not _in_prompt(ref, task.prompt):
        return "missing_knowledge"
    return "reasoning"


def _has_tool_step(text: str) -> bool:
    return bool(_TOOL_STEP.search(text or "")) or bool(parse_tool_calls(text or ""))
