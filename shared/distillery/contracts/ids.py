"""Deterministic ids: content hashes of their causes (docs/architecture.md §3).

A redelivered event yields the same ids, so consumers drop duplicates by id.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

# One encoder for every id: json.dumps with these options builds a new encoder on each call,
# which cost more than the hash (bench/hot_path.py). The output is the same, byte for byte.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def content_id(prefix: str, *parts: Any) -> str:
    """``prefix_`` + 24 hex chars of sha256 over the canonical JSON of ``parts``."""
    canonical = _CANONICAL.encode(parts)
    return f"{prefix}_{hashlib.sha256(canonical.encode()).hexdigest()[:24]}"


_SPACE = re.compile(r"\s+")


def normalized_hash(text: str) -> str:
    """Hash of text with case and whitespace normalised: the exact-dedup key."""
    normal = _SPACE.sub(" ", text.strip().lower())
    return hashlib.sha256(normal.encode()).hexdigest()[:32]


def task_id_for(unit: str, prompt: str, tools: list[Any] | None = None) -> str:
    return content_id("task", unit, prompt, tools or [])


def request_id_for(task_id: str, teacher_id: str, attempt: int = 1) -> str:
    return content_id("req", task_id, teacher_id, attempt)


def candidate_id_for(request_id: str) -> str:
    return content_id("cand", request_id)


def verdict_id_for(task_id: str, judge_version: str, attempt: int = 1) -> str:
    if attempt == 1:  # first attempts keep the id they always had
        return content_id("verdict", task_id, judge_version)
    return content_id("verdict", task_id, judge_version, attempt)


def round_key(task_id: str, attempt: int = 1) -> str:
    """What the judge aggregates on: a task's candidates of one attempt."""
    return task_id if attempt == 1 else f"{task_id}#{attempt}"


def sample_id_for(candidate_id: str, judge_version: str, pathway: str) -> str:
    return content_id("sample", candidate_id, judge_version, pathway)


def sample_content_hash(unit: str, pathway: str, tool_names: list[str], prompt: str, final: str, rationale: str,
                        limits: str, tool_steps: list, contrast: str) -> str:
    """The exact-dedup key of a sample: equal for the editor's samples and imported real ones with the same
    content (``tool_names``: the task's tools, else the unit's registry tools)."""
    names = ",".join(sorted(tool_names))
    return normalized_hash(f"{unit}|{pathway}|{names}|{prompt}|{final}|{rationale}|{limits}|{tool_steps}|{contrast}")
