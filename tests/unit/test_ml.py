"""Tests for distillery.ml: tiny student, tokenisation, SFT, generation, teacher conversion.

Everything runs on CPU in well under a minute. The SmolLM2 teacher is converted once into the
model cache (~20-70 s the first time, then cached).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import threading
import time
from pathlib import Path

import pytest
import torch

from distillery.domain import models
from distillery.domain.generate import Generator, render_chat
from distillery.domain.models import build_tiny_student, ensure_converted, load_model
from distillery_trainer.sft import IGNORE_INDEX, Example, save_student, tokenize_examples, train_sft

pytestmark = pytest.mark.model  # loads or trains a real model

FACTS = [
    ("What colour is the sky?", "Blue."),
    ("Capital of France?", "Paris."),
    ("2+2?", "4"),
    ("Opposite of hot?", "Cold."),
    ("Say hi.", "Hello there!"),
    ("Largest planet?", "Jupiter."),
    ("Water freezes at?", "Zero degrees."),
    ("Author of Hamlet?", "Shakespeare."),
]


@pytest.fixture(scope="module")
def tiny():
    """An untrained tiny student (hidden 64, 1 layer) shared by read-only tests."""
    return build_tiny_student(hidden_size=64, layers=1, seed=0)


def _facts() -> list[Example]:
    """Short prompts keep each training step around 50 ms."""
    return [Example(prompt=f"Q: {q}\nA:", target=a) for q, a in FACTS]


def test_tiny_student_is_deterministic_by_seed(tiny):
    model, tokenizer = tiny
    again, _ = build_tiny_student(hidden_size=64, layers=1, seed=0)
    other, _ = build_tiny_student(hidden_size=64, layers=1, seed=1)
    same = [torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values())]
    assert all(same)
    assert not torch.equal(model.model.embed_tokens.weight, other.model.embed_tokens.weight)
    assert model.config.vocab_size == len(tokenizer) == 49152
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_tokenize_examples_drops_overlong_and_masks_prompt(tiny):
    _, tokenizer = tiny
    examples = [
        Example("Q: hi\nA:", "Hello."),
        Example("Q: " + "word " * 50 + "\nA:", "x"),
        Example("Q: 1+1?\nA:", "2"),
    ]
    kept, dropped = tokenize_examples(tokenizer, examples, max_seq_len=16)
    assert dropped == [1]
    assert [row["index"] for row in kept] == [0, 2]
    row = kept[0]
    prompt_len = len(tokenizer("Q: hi\nA:")["input_ids"])
    assert row["labels"][:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert row["labels"][prompt_len:] == row["input_ids"][prompt_len:]
    assert row["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(row["input_ids"][prompt_len:], skip_special_tokens=True) == "Hello."


def test_train_sft_memorises_and_round_trips(tmp_path: Path):
    model, tokenizer = build_tiny_student(hidden_size=64, layers=1, seed=0)
    examples = _facts()
    calls = []
    result = train_sft(
        model,
        tokenizer,
        examples,
        max_seq_len=64,
        epochs=30,
        learning_rate=1e-2,
        batch_size=8,
        seed=0,
        progress=lambda step, total, loss: calls.append((step, total)),
    )
    assert result.steps == len(result.loss_curve) == 30
    assert calls[-1] == (30, 30)
    assert result.dropped == [] and result.tokens > 0
    first, last = sum(result.loss_curve[:3]) / 3, sum(result.loss_curve[-3:]) / 3
    assert last < 0.15 * first, result.loss_curve

    hamlet = examples[-1]
    [out] = Generator(model, tokenizer).generate([hamlet.prompt], max_new_tokens=8)
    assert (out.text, out.finish_reason) == ("Shakespeare.", "stop")

    reloaded, reloaded_tokenizer = load_model(save_student(model, tokenizer, tmp_path / "student"))
    [again] = Generator(reloaded, reloaded_tokenizer).generate([hamlet.prompt], max_new_tokens=8)
    assert again.text == "Shakespeare."


def test_train_sft_respects_max_steps():
    model, tokenizer = build_tiny_student(hidden_size=64, layers=1, seed=0)
    result = train_sft(
        model, tokenizer, _facts(), max_seq_len=64, epochs=5, learning_rate=1e-3, batch_size=4, seed=0, max_steps=3
    )
    assert result.steps == len(result.loss_curve) == 3


def test_generator_counts_tokens_and_finish_reasons(tiny):
    model, tokenizer = tiny
    prompts = ["Q: hi\nA:", "Q: a much longer question about many things\nA:"]
    outs = Generator(model, tokenizer).generate(prompts, max_new_tokens=3, batch_size=2)
    for prompt, out in zip(prompts, outs):
        assert out.prompt_tokens == len(tokenizer(prompt)["input_ids"])
        assert (out.completion_tokens, out.finish_reason) == (3, "length")
        assert 0 < out.mean_token_prob <= 1 and out.seconds > 0


def test_generator_truncates_at_stop_string(tiny):
    model, tokenizer = tiny
    generator = Generator(model, tokenizer)
    [full] = generator.generate(["Q: hi\nA:"], max_new_tokens=6)
    generated = tokenizer(full.text, add_special_tokens=False)["input_ids"]
    stop = tokenizer.decode(generated[3:4])
    [cut] = generator.generate(["Q: hi\nA:"], max_new_tokens=6, stop=[stop])
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens <= 4


def test_render_chat_falls_back_without_template(tiny):
    _, tokenizer = tiny
    assert "<|im_start|>assistant\n" in render_chat(tokenizer, "Be brief.", "Hi")

    class Plain:
        chat_template = None

    assert render_chat(Plain(), "Be brief.", "Hi") == "System: Be brief.\nUser: Hi\nAssistant:"


def test_unknown_model_names_are_rejected(tmp_path: Path):
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        ensure_converted("gpt-5")
    with pytest.raises(ValueError, match="neither a known model"):
        load_model(tmp_path / "missing")


def test_ensure_converted_converts_once_under_concurrency(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("DISTILLERY_MODEL_CACHE", str(tmp_path))
    conversions = []

    def fake_convert(name: str, out_dir: Path) -> None:
        conversions.append(name)
        time.sleep(0.2)
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(models, "_convert", fake_convert)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_converted(models.SMOLLM2))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert conversions == [models.SMOLLM2]
    assert results == [tmp_path / models.SMOLLM2] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{models.SMOLLM2}.lock", models.SMOLLM2]


@pytest.mark.model
def test_smollm2_teacher_generates_chat_batch():
    model, tokenizer = load_model(ensure_converted(models.SMOLLM2))
    prompts = [
        render_chat(tokenizer, "You are concise.", "What is the capital of France?"),
        render_chat(tokenizer, "", "Name a colour."),
    ]
    outs = Generator(model, tokenizer).generate(prompts, max_new_tokens=8)
    assert len(outs) == 2
    for out in outs:
        assert out.text.strip()
        assert out.prompt_tokens > 0
        assert 1 <= out.completion_tokens <= 8
        assert 0 < out.mean_token_prob <= 1
