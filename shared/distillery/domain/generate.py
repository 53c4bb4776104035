"""Batched generation with exact token accounting and a per-completion confidence score.

Teachers produce the distillation data and students are evaluated with the same code, so the
numbers it reports (token counts, finish reason, mean token probability) feed cost accounting and
the filters that catch a teacher's mistakes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from distillery.domain.models import ensure_pad_token, tokenizer_fingerprint


@dataclass
class Generation:
    """One completion.

    ``completion_tokens`` counts the tokens the model actually produced for this item, up to and
    including the EOS token or the token that completed a stop string (padding is never counted),
    even though ``text`` is cut before the stop string. ``mean_token_prob`` is the mean probability
    the model gave those tokens before any temperature scaling; :class:`Generator` always sets it,
    None is left for backends that cannot score their tokens. ``error`` is set (and the other
    fields are empty) when a backend could not get this one completion (e.g. a server that still
    failed after its retries); the teacher turns it into a failed candidate, so one bad request
    never fails its batch. ``token_ids`` (the tokens ``completion_tokens`` counts) and
    ``top_logprobs`` (per such token, the k most likely ``(token_id, logprob)`` pairs under the raw
    logits, most likely first) are set only when asked for, to cache for logit distillation;
    ``tokenizer`` is then the :func:`~distillery.domain.models.tokenizer_fingerprint` of the tokenizer
    those ids belong to, so a student with another vocabulary never trains on them.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]
    mean_token_prob: float | None
    seconds: float
    error: str | None = None
    token_ids: list[int] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None
    tokenizer: str | None = None


def render_chat(tokenizer: PreTrainedTokenizerBase, system: str, user: str) -> str:
    """Turn a system and a user message into the prompt text the model was trained to continue.

    An empty ``system`` is left out, so a template's own default system prompt (SmolLM2 has one)
    applies. Tokenizers without a chat template (base models, tiny students) get a plain fallback.
    """
    if tokenizer.chat_template:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    header = f"System: {system}\n" if system else ""
    return f"{header}User: {user}\nAssistant:"


class _StopStrings(StoppingCriteria):
    """Ends each row as soon as its decoded completion contains a stop string, and records when.

    Decoding the whole completion each step is cheap next to a forward pass and, unlike matching
    token ids, catches a stop string however the tokenizer happens to split it.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: list[str], prompt_len: int, rows: int) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.prompt_len = prompt_len
        self.stopped_at: list[int | None] = [None] * rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs) -> torch.BoolTensor:
        completions = input_ids[:, self.prompt_len :]
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        done = [any(s in text for s in self.stop) for text in texts]
        for row, hit in enumerate(done):
            if hit and self.stopped_at[row] is None:
                self.stopped_at[row] = completions.shape[1]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _truncate_at_stop(text: str, stop: list[str]) -> str:
    """Cut ``text`` before the earliest stop string, so callers never see the stop marker."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def _completion_length(tokens: list[int], eos_ids: set[int], stopped_at: int | None) -> tuple[int, bool]:
    """Number of real completion tokens and whether EOS or a stop string (not the budget) ended it."""
    eos_end = next((i + 1 for i, token in enumerate(tokens) if token in eos_ids), None)
    ends = [end for end in (eos_end, stopped_at) if end is not None]
    return (min(ends), True) if ends else (len(tokens), False)


def _chosen_token_probs(step_logits: tuple[torch.Tensor, ...], completions: torch.Tensor) -> torch.Tensor:
    """Probability of each generated token under the raw logits, as a (rows, steps) tensor.

    Reduced one step at a time so the (rows, steps, vocab) stack is never materialised.
    """
    probs = [
        torch.softmax(logits.float(), dim=-1).gather(1, completions[:, step : step + 1])
        for step, logits in enumerate(step_logits)
    ]
    return torch.cat(probs, dim=1)


