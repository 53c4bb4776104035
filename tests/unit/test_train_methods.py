"""Tests for the student training methods: full fine-tune vs LoRA, the teacher's top-k logprob
capture, and logit distillation from it.

The distillation check is an experiment in miniature: SmolLM2-135M-Instruct answers 40 short
prompts once (module fixture), two identical tiny students train on 28 of them, one with the KD
term, and the held-out KL to the teacher must be lower for that one.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from distillery.domain.generate import Generator, render_chat
from distillery.domain.models import (
    QWEN_CODER,
    SMOLLM2,
    build_tiny_student,
    ensure_converted,
    ensure_pad_token,
    load_model,
    model_cache_dir,
    tokenizer_fingerprint,
)
from distillery_trainer.kd import TeacherTokens, kd_token_loss, match_teacher, restricted_kl
from distillery_trainer.sft import (
    Example,
    LoraOptions,
    TrainResult,
    _batches,
    _weighted_loss,
    collate,
    example_losses,
    kl_to_teacher,
    save_student,
    tokenize_examples,
    train_sft,
)
from tests.unit.test_ml import FACTS  # the same tiny fact set

pytestmark = pytest.mark.model  # loads or trains a real model

PROMPTS = [
    "What colour is the sky?", "Name a fruit.", "What is 2 plus 3?", "Say hello.", "Capital of France?",
    "Name an animal that flies.", "What is water made of?", "Give me a synonym for happy.",
    "What day comes after Monday?", "How many legs does a spider have?", "Name a primary colour.",
    "What is the opposite of cold?", "Who wrote Hamlet?", "What do bees make?", "Name a planet.",
    "What is the boiling point of water?", "Translate 'cat' to French.", "What is 10 minus 4?",
    "Name a musical instrument.", "What shape has three sides?", "What is the largest ocean?",
    "Name a vegetable.", "What season comes after winter?", "How many days are in a week?",
    "What gas do plants absorb?", "Name a programming language.", "What is the capital of Japan?",
    "What is frozen water called?", "Give a word that rhymes with cat.", "What colour is grass?",
    "Name a sport played with a ball.", "What is the square root of 9?", "Which animal says moo?",
    "What is the first letter of the alphabet?", "Name a month with 31 days.", "What do cows drink?",
    "What is the sun?", "Name a breakfast food.", "How many hours are in a day?", "What is a noun?",
]  # fmt: skip
TRAIN_SIZE = 28
KD_SEQ_LEN = 256


def _facts() -> list[Example]:
    """Short prompts keep each training step cheap."""
    return [Example(prompt=f"Q: {q}\nA:", target=a) for q, a in FACTS]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread while this module runs, restored after.

    Its operations are small, and when the shared 2-core machine is busy two threads spend most
    of each one waiting for each other: under a load of ~7 the module took 4 min, not 1.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher_examples() -> list[Example]:
    """SmolLM2's greedy answers to PROMPTS, with its top-8 logprobs attached as teacher tokens.

    One batch for all prompts: on a busy 2-core CPU the per-operation overhead of small batches,
    not arithmetic, dominates generation time (one batch of 40 is ~10x faster than five of 8).
    """
    teacher, tokenizer = load_model(SMOLLM2)
    prompts = [render_chat(tokenizer, "Answer briefly.", prompt) for prompt in PROMPTS]
    generations = Generator(teacher, tokenizer).generate(
        prompts, max_new_tokens=24, top_logprobs=8, batch_size=len(prompts)
    )
    examples = [
        Example(prompt, gen.text, teacher=TeacherTokens(gen.token_ids, gen.top_logprobs))
        for prompt, gen in zip(prompts, generations, strict=True)
    ]
    return examples


def test_full_fine_tune_updates_every_parameter():
    model, tokenizer = build_tiny_student(hidden_size=64, layers=2, seed=0)
    before = _snapshot(model)
    result = train_sft(
        model, tokenizer, _facts(), max_seq_len=64, epochs=10, learning_rate=1e-2, batch_size=8, seed=0
    )
    assert (result.method, result.kd_examples) == ("full", 0)
    assert result.trainable_params == result.total_params == sum(p.numel() for p in model.parameters())
    unchanged = [name for name, tensor in model.state_dict().items() if torch.equal(before[name], tensor)]
    assert unchanged == []
    assert _mean(result.loss_curve[-3:]) < 0.5 * _mean(result.loss_curve[:3]), result.loss_curve


def test_lora_merges_adapters_into_the_callers_model(tmp_path: Path):
    model, tokenizer = build_tiny_student(hidden_size=64, layers=2, seed=0)
    base = _snapshot(model)
    options = LoraOptions(r=8, alpha=16)
    result = train_sft(
        model, tokenizer, _facts(), max_seq_len=64, epochs=30, learning_rate=1e-2, batch_size=8, seed=0,
        method="lora", lora=options,
    )  # fmt: skip
    assert result.method == "lora"
    assert 0 < result.trainable_params < 0.01 * result.total_params
    # Attention adapters on a random init barely reach the (frozen, tied) output layer, so the
    # loss falls clearly but slowly: from ~10.6 to ~10.0 nats here.
    assert _mean(result.loss_curve[-3:]) < _mean(result.loss_curve[:3]) - 0.4, result.loss_curve

    merged = model.state_dict()
    assert type(model) is LlamaForCausalLM and not any("lora" in name for name in merged)
    changed = [name for name in base if not torch.equal(base[name], merged[name])]
    assert changed and all(name.split(".")[-2] in options.target_modules for name in changed), changed
    assert all(p.requires_grad for p in model.parameters())

    reloaded, _ = load_model(save_student(model, tokenizer, tmp_path / "lora"))
    ids = tokenizer(_facts()[0].prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, atol=1e-4, rtol=0)


def test_generator_records_top_logprobs_of_the_counted_tokens():
    model, tokenizer = build_tiny_student(hidden_size=64, layers=1, seed=0)
    generator = Generator(model, tokenizer)
    prompts = ["Q: hi\nA:", "Q: a much longer question about many things\nA:"]
    plain = generator.generate(prompts, max_new_tokens=5)
    scored = generator.generate(prompts, max_new_tokens=5, top_logprobs=4)
    assert all(gen.token_ids is None and gen.top_logprobs is None and gen.tokenizer is None for gen in plain)
    for before, gen in zip(plain, scored, strict=True):
        assert (gen.text, gen.completion_tokens) == (before.text, before.completion_tokens)
        assert gen.tokenizer == tokenizer_fingerprint(tokenizer)
        assert len(gen.token_ids) == len(gen.top_logprobs) == gen.completion_tokens
        for chosen, top in zip(gen.token_ids, gen.top_logprobs, strict=True):
            values = [value for _, value in top]
            assert len(top) == 4 and values == sorted(values, reverse=True) and values[0] <= 0
            assert top[0][0] == chosen  # greedy: the chosen token is the most likely one


def test_tokenizer_fingerprint_tells_vocabularies_apart():
    teacher_tokenizer = AutoTokenizer.from_pretrained(ensure_converted(SMOLLM2))
    _, student_tokenizer = build_tiny_student(hidden_size=64, layers=1, seed=0)
    assert tokenizer_fingerprint(student_tokenizer) == tokenizer_fingerprint(teacher_tokenizer)
    extended = AutoTokenizer.from_pretrained(ensure_converted(SMOLLM2))
    extended.add_tokens(["<distillery-extra>"])
    assert tokenizer_fingerprint(extended) != tokenizer_fingerprint(teacher_tokenizer)


def test_tokenizer_fingerprint_differs_for_qwen():
    if not (model_cache_dir() / QWEN_CODER / "config.json").is_file():
        pytest.skip("Qwen2.5 not converted in the model cache; converting it takes minutes")
    qwen = AutoTokenizer.from_pretrained(model_cache_dir() / QWEN_CODER)
    smollm2 = AutoTokenizer.from_pretrained(ensure_converted(SMOLLM2))
    assert tokenizer_fingerprint(qwen) != tokenizer_fingerprint(smollm2)


def test_match_teacher_aligns_to_target_and_eos():
    top = [[(7, -0.1)], [(8, -0.2)], [(2, -0.3)]]
    assert match_teacher(TeacherTokens([7, 8, 2], top), [7, 8], eos_id=2) == top
    assert match_teacher(TeacherTokens([7, 8], top[:2]), [7, 8], eos_id=2) == top[:2]
    # the shared start keeps its signal: the teacher said 7 then 9, the target 7 then 8
    assert match_teacher(TeacherTokens([7, 9, 2], top), [7, 8], eos_id=2) == top[:1]
    assert match_teacher(TeacherTokens([7, 8, 2], top), [7], eos_id=2) == top[:1]  # a trimmed target
    assert match_teacher(TeacherTokens([6, 8, 2], top), [7, 8], eos_id=2) is None
    with pytest.raises(ValueError, match="differ in length"):
        TeacherTokens([7, 8], top)


def test_kd_token_loss_is_kl_plus_teacher_entropy():
    torch.manual_seed(0)
    student_logits, teacher_logits = torch.randn(3, 5), torch.randn(3, 5)
    ids = torch.arange(5).expand(3, 5)
    temperature = 2.0
    teacher = torch.softmax(teacher_logits / temperature, dim=-1)
    student = torch.log_softmax(student_logits / temperature, dim=-1)
    kl = (teacher * (teacher.log() - student)).sum(dim=-1)
    entropy = -(teacher * teacher.log()).sum(dim=-1)
    loss = kd_token_loss(student, ids, torch.log_softmax(teacher_logits, dim=-1), temperature)
    torch.testing.assert_close(loss, (kl + entropy) * temperature**2)
    torch.testing.assert_close(restricted_kl(teacher_logits, ids, teacher_logits.log_softmax(-1)), torch.zeros(3))


def test_kd_weight_zero_ignores_teacher_tokens():
    def run(examples: list[Example]) -> TrainResult:
        model, tokenizer = build_tiny_student(hidden_size=64, layers=1, seed=0)
        return train_sft(model, tokenizer, examples, max_seq_len=64, epochs=2, learning_rate=1e-2, batch_size=4, seed=0)

    _, tokenizer = build_tiny_student(hidden_size=64, layers=1, seed=0)
    with_teacher = []
    for example in _facts():
        ids = tokenizer(example.target, add_special_tokens=False)["input_ids"]
        teacher = TeacherTokens(ids, [[(token, -0.5), (0, -1.5)] for token in ids])
        with_teacher.append(Example(example.prompt, example.target, teacher=teacher))
    assert run(with_teacher).loss_curve == run(_facts()).loss_curve


def test_kd_without_matching_teacher_tokens_is_rejected():
    model, tokenizer = build_tiny_student(hidden_size=64, layers=1, seed=0)
    mismatched = Example("Q: hi\nA:", "Hello.", teacher=TeacherTokens([1, 2, 3], [[(1, -0.1)]] * 3))
    with pytest.raises(ValueError, match="no example carries teacher tokens that match its target"):
        train_sft(
            model, tokenizer, [mismatched, *_facts()], max_seq_len=64, epochs=1, learning_rate=1e-3,
            batch_size=4, seed=0, kd_weight=0.5,
        )  # fmt: skip


def _train_student(examples: list[Example], kd_weight: float) -> tuple[LlamaForCausalLM, TrainResult]:
    """The same seed, data order, steps and learning rate for every student; only KD differs.

    Few large batches (20 steps) rather than many small ones: on a shared 2-core CPU the cost
    per step, not per token, dominates.
    """
    model, tokenizer = build_tiny_student(hidden_size=64, layers=2, seed=0)
    result = train_sft(
        model, tokenizer, examples, max_seq_len=KD_SEQ_LEN, epochs=10, learning_rate=5e-3, batch_size=14,
        seed=0, kd_weight=kd_weight,
    )  # fmt: skip
    return model, result


def test_logit_distillation_brings_the_student_closer_to_the_teacher(teacher_examples):
    examples = teacher_examples
    for example in examples:
        teacher = example.teacher
        assert len(teacher.token_ids) == len(teacher.top_logprobs) > 0
        assert all(top[0][0] == token for token, top in zip(teacher.token_ids, teacher.top_logprobs, strict=True))
    train, held_out = examples[:TRAIN_SIZE], examples[TRAIN_SIZE:]
    _, tokenizer = build_tiny_student(hidden_size=64, layers=2, seed=0)
    rows, dropped = tokenize_examples(tokenizer, examples, KD_SEQ_LEN)
    matched = sum(row["teacher"] is not None for row in rows)
    assert dropped == [] and matched >= 0.9 * len(examples), matched

    sft_only, sft_result = _train_student(train, kd_weight=0.0)
    distilled, kd_result = _train_student(train, kd_weight=0.5)
    assert (sft_result.steps, sft_result.kd_examples) == (kd_result.steps, 0)
    assert kd_result.kd_examples == sum(row["teacher"] is not None for row in rows[:TRAIN_SIZE])

    kl_sft = kl_to_teacher(sft_only, tokenizer, held_out, KD_SEQ_LEN)
    kl_kd = kl_to_teacher(distilled, tokenizer, held_out, KD_SEQ_LEN)
    print(f"\nheld-out KL to teacher ({matched}/{len(examples)} matched): SFT only {kl_sft:.3f}, SFT + KD {kl_kd:.3f}")
    assert math.isfinite(kl_sft) and math.isfinite(kl_kd)
    assert kl_kd < kl_sft


def _mixed_lengths() -> list[Example]:
    """Twelve examples from ~10 to ~110 tokens, prompts and targets both varying, as tool-calling
    prompts do (their function lists run from none to several)."""
    words = [0, 3, 100, 8, 60, 1, 40, 20, 80, 5, 30, 12]
    return [
        Example(f"Q: {'word ' * n}\nA:", "yes " * (1 + n % 7), unit="long" if n >= 30 else "short") for n in words
    ]


def _padded(batches: list[list[dict]]) -> int:
    """Tokens fed for these batches, padding included: each row padded to its batch's longest."""
    return sum(len(rows) * max(len(row["input_ids"]) for row in rows) for rows in batches)


