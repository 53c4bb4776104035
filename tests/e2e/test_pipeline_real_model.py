"""End to end with a real model: the SmolLM2-135M-Instruct teacher (transformers backend)."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from distillery.contracts.events import (
    CandidateGenerated,
    CandidatesJudged,
    EvaluationCompleted,
    StudentTrained,
    TrainingRequested,
)
from distillery.contracts.spec import load_spec
from distillery.contracts.submission import parse_tasks
from distillery.domain.models import smollm2_tokenizer, tokenizer_fingerprint
from distillery.runtime.kafka import consumer_lag, produce_all
from distillery_cli import stack
from distillery_cli.workload import build_workload
from tests.support import ROOT
from tests.waiting import events, wait_for


@pytest.mark.model
def test_real_teacher_through_all_services(tmp_path, kafka_bootstrap, topic_prefix, settings):
    spec = yaml.safe_load((ROOT / "examples" / "spec.yaml").read_text())
    # the teacher caches its top-4 logprobs; the student (same tokenizer) learns them (logit distillation)
    spec["teachers"] = {"smollm2": {**spec["teachers"]["smollm2"], "max_new_tokens": 24, "logprobs": 4}}
    for unit in spec["units"].values():
        unit["routing"] = {"strategy": "single", "teachers": ["smollm2"], "max_new_tokens": 24}
    # no reference for the boundary unit here: its text answers pass the rule floor into `train`,
    # so the student always has samples whatever this weak teacher says
    spec["units"]["tool_boundary"]["rules"]["reference"] = "none"
    # the student learns the unit this weak teacher always yields samples for (a recipe unit without
    # samples would stop the trainer before training, by design)
    spec["students"]["tiny"].update(units=["tool_boundary"], hidden_size=32, layers=1, epochs=2, max_steps=4,
                                    max_new_tokens=8, method="lora", distill={"teacher": "smollm2", "weight": 0.5})
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    workload = build_workload(2, 1)

    state = stack.start(spec_path, tmp_path / "run", topic_prefix, bootstrap=kafka_bootstrap)
    try:
        stack.wait_ready(state, timeout_s=300)  # first run converts the GGUF model (~20 s)
        submitted, errors = parse_tasks("\n".join(json.dumps(t) for t in workload), load_spec(spec_path),
                                        settings.max_task_bytes, "test")
        assert not errors
        asyncio.run(produce_all(settings, [(settings.topics.tasks, e.task_id, e.model_dump_json().encode()) for e in submitted]))
        verdicts = wait_for(lambda: events(settings, settings.topics.verdicts, CandidatesJudged),
                            lambda v: len(v) == len(workload), timeout_s=300, every_s=1)
        candidates = events(settings, settings.topics.candidates, CandidateGenerated)
        assert len(candidates) == len(workload)
        for cand in candidates:
            assert cand.error is None and cand.text.strip()
            assert cand.usage.prompt_tokens > 20 and 0 < cand.usage.completion_tokens <= 24
            assert cand.latency_s > 0 and cand.cost_usd > 0 and 0 < cand.confidence <= 1
            assert cand.finish_reason in ("stop", "length")
            top = cand.logprobs.top
            assert len(top) == len(cand.logprobs.token_ids) == cand.usage.completion_tokens
            assert all(len(t.ids) == 4 and t.logprobs == sorted(t.logprobs, reverse=True) for t in top)
            assert cand.logprobs.tokenizer == tokenizer_fingerprint(smollm2_tokenizer())  # the student's too
        assert all(jc.pool in ("train", "refusal", "hard_case", "contrastive", "failure", "discard") and jc.reasons
                   for v in verdicts for jc in v.candidates)
        assert all(jc.correction for v in verdicts for jc in v.candidates if jc.pool == "contrastive")

        # the editor must have turned the verdicts into samples before the trainer snapshots them
        wait_for(lambda: asyncio.run(consumer_lag(settings, settings.group("editor"), [settings.topics.verdicts])),
                 lambda lag: lag[settings.topics.verdicts] == 0, timeout_s=120)
        request = TrainingRequested(request_id="real-train", student="tiny", produced_by="test")
        asyncio.run(produce_all(settings, [(settings.topics.training_requests, "real-train", request.model_dump_json().encode())]))
        trained = wait_for(lambda: events(settings, settings.topics.students, StudentTrained),
                           lambda s: len(s) == 1, timeout_s=300, every_s=1)[0]
        assert trained.manifest["per_unit"].get("tool_boundary", 0) > 0
        assert trained.manifest["kd_examples"] > 0 and trained.recipe["method"] == "lora"
        evaluation = wait_for(lambda: events(settings, settings.topics.evaluations, EvaluationCompleted),
                              lambda e: len(e) == 1, timeout_s=300, every_s=1)[0]
        assert {s.subject for s in evaluation.scores} >= {"teacher:smollm2", "student:before", "student:after"}
        assert all(s.n == 1 for s in evaluation.scores)
    finally:
        stack.stop(state)

