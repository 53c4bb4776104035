"""Plain aiokafka helpers: client config, topic creation, snapshot reads, lag.

End offsets come from the high watermark of a fetch, not ListOffsets, because the
embedded Tansu broker answers ListOffsets(latest) wrongly; the fetch watermark is
right on Tansu and on Apache Kafka alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from distillery.contracts.events import parse_event
from distillery.contracts.settings import ServiceSettings

T = TypeVar("T")
log = logging.getLogger("distillery.kafka")


def client_kwargs(settings: ServiceSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        # aiokafka takes the same username/password arguments for PLAIN and SCRAM
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        kwargs.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password,
        )
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        def path(p):
            return str(p) if p is not None else None

        kwargs["ssl_context"] = create_ssl_context(cafile=path(settings.kafka_ssl_cafile),
                                                   certfile=path(settings.kafka_ssl_certfile),
                                                   keyfile=path(settings.kafka_ssl_keyfile))
    return kwargs


async def ensure_topics(settings: ServiceSettings, topics: dict[str, int]) -> None:
    """Create topics with explicit partition counts; existing ones are left alone."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, num_partitions=p, replication_factor=1) for n, p in topics.items() if n not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process created them first
    finally:
        await admin.close()


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    # aiokafka's metadata covers only subscribed topics; add_topic makes it fetch this one too.
    await consumer._client.add_topic(topic)
    for _ in range(50):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    return []


async def high_watermarks(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """End offset per partition, read from fetch responses (see module docstring)."""
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    marks: dict[TopicPartition, int] = {}
    for _ in range(20):
        await consumer.getmany(*tps, timeout_ms=200, max_records=1)
        for tp in tps:
            mark = consumer.highwater(tp)
            if mark is not None:
                marks[tp] = mark
        if len(marks) == len(tps):
            break
    return marks


@dataclass
class Snapshot:
    """Records of a topic read from the beginning up to fixed end offsets."""

    records: list[ConsumerRecord]
    end_offsets: dict[int, int]


async def read_snapshot(settings: ServiceSettings, topic: str, upto: dict[int, int] | None = None,
                        since: dict[int, int] | None = None) -> Snapshot:
    """Read ``topic`` from the start (or from the offsets ``since``) to its current end offsets (fixed at
    call time), or to the offsets ``upto`` (partition -> end offset) of an earlier snapshot, so runs can
    share one."""
    records: list[ConsumerRecord] = []
    ends: dict[int, int] = {}
    async for chunk in read_chunks(settings, topic, upto, since, ends):
        records.extend(chunk)
    return Snapshot(records, ends)


async def read_chunks(settings: ServiceSettings, topic: str, upto: dict[int, int] | None = None,
                      since: dict[int, int] | None = None,
                      ends_out: dict[int, int] | None = None) -> AsyncIterator[list[ConsumerRecord]]:
    """The records of ``topic`` from ``since`` (default: the start) to its end offsets now (or
    ``upto``), a fetch at a time, so a caller folding them need not hold them all. The end offsets
    read are put into ``ends_out`` before the first chunk."""
    # earliest: a topic whose oldest records retention deleted is read from its first record left
    # (aiokafka's default, latest, would jump to the end and read nothing)
    consumer = AIOKafkaConsumer(enable_auto_commit=False, auto_offset_reset="earliest", **client_kwargs(settings))
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic)
        ends = await high_watermarks(consumer, tps)
        if upto is not None:
            ends = {tp: min(end, upto.get(tp.partition, 0)) for tp, end in ends.items()}
        if ends_out is not None:
            ends_out.update({tp.partition: ends.get(tp, 0) for tp in tps})
        start = {tp: min((since or {}).get(tp.partition, 0), ends.get(tp, 0)) for tp in tps}
        pending = {tp for tp in tps if ends.get(tp, 0) > start[tp]}
        for tp in tps:
            consumer.seek(tp, start[tp])
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500, max_records=5000)
            chunk = []
            for tp, recs in batch.items():
                chunk.extend(rec for rec in recs if rec.offset < ends[tp])
                if recs and recs[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
            if chunk:
                yield chunk
    finally:
        await consumer.stop()


async def records_at(settings: ServiceSettings, topic: str, offsets: dict[int, int]) -> dict[int, ConsumerRecord]:
    """The record at each partition's offset in ``offsets``; a partition without one is left out."""
    if not offsets:
        return {}
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        tps = [tp for tp in await partitions_of(consumer, topic) if tp.partition in offsets]
        found: dict[int, ConsumerRecord] = {}
        if not tps:
            return found
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, offsets[tp.partition])
        pending = set(tps)
        for _ in range(20):
            batch = await consumer.getmany(*pending, timeout_ms=300, max_records=len(tps))
            for tp, recs in batch.items():
                if recs and recs[0].offset == offsets[tp.partition]:
                    found[tp.partition] = recs[0]
                pending.discard(tp)
            for tp in list(pending):  # a partition that ends at or before the offset has no record there
                end = consumer.highwater(tp)
                if end is not None and end <= offsets[tp.partition]:
                    pending.discard(tp)
            if not pending:
                break
        return found
    finally:
        await consumer.stop()


