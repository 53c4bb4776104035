"""The light token counter (distillery.domain.tokens): the Rust tokenizer alone counts what the
transformers tokenizer of the students counts, and importing it does not import torch."""

from __future__ import annotations

import subprocess
import sys

from distillery.domain.models import smollm2_tokenizer
from distillery.domain.tokens import count_tokens
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
