"""The editor's deps (spec, state, prompt embeddings, the batch lock) and its start hook: state rebuilt from topics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from distillery.contracts.events import ReviewDecided, parse_sample_record
from distillery.contracts.settings import ServiceSettings, load_settings
from distillery.contracts.spec import CapabilitySpec, load_spec
from distillery.domain.embeddings import EmbeddingCache, Embedder
from distillery.runtime.bus import Bus
from distillery.runtime.kafka import replay
from distillery.runtime.wiring import Context
from distillery_editor.state import EditorState


@dataclass(kw_only=True)
class EditorDeps(Context):
    settings: ServiceSettings = field(default_factory=ServiceSettings)
    embeddings: EmbeddingCache | None = None  # MiniLM prompt embeddings, only when a unit clusters
    state: EditorState = None  # type: ignore[assignment] - built from the spec and embeddings when not given
    # Both subscriptions change one state whose pending changes are committed or rolled back
    # per batch, so their batches must not interleave.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        if self.state is None:
            self.state = EditorState(self.settings.topics.verdicts, self.spec, self.embeddings)


def bootstrap() -> EditorDeps:
    settings = load_settings(ServiceSettings)
    spec = load_spec(settings.spec_path)
    return EditorDeps(spec=spec, settings=settings, embeddings=embeddings_for(spec))


def embeddings_for(spec: CapabilitySpec) -> EmbeddingCache | None:
    clustering = any(unit.editor.cluster_similarity > 0 for unit in spec.units.values())
    return EmbeddingCache(Embedder().embed) if clustering else None


def hooks(deps: EditorDeps, bus: Bus) -> dict[str, Any]:  # noqa: ARG001 - the editor's hooks need no bus
    from distillery_editor.handlers import restore_state

    async def rebuild_state() -> None:
        """A restarted editor must not re-admit, re-add what was retracted, or hand a task back to an old judge."""
        samples = await replay(deps.settings, deps.topics.samples, parse_sample_record)
        reviews = await replay(deps.settings, deps.topics.reviews, ReviewDecided)
        restore_state(deps, samples.events, reviews.items)

    return {"on_startup": [rebuild_state]}
