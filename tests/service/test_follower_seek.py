"""Service test (issue 17): a broadcast follower whose start-up rebuild read a topic up to some
offsets seeks past them on the real broker, rather than fetching the whole history to skip it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka.partitioner import murmur2

from distillery.contracts.events import CandidatesJudged
from distillery.runtime.kafka import ensure_topics, produce_all
from distillery.runtime.service import make_bus

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "CandidatesJudged.v1.json"
PER_PARTITION, START = 3_000, 2_900  # records per partition; the rebuild read each up to START


def partition_of(key: str, partitions: int = 2) -> int:
    """The producer's default partitioner (murmur2 of the key)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def test_a_follower_seeks_past_what_its_rebuild_read(settings) -> None:
    topic = settings.topics.verdicts
    asyncio.run(ensure_topics(settings, {topic: 2}))
    payload = GOLDEN.read_bytes()
    keys = {partition_of(f"key-{i}"): f"key-{i}" for i in range(20)}  # a key for each partition
    asyncio.run(produce_all(settings, [(topic, keys[p], payload) for p in (0, 1) for _ in range(PER_PARTITION)]))

    async def follow() -> tuple[list[tuple[int, int]], int]:
        bus = make_bus(settings, "follower", "0")
        seen: list[tuple[int, int]] = []
        looked_at = 0

        def skip(record) -> bool:
            nonlocal looked_at
            looked_at += 1
            return record.offset < START

        async def handle(items):
            seen.extend((item.record.partition, item.record.offset) for item in items)
            return []

        bus.subscribe(topic, CandidatesJudged, handle, group_id=None, skip=skip, start_at=lambda partition: START)
        await bus.start()
        await bus.broker.start()
        try:
            for _ in range(300):
                if len(seen) >= 2 * (PER_PARTITION - START):
                    break
                await asyncio.sleep(0.1)
        finally:
            await bus.broker.stop()
            await bus.stop()
        return seen, looked_at

    seen, looked_at = asyncio.run(follow())
    assert sorted(seen) == [(p, o) for p in (0, 1) for o in range(START, PER_PARTITION)]
    # Without the seek every one of the 5,800 records before START would be fetched and skipped; with
    # it, only what the first fetch of each partition brought.
    assert looked_at < 2 * START // 2, looked_at
