"""gRPC ingest served by the router: the router runs as an OS process against the real broker and a
real gRPC client submits tasks, asks their status and tries without the token.

The last tests drive the servicer in-process (real grpc.aio server, a recording bus) for what a
process test cannot pin down deterministically: "accepted" before "routed", the per-call limit, a
broker that does not acknowledge.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from types import SimpleNamespace

import grpc
import pytest

from distillery.contracts.events import GenerationRequested, Task, TaskSubmitted
from distillery.contracts.grpc_gen.distill.v1 import ingest_pb2, ingest_pb2_grpc
from distillery.contracts.settings import ConfigError, ServiceSettings
from distillery.contracts.spec import load_spec
from distillery.contracts.submission import parse_tasks
from distillery.runtime.service import free_port
from distillery_cli import stack
from distillery_cli.workload import build_workload
from distillery_router.ingest import (
    IngestServer,
    RouterSettings,
    TaskIndex,
    check_ingest_settings,
    ingest_server,
    task_line,
)
from tests.support import ROOT
from tests.waiting import events, wait_for

SPEC = ROOT / "examples" / "spec.yaml"
TOKEN = "s3cret-ingest-token"
MAX_BYTES = 8192


def task_input(line: dict) -> ingest_pb2.TaskInput:
    """The TaskInput standing for a JSONL line (the mapping the proto documents)."""
    msg = ingest_pb2.TaskInput(metadata=line.get("metadata", {}))
    for name in ("task_id", "unit", "prompt", "split"):
        if name in line:
            setattr(msg, name, line[name])
    if "tools" in line:
        msg.tools_json = json.dumps(line["tools"])
    if "reference" in line:
        msg.reference_json = json.dumps(line["reference"])
    return msg


def jsonl(lines: list[dict]) -> str:
    """Compact lines: ingest measures a task's size as its compact JSON line."""
    return "".join(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n" for line in lines)


# --- the router as a process ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def router(kafka_bootstrap, tmp_path_factory):
    """One router process for the module, on its own topic prefix, with ingest on a free port."""
    run_dir = tmp_path_factory.mktemp("router")
    settings = ServiceSettings.model_validate({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                                               "topic_prefix": f"t{uuid.uuid4().hex[:10]}"})
    port = free_port()
    env = stack.service_env(settings.kafka_bootstrap_servers, settings.topic_prefix, SPEC, run_dir,
                            {"DISTILLERY_MAX_TASK_BYTES": str(MAX_BYTES), "DISTILLERY_GRPC_PORT": str(port),
                             "DISTILLERY_INGEST_TOKEN": TOKEN})
    info = stack.start_process("router", "distillery_router", env, run_dir)
    try:
        wait_for(lambda: stack.ready(info) or not stack.pid_alive(info.pid), lambda ok: ok, timeout_s=60)
        assert stack.pid_alive(info.pid), stack.last_line(info.log)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield SimpleNamespace(settings=settings, stub=ingest_pb2_grpc.IngestStub(channel), info=info)
    finally:
        stack._signal(info.pid, 15)
        stack._wait_gone([info.pid], 10)


AUTH = (("authorization", f"Bearer {TOKEN}"),)


def test_valid_tasks_are_acknowledged_on_the_tasks_topic_and_routed_and_bad_ones_rejected_with_reasons(router):
    settings, stub = router.settings, router.stub
    spec = load_spec(SPEC)
    tool, boundary, math = build_workload(1, 0)
    bare_math = {k: v for k, v in math.items() if k != "task_id"}  # id computed as the CLI computes it
    lines = [
        tool,                                                       # 0 ok, with tools and a reference
        {"unit": "poetry", "prompt": "Write a haiku."},              # 1 unknown unit
        bare_math,                                                  # 2 ok
        {"unit": "math_steps", "prompt": "2+2?", "split": "test"},  # 3 bad field value
        {"unit": "math_steps"},                                     # 4 missing prompt
        {"unit": "math_steps", "prompt": "x" * (MAX_BYTES + 10)},  # 5 over the size limit
        boundary,                                                   # 6 ok
        {"unit": "math_steps", "prompt": "2+2?", "reference": {"no_call": True}},  # 7 reference misfits the checker
    ]
    inputs = [task_input(line) for line in lines]
    bad_json = ingest_pb2.TaskInput(unit="tool_call", prompt="Call it.", tools_json="[{not json")  # 8
    summary = stub.SubmitTasks(iter([*inputs, bad_json]), metadata=AUTH, timeout=30)

    # The RPC returns after the broker acknowledged: the accepted tasks are on the topic already.
    on_topic = events(settings, settings.topics.tasks, TaskSubmitted)
    results = list(summary.results)
    assert [r.index for r in results] == list(range(9))
    assert [r.accepted for r in results] == [True, False, True, False, False, False, True, False, False]

    # the same validation as `distillery submit`: same ids for the accepted, same reasons for the rejected
    cli_events, cli_errors = parse_tasks(jsonl(lines), spec, MAX_BYTES, "cli@submit")
    assert [r.task_id for r in results if r.accepted] == [e.task_id for e in cli_events]
    assert [r.error for r in results[:8] if not r.accepted] == [e.reason for e in cli_errors]
    assert results[2].task_id == math["task_id"]
    assert "unknown capability unit 'poetry'" in results[1].error
    assert "field 'split'" in results[3].error and "field 'prompt'" in results[4].error
    assert f"over the {MAX_BYTES}-byte limit" in results[5].error
    assert results[7].error.startswith("field 'reference': unit 'math_steps' checks answers with 'final_answer', "
                                       "which needs reference.answer")
    assert results[8].error.startswith("field 'tools': not valid JSON")

    accepted = {r.task_id for r in results if r.accepted}
    assert {e.task_id for e in on_topic} == accepted
    by_id = {e.task_id: e for e in on_topic}
    assert by_id[tool["task_id"]].task == Task.model_validate(tool)
    assert all(e.produced_by.startswith("router@") for e in on_topic)

    # ...and routed like any task: one request per teacher of the unit
    wanted = {(line["task_id"] if "task_id" in line else math["task_id"], teacher)
              for line in (tool, bare_math, boundary) for teacher in spec.units[line["unit"]].routing.teachers}
    teachers = sorted({t for _, t in wanted})
    requests = wait_for(lambda: {(r.task.task_id, r.teacher_id) for t in teachers
                                 for r in events(settings, settings.topics.generation_requests(t), GenerationRequested)},
                        lambda got: got >= wanted)
    assert requests == wanted


def test_status_goes_from_accepted_to_routed_and_an_unknown_id_is_unknown(router):
    stub = router.stub
    line = {"unit": "math_steps", "prompt": "What is 17 * 3?", "reference": {"answer": "51"}}
    (result,) = stub.SubmitTasks(iter([task_input(line)]), metadata=AUTH, timeout=30).results
    assert result.accepted
    first = stub.GetTaskStatus(ingest_pb2.TaskStatusRequest(task_id=result.task_id), metadata=AUTH, timeout=10)
    # the router may already have routed it by now; in-process, test_accepted_then_routed pins "accepted"
    assert first.state in ("accepted", "routed") and first.unit == "math_steps"
    final = wait_for(lambda: stub.GetTaskStatus(ingest_pb2.TaskStatusRequest(task_id=result.task_id), metadata=AUTH,
                                                timeout=10),
                     lambda s: s.state == "routed", timeout_s=30)
    assert final.task_id == result.task_id and final.unit == "math_steps"
    assert list(final.teachers) == load_spec(SPEC).units["math_steps"].routing.teachers and not final.error

    unknown = stub.GetTaskStatus(ingest_pb2.TaskStatusRequest(task_id="task_nobody_sent_this"), metadata=AUTH, timeout=10)
    assert unknown.state == "unknown" and unknown.task_id == "task_nobody_sent_this" and not unknown.teachers
    assert "neither accepted through nor routed" in unknown.error

    with pytest.raises(grpc.RpcError) as err:
        stub.GetTaskStatus(ingest_pb2.TaskStatusRequest(), metadata=AUTH, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("metadata, message", [
    ((), "missing bearer token"),
    ((("authorization", "Bearer not-the-token"),), "invalid bearer token"),
    ((("authorization", TOKEN),), "expected 'Bearer <token>'"),
])
def test_a_call_without_the_right_token_is_unauthenticated_and_publishes_nothing(router, metadata, message):
    settings, stub = router.settings, router.stub
    line = {"unit": "math_steps", "prompt": f"Unauthenticated {message}: 1+1?"}
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitTasks(iter([task_input(line)]), metadata=metadata, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert message in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.GetTaskStatus(ingest_pb2.TaskStatusRequest(task_id="x"), metadata=metadata, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and message in err.value.details()
    (event,), _ = parse_tasks(jsonl([line]), None, MAX_BYTES, "x")
    assert event.task_id not in {e.task_id for e in events(settings, settings.topics.tasks, TaskSubmitted)}
    assert stack.pid_alive(router.info.pid)


# --- configuration ------------------------------------------------------------------------------------


def test_ingest_without_a_token_is_a_config_error_naming_ingest_token():
    with pytest.raises(ConfigError, match="ingest_token") as err:
        check_ingest_settings(RouterSettings(grpc_port=50051, ingest_token=None))
    assert "DISTILLERY_INGEST_TOKEN" in str(err.value) and "DISTILLERY_GRPC_PORT=0" in str(err.value)
    with pytest.raises(ConfigError, match="ingest_token"):
        IngestServer(RouterSettings(grpc_port=50051, ingest_token=""), None, None, TaskIndex())  # type: ignore[arg-type]
    # disabled ingest needs no token and starts no server
    check_ingest_settings(RouterSettings(grpc_port=0, ingest_token=None))
    assert ingest_server(RouterSettings(grpc_port=0, ingest_token=None), None, None, TaskIndex()) is None  # type: ignore[arg-type]
    assert TOKEN not in repr(RouterSettings(grpc_port=1, ingest_token=TOKEN))


def test_the_router_process_refuses_to_start_with_ingest_but_no_token(tmp_path, settings):
    base = stack.service_env(settings.kafka_bootstrap_servers, settings.topic_prefix, SPEC, tmp_path)
    base.pop("DISTILLERY_INGEST_TOKEN", None)
    result = subprocess.run([sys.executable, "-m", "distillery_router"], env={**base, "DISTILLERY_GRPC_PORT": "50051"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ingest_token" in lines[0] and "Traceback" not in result.stderr


# --- the servicer in-process ------------------------------------------------------------------------------


class RecordingBus:
    """What the servicer needs of a Bus; ``fail`` makes the broker refuse to acknowledge."""

    def __init__(self, fail: bool = False) -> None:
        self.produced_by = "router@test"
        self.topics = SimpleNamespace(tasks="t.tasks.v1")
        self.published: list = []
        self.fail = fail

    async def publish(self, outs) -> None:
        outs = list(outs)
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionError("broker gone")
        self.published.extend(outs)


@pytest.fixture
async def in_process():
    servers = []

    async def start(bus: RecordingBus, **settings):
        index = TaskIndex()
        port = free_port()
        cfg = RouterSettings(grpc_port=port, ingest_token=TOKEN, max_task_bytes=MAX_BYTES, **settings)
        server = IngestServer(cfg, load_spec(SPEC), bus, index)  # type: ignore[arg-type]
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        servers.append((server, channel))
        return ingest_pb2_grpc.IngestStub(channel), index

    yield start
    for server, channel in servers:
        await channel.close()
        await server.stop()


async def _submit(stub, lines):
    async def stream():
        for line in lines:
            yield task_input(line)

    return await stub.SubmitTasks(stream(), metadata=AUTH, timeout=10)


async def test_accepted_then_routed(in_process):
    bus = RecordingBus()
    stub, index = await in_process(bus)
    summary = await _submit(stub, [{"unit": "tool_call", "prompt": "Area of a 3x4 rectangle?"}])
    (result,) = summary.results
    assert result.accepted and [o.event.task_id for o in bus.published] == [result.task_id]
    assert bus.published[0].topic == "t.tasks.v1"
    status = await stub.GetTaskStatus(ingest_pb2.TaskStatusRequest(task_id=result.task_id), metadata=AUTH)
    assert (status.state, status.unit, list(status.teachers)) == ("accepted", "tool_call", [])
    index.routed(result.task_id, ["smollm2", "qwen-coder"])  # what the router's subscriber does
    status = await stub.GetTaskStatus(ingest_pb2.TaskStatusRequest(task_id=result.task_id), metadata=AUTH)
    assert (status.state, status.unit, list(status.teachers)) == ("routed", "tool_call", ["smollm2", "qwen-coder"])
    # a resubmission acknowledged after routing does not move it back
    await _submit(stub, [{"unit": "tool_call", "prompt": "Area of a 3x4 rectangle?"}])
    assert index.status(result.task_id).state == "routed"


async def test_more_tasks_than_the_per_call_limit_publish_nothing(in_process):
    bus = RecordingBus()
    stub, index = await in_process(bus, ingest_max_tasks_per_call=3)
    lines = [{"unit": "math_steps", "prompt": f"{i} + 1?"} for i in range(4)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _submit(stub, lines)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "more than 3 tasks" in err.value.details() and bus.published == [] and len(index) == 0
    assert len((await _submit(stub, lines[:3])).results) == 3


async def test_a_broker_that_does_not_acknowledge_is_unavailable_and_nothing_counts_as_accepted(in_process):
    stub, index = await in_process(RecordingBus(fail=True))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _submit(stub, [{"unit": "math_steps", "prompt": "1+1?"}])
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "broker gone" in err.value.details() and "resubmit" in err.value.details()
    assert len(index) == 0


def test_task_line_maps_unset_fields_to_absent_keys():
    assert task_line(ingest_pb2.TaskInput()) == {}
    msg = ingest_pb2.TaskInput(unit="u", prompt="", split="eval", tools_json="[]", reference_json='{"answer": "1"}',
                               metadata={"a": "b"})
    assert task_line(msg) == {"unit": "u", "prompt": "", "tools": [], "reference": {"answer": "1"}, "split": "eval",
                              "metadata": {"a": "b"}}


def test_the_index_is_bounded():
    index = TaskIndex(max_entries=2)
    for i in range(3):
        index.routed(f"t{i}", ["a"], unit="u")
    assert [index.status(f"t{i}").state for i in range(3)] == ["unknown", "routed", "routed"]



@pytest.fixture(scope="module")
def server_cert(tmp_path_factory):
    """A self-signed server certificate for localhost / 127.0.0.1 (openssl)."""
    folder = tmp_path_factory.mktemp("ingest-tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(folder / "server.key"), "-out", str(folder / "server.pem")],
                   check=True, capture_output=True, timeout=60)
    return folder / "server.pem", folder / "server.key"


async def test_ingest_over_tls_accepts_a_verified_client_and_refuses_plaintext(server_cert):
    cert, key = server_cert
    port = free_port()
    cfg = RouterSettings(grpc_port=port, ingest_token=TOKEN, max_task_bytes=MAX_BYTES, grpc_tls_certfile=cert,
                         grpc_tls_keyfile=key)
    bus = RecordingBus()
    server = IngestServer(cfg, load_spec(SPEC), bus, TaskIndex())  # type: ignore[arg-type]
    await server.start()
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
            summary = await _submit(ingest_pb2_grpc.IngestStub(channel), [{"unit": "math_steps", "prompt": "1 + 1?"}])
        assert summary.results[0].accepted and len(bus.published) == 1
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:  # no TLS: no connection
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _submit(ingest_pb2_grpc.IngestStub(channel), [{"unit": "math_steps", "prompt": "2 + 2?"}])
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and len(bus.published) == 1
    finally:
        await server.stop()


def test_tls_files_go_together_and_must_exist(server_cert):
    cert, _ = server_cert
    with pytest.raises(ValueError, match="grpc_tls_certfile and grpc_tls_keyfile go together"):
        RouterSettings(grpc_tls_certfile=cert)
    with pytest.raises(ValueError, match="grpc_tls_keyfile: file not found"):
        RouterSettings(grpc_tls_certfile=cert, grpc_tls_keyfile="/nowhere/key.pem")
