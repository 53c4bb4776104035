"""Student training throughput: distillery's ``train_sft``, with and without length bucketing,
against a plain ``transformers.Trainer``.

    python bench/trainer_throughput.py [--steps 10] [--warmup 2] [--repeats 2] [--model tiny|smollm2-135m]
                                       [--method full|lora]

Data: (prompt, target) pairs from the example workload (tool_call, tool_boundary, math_steps, the
units of the ``tiny`` student recipe in examples/spec.yaml), no teachers run. The prompt is the
student prompt (``recipes.student_prompt``: the unit's compact system prompt and the task, through
the chat template), so prompt lengths vary as much as the tasks' function lists do; the target is
derived from the task's reference, since only throughput is measured: ``#### <n>`` for math, the
first allowed tool call as JSON for tool_call, and a one-line "None of the available functions ..."
for tool_boundary. Tokenised with ``tokenize_examples`` (prompt labels masked with -100, EOS
appended, examples longer than max_seq_len dropped); the first (warm-up + timed steps) x batch
examples that fit are kept, so every loop trains exactly one epoch over the same examples.

Model: the recipe's tiny student (``build_tiny_student``: hidden 256, 4 layers, SmolLM2 vocabulary,
seed 0), or ``--model smollm2-135m`` (SmolLM2-135M-Instruct itself). Each loop trains a fresh,
identical copy; fp32 on CPU, batch 8, the recipe's learning rate (1e-4 for SmolLM2), max_seq_len 384.
``--method lora`` trains LoRA adapters (r 16, alpha 32, on q/k/v/o) in every loop, the Trainer's
through peft's ``get_peft_model`` as a user would; full fine-tuning otherwise.
  Trainer      ``transformers.Trainer`` on the same tokenised rows, right-padded like ``train_sft``,
               fed the very batches unbucketed ``train_sft`` draws, in the same order (sequential
               sampler; the order comes from a dry run of ``train_sft`` on a throwaway 1-layer
               model): shuffled, unsorted batches, what a user feeding it the data would get. Its
               optimisation is aligned with ``train_sft`` (AdamW foreach, weight decay 0.01,
               constant learning rate, no gradient clipping) unless ``--trainer-defaults`` (fused
               AdamW, linear decay, clipping at 1.0, weight decay 0).
  unbucketed   ``train_sft(bucket=False)``: the same batches as the Trainer (checked: the run stops
               if the two were fed different tokens); the gap to the Trainer is the loop's own.
  bucketed     ``train_sft`` as the trainer service runs it: batches of similar length, so less
               padding; the gap to unbucketed is what bucketing saves.
All run ``--warmup`` + ``--steps`` optimizer steps; the warm-up steps are excluded. By default the
loops run in threads that take turns, one optimizer step each, round robin (``--sequential``: one
loop after the other), so that all meet the same load on a shared machine. A step's time runs from
when its loop got the turn (sequential: the end of its previous step) to the end of the step
(``train_sft``'s progress callback, ``TrainerCallback.on_step_end``), so it covers everything the
loop does per step, collation and logging included. Tokens are the non-padding tokens fed to the
model, counted identically for every loop by a forward pre-hook on the base model (attention-mask
sum); padding is the share of the fed positions (rows x batch width) that were padding.
tokens/s = timed tokens / summed time of the timed steps: padding costs time but earns no tokens.
Each repeat runs all loops (rotating which goes first); the table shows each loop's best (fastest)
repeat, because interference only ever slows a run down; each repeat's own ratios go to stderr.
The losses are a sanity check: all minimise next-token cross-entropy on target tokens,
``train_sft`` averaged per example then over the batch (all weights 1), the Trainer averaged over
all target tokens of the batch, so they start close at initialisation and then drift apart a
little; the bucketed loop sees other batches, so its losses differ step by step.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import transformers
from peft import LoraConfig, get_peft_model
from rich.console import Console
from rich.table import Table
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from distillery.contracts.events import Task
from distillery.contracts.spec import load_spec
from distillery.domain.models import (
    SMOLLM2,
    build_tiny_student,
    ensure_pad_token,
    load_model,
    smollm2_tokenizer,
)
from distillery.domain.students import student_prompt
from distillery_cli.workload import build_workload
from distillery_trainer.sft import IGNORE_INDEX, Example, LoraOptions, lora_layers, tokenize_examples, train_sft

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "tiny"
SMOLLM2_LR = 1e-4
LORA = LoraOptions(r=16, alpha=32)  # on q/k/v/o, the recipe of interest for SmolLM2
LOOPS = {"Trainer": "transformers Trainer (baseline)", "unbucketed": "train_sft, unbucketed",
         "bucketed": "train_sft, bucketed"}


def target_for(task: Task) -> str:
    """A plausible student completion derived from the task's reference (no teacher is run)."""
    ref = task.reference
    if ref is not None and ref.no_call:
        names = ", ".join(tool.name for tool in task.tools) or "the listed functions"
        return f"None of the available functions ({names}) can answer this; it would need a tool for this request."
    if ref is not None and ref.answer is not None:
        return f"#### {ref.answer}"
    if ref is not None and ref.tool_calls:
        (name, arguments), = ref.tool_calls[0].items()
        values = {k: v[0] for k, v in arguments.items() if v and v[0] != ""}
        return json.dumps({"name": name, "arguments": values}, ensure_ascii=False)
    raise ValueError(f"task {task.task_id} has no usable reference")


