"""Routing decisions as plain functions: a task (or a chain step's result) in, requests out.

Every request records why its teacher was chosen: the strategy, the rule or the score.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from distillery.contracts import ids
from distillery.contracts.events import (
    CandidateGenerated,
    Chain,
    ChainStep,
    GenerationRequested,
    LoopDecided,
    RegenerationRequested,
    Task,
    TaskSubmitted,
    Trace,
)
from distillery.contracts.spec import CapabilitySpec, ExpertRule, UnitSpec
from distillery.contracts.submission import check_reference_fits
from distillery.runtime.bus import Rejected
from distillery_router.feedback import ValueTable

# The request a teacher answers for a pure price estimate: ~300 prompt, ~100 completion tokens.
TYPICAL_TOKENS = (300, 100)


@dataclass(frozen=True)
class Choice:
    teacher: str
    reason: str
    rule: str | None = None
    score: float | None = None


def unit_of(task: Task, spec: CapabilitySpec) -> UnitSpec:
    unit = spec.units.get(task.unit)
    if unit is None:
        raise Rejected("unknown_unit", f"unknown capability unit '{task.unit}' (spec has {sorted(spec.units)})")
    return unit


def rule_matches(rule: ExpertRule, task: Task, unit: UnitSpec) -> bool:
    return (
        (rule.risk is None or rule.risk == unit.risk)
        and (rule.difficulty is None or rule.difficulty == task.metadata.get("difficulty"))
        and (rule.scenario is None or rule.scenario == task.metadata.get("scenario"))
        and (rule.has_tools is None or rule.has_tools == bool(task.tools))
        and (rule.prompt_matches is None or re.search(rule.prompt_matches, task.prompt) is not None)
    )


def choose(task: Task, unit: UnitSpec, spec: CapabilitySpec, table: ValueTable | None) -> list[Choice]:
    """The teachers that answer first, with the reason for each."""
    routing, name = unit.routing, task.unit
    if routing.strategy == "single":
        return [Choice(routing.teachers[0], f"unit '{name}' routes single to '{routing.teachers[0]}'")]
    if routing.strategy == "competition":
        return [Choice(t, f"unit '{name}' runs a competition of {len(routing.teachers)}: '{t}' vs "
                          f"{[o for o in routing.teachers if o != t]}") for t in routing.teachers]
    if routing.strategy == "experts":
        for i, rule in enumerate(routing.rules):
            if rule_matches(rule, task, unit):
                return [Choice(rule.teacher, f"unit '{name}' expert rule {i} ({rule.name}) picks '{rule.teacher}'",
                               rule=f"rules[{i}]: {rule.name}")]
        if routing.default:
            return [Choice(routing.default, f"unit '{name}': no expert rule matched; default '{routing.default}'",
                           rule="default")]
        raise Rejected("no_expert_rule", f"unit '{name}': no expert rule matches the task and no default is declared")
    if routing.strategy == "chain":
        return [Choice(routing.teachers[0], f"unit '{name}' chain step 1/{len(routing.teachers)} "
                                            f"({_roles(unit)[0]}) by '{routing.teachers[0]}'")]
    # value: Thompson sampling on the learned table, seeded by the task so a redelivery chooses alike
    prices = {t: spec.teachers[t].price.cost(*TYPICAL_TOKENS, 1.0) for t in routing.teachers}
    teacher, score = (table or ValueTable()).choose(name, routing.teachers, random.Random(task.task_id), prices)
    return [Choice(teacher, f"unit '{name}' value routing: '{teacher}' has the best sampled acceptance per USD "
                            f"({score:.4g})", score=round(score, 6))]


def _roles(unit: UnitSpec) -> list[str]:
    return unit.routing.roles or [f"step{i + 1}" for i in range(len(unit.routing.teachers))]


def _request(task: Task, unit: UnitSpec, spec: CapabilitySpec, choice: Choice, expected: int, produced_by: str,
             causation: str, chain: Chain | None = None) -> GenerationRequested:
    step = chain.step if chain else None
    return GenerationRequested(
        request_id=ids.content_id("req", task.task_id, choice.teacher, 1, step) if chain
        else ids.request_id_for(task.task_id, choice.teacher),
        task=task,
        teacher_id=choice.teacher,
        strategy=unit.routing.strategy,
        route_reason=choice.reason,
        route_rule=choice.rule,
        route_score=choice.score,
        expected_candidates=expected,
        max_new_tokens=unit.routing.max_new_tokens or spec.teachers[choice.teacher].max_new_tokens,
        chain=chain,
        produced_by=produced_by,
        trace=Trace(task_id=task.task_id, causation_id=causation),
    )


def route(event: TaskSubmitted, spec: CapabilitySpec, produced_by: str, table: ValueTable | None = None) -> list[GenerationRequested]:
    """First requests for a task; unknown units and unroutable tasks are rejected."""
    task = event.task
    unit = unit_of(task, spec)
    try:  # an envelope skips the front door's line checks: the reference must still fit the checker
        check_reference_fits(task, spec)
    except ValueError as exc:
        raise Rejected("reference_mismatch", str(exc)) from None
    choices = choose(task, unit, spec, table)
    chain = Chain(roles=_roles(unit), teachers=unit.routing.teachers, step=0) if unit.routing.strategy == "chain" else None
    # the judge waits for one candidate per competitor; a chain delivers one final candidate
    expected = len(choices)
    return [_request(task, unit, spec, c, expected, produced_by, event.event_id, chain) for c in choices]


def in_share(task_id: str, student_id: str, share: float) -> bool:
    """Whether a task is in a promoted student's shadow share: a hash of the task and the student,
    so a redelivery or a replay sends the same tasks, and a new student draws a fresh sample."""
    digest = hashlib.sha256(f"{task_id}/{student_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < int(share * 2**64)  # integers: share 1.0 takes every task


def shadow_requests(event: TaskSubmitted, spec: CapabilitySpec, promoted: dict[tuple[str, str], LoopDecided],
                    produced_by: str) -> list[GenerationRequested]:
    """The extra requests of a task whose unit a student is promoted for (docs/evaluator.md): to the
    student's deployment, tagged ``shadow``, for ``promotion.share`` of the unit's tasks. The
    teachers are asked as always: a shadow answer never replaces theirs."""
    task = event.task
    out = []
    for (student, unit), decision in sorted(promoted.items()):
        policy = spec.promotion.get(student)
        if unit != task.unit or policy is None or not in_share(task.task_id, decision.student_id, policy.share):
            continue
        out.append(GenerationRequested(
            request_id=ids.content_id("shadow", task.task_id, policy.deployment, decision.student_id),
            task=task, teacher_id=policy.deployment, strategy="shadow",
            route_reason=f"shadow: {student} promoted for {unit} ({decision.student_id}), {policy.share:.0%} of its tasks",
            expected_candidates=1, max_new_tokens=spec.students[student].max_new_tokens, shadow=True,
            produced_by=produced_by, trace=Trace(task_id=task.task_id, causation_id=event.event_id),
        ))
    return out


def next_chain_step(cand: CandidateGenerated, spec: CapabilitySpec, produced_by: str) -> GenerationRequested | None:
    """After a non-final chain step: the next step's request, carrying every output so far.

    A failed step ends the chain: the failure candidate goes to the judge as the task's answer.
    """
    chain = cand.chain
    if chain is None or chain.is_final or cand.error:
        return None
    unit = unit_of(cand.task, spec)
    done = ChainStep(role=chain.role, teacher_id=cand.teacher_id, candidate_id=cand.candidate_id, text=cand.text,
                     cost_usd=cand.cost_usd)
    nxt = chain.model_copy(update={"step": chain.step + 1, "prior": [*chain.prior, done]})
    teacher = chain.teachers[nxt.step]
    reason = (f"unit '{cand.task.unit}' chain step {nxt.step + 1}/{len(chain.teachers)} ({nxt.role}) by '{teacher}' "
              f"after {done.role}")
    return _request(cand.task, unit, spec, Choice(teacher, reason), 1, produced_by, cand.event_id, nxt)


def regenerate(event: RegenerationRequested, spec: CapabilitySpec, produced_by: str) -> list[GenerationRequested]:
    """Another attempt by the same teachers with the judge's feedback; the router enforces the limit."""
    task = event.task
    unit = unit_of(task, spec)
    if event.attempt > unit.max_attempts:
        raise Rejected("attempt_limit", f"unit '{task.unit}' allows {unit.max_attempts} attempt(s); "
                                        f"attempt {event.attempt} refused")
    requests = []
    for teacher in event.teachers:
        if teacher not in spec.teachers:
            raise Rejected("unknown_teacher", f"regeneration names unknown teacher '{teacher}'")
        requests.append(GenerationRequested(
            request_id=ids.request_id_for(task.task_id, teacher, event.attempt),
            task=task,
            teacher_id=teacher,
            strategy=unit.routing.strategy,
            route_reason=f"unit '{task.unit}' attempt {event.attempt}/{unit.max_attempts} by '{teacher}': "
                         f"the judge rejected every candidate of the previous attempt",
            expected_candidates=len(event.teachers),
            attempt=event.attempt,
            feedback=event.feedback,
            max_new_tokens=unit.routing.max_new_tokens or spec.teachers[teacher].max_new_tokens,
            produced_by=produced_by,
            trace=Trace(task_id=task.task_id, causation_id=event.event_id),
        ))
    return requests