def _losses_by_index(model: torch.nn.Module, batches: list[list[dict]], pad_id: int) -> dict[int, float]:
    losses: dict[int, float] = {}
    with torch.no_grad():
        for rows in batches:
            values = example_losses(model, collate(rows, pad_id, torch.device("cpu")))
            losses.update(zip((row["index"] for row in rows), values.tolist(), strict=True))
    return losses


def test_an_examples_loss_does_not_depend_on_the_batch_it_is_padded_in():
    model, tokenizer = build_tiny_student(hidden_size=64, layers=2, seed=0)
    model.eval()
    pad_id = ensure_pad_token(tokenizer).pad_token_id
    rows, dropped = tokenize_examples(tokenizer, _mixed_lengths(), max_seq_len=256)
    assert dropped == [] and len({len(row["input_ids"]) for row in rows}) == len(rows)
    cpu = torch.device("cpu")
    with torch.no_grad():  # a batch of one has no padding: the example's own loss
        alone = {row["index"]: _weighted_loss(model, collate([row], pad_id, cpu)).item() for row in rows}
    bucketed = _batches(rows, 4, 1, torch.Generator().manual_seed(0), bucket=True)
    plain = _batches(rows, 4, 1, torch.Generator().manual_seed(0))
    for batches in (bucketed, plain):
        assert sorted(row["index"] for rows_in_batch in batches for row in rows_in_batch) == list(range(len(rows)))
        losses = _losses_by_index(model, batches, pad_id)
        assert losses == pytest.approx(alone, abs=1e-4)
    assert _padded(bucketed) < _padded(plain)


