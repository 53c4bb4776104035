"""Student training throughput: distillery's ``train_sft`` against a plain ``transformers.Trainer``.

    python bench/trainer_throughput.py [--steps 10] [--warmup 2] [--repeats 2] [--model tiny|smollm2-135m]

Data: (prompt, target) pairs from the example workload (tool_call, tool_boundary, math_steps, the
units of the ``tiny`` student recipe in examples/spec.yaml), no teachers run. The prompt is the
student prompt (``recipes.student_prompt``: the unit's compact system prompt and the task, through
the chat template); the target is derived from the task's reference, since only throughput is
measured: ``#### <n>`` for math, the first allowed tool call as JSON for tool_call, and a one-line
"None of the available functions ..." for tool_boundary. Tokenised with ``tokenize_examples``
(prompt labels masked with -100, EOS appended, examples longer than max_seq_len dropped).

Model: the recipe's tiny student (``build_tiny_student``: hidden 256, 4 layers, SmolLM2 vocabulary,
seed 0), or ``--model smollm2-135m`` (SmolLM2-135M-Instruct itself). Each contender trains a fresh,
identical copy; fp32 on CPU, batch 8, the recipe's learning rate (1e-4 for SmolLM2), max_seq_len 384.
  distillery   ``train_sft`` (own loop; output layer only at target positions, per-example mean loss)
  Trainer      ``transformers.Trainer`` on the same tokenised rows, right-padded like ``train_sft``,
               fed the very batches ``train_sft`` draws, in the same order (sequential sampler; the
               order comes from a dry run of ``train_sft`` on a throwaway 1-layer model), so both
               see identical inputs. Its optimisation is aligned with ``train_sft`` (AdamW
               foreach, weight decay 0.01, constant learning rate, no gradient clipping) unless
               ``--trainer-defaults`` (fused AdamW, linear decay, clipping at 1.0, weight decay 0).
Both run ``--warmup`` + ``--steps`` optimizer steps; the warm-up steps are excluded. By default the
two loops run in two threads that take turns, one optimizer step each (``--sequential``: one loop
after the other), so that both meet the same load on a shared machine. A step's time runs from when
its loop got the turn (sequential: the end of its previous step) to the end of the step
(``train_sft``'s progress callback, ``TrainerCallback.on_step_end``), so it covers everything the
loop does per step, collation and logging included. Tokens are the non-padding tokens fed to the
model, counted identically for both by a forward pre-hook on the base model (attention-mask sum);
the run stops if the two loops were fed different tokens. tokens/s = timed tokens / summed time of
the timed steps. Each repeat runs both contenders (alternating which goes first); the table shows
each contender's best (fastest) repeat, because interference only ever slows a run down; each
repeat's own ratio goes to stderr. The losses are a sanity check: both minimise next-token
cross-entropy on target tokens, ``train_sft`` averaged per example then over the batch (all weights
1), the Trainer averaged over all target tokens of the batch, so they start close at initialisation
and then drift apart a little.
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

import torch  # noqa: E402
import transformers  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from distillery.events import Task  # noqa: E402
from distillery.ml.models import (  # noqa: E402
    SMOLLM2,
    build_tiny_student,
    ensure_pad_token,
    load_model,
    smollm2_tokenizer,
)
from distillery.ml.recipes import student_prompt  # noqa: E402
from distillery.ml.sft import IGNORE_INDEX, Example, tokenize_examples, train_sft  # noqa: E402
from distillery.spec import load_spec  # noqa: E402
from distillery.workload import build_workload  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "tiny"
SMOLLM2_LR = 1e-4


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
    """Lets two training loops in two threads take one optimizer step each in turn."""

    def __init__(self, first: str) -> None:
        self.cond = threading.Condition()
        self.turn = first
        self.finished: set[str] = set()
        self.failed = False

    def _wait_for(self, ready) -> None:
        self.cond.wait_for(lambda: ready() or self.failed)
        if self.failed:
            raise RuntimeError("the other contender failed")

    def wait(self, me: str, other: str) -> None:
        with self.cond:
            self._wait_for(lambda: self.turn == me or other in self.finished)

    def give(self, other: str) -> None:
        with self.cond:
            self.turn = other
            self.cond.notify_all()

    def finish(self, me: str, other: str) -> None:
        """After the last step: hand over, then wait for the other to finish too, so that neither
        loop's wrap-up runs during the other's timed steps."""
        with self.cond:
            self.finished.add(me)
            self.turn = other
            self.cond.notify_all()
            self._wait_for(lambda: other in self.finished)

    def fail(self) -> None:
        with self.cond:
            self.failed = True
            self.cond.notify_all()


class Gate:
    """Where a contender's loop yields between steps: nowhere when sequential, to the other when interleaved."""

    def __init__(self, turns: Turns | None = None, me: str = "", other: str = "") -> None:
        self.turns, self.me, self.other = turns, me, other

    def begin(self) -> None:
        if self.turns is not None:
            self.turns.wait(self.me, self.other)

    def step_done(self, last: bool) -> None:
        if self.turns is None:
            return
        if last:
            self.turns.finish(self.me, self.other)
        else:
            self.turns.give(self.other)
            self.turns.wait(self.me, self.other)


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

    def window(self, warmup: int, steps: int) -> dict:
        self.handle.remove()
        total = warmup + steps
        if len(self.ended) != total or len(self.inputs) != total:
            raise RuntimeError(f"expected {total} steps, saw {len(self.ended)} ends, {len(self.inputs)} forwards")
        seconds = sum(self.ended[i] - self.resumed[i] for i in range(warmup, total))
        tokens = sum(self.step_tokens()[warmup:])
        return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, "steps_per_s": steps / seconds,
                "first_loss": self.losses[0], "final_loss": self.losses[-1]}


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
    """The batches ``train_sft`` draws, in order, from a dry run with a throwaway 1-layer model: the
    order depends on the examples, the seed and the batch size only, not on the model."""
    model, _ = build_tiny_student(hidden_size=16, layers=1, seed=recipe.seed)
    meter = Meter(model)
    train_sft(model, tokenizer, examples, max_seq_len=recipe.max_seq_len, epochs=1, learning_rate=1e-3,
              batch_size=recipe.batch_size, seed=recipe.seed, max_steps=total_steps)
    meter.handle.remove()
    return [[tuple(ids[: int(m.sum())].tolist()) for ids, m in zip(input_ids, mask)]
            for input_ids, mask in meter.inputs]


