"""The at-least-once batch runtime every service uses (docs/architecture.md §3, §9).

One hop: consume a batch, validate each record into its event model (invalid
ones become dead letters with the reason), run the service's logic, publish every
output without awaiting each acknowledgement individually, wait for the whole
batch to be acknowledged, and only then commit the consumed offsets.
A crash anywhere before the commit means the batch is read again; deterministic
ids make the second pass produce the same events, which consumers drop by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from prometheus_client import Counter, Gauge, Histogram, Info
from pydantic import ValidationError

from distillery.contracts import ids
from distillery.contracts.events import Event, EventDeadLettered, NewerSchema, Trace, parse_event
from distillery.contracts.settings import ServiceSettings
from distillery.runtime.counting import child, count_by
from distillery.runtime.kafka import client_kwargs

log = logging.getLogger("distillery.runtime.bus")
E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class Out:
    """One event to publish: the topic and partition key travel with it."""

    topic: str
    event: Event
    key: str | None = None

    @property
    def partition_key(self) -> str:
        return self.key or self.event.key


@dataclass(frozen=True)
class In(Generic[E]):
    """One valid inbound event and the record it came from."""

    event: E
    record: ConsumerRecord


@dataclass(frozen=True)
class DeadLetter:
    """A batch handler's verdict on one record it cannot accept: it goes to the DLQ with ``reason``."""

    record: ConsumerRecord
    reason: str
    error: str


class Rejected(Exception):
    """Raised by service logic for an event it cannot accept; it is dead-lettered with ``reason``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


BatchHandler = Callable[[list[In[E]]], Awaitable[list[Out]]]
CommitLimit = Callable[[TopicPartition], int | None]


class CountAssigned(ConsumerRebalanceListener):
    """Keeps the assigned-partitions gauge of a group, then calls the service's own listener, if any."""

    def __init__(self, gauge: Any, inner: ConsumerRebalanceListener | None) -> None:
        self.gauge, self.inner = gauge, inner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self.inner is not None and inspect.isawaitable(done := self.inner.on_partitions_revoked(revoked)):
            await done

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.gauge.set(len(assigned))
        if self.inner is not None and inspect.isawaitable(done := self.inner.on_partitions_assigned(assigned)):
            await done


