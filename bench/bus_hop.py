"""Bus hop throughput: one Distillery service hop against raw aiokafka, same broker, same run.

    python bench/bus_hop.py [--events 30000] [--size 300]

Three consumers read the same pre-filled input topic and write an output topic:
  raw    aiokafka getmany -> send without awaiting -> gather acks -> commit (the ceiling)
  hop    distillery.runtime.bus: batch subscriber, pydantic validation, transform, publish, commit
  naive  a per-message FastStream handler that awaits each publish (the common baseline)
The last line reads: ``hop: <N> events/s, raw: <M> events/s, ratio: <R>``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from distillery.contracts.events import GenerationRequested, TaskSubmitted, Trace, new_task
from distillery.contracts.settings import ServiceSettings
from distillery.runtime.bus import In, Out
from distillery.runtime.kafka import ensure_topics, topic_counts
from distillery.runtime.service import make_bus
from distillery_cli.broker import EmbeddedBroker, external_bootstrap


def task_events(n: int, size: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        task = new_task("tool_call", f"task {i} " + "x" * size)
        event = TaskSubmitted(task_id=task.task_id, task=task, produced_by="bench@0", trace=Trace(task_id=task.task_id))
        out.append((task.task_id, event.model_dump_json().encode()))
    return out


async def fill(settings: ServiceSettings, topic: str, events: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    futures = [await producer.send(topic, value, key=key.encode()) for key, value in events]
    await asyncio.gather(*futures)
    await producer.stop()


async def wait_count(settings: ServiceSettings, topic: str, n: int) -> None:
    while (await topic_counts(settings, [topic]))[topic] < n:
        await asyncio.sleep(0.05)


async def run_raw(settings: ServiceSettings, src: str, dst: str, n: int) -> float:
    consumer = AIOKafkaConsumer(src, bootstrap_servers=settings.kafka_bootstrap_servers, group_id=f"raw-{uuid.uuid4().hex[:6]}",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    done, started = 0, None
    while done < n:
        batch = await consumer.getmany(timeout_ms=200, max_records=500)
        if not batch:
            continue
        started = started or time.perf_counter()
        futures = []
        for records in batch.values():
            for rec in records:
                futures.append(await producer.send(dst, rec.value, key=rec.key))
        await asyncio.gather(*futures)
        await consumer.commit()
        done += len(futures)
    elapsed = time.perf_counter() - started
    await consumer.stop()
    await producer.stop()
    return n / elapsed


async def run_hop(settings: ServiceSettings, src: str, dst: str, n: int) -> float:
    bus = make_bus(settings, f"bench{uuid.uuid4().hex[:6]}", "0")

    def transform(item: In[TaskSubmitted]) -> list[Out]:
        task = item.event.task
        request = GenerationRequested(request_id=task.task_id, task=task, teacher_id="t", strategy="single",
                                      route_reason="bench", expected_candidates=1, max_new_tokens=8,
                                      produced_by=bus.produced_by, trace=Trace(task_id=task.task_id))
        return [Out(dst, request)]

    bus.subscribe(src, TaskSubmitted, bus.per_event(transform), group_id=f"hop-{uuid.uuid4().hex[:6]}")
    await bus.start()
    try:
        return await _timed_broker(bus.broker, settings, dst, n)
    finally:
        await bus.stop()


async def run_naive(settings: ServiceSettings, src: str, dst: str, n: int) -> float:
    from faststream.kafka import KafkaBroker

    broker = KafkaBroker(settings.kafka_bootstrap_servers)
    publisher = broker.publisher(dst)

    @broker.subscriber(src, group_id=f"naive-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest")
    async def handle(event: TaskSubmitted) -> None:
        await publisher.publish(event, key=event.task_id.encode())

    return await _timed_broker(broker, settings, dst, n)


async def _timed_broker(broker, settings: ServiceSettings, dst: str, n: int) -> float:
    """Start the broker's subscribers; time from the first output to the n-th."""
    await broker.start()
    try:
        while (await topic_counts(settings, [dst]))[dst] == 0:
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        await wait_count(settings, dst, n)
        return n / (time.perf_counter() - started)
    finally:
        await broker.stop()


async def main(n: int, size: int, naive_n: int) -> None:
    bootstrap = external_bootstrap()
    broker = None
    if bootstrap is None:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    settings = ServiceSettings.model_validate({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "topic_prefix": f"bench{uuid.uuid4().hex[:6]}"})
    src = settings.topics.tasks
    outs = {name: f"{settings.topic_prefix}.out.{name}" for name in ("raw", "hop", "naive")}
    await ensure_topics(settings, {src: 4, **{t: 4 for t in outs.values()}})
    events = task_events(n, size)
    await fill(settings, src, events)
    print(f"input: {n} TaskSubmitted events of ~{len(events[0][1])} bytes on {bootstrap}")
    raw = await run_raw(settings, src, outs["raw"], n)
    print(f"raw aiokafka consume+produce: {raw:,.0f} events/s")
    hop = await run_hop(settings, src, outs["hop"], n)
    print(f"distillery hop (validate+transform+publish+commit): {hop:,.0f} events/s")
    naive = await run_naive(settings, src, outs["naive"], naive_n)
    print(f"naive per-message FastStream handler ({naive_n} events): {naive:,.0f} events/s")
    print(f"hop: {hop:.0f} events/s, raw: {raw:.0f} events/s, ratio: {hop / raw:.2f}")
    if broker:
        broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30000)
    parser.add_argument("--size", type=int, default=300, help="prompt padding in characters")
    parser.add_argument("--naive-events", type=int, default=5000)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.size, args.naive_events))
