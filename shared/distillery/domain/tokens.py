"""Counting tokens in the students' vocabulary (SmolLM2) with the Rust ``tokenizers`` library alone.

The editor counts every sample's tokens twice. Loading the transformers tokenizer meant importing
transformers and torch, about 3.5 s of every editor start; the Rust tokenizer from the converted
model's ``tokenizer.json`` loads in about 0.1 s and counts the same tokens
(``tests/unit/test_students_tokens.py``). A fresh machine converts the model once first, which
does need torch.
"""

from __future__ import annotations

import functools

from tokenizers import Tokenizer

from distillery.domain.model_cache import SMOLLM2, model_cache_dir


@functools.lru_cache(maxsize=1)
def students_tokenizer() -> Tokenizer:
    """The SmolLM2 tokenizer as the Rust library loads it (the model is converted on first use)."""
    path = model_cache_dir() / SMOLLM2 / "tokenizer.json"
    if not path.is_file():
        from distillery.domain.models import ensure_converted  # torch and gguf: only on a fresh machine

        ensure_converted(SMOLLM2)
    return Tokenizer.from_file(str(path))


def count_tokens(text: str) -> int:
    """Tokens of ``text`` for the students, without special tokens."""
    return len(students_tokenizer().encode(text, add_special_tokens=False).ids) if text else 0
