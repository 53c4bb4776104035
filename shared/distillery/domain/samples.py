"""What a sample is allowed to be, and how it is weighed and hashed: one set of rules for the
editor (which curates samples from verdicts) and ``distillery samples import`` (real samples)."""

from __future__ import annotations

from collections.abc import Sequence

from distillery.contracts.events import ToolSpec
from distillery.contracts.spec import UnitSpec

# A contrast teaches on the answer alone: the wrong answer's steps or style would teach the wrong thing.
CONTRASTIVE_PATHWAY = "answer"


def sample_weight(pool: str, unit: UnitSpec) -> float:
    """Hard cases are upsampled by the unit's weight; everything else weighs 1."""
    return unit.editor.hard_case_weight if pool == "hard_case" else 1.0


def hashed_tool_names(tools: Sequence[ToolSpec], unit: UnitSpec) -> list[str]:
    """The tools part of a sample's content hash: the task's tool names, else the unit's registry tools."""
    return [t.name for t in tools] or list(unit.tools)


def pathway_problem(pool: str, pathway: str, rationale: str, has_steps: bool, contrast: str) -> str | None:
    """Why a sample of this shape is never curated, or None. (The editor skips such a pathway; an import
    refuses the line with this reason.)"""
    if pool == "contrastive" and not contrast.strip():
        return "pool 'contrastive' needs 'contrast' (the wrong answer, kept beside the correction in 'final')"
    if pool == "contrastive" and pathway != CONTRASTIVE_PATHWAY:
        return f"pool 'contrastive' is on the '{CONTRASTIVE_PATHWAY}' pathway only (got '{pathway}')"
    if contrast and pool != "contrastive":
        return f"field 'contrast' belongs to pool 'contrastive' (got pool '{pool}')"
    if pathway == "process" and not rationale.strip():
        return "pathway 'process' needs a 'rationale' (the key steps)"
    if pathway == "tool_trajectory" and not has_steps:
        return "pathway 'tool_trajectory' needs 'tool_steps'"
    return None
