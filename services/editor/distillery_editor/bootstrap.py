"""Building the editor's deps from settings and spec. Its state is rebuilt from topics whenever the
consumer is assigned partitions (handlers.RebuildOnAssign), at start included."""

from __future__ import annotations

from distillery.contracts.settings import ServiceSettings, load_settings
from distillery.contracts.spec import CapabilitySpec, load_spec
from distillery.domain.embeddings import Embedder, EmbeddingCache
from distillery.domain.tokens import count_tokens
from distillery_editor.handlers import EditorDeps


def bootstrap() -> EditorDeps:
    settings = load_settings(ServiceSettings)
    spec = load_spec(settings.spec_path)
    count_tokens("warm")  # loads the students' tokenizer (~0.1 s) now rather than in the first batch
    return EditorDeps(spec=spec, settings=settings, embeddings=embeddings_for(spec))


def embeddings_for(spec: CapabilitySpec) -> EmbeddingCache | None:
    clustering = any(unit.editor.cluster_similarity > 0 for unit in spec.units.values())
    return EmbeddingCache(Embedder().embed) if clustering else None

