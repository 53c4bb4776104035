"""End to end: all six services as OS processes on the real broker, replay teachers.

Tasks from the real example workload flow through router, two replay teachers,
judge, editor, trainer and evaluator; the test checks what every hop produced.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from distillery.contracts.events import (
    CandidateGenerated,
    CandidatesJudged,
    EvaluationCompleted,
    EventDeadLettered,
    GenerationRequested,
    SampleCurated,
    StudentTrained,
    TrainingRequested,
)
from distillery.contracts.spec import load_spec
from distillery.contracts.submission import parse_tasks
from distillery.runtime.kafka import consumer_lag, produce_all, read_snapshot
from distillery.runtime.service import free_port
from distillery_cli import pipeline as pipeline_cli
from distillery_cli import stack
from distillery_cli.main import app
from tests.support import (
    RealPrometheus,
    assert_config_error,
    exported_metric_names,
    metrics_used_by_deploy,
    replay_spec,
)
from tests.waiting import events, wait_for

# Configured secrets: a Kafka SASL password (unused on this PLAINTEXT broker, but set) and the
# gRPC ingest token (ingest on). Neither may appear in any log, metric or event of the run.
SECRETS = {"DISTILLERY_KAFKA_SASL_PASSWORD": "kafka-Pa55word-e2e-7f3a", "DISTILLERY_INGEST_TOKEN": "ingest-T0ken-e2e-91bc"}


@pytest.fixture
def pipeline(tmp_path, kafka_bootstrap, topic_prefix):
    spec_path, workload = replay_spec(tmp_path, boundary_attempts=2)
    # a second student that learns only the boundary: its `train` pool is empty (beta's boundary
    # answers are refusals), so a judge-filtered run of it has nothing to train on
    data = yaml.safe_load(spec_path.read_text())
    data["students"]["boundary"] = {**data["students"]["tiny"], "units": ["tool_boundary"], "pools": ["train", "refusal"]}
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
    state = stack.start(spec_path, tmp_path / "run", topic_prefix, bootstrap=kafka_bootstrap,
                        extra_env={**SECRETS, "DISTILLERY_GRPC_PORT": str(free_port()), "DISTILLERY_LAG_WATCH_S": "2"})
    try:
        stack.wait_ready(state, timeout_s=120)
        yield state, spec_path, workload
    finally:
        stack.stop(state)


@pytest.fixture
def prometheus(pipeline, tmp_path):
    """A real Prometheus scraping the stack with the alert rules; None where the binary is missing."""
    if shutil.which("prometheus") is None:
        yield None  # the Debian package 'prometheus' (.ci/run installs it); its checks below are skipped
        return
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    with RealPrometheus(pipeline[0], workdir) as server:
        yield server


def test_workload_flows_through_all_six_services(pipeline, prometheus, settings):
    state, spec_path, workload = pipeline
    spec = load_spec(spec_path)
    text = "\n".join(__import__("json").dumps(t) for t in workload) + "\n{broken\n"
    submitted, errors = parse_tasks(text, spec, settings.max_task_bytes, "test")
    assert [e.line for e in errors] == [len(workload) + 1]
    items = [(settings.topics.tasks, e.task_id, e.model_dump_json().encode()) for e in submitted]
    items.append((settings.topics.tasks, "poison", b'{"not": "a task"}'))
    asyncio.run(produce_all(settings, items))

    every = wait_for(lambda: events(settings, settings.topics.verdicts, CandidatesJudged),
                     lambda v: len({x.task.task_id for x in v}) == len(workload), timeout_s=120)
    verdicts = [v for v in every if v.attempt == 1]
    assert len(verdicts) == len(workload), "exactly one first verdict per task"
    pools = {}
    for verdict in verdicts:
        for jc in verdict.candidates:
            pools.setdefault(jc.pool, []).append((verdict.task, jc))
    # alpha is always right: every train-split task has a train or refusal candidate
    assert {"train", "refusal", "failure", "contrastive"} <= set(pools)
    for _task, jc in pools["contrastive"]:  # wrong answers are kept against the reference, with the reason
        assert jc.correction and "correction:reference" in jc.reasons
    for task, jc in pools["refusal"]:
        assert task.reference.no_call and jc.teacher_id == "beta" and "no_call_correct" in jc.reasons
    for _task, jc in pools["failure"]:
        assert jc.teacher_id == "beta" and "broken_output" in jc.reasons
    candidates = events(settings, settings.topics.candidates, CandidateGenerated)
    assert len({c.candidate_id for c in candidates if c.attempt == 1}) == sum(len(v.candidates) for v in verdicts)
    assert all(c.cost_usd > 0 and c.usage.completion_tokens == 20 for c in candidates)

    # bounded regeneration: beta's rejected boundary answers (train split) get exactly one more attempt
    rejected = {v.task.task_id for v in verdicts if v.task.unit == "tool_boundary" and v.task.split == "train"
                and not any(jc.pool in ("train", "refusal") for jc in v.candidates)}
    assert rejected
    retries = wait_for(lambda: [v for v in events(settings, settings.topics.verdicts, CandidatesJudged) if v.attempt > 1],
                       lambda r: len(r) >= len(rejected), timeout_s=60)
    assert sorted(v.task.task_id for v in retries) == sorted(rejected) and {v.attempt for v in retries} == {2}
    retried = [r for r in events(settings, settings.topics.generation_requests("beta"), GenerationRequested) if r.attempt == 2]
    assert len(retried) == len(rejected) and all("rejected" in r.feedback for r in retried)

    dlq = wait_for(lambda: events(settings, settings.topics.dlq, EventDeadLettered), lambda d: len(d) >= 1)
    assert any(d.source_topic == settings.topics.tasks and "invalid" in d.error for d in dlq)

    samples = wait_for(lambda: events(settings, settings.topics.samples, SampleCurated), lambda s: len(s) > 0)
    time.sleep(2)
    samples = events(settings, settings.topics.samples, SampleCurated)
    assert len({s.sample_id for s in samples}) == len(samples), "no sample doubled"
    eval_ids = {t["task_id"] for t in workload if t["split"] == "eval"}
    assert not {s.provenance.task_id for s in samples} & eval_ids, "held-out tasks never become samples"
    assert {s.pathway for s in samples if s.unit == "math_steps"} == {"answer", "process"}
    assert all(s.limits for s in samples if s.pool == "refusal")

    request = TrainingRequested(request_id="train-test", student="tiny", produced_by="test")
    asyncio.run(produce_all(settings, [(settings.topics.training_requests, "train-test", request.model_dump_json().encode())]))
    trained = wait_for(lambda: events(settings, settings.topics.students, StudentTrained), lambda s: len(s) == 1, timeout_s=300)[0]
    assert trained.manifest["samples"] > 0 and trained.manifest["sha256"]
    assert sum(trained.manifest["end_offsets"].values()) >= len(samples)
    assert trained.loss_curve[-1] < trained.loss_curve[0]
    evaluation = wait_for(lambda: events(settings, settings.topics.evaluations, EvaluationCompleted),
                          lambda e: len(e) == 1, timeout_s=300)[0]
    subjects = {s.subject for s in evaluation.scores}
    assert {"teacher:alpha", "teacher:beta", "student:before", "student:after"} <= subjects
    alpha = [s for s in evaluation.scores if s.subject == "teacher:alpha"]
    assert all(s.accuracy == 1.0 for s in alpha)
    assert evaluation.roi["offline_total_usd"] > 0
    report = Path(evaluation.report_path)
    assert report.name == "report.html" and report.read_text().count("data:image/png;base64,") == 3
    assert (report.parent / "report.md").is_file() and evaluation.student == "tiny" and evaluation.correct

    # attribution through the CLI: the curated recipe against naive distillation, one snapshot
    result = CliRunner().invoke(app, ["attribute", "--variants", "full,naive", "--seeds", "1",
                                      "--run-dir", state.run_dir, "--timeout-s", "600"])
    assert result.exit_code == 0, result.output
    assert "attribution" in result.output and "naive" in result.output
    runs = {t.variant.name: t for t in events(settings, settings.topics.students, StudentTrained) if t.variant}
    assert set(runs) == {"full", "naive"}
    samples_topic = settings.topics.samples  # both read the samples topic up to the same offsets
    assert runs["full"].manifest["snapshot"][samples_topic] == runs["naive"].manifest["snapshot"][samples_topic]
    assert settings.topics.candidates in runs["naive"].manifest["snapshot"]  # naive data: the raw candidates
    assert runs["naive"].manifest["judge_versions"] == ["unjudged"]
    for unit, n in runs["naive"].manifest["per_unit"].items():  # matched to the full recipe's count
        assert n <= runs["full"].manifest["per_unit"][unit]
    done = [e for e in events(settings, settings.topics.evaluations, EvaluationCompleted) if e.attribution_path]
    assert len(done) == 1
    table = json.loads((Path(done[0].attribution_path).parent / "attribution.json").read_text())
    assert {(r["unit"], r["variant"]) for r in table} >= {("all", "full"), ("all", "naive")}
    assert Path(done[0].attribution_path).read_text().count("data:image/png;base64,") == 4
    assert pipeline_cli.latest_evaluation(settings).student_id == evaluation.student_id  # variants aside

    # a variant the snapshot cannot train (the boundary student's `train` pool is empty) ends the
    # experiment with the trainer's reason; asked again, the full run is found, not retrained
    for _ in range(2):
        result = CliRunner().invoke(app, ["attribute", "--student", "boundary", "--variants", "full,judge_filtered",
                                          "--seeds", "1", "--run-dir", state.run_dir, "--timeout-s", "300"])
        assert_config_error(result, "refused variant 'judge_filtered'", "tool_boundary", "run again without it")
    # the second ask publishes the same request ids: the trainer reads them and trains none again
    topic = settings.topics.training_requests
    wait_for(lambda: asyncio.run(consumer_lag(settings, settings.group("trainer"), [topic]))[topic],
             lambda lag: lag == 0, timeout_s=120)
    full_runs = [t for t in events(settings, settings.topics.students, StudentTrained)
                 if t.variant and t.variant.name == "full" and t.student == "boundary"]
    assert len(full_runs) == 1, "a request is trained once"

    # every metric the alert rules query is exported by a running service
    exported = exported_metric_names([p.port for p in state.processes])
    names, patterns = metrics_used_by_deploy()
    assert names and not names - exported, f"rules use metrics no service exports: {sorted(names - exported)}"
    for pattern in patterns:
        assert any(re.fullmatch(pattern, name) for name in exported), pattern

    # and a real Prometheus scraped them all: every target up, every metric the rules and dashboards
    # query stored, and DeadLetters firing on the poison task the router dead-lettered
    if prometheus is not None:
        targets = prometheus.api("targets")["activeTargets"]
        assert len(targets) == len(state.processes) and all(t["health"] == "up" for t in targets), targets
        # a labelled metric nothing has counted yet has no series, but Prometheus knows it from the scrape
        unknown = wait_for(lambda: {n for n in names if not prometheus.knows(n)}, lambda left: not left, timeout_s=30)
        assert not unknown
        assert prometheus.has_series("distillery_router_dead_letters_total")
        assert "DeadLetters" in wait_for(prometheus.firing, lambda alerts: "DeadLetters" in alerts, timeout_s=60)
        # a stopped consumer reports nothing: its failing scrape fires ServiceDown, and the verdicts piling
        # up behind it (redelivered copies here) fire ConsumerLagGrowing, measured by the judge at the broker
        editor = state.process("editor")
        os.kill(editor.pid, signal.SIGSTOP)
        try:
            assert "ServiceDown" in wait_for(prometheus.firing, lambda alerts: "ServiceDown" in alerts, timeout_s=60)
            verdict = events(settings, settings.topics.verdicts, CandidatesJudged)[0]
            copies = [(settings.topics.verdicts, verdict.key, verdict.model_dump_json().encode())] * 150
            asyncio.run(produce_all(settings, copies))
            assert "ConsumerLagGrowing" in wait_for(prometheus.firing, lambda alerts: "ConsumerLagGrowing" in alerts,
                                                    timeout_s=60)
            lagging = {(a["labels"].get("group"), a["labels"]["topic"]) for a in prometheus.api("alerts")["alerts"]
                       if a["labels"]["alertname"] == "ConsumerLagGrowing"}
            assert ("distillery-editor", settings.topics.verdicts) in lagging
        finally:
            os.kill(editor.pid, signal.SIGCONT)
    # every service reports the version it runs (build_info), and `distillery status` shows it
    assert {p.name: pipeline_cli.service_version(state, p) for p in state.processes} == \
        {p.name: "0.1.0" for p in state.processes}
    status = CliRunner().invoke(app, ["status", "--run-dir", state.run_dir])
    assert status.exit_code == 0 and "version" in status.output and "0.1.0" in status.output
    judge = next(p for p in state.processes if p.name == "judge")
    with urllib.request.urlopen(f"http://127.0.0.1:{judge.port}/metrics", timeout=10) as resp:
        lag = re.findall(r'distillery_judge_consumer_lag\{partition="\d+",topic="([^"]+)"\} (\S+)', resp.read().decode())
    assert any(topic == settings.topics.candidates for topic, _ in lag) and all(float(v) >= 0 for _, v in lag)

    # secrets: not in any process's log, not in any /metrics, not in any event on any topic
    logs = "".join(path.read_text(errors="replace") for path in Path(state.run_dir, "logs").glob("*.log"))
    metrics = "".join(urllib.request.urlopen(f"http://127.0.0.1:{p.port}/metrics", timeout=10).read().decode()
                      for p in state.processes)
    payloads = b"".join(r.value or b"" for topic in settings.topics.all_topics(["alpha", "beta"])
                        for r in asyncio.run(read_snapshot(settings, topic)).records)
    assert "ingest" in logs.lower() and payloads  # the run logged and produced plenty
    for secret in SECRETS.values():
        assert secret not in logs and secret not in metrics and secret.encode() not in payloads
