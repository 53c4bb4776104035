"""gRPC ingest (proto/distill/v1/ingest.proto), served by the router next to its subscriber.

``SubmitTasks`` validates each streamed task with the rules of ``distillery submit``
(:func:`distillery.contracts.submission.validate_task`), publishes the accepted ones on the tasks topic
through the router's :class:`~distillery.runtime.bus.Bus`, and answers only once the broker has
acknowledged all of them: a task reported accepted is durable. ``GetTaskStatus`` reads a small
in-memory :class:`TaskIndex` (accepted here, or routed by this process). Every call needs the
metadata ``authorization: Bearer <DISTILLERY_INGEST_TOKEN>``.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import Counter
from pydantic import Field, model_validator

from distillery.contracts.events import Task
from distillery.contracts.grpc_gen.distill.v1 import ingest_pb2, ingest_pb2_grpc
from distillery.contracts.settings import ConfigError, ServiceSettings, require_files
from distillery.contracts.spec import CapabilitySpec
from distillery.contracts.submission import validate_task
from distillery.runtime.bus import Bus, Out

log = logging.getLogger("distillery.router.ingest")

INGESTED = Counter("distillery_router_ingest_tasks_total", "Tasks received over gRPC ingest", ["outcome"])


class RouterSettings(ServiceSettings):
    grpc_port: int = Field(default=0, ge=0, le=65535, description="gRPC ingest port; 0 disables ingest")
    grpc_host: str = "127.0.0.1"
    # Printable ASCII only: it travels in a gRPC metadata value. Never shown in reprs or errors.
    ingest_token: str | None = Field(default=None, repr=False, pattern=r"^[!-~]*$")
    ingest_max_tasks_per_call: int = Field(default=10000, ge=1)
    # TLS for ingest: the server's certificate chain and key (PEM); both, or neither (plaintext)
    grpc_tls_certfile: Path | None = None
    grpc_tls_keyfile: Path | None = None

    @property
    def ingest_enabled(self) -> bool:
        return self.grpc_port != 0

    @model_validator(mode="after")
    def _tls_pair(self) -> RouterSettings:
        if (self.grpc_tls_certfile is None) != (self.grpc_tls_keyfile is None):
            raise ValueError("grpc_tls_certfile and grpc_tls_keyfile go together")
        require_files(self, "grpc_tls_certfile", "grpc_tls_keyfile")
        return self

    def tls_credentials(self) -> grpc.ServerCredentials | None:
        if self.grpc_tls_certfile is None or self.grpc_tls_keyfile is None:
            return None
        return grpc.ssl_server_credentials([(self.grpc_tls_keyfile.read_bytes(), self.grpc_tls_certfile.read_bytes())])


def check_ingest_settings(settings: RouterSettings) -> None:
    """Ingest never runs open: enabled without a token is a configuration error."""
    if settings.ingest_enabled and not settings.ingest_token:
        raise ConfigError(
            "invalid setting ingest_token (env DISTILLERY_INGEST_TOKEN): required when gRPC ingest is enabled "
            f"(grpc_port={settings.grpc_port}); set a token, or DISTILLERY_GRPC_PORT=0 to disable ingest"
        )


# --- what the router knows about tasks --------------------------------------------------------------


@dataclass(frozen=True)
class TaskState:
    task_id: str
    state: str  # "unknown" | "accepted" | "routed"
    unit: str = ""
    teachers: tuple[str, ...] = ()


@dataclass
class _Entry:
    state: str
    unit: str
    teachers: tuple[str, ...] = field(default_factory=tuple)


class TaskIndex:
    """Tasks accepted through this process's ingest or routed by its subscriber, in memory.

    Bounded: past ``max_entries`` the least recently updated task is forgotten (its status
    becomes "unknown"). A restart forgets everything; with several router instances each
    knows only what it accepted and the partitions it routed.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def accepted(self, task: Task) -> None:
        """The broker acknowledged ``task``; a task already routed stays routed."""
        if task.task_id not in self._entries:
            self._put(task.task_id, _Entry("accepted", task.unit))

    def routed(self, task_id: str, teachers: list[str] | tuple[str, ...], unit: str = "") -> None:
        entry = self._entries.get(task_id)
        self._put(task_id, _Entry("routed", unit or (entry.unit if entry else ""), tuple(teachers)))

    def status(self, task_id: str) -> TaskState:
        entry = self._entries.get(task_id)
        if entry is None:
            return TaskState(task_id, "unknown")
        return TaskState(task_id, entry.state, entry.unit, entry.teachers)

    def __len__(self) -> int:
        return len(self._entries)

    def _put(self, task_id: str, entry: _Entry) -> None:
        self._entries[task_id] = entry
        self._entries.move_to_end(task_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


# --- the service ----------------------------------------------------------------------------------


def task_line(message: ingest_pb2.TaskInput) -> dict[str, Any]:
    """The JSON object of the JSONL line ``message`` stands for: unset fields are absent keys,
    ``tools_json`` / ``reference_json`` are parsed as the CLI parses a line."""
    data: dict[str, Any] = {}
    for name in ("task_id", "unit", "prompt"):
        if message.HasField(name):
            data[name] = getattr(message, name)
    if message.tools_json:
        data["tools"] = _json_field("tools", message.tools_json)
    if message.reference_json:
        data["reference"] = _json_field("reference", message.reference_json)
    if message.HasField("split"):
        data["split"] = message.split
    if message.metadata:
        data["metadata"] = dict(message.metadata)
    return data


def _json_field(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"field '{name}': not valid JSON ({exc.msg} at column {exc.colno})") from None


class IngestService(ingest_pb2_grpc.IngestServicer):
    def __init__(self, settings: RouterSettings, spec: CapabilitySpec, bus: Bus, index: TaskIndex) -> None:
        self.settings = settings
        self.spec = spec
        self.bus = bus
        self.index = index

    async def SubmitTasks(
        self, request_iterator: AsyncIterator[ingest_pb2.TaskInput], context: grpc.aio.ServicerContext
    ) -> ingest_pb2.SubmitSummary:
        limit = self.settings.ingest_max_tasks_per_call
        results: list[ingest_pb2.SubmitResult] = []
        accepted = []
        async for message in request_iterator:
            if len(results) >= limit:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"more than {limit} tasks in one call (DISTILLERY_INGEST_MAX_TASKS_PER_CALL); "
                                    "nothing was published, send them in smaller calls")
            index = len(results)
            try:
                event = validate_task(task_line(message), self.spec, self.settings.max_task_bytes, self.bus.produced_by)
            except ValueError as exc:
                results.append(ingest_pb2.SubmitResult(index=index, task_id=message.task_id, accepted=False,
                                                       error=str(exc)))
                continue
            accepted.append(event)
            results.append(ingest_pb2.SubmitResult(index=index, task_id=event.task_id, accepted=True))
        try:
            # publish-then-acknowledge: returns once the broker acknowledged every accepted task
            await self.bus.publish(Out(self.bus.topics.tasks, event) for event in accepted)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, who resubmits
            log.warning("ingest: publishing %d task(s) failed: %s", len(accepted), exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"the broker did not acknowledge the accepted tasks ({type(exc).__name__}: {exc}); "
                                "none of this call is confirmed, resubmit it (task ids are deterministic)")
        for event in accepted:
            self.index.accepted(event.task)
        INGESTED.labels("accepted").inc(len(accepted))
        INGESTED.labels("rejected").inc(len(results) - len(accepted))
        return ingest_pb2.SubmitSummary(results=results)

    async def GetTaskStatus(
        self, request: ingest_pb2.TaskStatusRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.TaskStatus:
        if not request.task_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "task_id is required")
        state = self.index.status(request.task_id)
        error = ""
        if state.state == "unknown":
            error = (f"task '{request.task_id}' was neither accepted through nor routed by this router process "
                     "since it started")
        return ingest_pb2.TaskStatus(task_id=state.task_id, state=state.state, unit=state.unit,
                                     teachers=list(state.teachers), error=error)