def test_bucketed_batches_hold_similar_lengths_and_every_example_once_per_epoch():
    lengths = [(i * 37) % 101 + 1 for i in range(40)]
    rows = [{"input_ids": [0] * n, "index": i, "stage": int(i >= 30)} for i, n in enumerate(lengths)]
    batches = _batches(rows, 4, 2, torch.Generator().manual_seed(0), bucket=True)
    assert batches == _batches(rows, 4, 2, torch.Generator().manual_seed(0), bucket=True)
    per_epoch = 8 + 3  # stage 0: 30 rows in batches of 4, stage 1: 10 rows
    assert len(batches) == 2 * per_epoch
    for epoch in (batches[:per_epoch], batches[per_epoch:]):
        assert sorted(row["index"] for rows_in_batch in epoch for row in rows_in_batch) == list(range(40))
        stages = [{row["stage"] for row in rows_in_batch} for rows_in_batch in epoch]
        assert stages == [{0}] * 8 + [{1}] * 3  # the curriculum holds
        for stage in (epoch[:8], epoch[8:]):  # one megabatch each: batches cover disjoint length ranges
            spans = [sorted(len(row["input_ids"]) for row in rows_in_batch) for rows_in_batch in stage]
            by_length = sorted(spans)
            assert all(low[-1] <= high[0] for low, high in zip(by_length, by_length[1:]))
            assert spans != by_length  # ... in shuffled order, not a length ramp
    assert _padded(batches) < _padded(_batches(rows, 4, 2, torch.Generator().manual_seed(0)))