def fresh_model(kind: str, recipe, seed: int):
    if kind == "tiny":
        model, tokenizer = build_tiny_student(hidden_size=recipe.hidden_size, layers=recipe.layers, seed=seed)
    else:
        model, tokenizer = load_model(SMOLLM2)
    return model, ensure_pad_token(tokenizer)


class Turns:
    """Lets training loops in several threads take one optimizer step each, round robin."""

    def __init__(self, order: list[str]) -> None:
        self.cond = threading.Condition()
        self.order = order
        self.turn = order[0]
        self.finished: set[str] = set()
        self.failed = False

    def _wait_for(self, ready) -> None:
        self.cond.wait_for(lambda: ready() or self.failed)
        if self.failed:
            raise RuntimeError("another loop failed")

    def _after(self, me: str) -> str:
        """The next loop in the rotation that has steps left (``me`` when none has)."""
        at = self.order.index(me)
        rotation = self.order[at + 1 :] + self.order[: at + 1]
        return next((name for name in rotation if name not in self.finished), me)

    def wait(self, me: str) -> None:
        with self.cond:
            self._wait_for(lambda: self.turn == me)

    def give(self, me: str) -> None:
        with self.cond:
            self.turn = self._after(me)
            self.cond.notify_all()

    def finish(self, me: str) -> None:
        """After the last step: hand over, then wait for every loop to finish too, so that no
        loop's wrap-up runs during another's timed steps."""
        with self.cond:
            self.finished.add(me)
            self.turn = self._after(me)
            self.cond.notify_all()
            self._wait_for(lambda: self.finished == set(self.order))

    def fail(self) -> None:
        with self.cond:
            self.failed = True
            self.cond.notify_all()


class Gate:
    """Where a loop yields between steps: nowhere when sequential, to the next loop when interleaved."""

    def __init__(self, turns: Turns | None = None, me: str = "") -> None:
        self.turns, self.me = turns, me

    def begin(self) -> None:
        if self.turns is not None:
            self.turns.wait(self.me)

    def step_done(self, last: bool) -> None:
        if self.turns is None:
            return
        if last:
            self.turns.finish(self.me)
        else:
            self.turns.give(self.me)
            self.turns.wait(self.me)


