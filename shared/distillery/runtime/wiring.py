"""Handlers, their dependencies and subscriptions: how a service's use cases meet the bus.

A service's use cases are module-level handlers in its ``handlers.py``:

* per event: ``on_<event>(event, deps) -> list[Out]``; raising :class:`Rejected` dead-letters
  that one event with the reason;
* per batch (``batch=True``): ``async on_<event>(items: list[In[E]], deps) -> list[Out | DeadLetter]``,
  for work that is cheaper per batch (a model call) or needs the records (offsets, commits).

``deps`` is the service's small typed object (a :class:`Context` subclass built by its
``bootstrap.py``): the spec, topic names, state, scorers. Handlers take no bus, so tests call them
in-process with plain objects. ``SUBSCRIPTIONS`` lists (channel, model, handler, consumer suffix);
:func:`wire` registers them with the topics and consumer groups of the channel table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from distillery.contracts.channels import BY_STEM, Consumer
from distillery.contracts.channels import Topics as Topics
from distillery.contracts.events import Event
from distillery.contracts.spec import CapabilitySpec
from distillery.runtime.bus import Bus, DeadLetter, In, Out


@dataclass(kw_only=True)
class Context:
    """What every handler may use. A service's deps subclass it and add their own state."""

    spec: CapabilitySpec
    topics: Topics = field(default_factory=Topics)
    produced_by: str = "test@0"
    # the deployment's channel parameters: {teacher_id} of a teacher, {judge_version} of a judge
    params: dict[str, str] = field(default_factory=dict)


def always(deps: Any) -> bool:
    return True


def no_options(deps: Any) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Subscription:
    """One consumer of the channel table: ``stem`` is the channel, ``suffix`` picks the consumer group."""

    stem: str
    model: type[Event]
    handler: Callable[..., Any]
    suffix: str = ""
    batch: bool = False
    enabled: Callable[[Any], bool] = always  # e.g. the router reads verdicts only for value routing
    options: Callable[[Any], dict[str, Any]] = no_options  # bus.subscribe keywords that need the deps
    # channels read by the same consumer (their table entry says ``together_with`` this stem): stem -> model
    also: dict[str, type[Event]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for stem, model in {self.stem: self.model, **self.also}.items():
            channel = BY_STEM.get(stem)
            if channel is None:
                raise ValueError(f"subscription to unknown channel '{stem}'")
            if model not in channel.events:
                raise ValueError(f"{model.__name__} is not an event of channel '{stem}'")

    def consumer(self, service: str) -> Consumer:
        """This subscription's entry in the channel table."""
        return next(c for c in BY_STEM[self.stem].consumers if c.service == service and c.suffix == self.suffix)


def after_rebuild(deps: Any) -> dict[str, Any]:
    """Options of a broadcast follower whose start-up rebuild read its topic up to ``deps.rebuilt_to``
    (partition -> end offset): it passes over those records, so a restart neither counts them again
    nor dead-letters their garbage a second time, and seeks past them rather than fetching a history
    it would only skip."""
    return {"skip": lambda record: record.offset < deps.rebuilt_to.get(record.partition, 0),
            "start_at": lambda partition: deps.rebuilt_to.get(partition, 0)}


def wire(bus: Bus, service: str, subscriptions: Sequence[Subscription], deps: Context) -> list[str]:
    """Register the enabled subscriptions on ``bus``; returns their consumer groups.

    A broadcast consumer has no group: every replica reads every partition from the start.
    Channels read together share one consumer, range-assigned, so partition i of each goes to the
    same replica (they are co-partitioned: same key, same partition count).
    """
    groups = []
    for sub in subscriptions:
        if not sub.enabled(deps):
            continue
        teacher_id = deps.params.get("teacher_id")
        models = {bus.topics.of(stem, teacher_id=teacher_id): model for stem, model in {sub.stem: sub.model, **sub.also}.items()}
        options = sub.options(deps)
        if sub.also:
            options.setdefault("partition_assignment_strategy", (RangePartitionAssignor,))
        group = None if sub.consumer(service).broadcast else bus.settings.group(service, sub.suffix, **deps.params)
        model: Any = sub.model if len(models) == 1 else models
        bus.subscribe(list(models), model, _adapt(bus, sub, deps), group_id=group, **options)
        if group is not None:
            groups.append(group)
    return groups


def _adapt(bus: Bus, sub: Subscription, deps: Context) -> Callable[[list[In[Any]]], Awaitable[list[Out]]]:
    if sub.batch:
        async def handle_batch(items: list[In[Any]]) -> list[Out]:
            return bus.resolve(await sub.handler(items, deps))

        return handle_batch
    return bus.per_event(lambda item: sub.handler(item.event, deps))


__all__ = ["Context", "DeadLetter", "In", "Out", "Subscription", "Topics", "after_rebuild", "wire"]
