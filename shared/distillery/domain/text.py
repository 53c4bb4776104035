"""Small text facts shared by the judge and the editor: constraints, numbers, named entities, filler.

The judge compares teachers' constraints (agree / complement / conflict); the editor must never
compress a constraint, a number or a name away.
"""

from __future__ import annotations

import re

# Sentences that state a condition, limit or warning rather than a step.
CONSTRAINT = re.compile(
    r"\b(unless|only if|provided that|assuming|as long as|note that|however|caution|warning|be careful|"
    r"make sure|must not|do not|don't|never|at least|at most|no more than|depends on|except)\b",
    re.IGNORECASE,
)
SENTENCES = re.compile(r"[^.!?\n]+[.!?]?")
NUMBER = re.compile(r"(?<![\w.])-?\$?\d[\d,]*(?:\.\d+)?%?")
# A capitalised word that does not start a sentence or line, or a run of them: "New York", "Bitcoin".
_ENTITY = re.compile(r"(?<=[a-z0-9,;:()] )[A-Z][\w-]*(?: [A-Z][\w-]*)*")
# Openers, sign-offs and rhetoric that carry no step of a solution.
FILLER_LINE = re.compile(
    r"^(sure|certainly|of course|great|okay|ok|alright|absolutely|let's|let me|here is|here's|i hope|hope this|"
    r"to solve this|we need to|first,? let's|in conclusion|therefore,? the answer|good question|great question)\b",
    re.IGNORECASE,
)
FILLER_PHRASE = re.compile(
    r"\b(great question|good question|i hope this helps|hope this helps|let me know if you have any (other )?questions"
    r"|feel free to ask|happy to help|as an ai( language model)?,?|i'd be happy to help|certainly!?|sure!?)[.!,]?\s*",
    re.IGNORECASE,
)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCES.findall(text) if s.strip()]


def constraints(text: str) -> list[str]:
    """Sentences that state a condition or limit (three words at least)."""
    return [s for s in sentences(text) if CONSTRAINT.search(s) and len(s.split()) >= 3]


def numbers(text: str) -> set[str]:
    """The numbers in ``text``, normalised ("1,200" and "1200" are one number)."""
    return {n.replace(",", "").replace("$", "").rstrip("%").rstrip(".") for n in NUMBER.findall(text)}


def entities(text: str) -> set[str]:
    return set(_ENTITY.findall(text))


def facts(text: str) -> set[str]:
    """What compression must keep: every number and named entity."""
    return numbers(text) | entities(text)
