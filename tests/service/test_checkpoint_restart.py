"""Service test (issue 17): the editor and the judge restart from a checkpoint plus the topic's tail,
on the real broker, and hold exactly the state a full read gives; a checkpoint the topics no longer
match, or a damaged one, is passed over for a full read."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from distillery.contracts.settings import ServiceSettings
from distillery.contracts.spec import load_spec
from distillery.runtime.kafka import ensure_topics, produce_all
from distillery_editor.handlers import EditorDeps, checkpoints_of, rebuild_state
from distillery_editor.state import EditorState
from distillery_judge.bootstrap import hooks
from distillery_judge.checkpoints import store_of
from distillery_judge.handlers import JudgeDeps, JudgeSettings
from tests.unit.conftest import SPEC_PATH
from tests.unit.test_checkpoint_fold import (
    V1,
    clustering,
    editor_view,
    embed,
    history,
    judge_verdicts,
    judge_view,
    windowed,
)


def produce(settings: ServiceSettings, topic: str, events) -> None:
    asyncio.run(produce_all(settings, [(topic, e.key, e.model_dump_json().encode()) for e in events]))


def with_state(settings: ServiceSettings, state_dir, cls=ServiceSettings):
    return cls.model_validate({**settings.model_dump(), "state_dir": state_dir, "checkpoint_after": 1})


def editor(settings: ServiceSettings, spec) -> EditorDeps:
    return EditorDeps(spec=spec, settings=settings, topics=settings.topics,
                      state=EditorState(settings.topics.verdicts, spec, embed))


def test_the_editor_restarts_from_a_checkpoint_and_the_tail(settings, tmp_path) -> None:
    spec = clustering(load_spec(SPEC_PATH))
    samples, reviews = history(spec)
    topics = settings.topics
    asyncio.run(ensure_topics(settings, {topics.samples: 3, topics.reviews: 3, topics.verdicts: 3}))
    checkpointed = with_state(settings, tmp_path)
    produce(settings, topics.samples, samples[:60])
    produce(settings, topics.reviews, [d for d, _ in reviews[:10]])

    first = editor(checkpointed, spec)
    rebuilt = asyncio.run(rebuild_state(first))  # a full read: nothing to start from; it writes the first checkpoint
    (written,) = checkpoints_of(first).newest_first()
    assert rebuilt.loaded is None and rebuilt.saved == written and rebuilt.tail == 70

    produce(settings, topics.samples, samples[60:])
    produce(settings, topics.reviews, [d for d, _ in reviews[10:]])
    restarted, full = editor(checkpointed, spec), editor(settings, spec)
    rebuilt = asyncio.run(rebuild_state(restarted))
    assert rebuilt.loaded == written and rebuilt.tail == len(samples) + len(reviews) - 70
    asyncio.run(rebuild_state(full))
    probes = [(s.unit, s.pathway, f"{s.prompt}\n{s.final}") for s in samples[::5] if hasattr(s, "pathway")]
    assert editor_view(restarted.state, probes) == editor_view(full.state, probes)
    assert len(restarted.state.live) > 40
    newest = checkpoints_of(restarted).newest_first()
    assert written in newest and len(newest) == 2  # it read a tail past the first, so it wrote a second

    # A checkpoint whose records the topic no longer holds (a topic recreated under the same name)
    # is passed over, and so is one that does not load: both fall back to a full read.
    manifest = newest[0] / "manifest.json"
    data = json.loads(manifest.read_text())
    data["marks"][topics.samples] = {p: crc + 1 for p, crc in data["marks"][topics.samples].items()}
    manifest.write_text(json.dumps(data))
    (newest[1] / "state.json").write_text("{not json")
    fallback = editor(with_state(settings, tmp_path), spec)
    rebuilt = asyncio.run(rebuild_state(fallback))
    assert rebuilt.loaded is None and rebuilt.tail == len(samples) + len(reviews)
    assert editor_view(fallback.state, probes) == editor_view(full.state, probes)


def test_the_judge_restarts_from_a_checkpoint_and_the_tail(settings, tmp_path, caplog) -> None:
    gated = windowed(load_spec(SPEC_PATH))
    verdicts = judge_verdicts(gated)
    asyncio.run(ensure_topics(settings, {settings.topics.verdicts: 3}))
    checkpointed = with_state(settings, tmp_path, JudgeSettings)

    def restart(judge_settings) -> JudgeDeps:
        deps = JudgeDeps(spec=gated, version=V1, settings=judge_settings, topics=judge_settings.topics)
        asyncio.run(hooks(deps, bus=None)["on_startup"][0]())  # the start-up rebuild, as the service runs it
        return deps

    produce(settings, settings.topics.verdicts, verdicts[:170])
    first = restart(checkpointed)
    assert len(store_of(first).newest_first()) == 1
    produce(settings, settings.topics.verdicts, verdicts[170:])
    caplog.set_level("INFO", "distillery.judge")
    restarted = restart(checkpointed)
    assert f"{store_of(first).newest_first()[-1]} and {len(verdicts) - 170} record(s) after it" in caplog.text
    full = restart(JudgeSettings.model_validate(settings.model_dump()))
    assert judge_view(restarted) == judge_view(full) and restarted.rebuilt_to == full.rebuilt_to
    assert sum(full.rebuilt_to.values()) == len(verdicts) and full.monitor.closed
    assert len(store_of(restarted).newest_first()) == 2


def checkpoint_command(service: str, settings: ServiceSettings, *args: str, **env: str):
    environ = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
               "DISTILLERY_TOPIC_PREFIX": settings.topic_prefix, "DISTILLERY_SPEC_PATH": str(SPEC_PATH),
               "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-m", f"distillery_{service}", *args], env=environ, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("service", ["judge", "editor"])
def test_the_checkpoint_command_writes_one_when_there_is_something_new(settings, tmp_path, service) -> None:
    spec = load_spec(SPEC_PATH)
    topics = settings.topics
    asyncio.run(ensure_topics(settings, {topics.samples: 3, topics.reviews: 3, topics.verdicts: 3}))
    if service == "judge":
        produce(settings, topics.verdicts, judge_verdicts(spec, 40))
    else:
        produce(settings, topics.samples, history(clustering(spec), 30)[0])
    state_dir = str(tmp_path / "state")
    first = checkpoint_command(service, settings, "checkpoint", DISTILLERY_STATE_DIR=state_dir)
    assert first.returncode == 0, first.stderr
    assert f"{service}: wrote {tmp_path / 'state'}" in first.stdout and "after the start" in first.stdout
    again = checkpoint_command(service, settings, "checkpoint", DISTILLERY_STATE_DIR=state_dir)
    assert again.returncode == 0 and f"{service}: nothing new to write; read 0 record(s) after {tmp_path}" in again.stdout

    unset = checkpoint_command(service, settings, "checkpoint")
    assert unset.returncode == 2 and unset.stdout == ""
    assert unset.stderr.strip() == f"{service}: DISTILLERY_STATE_DIR is not set: there is nowhere to write a checkpoint"
    wrong = checkpoint_command(service, settings, "snapshot", DISTILLERY_STATE_DIR=state_dir)
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == f"{service}: unknown arguments 'snapshot' (no arguments, or 'checkpoint')"