class BearerAuth(grpc.aio.ServerInterceptor):
    """Every call must carry ``authorization: Bearer <token>``; others end UNAUTHENTICATED."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def reason(self, metadata: Any) -> str | None:
        """Why the call's metadata is refused, or None when it carries the token."""
        values = [m.value for m in metadata or () if m.key == "authorization"]
        if not values:
            return ("missing bearer token: send the metadata 'authorization: Bearer <token>' "
                    "(the router's DISTILLERY_INGEST_TOKEN)")
        value = values[0] if isinstance(values[0], str) else values[0].decode("ascii", "replace")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "malformed authorization metadata: expected 'Bearer <token>'"
        if not hmac.compare_digest(token.strip().encode(), self._token):
            return "invalid bearer token"
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        reason = self.reason(handler_call_details.invocation_metadata)
        if handler is None or reason is None:
            return handler
        return _refusal(handler, reason)


def _refusal(handler: grpc.RpcMethodHandler, reason: str) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    kinds = {(False, False): grpc.unary_unary_rpc_method_handler, (True, False): grpc.stream_unary_rpc_method_handler,
             (False, True): grpc.unary_stream_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}
    make = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(refuse, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


class IngestServer:
    """The ``grpc.aio`` server; :meth:`start` and :meth:`stop` are the app's startup and shutdown hooks."""

    def __init__(self, settings: RouterSettings, spec: CapabilitySpec, bus: Bus, index: TaskIndex) -> None:
        check_ingest_settings(settings)
        self.settings = settings
        self.service = IngestService(settings, spec, bus, index)
        self.server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        host = self.settings.grpc_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6 literal
        return f"{host}:{self.settings.grpc_port}"

    async def start(self) -> None:
        # Room for a task over the size limit, so it is rejected with its reason rather than
        # ending the whole stream with gRPC's own RESOURCE_EXHAUSTED.
        max_message = max(4 * 1024 * 1024, 2 * self.settings.max_task_bytes + 64 * 1024)
        server = grpc.aio.server(interceptors=[BearerAuth(self.settings.ingest_token or "")],
                                 # so_reuseport off: a second process on the same port fails instead of sharing it
                                 options=[("grpc.max_receive_message_length", max_message), ("grpc.so_reuseport", 0)])
        ingest_pb2_grpc.add_IngestServicer_to_server(self.service, server)
        credentials = self.settings.tls_credentials()
        try:
            if credentials is None:
                server.add_insecure_port(self.address)
            else:
                server.add_secure_port(self.address, credentials)
        except RuntimeError as exc:
            raise ConfigError(
                f"cannot serve gRPC ingest on {self.address} (DISTILLERY_GRPC_HOST/PORT): {exc}") from None
        await server.start()
        self.server = server
        log.info("gRPC ingest listening on %s (%s)", self.address, "TLS" if credentials else "plaintext")

    async def stop(self) -> None:
        if self.server is not None:
            # calls in flight may finish (their tasks are being acknowledged); new ones are refused
            await self.server.stop(grace=10)
            self.server = None


def ingest_server(settings: RouterSettings, spec: CapabilitySpec, bus: Bus, index: TaskIndex) -> IngestServer | None:
    """The ingest server when ``grpc_port`` is set, else None; a missing token raises ConfigError."""
    return IngestServer(settings, spec, bus, index) if settings.ingest_enabled else None
