"""Building the editor's deps from settings and spec, and its start hook: state rebuilt from topics."""

from __future__ import annotations

from typing import Any

from distillery.contracts.events import ReviewDecided, parse_sample_record
from distillery.contracts.settings import ServiceSettings, load_settings
from distillery.contracts.spec import CapabilitySpec, load_spec
from distillery.domain.embeddings import Embedder, EmbeddingCache
from distillery.runtime.bus import Bus
from distillery.runtime.kafka import replay
from distillery_editor.handlers import EditorDeps, restore_state


def bootstrap() -> EditorDeps:
    settings = load_settings(ServiceSettings)
    spec = load_spec(settings.spec_path)
    return EditorDeps(spec=spec, settings=settings, embeddings=embeddings_for(spec))


def embeddings_for(spec: CapabilitySpec) -> EmbeddingCache | None:
    clustering = any(unit.editor.cluster_similarity > 0 for unit in spec.units.values())
    return EmbeddingCache(Embedder().embed) if clustering else None


def hooks(deps: EditorDeps, bus: Bus) -> dict[str, Any]:
    async def rebuild_state() -> None:
        """A restarted editor must not re-admit, re-add what was retracted, or hand a task back to an old judge."""
        samples = await replay(deps.settings, deps.topics.samples, parse_sample_record)
        reviews = await replay(deps.settings, deps.topics.reviews, ReviewDecided)
        restore_state(deps, samples.events, reviews.items)

    return {"on_startup": [rebuild_state]}
