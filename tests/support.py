"""Test helpers: a recorded-replay spec built from the real example workload.

The replay teachers serve answers derived from each task's ground truth: ``alpha``
answers every task correctly, ``beta`` gets a deterministic share wrong in the way
weak teachers do (wrong argument, wrong number, a tool call where none fits, broken
JSON), so the judge's pools have real work to do.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Any

import yaml
from faststream.kafka.annotations import KafkaMessage

from distillery.contracts import ids
from distillery.contracts.events import CandidateGenerated, Task, Trace
from distillery_cli.workload import build_workload

ROOT = Path(__file__).resolve().parents[1]
CUSTOM_UNIT = ROOT / "examples" / "custom_unit"


def candidate(task: Task, text: str, teacher: str = "smollm2", expected: int = 1, **fields) -> CandidateGenerated:
    """A teacher's candidate for ``task`` with the ids the teacher service would give it."""
    request_id = ids.request_id_for(task.task_id, teacher)
    return CandidateGenerated(
        candidate_id=ids.candidate_id_for(request_id), request_id=request_id, task=task, teacher_id=teacher,
        strategy="competition" if expected > 1 else "single", route_reason="test", expected_candidates=expected,
        text=text, produced_by="teacher@test", trace=Trace(task_id=task.task_id, causation_id=request_id), **fields,
    )


def correct_answer(task: dict) -> str:
    ref = task["reference"]
    if ref.get("no_call"):
        return "None of the available functions can answer this request, so I will not call any."
    if ref.get("tool_calls"):
        (call,) = ref["tool_calls"][:1]
        (name, args), = call.items()
        chosen = {k: v[0] for k, v in args.items() if v and v[0] != ""}
        return json.dumps({"name": name, "arguments": chosen})
    return f"Work out the quantity asked.\nCompute it step by step.\n#### {ref['answer']}"


