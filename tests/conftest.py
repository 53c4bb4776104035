"""Shared fixtures: a real Kafka-protocol broker for every test session.

Broker choice follows the product's rule: ``KAFKA_BOOTSTRAP_SERVERS`` if set; else
Apache Kafka through testcontainers when ``DISTILLERY_TEST_BROKER=testcontainers``
and a Docker engine answers; else the embedded Tansu broker.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from distillery.contracts.settings import ServiceSettings
from distillery_cli.broker import EmbeddedBroker, external_bootstrap

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Fixtures that start or need the broker (directly or through another fixture)
BROKER_FIXTURES = {"kafka_bootstrap"}


def tier_of(item: pytest.Item) -> str:
    """e2e: under tests/e2e; model: marked so (it loads a model); broker: needs the broker; else unit."""
    if "e2e" in Path(str(item.fspath)).parts:
        return "e2e"
    if item.get_closest_marker("model"):
        return "model"
    if BROKER_FIXTURES & set(item.fixturenames) or "service" in Path(str(item.fspath)).parts:
        return "broker"
    return "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(getattr(pytest.mark, tier_of(item)))


def _testcontainers_kafka():
    from testcontainers.kafka import KafkaContainer  # optional dependency

    container = KafkaContainer("apache/kafka:3.8.0").start()
    return container, container.get_bootstrap_server()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    external = external_bootstrap()
    if external:
        yield external
        return
    if os.environ.get("DISTILLERY_TEST_BROKER") == "testcontainers":
        container, bootstrap = _testcontainers_kafka()
        yield bootstrap
        container.stop()
        return
    broker = EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "broker.log").start()
    yield broker.bootstrap
    broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    """Each test gets its own topics so tests never see each other."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(kafka_bootstrap, topic_prefix) -> ServiceSettings:
    return ServiceSettings.model_validate({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "topic_prefix": topic_prefix})
