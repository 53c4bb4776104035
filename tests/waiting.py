"""Polling helpers for tests that watch topics of a running pipeline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from distillery.contracts.events import Event
from distillery.contracts.settings import ServiceSettings
from distillery.runtime.kafka import replay

T = TypeVar("T")


def events(settings: ServiceSettings, topic: str, model: type[Event]) -> list:
    """The topic's events that parse as ``model`` (the runtime's replay, run to the topic's end)."""
    return asyncio.run(replay(settings, topic, model)).events


def wait_for(fetch: Callable[[], T], done: Callable[[T], bool], timeout_s: float = 60, every_s: float = 0.5) -> T:
    """Poll ``fetch`` until ``done`` holds; fail with the last value seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s; last value: {str(value)[:500]}")
        time.sleep(every_s)
