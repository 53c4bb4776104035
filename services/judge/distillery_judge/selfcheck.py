"""The judge checking itself (judge layer 4): perturbations, and the per-unit gate.

A perturbation plants a factual error in an accepted answer and rewords or shortens it;
a judge worth trusting fails the variant. Position-swap and two-judge agreement are
measured in :mod:`distillery_judge.logic`; every outcome lands in :class:`SelfCheckMonitor`,
which closes a unit's gate (no `train`, only `review`) while its worst rate is too low.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import deque
from fractions import Fraction

from distillery.contracts.spec import CapabilitySpec
from distillery.domain.checkers import canonical_json, parse_json_answer
from distillery.domain.scoring import extract_final_answer, parse_tool_calls

log = logging.getLogger("distillery.judge")

CHECKS = ("position_swap", "perturbation", "two_judge")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def sampled(candidate_id: str, rate: float) -> bool:
    """Deterministic sampling: the same candidates are perturbed in every replay."""
    if rate <= 0:
        return False
    bucket = int(hashlib.sha256(f"perturb|{candidate_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < rate


def _shift(value):
    """The value with a planted error (None: not a value this knows how to change)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 7
    if isinstance(value, str):
        return value + " (revised)"
    if isinstance(value, list) and value and _shift(value[0]) is not None:
        return [_shift(value[0]), *value[1:]]
    return None


def perturb(text: str, output_form: str) -> str | None:
    """A shorter or reworded variant with one planted error (None: nothing to plant it in)."""
    if output_form == "tool_call":
        calls = parse_tool_calls(text)
        if not calls:
            return None
        first = calls[0]
        arg = next((a for a in sorted(first.arguments) if _shift(first.arguments[a]) is not None), None)
        if arg is None:
            return None
        changed = {**first.arguments, arg: _shift(first.arguments[arg])}
        return json.dumps({"name": first.name, "arguments": changed}, separators=(",", ":"))  # reworded: compact
    if output_form == "json":
        obj = parse_json_answer(text)
        key = next((k for k in sorted(obj or {}) if obj[k] is not None and _shift(obj[k]) is not None), None)
        return None if key is None else canonical_json({**obj, key: _shift(obj[key])})  # one field made wrong
    final = extract_final_answer(text)
    if output_form == "final_answer" and final is not None:
        wrong = _wrong_number(final)
        return f"The answer is {wrong}.\n#### {wrong}"  # shortened to its conclusion, with the wrong number
    match = _NUMBER.search(text)
    if match is None:
        return None
    lines = [line for line in text.splitlines() if line.strip()]
    shortened = "\n".join(lines[:1] + lines[-1:]) if len(lines) > 2 else text
    return _NUMBER.sub(lambda m: _wrong_number(m.group()), shortened, count=1)


def _wrong_number(number: str) -> str:
    try:
        value = Fraction(number.replace(",", "")) + 7
    except (ValueError, ZeroDivisionError):
        return number + "7"
    return str(value.numerator) if value.denominator == 1 else str(float(value))


def check_of(outcome: str) -> str:
    """The check an outcome key of a verdict's ``self_checks`` belongs to (``perturbation_caught``)."""
    return outcome.removesuffix("_agree").removesuffix("_caught")


class SelfCheckMonitor:
    """Rolling self-check outcomes per unit and check; the gate per unit."""

    def __init__(self, spec: CapabilitySpec) -> None:
        self.spec = spec
        self.outcomes: dict[tuple[str, str], deque[bool]] = {}
        self.closed: set[str] = set()

    def record(self, unit: str, check: str, ok: bool) -> None:
        window = self.spec.units[unit].judge.self_checks.window
        self.outcomes.setdefault((unit, check), deque(maxlen=window)).append(ok)
        self._update_gate(unit)

    def rate(self, unit: str, check: str) -> float | None:
        seen = self.outcomes.get((unit, check))
        return sum(seen) / len(seen) if seen else None

    def rates(self) -> dict[tuple[str, str], float]:
        return {key: sum(v) / len(v) for key, v in self.outcomes.items() if v}

    def gate_closed(self, unit: str) -> bool:
        return unit in self.closed

    def _update_gate(self, unit: str) -> None:
        checks = self.spec.units[unit].judge.self_checks
        if checks.min_agreement <= 0:
            return
        low = [f"{check}={sum(seen) / len(seen):.2f}" for check in CHECKS
               if (seen := self.outcomes.get((unit, check))) and len(seen) >= checks.min_observations
               and sum(seen) / len(seen) < checks.min_agreement]
        if low and unit not in self.closed:
            self.closed.add(unit)
            log.warning("unit %s: judge self-checks below %.2f (%s): train samples go to review until they recover",
                        unit, checks.min_agreement, ", ".join(low))
        elif not low and unit in self.closed:
            self.closed.discard(unit)
            log.warning("unit %s: judge self-checks recovered: train admission reopened", unit)