@dataclass
class Replayed(Generic[T]):
    """A topic read from the start: the records that parse, with their events, and how many did not."""

    items: list[tuple[ConsumerRecord, T]]
    end_offsets: dict[int, int]
    skipped: int = 0

    @property
    def events(self) -> list[T]:
        return [event for _, event in self.items]


async def replay(
    settings: ServiceSettings, topic: str, parse: type[T] | Callable[[bytes], T], upto: dict[int, int] | None = None,
    since: dict[int, int] | None = None,
) -> Replayed[T]:
    """Read ``topic`` to its current end (or to ``upto``), from the start or from ``since``, and parse
    every record with ``parse``: an event model or a function of the payload. Records that do not parse
    were dead-lettered when first consumed (or never belonged there); they are counted in ``skipped``,
    not raised."""
    whole = Replayed[T]([], {})
    async for chunk in replay_chunks(settings, topic, parse, upto, since, whole.end_offsets):
        whole.items.extend(chunk.items)
        whole.skipped += chunk.skipped
    if whole.skipped:  # never silently: they were dead-lettered when consumed, or never belonged there
        log.warning("%s: %d of %d record(s) are not events of the topic; left out", topic, whole.skipped,
                    whole.skipped + len(whole.items))
    return whole


async def replay_chunks(
    settings: ServiceSettings, topic: str, parse: type[T] | Callable[[bytes], T], upto: dict[int, int] | None = None,
    since: dict[int, int] | None = None, ends_out: dict[int, int] | None = None,
) -> AsyncIterator[Replayed[T]]:
    """:func:`replay` a fetch at a time: each chunk's parsed records and how many did not parse, with
    the end offsets read to (also put into ``ends_out`` before the first chunk)."""
    decode = (lambda payload: parse_event(parse, payload)) if isinstance(parse, type) else parse
    ends: dict[int, int] = {} if ends_out is None else ends_out
    async for records in read_chunks(settings, topic, upto, since, ends):
        chunk = Replayed[T]([], ends)
        for record in records:
            try:
                chunk.items.append((record, decode(record.value or b"")))
            except ValueError:  # pydantic's ValidationError and JSON errors are ValueErrors
                chunk.skipped += 1
        yield chunk


async def consumer_lag(settings: ServiceSettings, group_id: str, topics: list[str]) -> dict[str, int]:
    """Messages not yet committed by ``group_id``, per topic."""
    consumer = AIOKafkaConsumer(group_id=group_id, enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        lag: dict[str, int] = {}
        for topic in topics:
            tps = await partitions_of(consumer, topic)
            committed = {tp: (await consumer.committed(tp)) or 0 for tp in tps}
            ends = await high_watermarks(consumer, tps)
            lag[topic] = sum(max(0, ends.get(tp, 0) - committed[tp]) for tp in tps)
        return lag
    finally:
        await consumer.stop()


async def end_offsets(settings: ServiceSettings, topic: str) -> dict[int, int]:
    """Partition -> end offset of ``topic`` now: names a snapshot that later reads can stop at."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic)
        return {tp.partition: end for tp, end in (await high_watermarks(consumer, tps)).items()} if tps else {}
    finally:
        await consumer.stop()


async def topic_counts(settings: ServiceSettings, topics: list[str]) -> dict[str, int]:
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        counts = {}
        for topic in topics:
            tps = await partitions_of(consumer, topic)
            ends = await high_watermarks(consumer, tps) if tps else {}
            counts[topic] = sum(ends.values())
        return counts
    finally:
        await consumer.stop()


async def produce_all(settings: ServiceSettings, items: list[tuple[str, str, bytes]]) -> None:
    """Publish (topic, key, value) items and wait for every acknowledgement."""
    producer = AIOKafkaProducer(acks="all", **client_kwargs(settings))
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key.encode()) for topic, key, value in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