def test_train_result_counts_padding_and_prompt_tokens_per_unit():
    examples = _mixed_lengths()
    results = {}
    for bucket in (True, False):
        model, tokenizer = build_tiny_student(hidden_size=64, layers=1, seed=0)
        results[bucket] = train_sft(
            model, tokenizer, examples, max_seq_len=256, epochs=1, learning_rate=1e-3, batch_size=4, seed=0,
            bucket=bucket,
        )  # fmt: skip
    bucketed, plain = results[True], results[False]
    prompts = {e.prompt: len(tokenizer(e.prompt)["input_ids"]) for e in examples}
    targets = {e.target: len(tokenizer(e.target, add_special_tokens=False)["input_ids"]) + 1 for e in examples}
    assert bucketed.tokens == plain.tokens == sum(prompts[e.prompt] + targets[e.target] for e in examples)
    assert bucketed.tokens < bucketed.padded_tokens < plain.padded_tokens
    expected = {}
    for unit in ("long", "short"):
        mine = [e for e in examples if e.unit == unit]
        expected[unit] = {
            "examples": len(mine),
            "prompt_tokens_mean": pytest.approx(_mean([prompts[e.prompt] for e in mine]), abs=0.01),
            "prompt_tokens_max": max(prompts[e.prompt] for e in mine),
            "target_tokens_mean": pytest.approx(_mean([targets[e.target] for e in mine]), abs=0.01),
        }
    assert bucketed.prompt_tokens_per_unit == plain.prompt_tokens_per_unit == expected


