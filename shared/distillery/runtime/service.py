"""Service wiring: FastStream broker with Prometheus middleware, health and metrics endpoints.

A service's ``app.py`` is one call to :func:`assemble`: its settings, its deps (from its
``bootstrap.py``), its ``SUBSCRIPTIONS`` and its start/stop hooks; ``__main__`` hands that to
:func:`serve`. ``/metrics``, ``/health/live`` and ``/health/ready`` are served by uvicorn on
``DISTILLERY_HTTP_PORT``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from faststream.asgi import AsgiFastStream, AsgiResponse, get, make_ping_asgi
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from prometheus_client import REGISTRY, make_asgi_app

from distillery.contracts.channels import CHANNELS, TEACHER_STEM, group_name
from distillery.contracts.settings import ConfigError, ServiceSettings
from distillery.contracts.spec import CapabilitySpec, judge_version
from distillery.runtime.bus import Bus
from distillery.runtime.kafka import client_kwargs, consumer_lag, ensure_topics
from distillery.runtime.wiring import Context, Subscription, wire

if TYPE_CHECKING:  # numpy: only the services that checkpoint (judge, editor) install it
    from distillery.runtime.checkpoint import CheckpointStore, Fold, Rebuilt


def make_bus(settings: ServiceSettings, service: str, version: str) -> Bus:
    broker = KafkaBroker(
        settings.kafka_bootstrap_servers,
        security=broker_security(settings),
        middlewares=[KafkaPrometheusMiddleware(registry=REGISTRY, app_name=service)],
        acks="all",
        linger_ms=5,
        logger=logging.getLogger(f"distillery.{service}"),
    )
    return Bus(broker, settings, service, version)


def broker_security(settings: ServiceSettings) -> BaseSecurity | None:
    """The same SASL/TLS settings the plain aiokafka clients get (kafka.client_kwargs), in
    FastStream's form, so every client of a service connects the same way."""
    kwargs = client_kwargs(settings)
    ssl_context = kwargs.get("ssl_context")
    mechanism = kwargs.get("sasl_mechanism")
    if mechanism is None:
        return BaseSecurity(ssl_context=ssl_context) if ssl_context is not None else None
    kind = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}[mechanism]
    return kind(username=kwargs["sasl_plain_username"], password=kwargs["sasl_plain_password"],
                ssl_context=ssl_context, use_ssl=settings.kafka_security_protocol == "SASL_SSL")


# A service decodes and encodes thousands of small pydantic objects a second. With CPython's default
# (a young collection every 700 net allocations) the collector ran inside those allocations and
# walked the whole start-up heap (models, tokenizer, FastStream) on every older-generation pass:
# bench/pipeline_throughput.py's profile put most of the judge's decode time there.
YOUNG_GC_THRESHOLD = 50_000