class Bus:
    """Publishing, dead-lettering and batch subscription for one service."""

    def __init__(self, broker: KafkaBroker, settings: ServiceSettings, service: str, version: str) -> None:
        self.broker = broker
        self.settings = settings
        self.service = service
        self.produced_by = f"{service}@{version}"
        self.topics = settings.topics
        self.consumers: dict[str, AIOKafkaConsumer] = {}  # last consumer seen per group
        self.producer: AIOKafkaProducer | None = None
        # Set by in-memory tests (FastStream's TestKafkaBroker): there is no cluster behind the broker,
        # so events are published through it, and there are no offsets to commit or lag to read.
        self.in_memory = False
        prefix = f"distillery_{service}"
        self.consumed = Counter(f"{prefix}_events_consumed_total", "Valid events consumed", ["topic"])
        self.published = Counter(f"{prefix}_events_published_total", "Events published", ["topic"])
        self.dead_letters = Counter(f"{prefix}_dead_letters_total", "Events sent to the DLQ", ["topic", "reason"])
        self.batch_seconds = Histogram(f"{prefix}_batch_seconds", "Seconds per consumed batch, publish included")
        self.lag = Gauge(f"{prefix}_consumer_lag", "Records behind the partition's end after the last committed batch",
                         ["topic", "partition"])
        # measured at the broker for the groups that read what this service writes: a stopped or hung
        # consumer reports no lag of its own, so its producer reports it (see runtime.service.watch_downstream)
        # 0 for a replica beyond the partition count (idle) and until a new group has joined
        self.assigned = Gauge(f"{prefix}_assigned_partitions", "Partitions assigned to this replica's consumer",
                              ["group"])
        self.downstream_lag = Gauge(f"{prefix}_downstream_lag", "Records the consumer group has not committed yet, "
                                    "on a topic this service writes to", ["group", "topic"])
        # services deploy and version on their own: which version runs is a metric (and a column of `status`)
        Info(f"{prefix}_build", "The running service's version").info({"version": version})

    # -- outputs -----------------------------------------------------------------

    async def start(self) -> None:
        """Outputs go through one plain aiokafka producer: a batch is sent without awaiting
        each acknowledgement, then awaited together. FastStream's per-message publish path
        cost as much as the rest of a hop (docs/benchmarks.md); its middleware still
        measures consumption."""
        self.producer = AIOKafkaProducer(acks="all", linger_ms=5, **client_kwargs(self.settings))
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def publish(self, outs: Iterable[Out]) -> None:
        """Send every event, then wait until the broker acknowledged all of them."""
        outs = list(outs)
        if self.in_memory:
            for out in outs:
                await self.broker.publish(out.event.model_dump_json().encode(), out.topic, key=out.partition_key.encode())
                child(self.published, out.topic).inc()
            return
        if self.producer is None:
            await self.start()
        futures = []
        for out in outs:
            payload = out.event.model_dump_json().encode()
            futures.append(await self.producer.send(out.topic, payload, key=out.partition_key.encode()))
        if futures:
            await asyncio.gather(*futures)
        count_by(self.published, ((out.topic,) for out in outs))

    def dead_letter(self, record: ConsumerRecord, error: str, reason: str = "invalid") -> Out:
        """A dead-letter event for ``record`` (deterministic id: one per source offset)."""
        child(self.dead_letters, record.topic, reason).inc()
        payload = record.value.decode("utf-8", errors="replace") if record.value else ""
        event = EventDeadLettered(
            dead_letter_id=ids.content_id("dlq", self.service, record.topic, record.partition, record.offset),
            produced_by=self.produced_by,
            service=self.service,
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            record_key=record.key.decode("utf-8", errors="replace") if record.key else None,
            payload=payload,
            error=f"{reason}: {error}",
            trace=Trace(causation_id=f"{record.topic}/{record.partition}/{record.offset}"),
        )
        return Out(self.topics.dlq, event, key=event.dead_letter_id)

    def resolve(self, outs: Iterable[Out | DeadLetter]) -> list[Out]:
        """A batch handler's results as events to publish: each DeadLetter becomes its DLQ event."""
        return [self.dead_letter(o.record, o.error, o.reason) if isinstance(o, DeadLetter) else o for o in outs]

    # -- inputs ------------------------------------------------------------------

    def decode(
        self, records: Iterable[ConsumerRecord], model: type[E] | dict[str, type[E]], max_bytes: int | None = None,
        parse: Callable[[bytes], E] | None = None,
    ) -> tuple[list[In[E]], list[Out]]:
        """Validate each record (with ``parse`` where the channel accepts more than its event model;
        ``model`` per topic where one consumer reads several); invalid or oversized ones become
        dead letters, the rest go on."""
        valid: list[In[E]] = []
        dead: list[Out] = []
        for record in records:
            size = len(record.value or b"")
            if max_bytes is not None and size > max_bytes:
                dead.append(self.dead_letter(record, f"{size} bytes > limit {max_bytes}", "oversized"))
                continue
            try:
                payload = record.value or b""
                model_here = model[record.topic] if isinstance(model, dict) else model
                event = parse(payload) if parse is not None else parse_event(model_here, payload)
                valid.append(In(event, record))  # type: ignore[arg-type]
            except NewerSchema as exc:
                dead.append(self.dead_letter(record, str(exc), "newer_schema"))
            except (ValidationError, ValueError, UnicodeDecodeError) as exc:
                dead.append(self.dead_letter(record, _short_error(exc), "invalid"))
            except Exception as exc:  # noqa: BLE001 - a record no parser foresaw must not stall its partition
                dead.append(self.dead_letter(record, _short_error(exc), "poison"))
        count_by(self.consumed, ((item.record.topic,) for item in valid))
        return valid, dead

    def per_event(self, fn: Callable[[In[E]], list[Out]]) -> BatchHandler[E]:
        """Turn a per-event function into a batch handler (see :func:`each`)."""

        async def handle(items: list[In[E]]) -> list[Out]:
            return self.resolve(each(items, fn))

        return handle

    def subscribe(
        self,
        topics: str | list[str],
        model: type[E] | dict[str, type[E]],
        handler: BatchHandler[E],
        *,
        group_id: str | None,
        commit_limit: CommitLimit | None = None,
        lock: asyncio.Lock | None = None,
        on_published: Callable[[], None] | None = None,
        on_failed: Callable[[], None] | None = None,
        max_records: int | None = None,
        max_bytes: int | None = None,
        parse: Callable[[bytes], E] | None = None,
        skip: Callable[[ConsumerRecord], bool] | None = None,
        start_at: Callable[[int], int] | None = None,
        **subscriber_options: Any,
    ) -> Any:
        """Register a batch subscriber with publish-then-commit semantics.

        ``commit_limit`` lets a stateful consumer (the judge) hold a partition's
        committed offset below work it has read but not finished; ``lock``
        serialises batches with that consumer's own background flushes.
        ``on_published`` / ``on_failed`` let in-memory state (the editor's dedup
        index) change only once the batch's outputs are durable. ``max_bytes``
        dead-letters larger records as ``oversized`` (the router bounds tasks; by default, the
        settings' ``max_event_bytes``). ``parse`` replaces the
        event model's own validation (the router also accepts bare tasks on the tasks topic).
        ``group_id=None`` reads every partition from the start and commits nothing (a broadcast
        consumer: state every replica must see); ``skip`` passes over records before they are
        decoded (those its start-up rebuild already read), and ``start_at`` (partition -> offset)
        moves such a consumer past them as soon as its first records show where it stands.
        """
        topic_list = [topics] if isinstance(topics, str) else topics
        max_bytes = self.settings.max_event_bytes if max_bytes is None else max_bytes
        if group_id is not None:
            self.assigned.labels(group_id).set(0)
            subscriber_options["listener"] = CountAssigned(self.assigned.labels(group_id),
                                                           subscriber_options.get("listener"))

        @self.broker.subscriber(
            *topic_list,
            group_id=group_id,
            batch=True,
            max_records=max_records or self.settings.batch_max_records,
            batch_timeout_ms=self.settings.batch_timeout_ms,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            decoder=_raw_records,  # records are validated below, one by one, so one bad record can't sink a batch
            **subscriber_options,
        )
        async def consume(msg: KafkaMessage) -> None:
            records: tuple[ConsumerRecord, ...] = msg.raw_message  # type: ignore[assignment]
            if group_id is not None:
                self.consumers[group_id] = msg.consumer
            if start_at is not None and not self.in_memory:
                seek_forward(msg.consumer, records, start_at)
            async with lock or contextlib.nullcontext():
                with self.batch_seconds.time():
                    fresh = [r for r in records if not skip(r)] if skip else records
                    items, dead = self.decode(fresh, model, max_bytes, parse)
                    try:
                        outs = await handler(items) if items else []
                        await self.publish([*outs, *dead])
                    except Exception:
                        if on_failed:
                            on_failed()
                        await msg.nack()  # rewind: the whole batch is read again
                        raise
                    if on_published:
                        on_published()
                    if not self.in_memory and group_id is not None:
                        await commit(msg.consumer, records, commit_limit)
                        self.record_lag(msg.consumer, records)

        return consume

    def record_lag(self, consumer: AIOKafkaConsumer, records: Iterable[ConsumerRecord]) -> None:
        """Lag per partition of the batch: the end offset the last fetch saw minus what was read.
        (Scaling on lag is KEDA's job, from the broker; this is what dashboards and alerts see.)"""
        read: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            read[tp] = max(read.get(tp, 0), record.offset + 1)
        for tp, offset in read.items():
            end = consumer.highwater(tp)
            if end is not None:
                self.lag.labels(tp.topic, str(tp.partition)).set(max(0, end - offset))


