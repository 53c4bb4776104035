"""The prepared GPU script (bench/gpu_student.py), run here on CPU with a tiny config: pack, train
(both arms) and teacher generation at two batch sizes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.model  # loads or trains a real model

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.model
def test_the_gpu_script_packs_a_bundle_and_times_both_arms_on_cpu(tmp_path: Path) -> None:
    from distillery.domain.models import SMOLLM2, build_tiny_student, ensure_converted

    model_dir = tmp_path / "tiny"
    tiny, _ = build_tiny_student(hidden_size=32, layers=1)
    tiny.config.save_pretrained(model_dir)  # the architecture only: the script initialises it
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(ensure_converted(SMOLLM2) / name, model_dir / name)
    dataset = tmp_path / "dataset.jsonl"
    dataset.write_text("".join(json.dumps({"prompt": f"question {i} " * (i + 1), "target": f"answer {i}",
                                           "weight": 1.0, "stage": 0, "unit": "u"}) + "\n" for i in range(6)))
    bundle = tmp_path / "bundle"
    script = [sys.executable, str(ROOT / "bench" / "gpu_student.py")]
    subprocess.run([*script, "pack", "--dataset", str(dataset), "--out", str(bundle), "--model-dir", str(model_dir)],
                   check=True, cwd=ROOT)
    assert (bundle / "config.json").is_file() and (bundle / "dataset.jsonl").read_text() == dataset.read_text()
    done = subprocess.run([*script, "train", "--bundle", str(bundle), "--device", "cpu", "--epochs", "1",
                           "--batch-size", "2", "--scale", "2", "--max-seq-len", "128"],
                          check=True, cwd=ROOT, capture_output=True, text=True)
    *arms, ratio = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["arm"] for a in arms] == ["unbucketed", "bucketed"]
    assert arms[0]["examples"] == 12 and arms[0]["tokens"] == arms[1]["tokens"] > 0  # the same rows, once each
    assert arms[1]["padding_share"] <= arms[0]["padding_share"]
    assert arms[0]["trainable_params"] == arms[0]["total_params"]  # a full fine-tune
    assert ratio["bucketed_vs_unbucketed"] > 0
    # teacher generation through distillery's Generator, tokens/s per batch size (batch 1, 8, 32 on the GPU)
    done = subprocess.run([*script, "generate", "--bundle", str(bundle), "--device", "cpu", "--batches", "1,2",
                           "--prompts", "4", "--max-new-tokens", "4"], check=True, cwd=ROOT, capture_output=True, text=True)
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["batch_size"] for r in rows] == [1, 2] and all(r["prompts"] == 4 for r in rows)
    assert all(0 < r["completion_tokens"] <= 16 and r["tokens_per_s"] > 0 for r in rows)