def test_lora_trains_only_the_adapters_and_leaves_every_other_weight_bit_identical():
    model, tokenizer = build_tiny_student(hidden_size=64, layers=2, seed=0)
    before = _snapshot(model)
    options = LoraOptions(r=16, alpha=32)
    trainable_per_step: list[list[str]] = []

    def progress(step: int, total: int, loss: float) -> None:
        """Mid-run, the caller's model holds the injected adapters: only they may learn."""
        trainable_per_step.append([name for name, p in model.named_parameters() if p.requires_grad])
        assert all(p.grad is None for name, p in model.named_parameters() if "lora_" not in name)

    train_sft(
        model, tokenizer, _facts(), max_seq_len=64, epochs=2, learning_rate=1e-2, batch_size=8, seed=0,
        method="lora", lora=options, progress=progress,
    )  # fmt: skip
    adapters = 2 * len(options.target_modules) * 2  # A and B per target module, 2 layers
    assert trainable_per_step
    assert all(len(names) == adapters and all("lora_" in n for n in names) for names in trainable_per_step)

    after = model.state_dict()
    targets = [name for name in before if name.split(".")[-2] in options.target_modules]
    others = [name for name in before if name not in targets]
    assert all(not torch.equal(before[name], after[name]) for name in targets)  # the adapters were merged
    assert all(torch.equal(before[name], after[name]) for name in others), [
        name for name in others if not torch.equal(before[name], after[name])
    ]
    assert all(any(kind in name for name in others) for kind in ("embed_tokens", ".mlp.", "norm"))


def test_lora_on_the_top_layers_leaves_the_layers_below_untouched():
    """With ``top_layers``, only the top decoder layers get adapters: the merge changes their
    attention weights and nothing else; nothing below them needs a gradient."""
    model, tokenizer = build_tiny_student(hidden_size=64, layers=4, seed=0)
    before = _snapshot(model)
    options = LoraOptions(r=8, alpha=16, top_layers=1)
    grads_below: list[bool] = []

    def progress(step: int, total: int, loss: float) -> None:
        grads_below.append(any(p.grad is not None for name, p in model.named_parameters() if ".layers.3." not in name))

    train_sft(model, tokenizer, _facts(), max_seq_len=64, epochs=1, learning_rate=1e-2, batch_size=8, seed=0,
              method="lora", lora=options, progress=progress)
    after = model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {f"model.layers.3.self_attn.{m}.weight" for m in options.target_modules}
    assert grads_below and not any(grads_below)
    with pytest.raises(ValueError, match="between 1 and the model's 4 layers"):
        train_sft(model, tokenizer, _facts(), max_seq_len=64, epochs=1, learning_rate=1e-2, batch_size=8, seed=0,
                  method="lora", lora=LoraOptions(top_layers=5))
