"""Counting tokens in the students' vocabulary (SmolLM2) with the Rust ``tokenizers`` library alone.

The editor counts every sample's tokens twice. Loading the transformers tokenizer meant importing
transformers and torch, about 3.5 s of every editor start; the Rust tokenizer from the converted
model's ``tokenizer.json`` loads in about 0.1 s and counts the same tokens
(``tests/unit/test_students_tokens.py``). A fresh machine converts the model once first, which
does need torch.
"""

from __future__ import annotations

import functools
import re

from tokenizers import Tokenizer, pre_tokenizers

from distillery.domain.model_cache import SMOLLM2, model_cache_dir


@functools.lru_cache(maxsize=1)
def students_tokenizer() -> Tokenizer:
    """The SmolLM2 tokenizer as the Rust library loads it (the model is converted on first use)."""
    path = model_cache_dir() / SMOLLM2 / "tokenizer.json"
    if not path.is_file():
        from distillery.domain.models import ensure_converted  # torch and gguf: only on a fresh machine

        ensure_converted(SMOLLM2)
    return Tokenizer.from_file(str(path))


def encoded_length(text: str) -> int:
    """Tokens of ``text`` as the tokenizer encodes it whole, without special tokens."""
    return len(students_tokenizer().encode(text, add_special_tokens=False).ids) if text else 0


# The students' tokenizer cuts a text into pieces with GPT-2's byte-level pattern, then runs BPE on
# each piece on its own (no normalizer; no special tokens added). So a text's count is the sum of
# its pieces' counts, and pieces repeat (words, numbers, punctuation). For ASCII text the pieces are
# cut here, by the same pattern with ASCII classes in the standard ``re``, and each distinct piece is
# encoded once: about 6x faster than encoding the text whole, which was a quarter of the editor's CPU
# (bench/hot_path.py). Any other text, or text holding a special token, is encoded whole.
# ``tests/unit/test_students_tokens.py`` checks the counts against encoding whole.
_SPACE = " \t\n\x0b\x0c\r"
_PIECES = re.compile(rf"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_SPACE}A-Za-z0-9]+"
                     rf"|[{_SPACE}]+(?![^{_SPACE}])|[{_SPACE}]+")
_PIECE_CACHE_LIMIT = 200_000  # distinct pieces kept (numbers make them unbounded); then it starts over
_piece_tokens: dict[str, int] = {}


@functools.lru_cache(maxsize=1)
def _special_tokens() -> re.Pattern | None:
    """A pattern of the special tokens' texts when the tokenizer is the byte-level BPE this relies
    on; None when it is not (every text is then encoded whole)."""
    tok = students_tokenizer()
    if tok.normalizer is not None or not isinstance(tok.pre_tokenizer, pre_tokenizers.ByteLevel):
        return None
    specials = [added.content for added in tok.get_added_tokens_decoder().values()]
    return re.compile("|".join(map(re.escape, specials)) or "(?!)")


def count_tokens(text: str) -> int:
    """Tokens of ``text`` for the students, without special tokens."""
    specials = _special_tokens()
    if specials is None or not text.isascii() or specials.search(text):
        return encoded_length(text)
    if len(_piece_tokens) > _PIECE_CACHE_LIMIT:
        _piece_tokens.clear()
    total = 0
    for piece in _PIECES.findall(text):
        n = _piece_tokens.get(piece)
        if n is None:
            n = _piece_tokens[piece] = encoded_length(piece)
        total += n
    return total