class Meter:
    """Tokens and inputs per step (forward pre-hook on the base model) and each step's own wall time:
    from when the loop got the CPU back after the previous step (``resume``) to the end of this step."""

    def __init__(self, model) -> None:
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.resumed: list[float] = []
        self.ended: list[float] = []
        self.losses: list[float] = []
        self.handle = model.base_model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if module.training:
            self.inputs.append((kwargs["input_ids"].detach().clone(), kwargs["attention_mask"].detach().clone()))

    def resume(self) -> None:
        self.resumed.append(time.perf_counter())

    def step_end(self, loss: float | None = None) -> None:
        self.ended.append(time.perf_counter())
        if loss is not None:
            self.losses.append(loss)

    def step_tokens(self) -> list[int]:
        return [int(mask.sum()) for _, mask in self.inputs]

    def step_positions(self) -> list[int]:
        """Positions fed per step, padding included."""
        return [mask.numel() for _, mask in self.inputs]

    def window(self, warmup: int, steps: int) -> dict:
        self.handle.remove()
        total = warmup + steps
        if len(self.ended) != total or len(self.inputs) != total:
            raise RuntimeError(f"expected {total} steps, saw {len(self.ended)} ends, {len(self.inputs)} forwards")
        seconds = sum(self.ended[i] - self.resumed[i] for i in range(warmup, total))
        tokens = sum(self.step_tokens()[warmup:])
        padding = 1 - tokens / sum(self.step_positions()[warmup:])
        return {"seconds": seconds, "tokens": tokens, "padding": padding, "tokens_per_s": tokens / seconds,
                "steps_per_s": steps / seconds, "first_loss": self.losses[0], "final_loss": self.losses[-1]}


class _StepEnd(TrainerCallback):
    def __init__(self, meter: Meter, gate: Gate) -> None:
        self.meter, self.gate = meter, gate

    def on_step_end(self, args, state, control, **kwargs):
        self.meter.step_end()
        self.gate.step_done(last=state.global_step >= state.max_steps)
        self.meter.resume()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.meter.losses.append(float(logs["loss"]))