def seek_forward(consumer: AIOKafkaConsumer, records: Iterable[ConsumerRecord], start_at: Callable[[int], int]) -> None:
    """Move each partition whose records start before ``start_at(partition)`` to that offset: its next
    fetch starts there (this batch's early records are still passed over by ``skip``)."""
    firsts: dict[TopicPartition, int] = {}
    for record in records:
        firsts.setdefault(TopicPartition(record.topic, record.partition), record.offset)
    for tp, first in firsts.items():
        start = start_at(tp.partition)
        if first < start:
            consumer.seek(tp, start)


def each(items: Iterable[In[E]], fn: Callable[[In[E]], list[Out]]) -> list[Out | DeadLetter]:
    """``fn`` per event: an event it rejects, or whose logic raises, is dead-lettered alone (its
    reason, or ``poison`` with the error) and the batch goes on."""
    results: list[Out | DeadLetter] = []
    for item in items:
        try:
            results.extend(fn(item))
        except Rejected as exc:
            results.append(DeadLetter(item.record, exc.reason, str(exc)))
        except Exception as exc:  # noqa: BLE001 - poison events must not stop the service
            log.warning("poison event at %s: %s", item.record.offset, traceback.format_exc(limit=3))
            results.append(DeadLetter(item.record, "poison", _short_error(exc)))
    return results


async def _raw_records(msg: Any) -> Any:
    return msg.raw_message


async def commit(
    consumer: AIOKafkaConsumer, records: Iterable[ConsumerRecord], limit: CommitLimit | None = None
) -> None:
    """Commit the next offset of each partition in the batch, capped by ``limit``."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
    if limit:
        for tp in list(offsets):
            cap = limit(tp)
            if cap is not None:
                offsets[tp] = min(offsets[tp], cap)
    if offsets:
        await consumer.commit(offsets)


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(event)"
        return f"{exc.error_count()} validation error(s); first at '{loc}': {first['msg']}"
    return f"{type(exc).__name__}: {exc}"[:500]
