"""The light token counter (distillery.domain.tokens): the Rust tokenizer alone counts what the
transformers tokenizer of the students counts, the piece-by-piece count of ASCII text equals
encoding the text whole, and importing it does not import torch."""

from __future__ import annotations

import random
import subprocess
import sys

from distillery.domain.models import smollm2_tokenizer
from distillery.domain.tokens import count_tokens, encoded_length
from distillery_cli.workload import build_workload

ODD = ["", " ", "\n\n", "#### 42", "3.5 is not 35", "Ünïcode wörds 中文 🙂", "<|im_start|>user hi<|im_end|>",
       "word " * 500, "\t tabs\tand  spaces  "]


def test_counts_equal_the_transformers_tokenizer_of_the_students() -> None:
    texts = [line["prompt"] for line in build_workload(60, 0)] + ODD
    slow = smollm2_tokenizer()
    assert [count_tokens(t) for t in texts] == [len(slow(t, add_special_tokens=False).input_ids) if t else 0
                                               for t in texts]


def test_importing_the_counter_leaves_torch_and_transformers_unimported() -> None:
    code = ("import sys, distillery.domain.tokens as t; t.count_tokens('warm up'); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_piece_by_piece_counts_equal_encoding_whole_on_ascii_noise_and_special_tokens() -> None:
    # every ASCII character (control characters and the whitespace the pattern treats apart
    # included), contractions in both cases, runs of spaces before words, numbers and specials
    r = random.Random(7)
    ascii_chars = [chr(i) for i in range(128)]
    words = ["the", "I'm", "they'll", "'s", "'S", "don't", "  ", "\n\n", " \t ", "123", "4.5", "#### 9",
             "<|im_start|>", "<|endoftext|>", "<|im", "foo_bar", "x--y", "'", "''", "'ll've", "\x1c", "\x0b "]
    texts = ["".join(r.choice(ascii_chars) for _ in range(r.randint(0, 120))) for _ in range(1500)]
    texts += [r.choice(["", " "]).join(r.choice(words) for _ in range(r.randint(0, 25))) for _ in range(3000)]
    texts += ODD
    assert [count_tokens(t) for t in texts] == [encoded_length(t) for t in texts]
    assert [count_tokens(t) for t in texts] == [count_tokens(t) for t in texts]  # a second pass: from the cache