def _top_logprobs(step_logits: tuple[torch.Tensor, ...], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k highest log-softmax values of the raw logits and their token ids, each a
    (rows, steps, k) tensor sorted descending; reduced per step like :func:`_chosen_token_probs`."""
    tops = [torch.log_softmax(logits.float(), dim=-1).topk(k, dim=-1) for logits in step_logits]
    return torch.stack([top.values for top in tops], dim=1), torch.stack([top.indices for top in tops], dim=1)


class Generator:
    """Batched, left-padded generation for a causal LM and its tokenizer."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        device: str | torch.device | None = None,
    ) -> None:
        """Wrap ``model``; pass ``device`` to move it there, otherwise it stays where it is."""
        self.model = model if device is None else model.to(device)
        self.tokenizer = ensure_pad_token(tokenizer)
        self.eos_ids = self._eos_ids()
        self._fingerprint: str | None = None

    def _eos_ids(self) -> set[int]:
        """Every token that ends a turn: the model's configured EOS ids plus the tokenizer's."""
        configured = self.model.generation_config.eos_token_id
        ids = {configured} if isinstance(configured, int) else set(configured or [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def generate(
        self,
        prompts: list[str],
        max_new_tokens: int,
        stop: list[str] | None = None,
        temperature: float = 0.0,
        batch_size: int = 8,
        top_logprobs: int = 0,
    ) -> list[Generation]:
        """Complete every prompt (already rendered text), greedily when ``temperature`` is 0.

        ``top_logprobs`` > 0 also records each completion's token ids and the teacher's top-k
        log probabilities per token, which logit distillation trains a student on.
        """
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if top_logprobs < 0:
            raise ValueError(f"top_logprobs must be >= 0, got {top_logprobs}")
        # Batch prompts of similar length together: left padding to the longest prompt
        # of a batch is pure wasted compute. Results come back in the caller's order.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            generated = self._generate_batch(
                [prompts[i] for i in chunk], max_new_tokens, stop or [], temperature, top_logprobs
            )
            for i, gen in zip(chunk, generated, strict=True):
                results[i] = gen
        return results  # type: ignore[return-value]

    def fingerprint(self) -> str:
        """The tokenizer's fingerprint, hashed on first use (the vocabulary is ~50-150k entries)."""
        if self._fingerprint is None:
            self._fingerprint = tokenizer_fingerprint(self.tokenizer)
        return self._fingerprint

    def _sampling_kwargs(self, temperature: float) -> dict:
        """Greedy decoding at temperature 0, plain sampling otherwise."""
        if temperature > 0:
            return {"do_sample": True, "temperature": temperature}
        return {"do_sample": False}

    def _generate_batch(
        self, batch: list[str], max_new_tokens: int, stop: list[str], temperature: float, top_logprobs: int = 0
    ) -> list[Generation]:
        """Generate one batch and turn the raw output into :class:`Generation` records."""
        started = time.perf_counter()
        with torch.inference_mode():
            encoded = self.tokenizer(batch, return_tensors="pt", padding=True, padding_side="left")
            encoded = encoded.to(self.model.device)
            prompt_len = encoded["input_ids"].shape[1]
            stopper = _StopStrings(self.tokenizer, stop, prompt_len, len(batch))
            output = self.model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                eos_token_id=sorted(self.eos_ids),
                pad_token_id=self.tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([stopper] if stop else []),
                output_logits=True,
                return_dict_in_generate=True,
                **self._sampling_kwargs(temperature),
            )
            completions = output.sequences[:, prompt_len:]
            probs = _chosen_token_probs(output.logits, completions).cpu()
            top = [t.cpu() for t in _top_logprobs(output.logits, top_logprobs)] if top_logprobs > 0 else None
        prompt_tokens = encoded["attention_mask"].sum(dim=1).tolist()
        seconds = (time.perf_counter() - started) / len(batch)
        records = []
        for row in range(len(batch)):
            tokens = completions[row].tolist()
            record = self._record(tokens, probs[row], prompt_tokens[row], stopper.stopped_at[row], stop, seconds)
            if top is not None:
                _attach_top_logprobs(record, tokens, top[0][row], top[1][row])
                record.tokenizer = self.fingerprint()
            records.append(record)
        return records

    def _record(
        self,
        tokens: list[int],
        probs: torch.Tensor,
        prompt_tokens: int,
        stopped_at: int | None,
        stop: list[str],
        seconds: float,
    ) -> Generation:
        """Build one record: real tokens only, text cut at the first stop string."""
        length, ended = _completion_length(tokens, self.eos_ids, stopped_at)
        text = self.tokenizer.decode(tokens[:length], skip_special_tokens=True)
        return Generation(
            text=_truncate_at_stop(text, stop),
            prompt_tokens=prompt_tokens,
            completion_tokens=length,
            finish_reason="stop" if ended else "length",
            mean_token_prob=probs[:length].mean().item(),
            seconds=seconds,
        )


def _attach_top_logprobs(record: Generation, tokens: list[int], values: torch.Tensor, ids: torch.Tensor) -> None:
    """Set ``token_ids`` and ``top_logprobs`` on ``record`` for the tokens it counts.

    Done after :meth:`Generator._record` rather than inside it, so subclasses overriding that hook
    keep working unchanged.
    """
    length = record.completion_tokens
    record.token_ids = tokens[:length]
    record.top_logprobs = [
        list(zip(step_ids, step_values, strict=True))
        for step_ids, step_values in zip(ids[:length].tolist(), values[:length].tolist(), strict=True)
    ]