def tune_gc() -> None:
    """Freeze what start-up built (never garbage, never walked again) and collect the young
    generation every YOUNG_GC_THRESHOLD allocations. Cycles are still collected, just later."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, 20, 100)


def free_port() -> int:
    """A free loopback port (a service started with DISTILLERY_HTTP_PORT=0 listens on one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@get
async def live(scope: Any) -> AsgiResponse:
    return AsgiResponse(b"ok", 200)


def make_app(
    bus: Bus,
    spec: CapabilitySpec | None = None,
    on_startup: list[Callable[[], Awaitable[None]]] | None = None,
    on_shutdown: list[Callable[[], Awaitable[None]]] | None = None,
    teacher_ids: list[str] | None = None,
    ready_check: Callable[[], Awaitable[bool | str]] | None = None,
) -> AsgiFastStream:
    """The ASGI app: the broker's subscribers plus /metrics and the health endpoints.

    ``/health/ready`` answers 204 while the broker answers a ping and, if given, ``ready_check``
    returns True (a teacher's model server, say); 503 otherwise, with which of the two failed.
    """

    async def create_topics() -> None:
        ids = teacher_ids if teacher_ids is not None else (list(spec.teachers) if spec else [])
        await ensure_topics(bus.settings, bus.topics.all_topics(ids))

    return AsgiFastStream(
        bus.broker,
        asgi_routes=[
            ("/metrics", make_asgi_app(REGISTRY)),
            ("/health/live", live),
            ("/health/ready", _readiness(bus, ready_check)),
        ],
        on_startup=[create_topics, bus.start, *(on_startup or [])],
        after_shutdown=[*(on_shutdown or []), bus.stop],
    )


def _readiness(bus: Bus, ready_check: Callable[[], Awaitable[bool | str]] | None) -> Any:
    """The readiness endpoint: the broker ping, AND-ed with the service's own check if it has one.
    A check answers True, False, or the reason it is not ready (the 503's body)."""
    if ready_check is None:
        return make_ping_asgi(bus.broker, timeout=5.0)

    @get
    async def ready(scope: Any) -> AsgiResponse:
        if not await bus.broker.ping(5.0):
            return AsgiResponse(b"broker not reachable", 503)
        answer = await ready_check()
        if answer is not True:
            return AsgiResponse((answer or "backend not ready").encode(), 503)
        return AsgiResponse(b"", 204)

    return ready


Hooks = Callable[[Any, Bus], dict[str, Any]]  # (deps, bus) -> make_app keywords: on_startup, on_shutdown, ...


def assemble(
    service: str, version: str, settings: ServiceSettings, deps: Context,
    subscriptions: Sequence[Subscription], hooks: Hooks | None = None,
) -> tuple[AsgiFastStream, ServiceSettings]:
    """The service's app: a bus, its subscriptions wired to the handlers, and its lifecycle hooks."""
    bus = make_bus(settings, service, version)
    deps.produced_by, deps.topics = bus.produced_by, bus.topics  # one name for what the service produces
    wire(bus, service, subscriptions, deps)
    keywords = hooks(deps, bus) if hooks else {}
    params = {"judge_version": judge_version(deps.spec), **deps.params}
    watcher = DownstreamWatcher(bus, downstream_groups(service, params, list(deps.spec.teachers)))
    keywords["on_startup"] = [*keywords.get("on_startup", []), watcher.start]
    keywords["on_shutdown"] = [watcher.stop, *keywords.get("on_shutdown", [])]
    return make_app(bus, deps.spec, **keywords), settings


def downstream_groups(service: str, params: dict[str, str], teacher_ids: list[str]) -> list[tuple[str, str]]:
    """(group, topic) of every consumer group reading a channel ``service`` produces, from the channel
    table (a teacher's channel once per teacher); broadcast and optional consumers have no group to watch."""
    out = []
    for channel in CHANNELS:
        if not any(producer.split()[0] == service for producer in channel.producers):
            continue
        for teacher_id in teacher_ids if channel.stem == TEACHER_STEM else [None]:
            for consumer in channel.consumers:
                if not (consumer.broadcast or consumer.optional):
                    group = group_name(consumer.service, consumer.suffix, **{**params, "teacher_id": teacher_id or ""})
                    out.append((group, channel.topic("{prefix}", teacher_id)))
    return out


class DownstreamWatcher:
    """Measures, every ``lag_watch_s``, the lag of the groups reading this service's outputs."""

    def __init__(self, bus: Bus, groups: list[tuple[str, str]]) -> None:
        self.bus, self.groups, self.task = bus, groups, None

    async def start(self) -> None:
        if self.groups and self.bus.settings.lag_watch_s > 0 and not self.bus.in_memory:
            self.task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.bus.settings.lag_watch_s)
            for group, pattern in self.groups:
                topic = pattern.replace("{prefix}", self.bus.topics.prefix, 1)
                try:
                    lag = (await consumer_lag(self.bus.settings, group, [topic]))[topic]
                except Exception:  # noqa: BLE001 - the broker is away: measure again next time
                    continue
                self.bus.downstream_lag.labels(group, topic).set(lag)


def main(service: str, build: Callable[[], tuple[AsgiFastStream, ServiceSettings]],
         checkpoint: Callable[[], Awaitable[Rebuilt]] | None = None, argv: Sequence[str] | None = None) -> None:
    """``python -m distillery_<service>`` serves; ``... checkpoint`` (the judge and the editor) rebuilds the
    state from the newest checkpoint and the topics' tail, writes a new checkpoint and exits: run it on a
    schedule beside the service (deploy/k8s: a CronJob), so a restart's tail stays short however long
    the service has run."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        return serve(service, build)
    if argv != ["checkpoint"] or checkpoint is None:
        usage = "no arguments, or 'checkpoint'" if checkpoint is not None else "no arguments"
        print(f"{service}: unknown arguments '{' '.join(argv)}' ({usage})", file=sys.stderr)
        raise SystemExit(2)
    logging.basicConfig(level="INFO", format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")
    try:
        rebuilt = asyncio.run(checkpoint())
    except ConfigError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    written = f"wrote {rebuilt.saved}" if rebuilt.saved else "nothing new to write"
    print(f"{service}: {written}; read {rebuilt.tail:,} record(s) after {rebuilt.loaded or 'the start'}")


def checkpoint_of(bootstrap: Callable[[], Context], fold: Callable[[Any], Fold],
                  store: Callable[[Any], CheckpointStore | None]) -> Callable[[], Awaitable[Rebuilt]]:
    """The ``checkpoint`` command of a service whose state is ``fold`` (see :func:`main`)."""
    async def checkpoint() -> Rebuilt:
        from distillery.runtime.checkpoint import rebuild

        deps = bootstrap()
        if deps.settings.state_dir is None:  # type: ignore[attr-defined]
            raise ConfigError("DISTILLERY_STATE_DIR is not set: there is nowhere to write a checkpoint")
        deps.topics = deps.settings.topics  # type: ignore[attr-defined] - as assemble() names them
        return await rebuild(deps.settings, fold(deps), store(deps), save_after=1)  # type: ignore[attr-defined]

    return checkpoint


def serve(service: str, build: Callable[[], tuple[AsgiFastStream, ServiceSettings]]) -> None:
    """Build and run a service; configuration errors stop it with one readable line."""
    import uvicorn

    try:
        app, settings = build()
    except ConfigError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
    )
    tune_gc()
    port = settings.http_port or free_port()
    logging.getLogger("distillery").info("%s listening on http://%s:%d", service, settings.http_host, port)
    config = uvicorn.Config(app, host=settings.http_host, port=port, log_level="warning", lifespan="on")
    asyncio.run(uvicorn.Server(config).serve())
