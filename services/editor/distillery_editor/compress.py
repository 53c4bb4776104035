"""Compression of a teacher's prose into a skeleton, without losing a number, a name or a constraint.

Rhetoric, filler and repetition go; the key steps stay, capped at the unit's line budget;
constraint sentences move to ``limits``. A check then compares the numbers and named entities
of the teacher's text with what is kept, and puts back every line that carried a lost fact,
whatever the cap. Token counts before and after use the students' tokenizer (SmolLM2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from distillery.domain.text import FILLER_LINE, FILLER_PHRASE, constraints, facts

_ARITHMETIC = re.compile(r"\d|=")  # an opener followed by a computation is a step, not filler
_MARKUP = re.compile(r"^[\s>*#-]*(?:\d+[.)]\s+)?|\*\*|__")


@dataclass(frozen=True)
class Compressed:
    rationale: str  # the key steps, one per line
    limits: list[str]  # constraint sentences the teacher stated
    lost: frozenset[str]  # facts of the teacher's text found nowhere in the output (must be empty)


def _clean(line: str) -> str:
    """A line without list markers, emphasis and filler phrases."""
    line = _MARKUP.sub("", line.strip()).strip()
    return FILLER_PHRASE.sub("", line).strip()


def _key(line: str) -> str:
    return re.sub(r"\W+", " ", line.lower()).strip()


def _is_step(line: str) -> bool:
    return bool(line) and not (FILLER_LINE.match(line) and not _ARITHMETIC.search(line))


def compress(text: str, final: str, max_lines: int) -> Compressed:
    """The skeleton of ``text`` (the final answer line is ``final``'s, not the rationale's)."""
    raw_lines = [line for line in text.splitlines() if line.strip() and not line.strip().startswith("####")]
    stated = []  # constraint sentences, in order, once
    for sentence in constraints(text):
        if _key(sentence) not in {_key(s) for s in stated}:
            stated.append(sentence.strip())
    steps, seen = [], set()
    for raw in raw_lines:
        line = _clean(raw)
        for sentence in stated:  # a constraint lives in limits, not twice
            line = line.replace(sentence, "").strip()
        if _is_step(line) and _key(line) not in seen:
            seen.add(_key(line))
            steps.append((raw, line))
    kept = [line for _, line in steps[:max_lines]]
    kept = _restore_facts(text, final, stated, kept, steps)
    lost = facts(_without_final_line(text)) - facts("\n".join([*kept, *stated, final]))
    return Compressed("\n".join(kept), stated, frozenset(lost))


def _without_final_line(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith("####"))


def _restore_facts(text: str, final: str, stated: list[str], kept: list[str], steps: list[tuple[str, str]]) -> list[str]:
    """Put back, in their original order, the dropped steps that carried a number or a name."""
    covered = facts("\n".join([*kept, *stated, final]))
    needed = facts(_without_final_line(text)) - covered
    if not needed:
        return kept
    out = []
    for _, line in steps:
        if line in kept or facts(line) & needed:
            out.append(line)
            needed -= facts(line)
    # a fact only in filler or markup that was cleaned away: keep the raw line it came from
    for raw in text.splitlines():
        if needed and facts(raw) & needed and not raw.strip().startswith("####"):
            out.append(raw.strip())
            needed -= facts(raw)
    return out
