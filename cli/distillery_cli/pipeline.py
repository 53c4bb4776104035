"""What the CLI asks of a running pipeline: counts, pools, lag, metrics, events."""

from __future__ import annotations

import asyncio
from collections import Counter

from distillery.contracts.channels import CHANNELS, Channel, Consumer, group_name
from distillery.contracts.events import (
    CandidatesJudged,
    EvaluationCompleted,
    Event,
    EventDeadLettered,
    live_samples,
    parse_sample_record,
)
from distillery.contracts.settings import ConfigError, ServiceSettings
from distillery.runtime.kafka import consumer_lag, replay, topic_counts
from distillery_cli import stack
from distillery_cli.stack import StackState


def resolve_student(spec, student: str | None) -> str:
    """The named student, or the spec's main student (the first declared) when none is named."""
    if student is None and spec.students:
        return next(iter(spec.students))
    if student not in spec.students:
        raise ConfigError(f"unknown student '{student}' (spec has {', '.join(sorted(spec.students)) or 'none'})")
    return student


def settings_for(state: StackState) -> ServiceSettings:
    return ServiceSettings.model_validate(
        {"KAFKA_BOOTSTRAP_SERVERS": state.bootstrap, "topic_prefix": state.topic_prefix}
    )


def events(settings: ServiceSettings, topic: str, model: type[Event]) -> list[Event]:
    """The topic's events that parse as ``model``, from the start to its current end."""
    return asyncio.run(replay(settings, topic, model)).events


def counts(settings: ServiceSettings, teacher_ids: list[str]) -> dict[str, int]:
    return asyncio.run(topic_counts(settings, list(settings.topics.all_topics(teacher_ids))))


def pools(settings: ServiceSettings) -> Counter:
    """Candidates per (pool, teacher), one verdict per task and judge version (all versions shown)."""
    seen: dict[str, CandidatesJudged] = {}
    for verdict in events(settings, settings.topics.verdicts, CandidatesJudged):
        seen[verdict.verdict_id] = verdict
    return Counter((jc.pool, jc.teacher_id) for v in seen.values() for jc in v.candidates)


def sample_counts(settings: ServiceSettings) -> Counter:
    """Live samples (retracted ones no longer count) per unit, pool and pathway."""
    history = asyncio.run(replay(settings, settings.topics.samples, parse_sample_record)).events
    return Counter((s.unit, s.pool, s.pathway) for s in live_samples(history))


def group_topics(state: StackState) -> dict[str, tuple[str, str]]:
    """Lag view row (service + group suffix) -> (consumer group, input topic), from the channel table:
    every consumer a service always has; a teacher per running teacher; each running judge's group
    (it names the judge's version, so the judge reports it)."""
    topics = settings_for(state).topics
    groups = {}
    for channel in CHANNELS:
        for consumer in channel.consumers:
            if consumer.optional or consumer.broadcast or consumer.service in ("teacher", "judge"):
                continue  # (a broadcast consumer has no group, so no lag)
            groups[row_name(channel, consumer)] = (group_name(consumer.service, consumer.suffix), topics.of(channel.stem))
    for proc in state.processes:
        if proc.name.startswith("teacher-"):
            teacher = proc.name.removeprefix("teacher-")
            groups[proc.name] = (group_name("teacher", teacher_id=teacher), topics.generation_requests(teacher))
    for proc in state.processes:  # the judge, and any replay judge
        if proc.name == "judge" or proc.name.startswith("judge-replay-"):
            judge_group = metric_value(state, proc.name, "distillery_judge_group_info", label="group")
            if judge_group:
                groups[proc.name] = (judge_group, topics.candidates)
    return groups


def row_name(channel: Channel, consumer: Consumer) -> str:
    """``editor``; a second channel read by the same consumer is named too: ``editor (reviews)``."""
    name = consumer.service + consumer.suffix
    return f"{name} ({channel.stem})" if consumer.together_with else name


def lags(state: StackState) -> dict[str, int]:
    settings = settings_for(state)
    out = {}
    for name, (group, topic) in group_topics(state).items():
        out[name] = asyncio.run(consumer_lag(settings, group, [topic]))[topic]
    return out


def metrics(state: StackState, service: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A service's /metrics as {sample name: [(labels, value)]}; empty if it does not answer."""
    return stack.scrape(state.process(service)) or {}


def metric_value(state: StackState, service: str, name: str, label: str | None = None):
    samples = metrics(state, service).get(name, [])
    if not samples:
        return None
    labels, value = samples[0]
    return labels.get(label) if label else value


def service_version(state: StackState, proc) -> str | None:
    """The version a running service reports (``distillery_<service>_build_info``), None if it does not answer."""
    service = proc.module.removeprefix("distillery_")
    return metric_value(state, proc.name, f"distillery_{service}_build_info", label="version")


def refusals(settings: ServiceSettings, request_ids: list[str]) -> dict[str, str]:
    """Why the trainer dead-lettered each of these training requests, for those it did."""
    wanted = set(request_ids)
    return {d.record_key: d.error for d in events(settings, settings.topics.dlq, EventDeadLettered)
            if d.source_topic == settings.topics.training_requests and d.record_key in wanted}


def latest_evaluation(settings: ServiceSettings) -> EvaluationCompleted | None:
    """The latest evaluation of a student trained on its recipe (attribution variants aside)."""
    evals = [e for e in events(settings, settings.topics.evaluations, EvaluationCompleted) if e.variant is None]
    return max(evals, key=lambda e: e.produced_at) if evals else None
