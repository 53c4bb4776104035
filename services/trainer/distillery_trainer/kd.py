"""Logit distillation from a teacher's cached top-k log probabilities.

The teacher run stores, per completion token, the k most likely next tokens and their log
probabilities (see ``Generator.generate(top_logprobs=k)``). A student sharing the teacher's
vocabulary can then learn the teacher's whole next-token distribution at each target position,
not only the one token the teacher chose, without the teacher being loaded at training time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

TopLogprobs = list[list[tuple[int, float]]]
PositionTops = list[list[tuple[int, float]] | None]  # one row's top-k lists by position, None where unknown


@dataclass
class TeacherTokens:
    """What the teacher generated for one prompt: its completion ``token_ids`` and, for each of
    them, the teacher's top-k ``(token_id, logprob)`` pairs at that position."""

    token_ids: list[int]
    top_logprobs: TopLogprobs

    def __post_init__(self) -> None:
        if len(self.token_ids) != len(self.top_logprobs):
            raise ValueError(
                f"teacher tokens and top_logprobs differ in length: {len(self.token_ids)} vs {len(self.top_logprobs)}"
            )
        if any(not pairs for pairs in self.top_logprobs):
            raise ValueError("every teacher position needs at least one (token_id, logprob) pair")


def match_teacher(teacher: TeacherTokens, target_ids: list[int], eos_id: int) -> TopLogprobs | None:
    """The teacher's top-k lists aligned to ``target_ids + [eos_id]`` (the student's labels), or None.

    A teacher distribution is the right signal at a target position only when the student's
    target got there through exactly the teacher's tokens. So the signal covers the tokens the
    target shares with the teacher's output from the start (an editor that trims a closing
    sentence keeps the signal on the rest), plus the EOS position when the whole text matches
    and the teacher itself ended there. None when the first tokens already differ.
    """
    ids, top = teacher.token_ids, teacher.top_logprobs
    ended = bool(ids) and ids[-1] == eos_id
    text = ids[: len(ids) - ended]
    shared = 0
    while shared < min(len(text), len(target_ids)) and text[shared] == target_ids[shared]:
        shared += 1
    if shared == 0:
        return None
    whole = shared == len(text) == len(target_ids)
    return top[: shared + (ended and whole)]


def pad_top_logprobs(positions: list[PositionTops | None], width: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row top-k lists as ``(rows, width, k)`` id and logprob tensors.

    Missing positions and the slots of shorter lists hold logprob -inf, which gives them zero
    teacher probability; a position with no finite entry carries no KD signal.
    """
    ids = torch.zeros(len(positions), width, k, dtype=torch.long)
    logprobs = torch.full((len(positions), width, k), float("-inf"))
    for row, lists in enumerate(positions):
        for col, pairs in enumerate(lists or []):
            if pairs is None:
                continue
            ids[row, col, : len(pairs)] = torch.tensor([token for token, _ in pairs])
            logprobs[row, col, : len(pairs)] = torch.tensor([value for _, value in pairs])
    return ids, logprobs


def kd_token_loss(
    student_log_probs: torch.Tensor, teacher_ids: torch.Tensor, teacher_logprobs: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-position KD loss: cross entropy of the student's full-vocabulary log-softmax at
    ``temperature`` against the teacher's top-k renormalised at the same temperature, times T^2.

    This is KL(teacher || student) up to the teacher's entropy, a constant for the student; the
    T^2 factor keeps gradient sizes comparable to plain cross entropy across temperatures.
    ``student_log_probs`` is (positions, vocab), already ``log_softmax(logits / temperature)`` so a
    caller at T = 1 reuses the one it computed for cross entropy; the teacher tensors are
    (positions, k). Positions without any finite teacher logprob get 0.
    """
    signal = torch.isfinite(teacher_logprobs).any(dim=-1, keepdim=True)
    teacher = torch.softmax(teacher_logprobs.masked_fill(~signal, 0.0) / temperature, dim=-1)
    loss = -(teacher * student_log_probs.gather(1, teacher_ids)).sum(dim=-1) * temperature**2
    return torch.where(signal.squeeze(-1), loss, 0.0)


def restricted_kl(
    student_logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_logprobs: torch.Tensor
) -> torch.Tensor:
    """Per-position KL(teacher top-k || student), both renormalised over the teacher's k ids.

    Restricting the student to the same ids makes the figure comparable across students however
    they spread the remaining probability over the rest of the vocabulary.
    """
    present = torch.isfinite(teacher_logprobs)
    student = student_logits.float().gather(1, teacher_ids).masked_fill(~present, float("-inf"))
    log_student = F.log_softmax(student, dim=-1)
    log_teacher = F.log_softmax(teacher_logprobs, dim=-1)
    terms = torch.where(present, log_teacher.exp() * (log_teacher - log_student), 0.0)
    return terms.sum(dim=-1)
