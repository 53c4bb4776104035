"""Full fine-tune of the experiment's student on a CUDA machine, with timings.

    # here: pack the student's config, tokenizer and a trained run's dataset (a few MB)
    .venv/bin/python bench/gpu_student.py pack --dataset <artifact>/dataset.jsonl --out .distillery/gpu-bundle
    # on the GPU machine (torch, transformers and peft are there; distillery's ml code travels in shared/)
    PYTHONPATH=shared python bench/gpu_student.py train --bundle .distillery/gpu-bundle --device cuda \\
        --method full --epochs 2 --scale 8
    # teacher generation as the transformers backend runs it: tokens/s at batch 1, 8 and 32 (issue 17)
    PYTHONPATH=shared python bench/gpu_student.py generate --bundle .distillery/gpu-bundle --device cuda

The lent GPU machine has no network and takes 64 MiB with a call, so SmolLM2-135M's weights (514 MB
fp32) do not travel: the bundle holds its config and tokenizer, and ``train`` builds the same
architecture (randomly initialised unless the folder also holds ``model.safetensors``). Timings are
what matters here: the same rows, the same ``train_sft`` the trainer service runs (length-bucketed
and unbucketed), in one process. ``--scale N`` repeats the dataset N times, standing in for a
workload N times larger (``distillery experiment --train-per-unit``).

Prints one JSON line per arm: examples, tokens, padded share, seconds, tokens/s, peak GPU memory,
first and last loss; and their ratio. ``--device cpu`` with a tiny config runs it anywhere (the
test suite does: tests/unit/test_gpu_student.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json",
                   "generation_config.json", "special_tokens_map.json")


def pack(dataset: Path, out: Path, model_dir: Path | None = None) -> Path:
    """Copy the student's config and tokenizer and the run's dataset lines into ``out``."""
    if model_dir is None:
        from distillery.domain.models import SMOLLM2, ensure_converted

        model_dir = ensure_converted(SMOLLM2)
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copy(model_dir / name, out / name)
    shutil.copy(dataset, out / "dataset.jsonl")
    return out


def load_examples(bundle: Path, scale: int) -> list:
    from distillery_trainer.sft import Example

    rows = [json.loads(line) for line in (bundle / "dataset.jsonl").read_text().splitlines() if line.strip()]
    return [Example(r["prompt"], r["target"], r.get("weight", 1.0), r.get("stage", 0), unit=r.get("unit", ""))
            for r in rows] * scale


def build_model(bundle: Path, device: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundle)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if (bundle / "model.safetensors").is_file():
        model = AutoModelForCausalLM.from_pretrained(bundle, dtype=torch.float32)
    else:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(bundle), dtype=torch.float32)
    return model.to(device), tokenizer


def run_arm(bundle: Path, examples: list, device: str, method: str, epochs: int, batch_size: int, lr: float,
            max_seq_len: int, bucket: bool) -> dict:
    import torch

    from distillery_trainer.sft import train_sft

    model, tokenizer = build_model(bundle, device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = train_sft(model, tokenizer, examples, max_seq_len=max_seq_len, epochs=epochs, learning_rate=lr,
                       batch_size=batch_size, seed=0, method=method, bucket=bucket)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {
        "arm": "bucketed" if bucket else "unbucketed", "device": device, "method": method, "examples": len(examples),
        "steps": result.steps, "tokens": result.tokens,
        "padding_share": round(1 - result.tokens / max(result.padded_tokens, 1), 4),
        "seconds": round(seconds, 2), "tokens_per_s": round(result.tokens / seconds, 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device.startswith("cuda") else None,
        "loss_first": round(result.loss_curve[0], 4), "loss_last": round(result.loss_curve[-1], 4),
        "trainable_params": result.trainable_params, "total_params": result.total_params,
    }


def generation_rates(bundle: Path, device: str, batches: list[int], prompts: int, max_new_tokens: int) -> list[dict]:
    """Teacher generation as the transformers backend runs it (distillery's ``Generator``), greedy,
    over the first ``prompts`` prompts of the bundle's dataset at each batch size: tokens/s.
    A randomly initialised model may stop early at an EOS, so completion tokens are counted, not
    assumed; a warm-up pass over every batch size is excluded."""
    import torch

    from distillery.domain.generate import Generator

    model, tokenizer = build_model(bundle, device)
    rows = [json.loads(line) for line in (bundle / "dataset.jsonl").read_text().splitlines() if line.strip()]
    texts = [rows[i % len(rows)]["prompt"] for i in range(prompts)]
    generator = Generator(model.eval(), tokenizer)
    for batch in batches:
        generator.generate(texts[:batch], 2, batch_size=batch)
    out = []
    for batch in batches:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        gens = generator.generate(texts, max_new_tokens, batch_size=batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        tokens = sum(g.completion_tokens for g in gens)
        out.append({"arm": "generate", "device": device, "batch_size": batch, "prompts": len(texts),
                    "completion_tokens": tokens, "seconds": round(seconds, 3),
                    "tokens_per_s": round(tokens / seconds, 1), "candidates_per_s": round(len(texts) / seconds, 2)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="bundle config, tokenizer and a dataset for the GPU machine")
    p.add_argument("--dataset", type=Path, required=True, help="a trained run's dataset.jsonl")
    p.add_argument("--out", type=Path, default=Path(".distillery/gpu-bundle"))
    p.add_argument("--model-dir", type=Path, default=None, help="default: the converted SmolLM2-135M")
    t = sub.add_parser("train", help="full fine-tune (or LoRA) with timings, bucketed and unbucketed")
    t.add_argument("--bundle", type=Path, default=Path(".distillery/gpu-bundle"))
    t.add_argument("--device", default="cuda")
    t.add_argument("--method", choices=["full", "lora"], default="full")
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=5e-5)
    t.add_argument("--max-seq-len", type=int, default=1024)
    t.add_argument("--scale", type=int, default=1, help="repeat the dataset N times (a larger workload)")
    g = sub.add_parser("generate", help="teacher generation (the transformers backend's Generator): tokens/s per batch")
    g.add_argument("--bundle", type=Path, default=Path(".distillery/gpu-bundle"))
    g.add_argument("--device", default="cuda")
    g.add_argument("--batches", default="1,8,32", help="batch sizes, comma-separated")
    g.add_argument("--prompts", type=int, default=64)
    g.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    if args.command == "pack":
        print(f"packed {pack(args.dataset, args.out, args.model_dir)}", file=sys.stderr)
        return 0
    if args.command == "generate":
        batches = [int(b) for b in args.batches.split(",")]
        for row in generation_rates(args.bundle, args.device, batches, args.prompts, args.max_new_tokens):
            print(json.dumps(row))
        return 0
    examples = load_examples(args.bundle, args.scale)
    arms = [run_arm(args.bundle, examples, args.device, args.method, args.epochs, args.batch_size, args.lr,
                    args.max_seq_len, bucket) for bucket in (False, True)]
    for arm in arms:
        print(json.dumps(arm))
    print(json.dumps({"bucketed_vs_unbucketed": round(arms[1]["tokens_per_s"] / arms[0]["tokens_per_s"], 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