def flawed_answer(task: dict, index: int) -> str:
    """Every other task of each unit (the workload interleaves units) is answered wrongly."""
    if (index // 3) % 2:
        return correct_answer(task)
    ref = task["reference"]
    if ref.get("no_call"):
        tool = task["tools"][0]["name"] if task["tools"] else "search"
        return json.dumps({"name": tool, "arguments": {}})
    if ref.get("tool_calls"):
        return '{"name": "broken", "arguments": {'
    return f"Guess.\n#### {float(ref['answer']) + 1:g}"


def replay_spec(tmp_path: Path, per_unit: int = 4, eval_per_unit: int = 2, timeout_s: float = 60,
                beta_latency_s: float = 0.01, beta_paced: bool = False,
                boundary_attempts: int = 1) -> tuple[Path, list[dict]]:
    """A copy of the example spec whose teachers are replays of derived answers."""
    workload = build_workload(per_unit, eval_per_unit)
    rows = []
    for i, task in enumerate(workload):
        rows.append({"teacher_id": "alpha", "task_id": task["task_id"], "text": correct_answer(task),
                     "prompt_tokens": 50, "completion_tokens": 20, "latency_s": 0.01, "confidence": 0.9})
        rows.append({"teacher_id": "beta", "task_id": task["task_id"], "text": flawed_answer(task, i),
                     "prompt_tokens": 50, "completion_tokens": 20, "latency_s": beta_latency_s, "confidence": 0.6})
    replay = tmp_path / "replay.jsonl"
    replay.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = yaml.safe_load((ROOT / "examples" / "spec.yaml").read_text())
    price = {"per_1k_prompt": 0.003, "per_1k_completion": 0.015}
    spec["teachers"] = {
        "alpha": {"backend": "replay", "replay_path": str(replay), "price": price},
        "beta": {"backend": "replay", "replay_path": str(replay), "price": price, "replay_pace": beta_paced},
    }
    for name, unit in spec["units"].items():
        unit["routing"] = {"strategy": "competition", "teachers": ["alpha", "beta"]} if name != "tool_boundary" \
            else {"strategy": "single", "teachers": ["beta"]}
    spec["units"]["tool_boundary"]["max_attempts"] = boundary_attempts
    spec["judge"]["aggregation_timeout_s"] = timeout_s
    # the tiny student only: the pretrained one would load SmolLM2 into the trainer and evaluator
    spec["students"] = {"tiny": {**spec["students"]["tiny"], "epochs": 2, "hidden_size": 32, "layers": 1,
                                 "max_new_tokens": 16, "max_seq_len": 320}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path, workload


def assert_config_error(result, *needles: str) -> None:
    """What ``distillery`` turns into one 'error:' line and exit code 2 (see main.run)."""
    from distillery.contracts.settings import ConfigError

    assert isinstance(result.exception, ConfigError), result.output
    message = str(result.exception)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def deploy_queries() -> list[str]:
    """Every PromQL expression of the alert rules and the Grafana dashboards (panels and annotations)."""
    queries = [rule["expr"] for group in yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"]
               for rule in group["rules"]]
    for board in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        data = json.loads(board.read_text())
        queries += [t["expr"] for panel in data["panels"] for t in panel["targets"]]
        queries += [a["expr"] for a in data.get("annotations", {}).get("list", [])]
    return queries


def metrics_used_by_deploy() -> tuple[set[str], set[str]]:
    """Metric names (and ``__name__`` regexes) that the alert rules and dashboards query."""
    import re

    text = "\n".join(deploy_queries())
    patterns = set(re.findall(r'__name__=~"([^"]+)"', text))
    names = set(re.findall(r"\bdistillery_[a-z0-9_]+\b", re.sub(r'__name__=~"[^"]+"', "", text)))
    return names, patterns


def exported_metric_names(ports: list[int]) -> set[str]:
    """Every metric family and sample name the services on ``ports`` expose now (a labelled
    metric is listed, with its HELP and TYPE, before its first sample)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            for family in text_string_to_metric_families(resp.read().decode()):
                names.add(family.name)
                names.update(sample.name for sample in family.samples)
                if family.type == "counter":
                    names.add(family.name + "_total")
    return names


class InMemoryService:
    """A service's subscriptions wired to FastStream's in-memory TestKafkaBroker (no cluster):
    ``publish`` sends one event to a channel, ``sent(stem)`` is what the service published there,
    parsed back from the bytes the broker carried."""

    def __init__(self, service: str, subscriptions, deps, settings, metrics_name: str | None = None) -> None:
        """``metrics_name``: a bus registers its metrics under the service's name, once per process;
        a second in-memory instance of a service in one test run needs a name of its own."""
        from distillery.runtime.service import make_bus
        from distillery.runtime.wiring import wire

        self.bus = make_bus(settings, metrics_name or service, "test")
        deps.topics, deps.produced_by = self.bus.topics, self.bus.produced_by
        self.groups = wire(self.bus, service, subscriptions, deps)
        self.bus.in_memory = True
        self.received: dict[str, list[bytes]] = {}

    def catch(self, *topics: str) -> None:
        """Subscribe to the service's output topics (before entering the context)."""
        for topic in topics:
            self.bus.broker.subscriber(topic, group_id=f"catch-{topic}")(self._catcher(topic))

    def _catcher(self, topic: str):
        async def catch(msg: KafkaMessage) -> None:
            self.received.setdefault(topic, []).append(msg.body)

        return catch

    def sent(self, topic: str, model):
        from distillery.contracts.events import parse_event

        return [parse_event(model, body) for body in self.received.get(topic, [])]

    async def publish(self, topic: str, event) -> None:
        await self.client.publish(event.model_dump_json().encode(), topic, key=event.key.encode())

    async def __aenter__(self) -> InMemoryService:
        from faststream.kafka import TestKafkaBroker

        self._test = TestKafkaBroker(self.bus.broker)
        self.client = await self._test.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._test.__aexit__(*exc)


class RealPrometheus:
    """The Prometheus server (Debian's `prometheus` package) on loopback, scraping every process of a
    running stack each second, with the project's alert rules loaded. The rules' `for:` holds are
    set to 0s, so an alert fires on its first true evaluation instead of after minutes: the
    expressions themselves are the committed ones."""

    def __init__(self, state, workdir: Path) -> None:
        import re
        import shutil

        from distillery.runtime.service import free_port

        self.binary = shutil.which("prometheus")
        self.workdir, self.port, self.process = workdir, free_port(), None
        rules = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
        (workdir / "alerts.yml").write_text(re.sub(r"(?m)^(\s*)for: \S+$", r"\1for: 0s", rules))
        jobs: dict[str, list[str]] = {}
        for proc in state.processes:  # the job is the service, as in deploy/prometheus/prometheus.yml
            jobs.setdefault(proc.module.removeprefix("distillery_"), []).append(f"127.0.0.1:{proc.port}")
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": ["alerts.yml"],
                  "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                                     for job, targets in jobs.items()]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))

    def __enter__(self) -> RealPrometheus:
        import subprocess

        log = open(self.workdir / "prometheus.log", "w")  # the server writes it until it stops
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        from tests.waiting import wait_for

        wait_for(self._ready, bool, timeout_s=30)
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def _ready(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        import urllib.parse
        import urllib.request

        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def firing(self) -> set[str]:
        return {a["labels"]["alertname"] for a in self.api("alerts")["alerts"] if a["state"] == "firing"}

    def has_series(self, name: str) -> bool:
        return bool(self.api("series", **{"match[]": f'{{__name__="{name}"}}'}))

    def knows(self, name: str) -> bool:
        """Stored samples, or the scraped HELP/TYPE of the family (a counter's family drops `_total`)."""
        return self.has_series(name) or any(self.api("metadata", metric=family)
                                            for family in {name, name.removesuffix("_total")})


# --- the closed loop: the example spec with a promotion policy -------------------------------------

DEPLOYMENT = "tiny-live"  # the teacher entry that serves the promoted tiny student (backend: student)


def loop_spec_data(**policy: Any) -> dict:
    """examples/spec.yaml whose ``tiny`` recipe is promoted through the ``tiny-live`` deployment
    (``policy`` overrides the promotion policy: share, window, live_tolerance)."""
    data = yaml.safe_load((ROOT / "examples" / "spec.yaml").read_text())
    data["teachers"][DEPLOYMENT] = {"backend": "student", "student": "tiny"}
    data["promotion"] = {"tiny": {"deployment": DEPLOYMENT, "share": 1.0, "window": 4, **policy}}
    return data


def loop_spec(**policy: Any):
    from distillery.contracts.spec import parse_spec

    return parse_spec(loop_spec_data(**policy))


# --- the custom-unit example (examples/custom_unit) on the real broker ---------------------------------


def custom_unit_generator():
    """examples/custom_unit/generate.py as a module (it is a script, not a package)."""
    module_spec = importlib.util.spec_from_file_location("custom_unit_generate", CUSTOM_UNIT / "generate.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def custom_unit_spec(tmp_path: Path, data_dir: Path, rounds: dict | None = None, extra: dict | None = None,
                     **students: dict) -> Path:
    """The example's spec, its replays pointing at the freshly generated recordings; ``students``
    overrides recipe fields per student (``tiny={"max_steps": 20}``), ``rounds`` sets round policies,
    ``extra`` adds top-level sections (``promotion``, ``stop_signals``, ...) and more ``teachers``."""
    spec = yaml.safe_load((CUSTOM_UNIT / "spec.yaml").read_text())
    for name, teacher in spec["teachers"].items():
        teacher["replay_path"] = str(data_dir / f"{name}.jsonl")
    for name, overrides in students.items():
        spec["students"][name].update(overrides)
    if rounds:
        spec["rounds"] = rounds
    for section, value in (extra or {}).items():
        if isinstance(spec.get(section), dict):
            spec[section].update(value)
        else:
            spec[section] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cli(*args: str) -> str:
    """``distillery ARGS`` in process; a non-zero exit fails the test with the output."""
    from typer.testing import CliRunner

    from distillery_cli.main import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"distillery {' '.join(args)}: {result.output}\n{result.exception!r}"
    return result.output


def editor_lag(settings) -> int:
    """What the editor has still to read of the verdicts topic."""
    from distillery.runtime.kafka import consumer_lag

    topic = settings.topics.verdicts
    return asyncio.run(consumer_lag(settings, settings.group("editor"), [topic]))[topic]


def restart(state, name: str) -> None:
    """SIGKILL one service process of a running stack and start it again with the same settings."""
    import os
    import signal

    from distillery_cli import stack

    old = state.process(name)
    os.kill(old.pid, signal.SIGKILL)
    stack._wait_gone([old.pid], 10)
    new = stack.start_process(name, old.module, old.env, Path(state.run_dir))
    state.processes = [new if p.name == name else p for p in state.processes]