class RightPad:
    """Pads like ``train_sft``'s collator: right padding, padding masked out of attention and loss."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(row["input_ids"]) for row in rows)
        pads = [width - len(row["input_ids"]) for row in rows]
        return {
            "input_ids": torch.tensor([r["input_ids"] + [self.pad_id] * p for r, p in zip(rows, pads)]),
            "labels": torch.tensor([r["labels"] + [IGNORE_INDEX] * p for r, p in zip(rows, pads)]),
            "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * p for r, p in zip(rows, pads)]),
        }


def batch_order(tokenizer, examples: list[Example], recipe, total_steps: int) -> list[list[tuple[int, ...]]]:
    """The batches unbucketed ``train_sft`` draws, in order, from a dry run with a throwaway 1-layer
    model: the order depends on the examples, the seed and the batch size only, not on the model."""
    model, _ = build_tiny_student(hidden_size=16, layers=1, seed=recipe.seed)
    meter = Meter(model)
    train_sft(model, tokenizer, examples, max_seq_len=recipe.max_seq_len, epochs=1, learning_rate=1e-3,
              batch_size=recipe.batch_size, seed=recipe.seed, max_steps=total_steps, bucket=False)
    meter.handle.remove()
    return [[tuple(ids[: int(m.sum())].tolist()) for ids, m in zip(input_ids, mask)]
            for input_ids, mask in meter.inputs]


def run_distillery(kind, recipe, examples, lr, warmup, steps, method: str, bucket: bool,
                   gate: Gate) -> tuple[dict, list[int]]:
    gate.begin()
    model, tokenizer = fresh_model(kind, recipe, recipe.seed)
    meter = Meter(model)
    meter.resume()

    def progress(step: int, total: int, loss: float) -> None:
        meter.step_end(loss)
        gate.step_done(last=step >= total)
        meter.resume()

    train_sft(model, tokenizer, examples, max_seq_len=recipe.max_seq_len, epochs=1, learning_rate=lr,
              batch_size=recipe.batch_size, seed=recipe.seed, max_steps=warmup + steps, progress=progress,
              method=method, lora=LORA if method == "lora" else None, bucket=bucket)
    return meter.window(warmup, steps), meter.step_tokens()


def with_adapters(model, seed: int):
    """``model`` wrapped by peft with the same adapters, and the same seeded init, as ``train_sft``
    gives it."""
    torch.manual_seed(seed)
    config = LoraConfig(task_type="CAUSAL_LM", r=LORA.r, lora_alpha=LORA.alpha, lora_dropout=LORA.dropout,
                        target_modules=list(LORA.target_modules), layers_to_transform=lora_layers(model, LORA.top_layers))
    return get_peft_model(model, config)


def run_trainer(kind, recipe, rows_in_order, lr, warmup, steps, method: str, trainer_defaults: bool, gate: Gate):
    gate.begin()
    model, tokenizer = fresh_model(kind, recipe, recipe.seed)
    meter = Meter(model)  # on the decoder, which peft wraps in place
    model = with_adapters(model, recipe.seed) if method == "lora" else model
    meter.resume()
    aligned = {} if trainer_defaults else {"optim": "adamw_torch", "weight_decay": 0.01,
                                           "lr_scheduler_type": "constant", "max_grad_norm": 0.0}
    with tempfile.TemporaryDirectory(prefix="trainer-bench-") as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=recipe.batch_size, learning_rate=lr,
            max_steps=warmup + steps, use_cpu=True, report_to=[], logging_steps=1, save_strategy="no",
            dataloader_num_workers=0, train_sampling_strategy="sequential", seed=recipe.seed,
            disable_tqdm=True, **aligned,
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows_in_order,
                          data_collator=RightPad(tokenizer.pad_token_id), callbacks=[_StepEnd(meter, gate)])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return meter.window(warmup, steps), meter.step_tokens()


def run_round(order: list[str], interleave: bool, loops: dict) -> dict[str, tuple[dict, list[int]]]:
    """Every loop, one after the other in ``order``, or in threads that take turns step by step."""
    if not interleave:
        return {name: loops[name](Gate()) for name in order}
    turns = Turns(order)
    results: dict = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            results[name] = loops[name](Gate(turns, name))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
            turns.fail()

    threads = [threading.Thread(target=work, args=(name,), name=name) for name in order]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per loop")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps before them")
    parser.add_argument("--repeats", type=int, default=2, help="runs per loop; the best is reported")
    parser.add_argument("--model", choices=["tiny", "smollm2-135m"], default="tiny")
    parser.add_argument("--method", choices=["full", "lora"], default="full",
                        help="full fine-tuning, or LoRA r16 on q/k/v/o in every loop")
    parser.add_argument("--top-layers", type=int, default=None,
                        help="with --method lora: adapters in the top N decoder layers only (every loop)")
    parser.add_argument("--lr", type=float, default=None, help="default: the recipe's, 1e-4 for smollm2-135m")
    parser.add_argument("--sequential", action="store_true",
                        help="run the loops one after the other instead of taking turns step by step")
    parser.add_argument("--trainer-defaults", action="store_true",
                        help="keep the Trainer's own optimizer, schedule and clipping instead of aligning them")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be >= 1")
    global LORA  # every loop reads the one adapter setting
    LORA = LoraOptions(r=LORA.r, alpha=LORA.alpha, top_layers=args.top_layers)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)

    spec = load_spec(ROOT / "examples" / "spec.yaml")
    recipe = spec.students[RECIPE]
    lr = args.lr if args.lr is not None else (recipe.learning_rate if args.model == "tiny" else SMOLLM2_LR)
    total_steps = args.warmup + args.steps
    wanted = total_steps * recipe.batch_size
    tokenizer = ensure_pad_token(smollm2_tokenizer())  # the tiny student's, and SmolLM2's own
    lines = build_workload(per_unit=-(-wanted // len(recipe.units)) + 8, eval_per_unit=0, units=recipe.units)
    tasks = [Task.model_validate(line) for line in lines]
    candidates = [Example(student_prompt(tokenizer, spec.units[t.unit], t), target_for(t)) for t in tasks]
    fitting, dropped = tokenize_examples(tokenizer, candidates, recipe.max_seq_len)
    if len(fitting) < wanted:
        raise SystemExit(f"only {len(fitting)} examples fit max_seq_len={recipe.max_seq_len}, {wanted} needed")
    rows = fitting[:wanted]  # one epoch is exactly the run's steps, in every loop
    examples = [candidates[row["index"]] for row in rows]
    by_ids = {tuple(row["input_ids"]): {"input_ids": row["input_ids"], "labels": row["labels"]} for row in rows}
    lengths = [len(row["input_ids"]) for row in rows]
    target_share = sum(sum(label != IGNORE_INDEX for label in row["labels"]) for row in rows) / sum(lengths)

    rows_in_order = [by_ids[ids] for batch in batch_order(tokenizer, examples, recipe, total_steps) for ids in batch]
    loops = {
        "Trainer": lambda gate: run_trainer(args.model, recipe, rows_in_order, lr, args.warmup, args.steps,
                                            args.method, args.trainer_defaults, gate),
        "unbucketed": lambda gate: run_distillery(args.model, recipe, examples, lr, args.warmup, args.steps,
                                                  args.method, False, gate),
        "bucketed": lambda gate: run_distillery(args.model, recipe, examples, lr, args.warmup, args.steps,
                                                args.method, True, gate),
    }
    names = list(loops)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        run = run_round(order, not args.sequential, loops)
        if run["unbucketed"][1] != run["Trainer"][1]:
            raise SystemExit("the Trainer and unbucketed train_sft were fed different batches (tokens per step differ)")
        for name, (stats, _) in run.items():
            results[name].append(stats)
        speed = {name: run[name][0]["tokens_per_s"] for name in names}
        print(f"  repeat {repeat + 1}/{args.repeats} ({order[0]} first): "
              + ", ".join(f"{name} {speed[name]:.0f} tokens/s" for name in names)
              + f"; vs Trainer: unbucketed {speed['unbucketed'] / speed['Trainer']:.2f}, "
              f"bucketed {speed['bucketed'] / speed['Trainer']:.2f}",
              file=sys.stderr, flush=True)

    best = {name: max(runs, key=lambda s: s["tokens_per_s"]) for name, runs in results.items()}
    ratio = {name: best[name]["tokens_per_s"] / best["Trainer"]["tokens_per_s"] for name in names}
    model_name = (f"tiny student (hidden {recipe.hidden_size}, {recipe.layers} layers)" if args.model == "tiny"
                  else "SmolLM2-135M-Instruct")
    modules = "/".join(LORA.target_modules)
    method = "full" if args.method == "full" else (f"LoRA r{LORA.r} alpha {LORA.alpha} on {modules}"
                                                   + (f", top {LORA.top_layers} layers" if LORA.top_layers else ""))
    print(f"trainer throughput: {model_name}, {method}, {len(tasks)} workload tasks -> {len(rows)} examples "
          f"({len(dropped)} over max_seq_len {recipe.max_seq_len}), lengths min {min(lengths)} median "
          f"{statistics.median(lengths):.0f} max {max(lengths)}, target tokens {target_share:.1%}; "
          f"batch {recipe.batch_size}, lr {lr:g}, {args.warmup} warm-up + {args.steps} timed steps, "
          f"{'sequential' if args.sequential else 'interleaved'}, best of {args.repeats}; "
          f"torch {torch.__version__} threads {torch.get_num_threads()}, transformers {transformers.__version__}"
          + ("; Trainer with its default optimizer settings" if args.trainer_defaults else ""))
    table = Table()
    for column in ("loop", "tokens", "padding", "seconds", "tokens/s", "steps/s", "final loss", "vs Trainer"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    for name in names:
        s = best[name]
        table.add_row(LOOPS[name], f"{s['tokens']:,}", f"{s['padding']:.1%}", f"{s['seconds']:.2f}",
                      f"{s['tokens_per_s']:,.0f}", f"{s['steps_per_s']:.2f}", f"{s['final_loss']:.3f}",
                      f"{ratio[name]:.2f}")
    Console(width=120).print(table)
    print(f"ratio_vs_transformers_trainer={ratio['bucketed']:.2f}")
    print(f"ratio_unbucketed_vs_transformers_trainer={ratio['unbucketed']:.2f}")
    print(f"bucketed_vs_unbucketed={ratio['bucketed'] / ratio['unbucketed']:.2f}")


if __name__ == "__main__":
    main()
