"""How the candidates of one task relate: agree, complement, or conflict (judge layer 5).

conflict: different final answers or calls, or a different risk stance (one teacher
declines, another acts), or, on a high-risk unit, a constraint one teacher raised that
another left out. complement: the same answer, with compatible extra conditions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from distillery.contracts.events import JudgedCandidate, Task
from distillery.contracts.spec import UnitSpec
from distillery.domain.scoring import DECLINE_CUE, normalize_answer
from distillery.domain.text import constraints

_WORDS = re.compile(r"[a-z0-9]+")
SAME_CONSTRAINT = 0.5  # word overlap (Jaccard) above which two constraint sentences say the same thing


@dataclass
class Relation:
    kind: str | None  # agree | complement | conflict | None (fewer than two usable candidates)
    reasons: list[str] = field(default_factory=list)
    extra: dict[str, list[str]] = field(default_factory=dict)  # candidate id -> constraints only it raised


def _words(sentence: str) -> set[str]:
    return set(_WORDS.findall(sentence.lower()))


def _said_elsewhere(sentence: str, others: list[str]) -> bool:
    mine = _words(sentence)
    return any(len(mine & _words(o)) / max(1, len(mine | _words(o))) >= SAME_CONSTRAINT for o in others)


def stance(task: Task, jc: JudgedCandidate) -> str:
    """'decline' when the candidate stops (no call on a tool task, or a stated refusal), else 'act'."""
    if task.tools:
        return "act" if jc.tool_calls else "decline"
    return "decline" if jc.final is None and DECLINE_CUE.search(jc.text) else "act"


def answer_key(jc: JudgedCandidate) -> str | None:
    if jc.tool_calls:
        return json.dumps(sorted((c.name, json.dumps(c.arguments, sort_keys=True)) for c in jc.tool_calls))
    return normalize_answer(jc.final) if jc.final is not None else None


def relate(task: Task, judged: list[JudgedCandidate], unit: UnitSpec) -> Relation:
    usable = [jc for jc in judged if jc.pool != "failure"]
    if len(usable) < 2:
        return Relation(None)
    reasons: list[str] = []
    stances = {jc.teacher_id: stance(task, jc) for jc in usable}
    if len(set(stances.values())) > 1:
        reasons.append("risk_level:" + ",".join(f"{t}={s}" for t, s in sorted(stances.items())))
    keys = {answer_key(jc) for jc in usable if stances[jc.teacher_id] == "act"} - {None}
    if len(keys) > 1:
        reasons.append("final_answer_differs")
    extra = {}
    for jc in usable:
        others = [c for o in usable if o.candidate_id != jc.candidate_id for c in constraints(o.text)]
        own = [c for c in constraints(jc.text) if not _said_elsewhere(c, others)]
        if own:
            extra[jc.candidate_id] = own
    if extra and unit.risk == "high":
        reasons.append("missing_constraint")
    if reasons:
        return Relation("conflict", reasons, extra)
    if extra:
        return Relation("complement", ["extra_constraint"], extra)
    return Relation("agree")