def run_distillery(kind, recipe, examples, lr, warmup, steps, gate: Gate) -> tuple[dict, list[int]]:
    gate.begin()
    model, tokenizer = fresh_model(kind, recipe, recipe.seed)
    meter = Meter(model)
    meter.resume()

    def progress(step: int, total: int, loss: float) -> None:
        meter.step_end(loss)
        gate.step_done(last=step >= total)
        meter.resume()

    train_sft(model, tokenizer, examples, max_seq_len=recipe.max_seq_len, epochs=1, learning_rate=lr,
              batch_size=recipe.batch_size, seed=recipe.seed, max_steps=warmup + steps, progress=progress)
    return meter.window(warmup, steps), meter.step_tokens()


def run_trainer(kind, recipe, rows_in_order, lr, warmup, steps, trainer_defaults: bool, gate: Gate):
    gate.begin()
    model, tokenizer = fresh_model(kind, recipe, recipe.seed)
    meter = Meter(model)
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


def run_pair(first: str, interleave: bool, contenders: dict) -> dict[str, tuple[dict, list[int]]]:
    """Both contenders, one after the other, or in two threads that alternate step by step."""
    other = {"distillery": "Trainer", "Trainer": "distillery"}
    if not interleave:
        return {name: contenders[name](Gate()) for name in (first, other[first])}
    turns = Turns(first)
    results: dict = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            results[name] = contenders[name](Gate(turns, name, other[name]))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
            turns.fail()

    threads = [threading.Thread(target=work, args=(name,), name=name) for name in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per contender")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps before them")
    parser.add_argument("--repeats", type=int, default=2, help="runs per contender; the best is reported")
    parser.add_argument("--model", choices=["tiny", "smollm2-135m"], default="tiny")
    parser.add_argument("--lr", type=float, default=None, help="default: the recipe's, 1e-4 for smollm2-135m")
    parser.add_argument("--sequential", action="store_true",
                        help="run the two loops one after the other instead of alternating step by step")
    parser.add_argument("--trainer-defaults", action="store_true",
                        help="keep the Trainer's own optimizer, schedule and clipping instead of aligning them")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be >= 1")
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
    examples = [Example(student_prompt(tokenizer, spec.units[t.unit], t), target_for(t)) for t in tasks]
    rows, dropped = tokenize_examples(tokenizer, examples, recipe.max_seq_len)
    if len(rows) < wanted:
        raise SystemExit(f"only {len(rows)} examples fit max_seq_len={recipe.max_seq_len}, {wanted} needed")
    by_ids = {tuple(row["input_ids"]): {"input_ids": row["input_ids"], "labels": row["labels"]} for row in rows}
    lengths = [len(row["input_ids"]) for row in rows]
    target_share = sum(sum(label != IGNORE_INDEX for label in row["labels"]) for row in rows) / sum(lengths)

    rows_in_order = [by_ids[ids] for batch in batch_order(tokenizer, examples, recipe, total_steps) for ids in batch]
    contenders = {
        "distillery": lambda gate: run_distillery(args.model, recipe, examples, lr, args.warmup, args.steps, gate),
        "Trainer": lambda gate: run_trainer(args.model, recipe, rows_in_order, lr, args.warmup, args.steps,
                                            args.trainer_defaults, gate),
    }
    results: dict[str, list[dict]] = {"distillery": [], "Trainer": []}
    for repeat in range(args.repeats):
        first = "distillery" if repeat % 2 == 0 else "Trainer"
        pair = run_pair(first, not args.sequential, contenders)
        if pair["distillery"][1] != pair["Trainer"][1]:
            raise SystemExit("the two loops were fed different batches (tokens per step differ)")
        for name, (stats, _) in pair.items():
            results[name].append(stats)
        d, t = pair["distillery"][0], pair["Trainer"][0]
        print(f"  repeat {repeat + 1}/{args.repeats} ({first} first): distillery {d['tokens_per_s']:.0f} tokens/s, "
              f"Trainer {t['tokens_per_s']:.0f} tokens/s, ratio {d['tokens_per_s'] / t['tokens_per_s']:.2f}; "
              f"loss {d['first_loss']:.3f} -> {d['final_loss']:.3f} / {t['first_loss']:.3f} -> {t['final_loss']:.3f}",
              file=sys.stderr, flush=True)

    best = {name: max(runs, key=lambda s: s["tokens_per_s"]) for name, runs in results.items()}
    ratio = best["distillery"]["tokens_per_s"] / best["Trainer"]["tokens_per_s"]
    model_name = (f"tiny student (hidden {recipe.hidden_size}, {recipe.layers} layers)" if args.model == "tiny"
                  else "SmolLM2-135M-Instruct")
    print(f"trainer throughput: {model_name}, {len(tasks)} workload tasks -> {len(rows)} examples "
          f"({len(dropped)} over max_seq_len {recipe.max_seq_len}), lengths median {statistics.median(lengths):.0f} "
          f"max {max(lengths)}, target tokens {target_share:.1%}; batch {recipe.batch_size}, lr {lr:g}, "
          f"{args.warmup} warm-up + {args.steps} timed steps, {'sequential' if args.sequential else 'interleaved'}, "
          f"best of {args.repeats}; "
          f"torch {torch.__version__} threads {torch.get_num_threads()}, transformers {transformers.__version__}"
          + ("; Trainer with its default optimizer settings" if args.trainer_defaults else ""))
    table = Table()
    for column in ("loop", "tokens", "seconds", "tokens/s", "steps/s", "final loss", "vs Trainer"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    for name, label in (("Trainer", "transformers Trainer (baseline)"), ("distillery", "distillery train_sft")):
        s = best[name]
        table.add_row(label, f"{s['tokens']:,}", f"{s['seconds']:.2f}", f"{s['tokens_per_s']:,.0f}",
                      f"{s['steps_per_s']:.2f}", f"{s['final_loss']:.3f}",
                      f"{s['tokens_per_s'] / best['Trainer']['tokens_per_s']:.2f}")
    Console(width=120).print(table)
    print(f"ratio_vs_transformers_trainer={ratio:.2f}")


if __name__ == "__main__":
    main()
