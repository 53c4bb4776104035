"""Checkpoints of the editor's and the judge's state (issue 17): a checkpoint taken at any point of a
history, restored and followed by the rest, is the state a full read of the history gives.

The history is made by the editor's own logic: verdicts of two judge versions over many tasks
(retractions, superseded versions), near-duplicate rewordings, human accepts and rejects, and
semantic clusters (a deterministic bag-of-words embedding stands in for MiniLM).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from collections import deque

import numpy as np
import pytest
import torch

from distillery.contracts import ids
from distillery.contracts.events import (
    CandidatesJudged,
    JudgedCandidate,
    ReviewDecided,
    SourceOffset,
    Task,
    Trace,
    decision_id_for,
)
from distillery_cli.workload import build_workload
from distillery_editor.governance import on_decision, on_verdict
from distillery_editor.state import EditorState
from distillery_judge.checkpoints import export_judged, judged_fold, restore_judged
from distillery_judge.handlers import JudgeDeps

V1, V2 = "rules-v1-aaaa", "rules-v2-bbbb"
VERDICTS, REVIEWS = "t.verdicts.v1", "t.reviews.v1"
NAMES = ["Alice", "Bruno", "Chen", "Dara", "Emeka", "Farah"]
TOPICS = ["apples", "trains", "stamps", "marbles", "tickets"]


def embed(texts: list[str]) -> torch.Tensor:
    """Bag of words hashed into 64 dimensions, normalised: similar prompts land close."""
    out = torch.zeros(len(texts), 64)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            out[row, zlib.crc32(word.encode()) % 64] += 1.0
    return torch.nn.functional.normalize(out, dim=1)


def clustering(spec):
    """The spec with near-duplicate detection everywhere and clusters with a quota on every unit."""
    units = {name: unit.model_copy(update={"editor": unit.editor.model_copy(update={
        "near_duplicate_threshold": 0.7, "cluster_similarity": 0.8, "cluster_quota": 3})})
        for name, unit in spec.units.items()}
    return spec.model_copy(update={"units": units})


def windowed(spec):
    """The spec with short self-check windows that close a unit's gate below 0.7."""
    return spec.model_copy(update={"units": {name: unit.model_copy(update={"judge": unit.judge.model_copy(
        update={"self_checks": unit.judge.self_checks.model_copy(update={"window": 20, "min_agreement": 0.7})})})
        for name, unit in spec.units.items()}})


@pytest.fixture(scope="module")
def clustering_spec(spec):
    return clustering(spec)


def cand(task: Task, n: int, pool: str, final: str, text: str) -> JudgedCandidate:
    return JudgedCandidate(candidate_id=f"c{n}", teacher_id=f"teacher-{n % 2}", text=f"{text}\n#### {final}", pool=pool,
                           rank=1 + n % 2, score=0.9, final=final, reasons=["rules_passed"])


def history(spec, n_tasks: int = 120):
    """(samples topic, reviews topic) as the editor publishes them over a varied run."""
    bases = [Task.model_validate(line) for line in build_workload(6, 1) if line["split"] == "train"]
    state = EditorState(VERDICTS, spec, embed)
    samples, reviews, offset = [], [], 0
    for i in range(n_tasks):
        name, topic = NAMES[i % len(NAMES)], TOPICS[i // len(NAMES) % len(TOPICS)]
        base = bases[i % len(bases)]
        task = base.model_copy(update={"task_id": f"task_{i:04d}", "prompt": f"{name} asks about {topic} {i % 3}"})
        # every fifth answer rewords the one before lightly: near-duplicates
        words = f"{name} works out the {topic} question step by step and checks case {i - i % 5 if i % 5 == 4 else i}"
        text = f"{words} before answering" if i % 5 == 4 else words
        jc = [cand(task, 2 * i, "train", str(i), text),
              cand(task, 2 * i + 1, "hard_case", str(i + 1), f"{TOPICS[i % len(TOPICS)]} differs in case {i}")]
        offset += 1
        out = on_verdict(state, verdict(task, V1, jc), SourceOffset(topic=VERDICTS, partition=i % 3, offset=offset),
                         spec, "editor@test")
        samples += [*out.retractions, *out.samples]
        state.commit()
        if i % 4 == 0:  # a new judge version rejects one candidate and keeps the other
            again = [jc[0], jc[1].model_copy(update={"pool": "discard", "reasons": ["wrong_answer"]})]
            offset += 1
            out = on_verdict(state, verdict(task, V2, again), SourceOffset(topic=VERDICTS, partition=i % 3,
                                                                            offset=offset), spec, "editor@test")
            samples += [*out.retractions, *out.samples]
            state.commit()
        if i % 7 == 3:  # a human rejects one, accepts the other into another pool
            for k, (choice, pool) in enumerate((("reject", None), ("accept", "hard_case"))):
                decision = decided(task, jc[k], choice, pool)
                source = SourceOffset(topic=REVIEWS, partition=0, offset=len(reviews))
                reviews.append((decision, source))
                out = on_decision(state, decision, source, spec, "editor@test")
                samples += [*out.retractions, *out.samples]
                state.commit()
    return samples, reviews


def verdict(task: Task, version: str, candidates: list[JudgedCandidate]) -> CandidatesJudged:
    return CandidatesJudged(verdict_id=ids.verdict_id_for(task.task_id, version), task=task, judge_version=version,
                            candidates=candidates, produced_by="judge@test", trace=Trace(task_id=task.task_id),
                            self_checks={"position_swap_agree": task.task_id[-1] in "0123456789"})


def decided(task: Task, jc: JudgedCandidate, decision: str, pool: str | None) -> ReviewDecided:
    return ReviewDecided(decision_id=decision_id_for(jc.candidate_id, decision, pool, "", "ana"), task=task,
                         candidate=jc, judge_version=V1, verdict_id=ids.verdict_id_for(task.task_id, V1),
                         decision=decision, pool=pool, reviewer="ana", produced_by="cli@test",
                         trace=Trace(task_id=task.task_id))


def editor_view(state: EditorState, probes: list[tuple[str, str, str]]) -> dict:
    """Everything a later verdict can observe of the state (the index's internal layout aside)."""
    indexes, near_ids, arrays = state.near.export()
    which, rows = arrays["which"], arrays["rows"]
    clusters = state.clusters.export() if state.clusters is not None else None
    return {
        "live": state.live, "live_hashes": state.live_hashes, "published": state.published,
        "governing": state.governing, "superseded": state.superseded, "decisions": state.decisions,
        "near": {(tuple(indexes[w][:2]), sid): row.tobytes() for sid, w, row in zip(near_ids, which.tolist(), rows)},
        "finds": [state.near.find(unit, pathway, text, 0.7) for unit, pathway, text in probes],
        "clusters": sorted(map(tuple, clusters["clusters"])) if clusters else None,
        "leaders": sorted(clusters["leaders"]) if clusters else None,
    }


def restored_then_rest(spec, samples, reviews, at: int, at_reviews: int) -> EditorState:
    """Fold up to ``at``, checkpoint through JSON and npz-like arrays, restore, fold the rest."""
    head = EditorState(VERDICTS, spec, embed)
    head.rebuild_samples(samples[:at])
    head.rebuild_decisions(reviews[:at_reviews])
    state, arrays = head.export()
    state = json.loads(json.dumps(state))  # what state.json holds
    arrays = {name: np.array(a) for name, a in arrays.items()}
    tail = EditorState(VERDICTS, spec, embed)
    tail.restore(state, arrays)
    tail.rebuild_samples(samples[at:])
    tail.rebuild_decisions(reviews[at_reviews:])
    return tail


def test_the_history_exercises_what_a_checkpoint_must_hold(clustering_spec) -> None:
    samples, reviews = history(clustering_spec)
    full = EditorState(VERDICTS, clustering_spec, embed)
    full.rebuild_samples(samples)
    full.rebuild_decisions(reviews)
    retracted = sum(1 for s in samples if type(s).__name__ == "SampleRetracted")
    assert retracted >= 10 and len(reviews) >= 20 and full.superseded and len(full.near) >= 50
    assert full.clusters is not None and len(full.clusters) >= 5
    assert any(full.clusters.size(c[0]) >= 3 for c in full.clusters.export()["clusters"])  # a full quota


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.37, 0.5, 0.93, 1.0])
def test_a_checkpoint_and_the_rest_rebuild_what_a_full_read_does(clustering_spec, fraction) -> None:
    samples, reviews = history(clustering_spec)
    full = EditorState(VERDICTS, clustering_spec, embed)
    full.rebuild_samples(samples)
    full.rebuild_decisions(reviews)
    probes = [(s.unit, s.pathway, f"{s.prompt}\n{s.final}") for s in samples[::7] if hasattr(s, "pathway")]
    state = restored_then_rest(clustering_spec, samples, reviews, int(len(samples) * fraction),
                               int(len(reviews) * fraction))
    assert editor_view(state, probes) == editor_view(full, probes)
    assert state.pending == 0
    # and the two go on alike: the same next verdict gives the same outcome
    task = Task.model_validate(next(line for line in build_workload(6, 1) if line["split"] == "train"))
    probe = verdict(task, V2, [cand(task, 999, "train", "7", "Alice counts 0 apples and then adds some more")])
    source = SourceOffset(topic=VERDICTS, partition=0, offset=10_000)
    outcomes = [on_verdict(s, probe, source, clustering_spec, "editor@test") for s in (state, full)]
    assert [[e.model_dump(exclude={"produced_at"}) for e in [*o.samples, *o.retractions]] + o.duplicates
            for o in outcomes][0] == [[e.model_dump(exclude={"produced_at"}) for e in [*o.samples, *o.retractions]]
                                      + o.duplicates for o in outcomes][1]


def test_a_restored_state_exports_what_it_restored(clustering_spec) -> None:
    samples, reviews = history(clustering_spec)
    state = restored_then_rest(clustering_spec, samples, reviews, len(samples) // 2, len(reviews) // 2)
    again = EditorState(VERDICTS, clustering_spec, embed)
    exported, arrays = state.export()
    again.restore(json.loads(json.dumps(exported)), arrays)
    probes = [(s.unit, s.pathway, f"{s.prompt}\n{s.final}") for s in samples[::3] if hasattr(s, "pathway")]
    assert editor_view(again, probes) == editor_view(state, probes)
    assert any(not samples for samples in again.live.values())  # tasks whose samples were all retracted


def judge_verdicts(spec, n: int = 300) -> list[CandidatesJudged]:
    tasks = [Task.model_validate(line) for line in build_workload(6, 1) if line["split"] == "train"]
    out = []
    for i in range(n):
        task = tasks[i % len(tasks)]
        version = V1 if i % 5 else V2
        checks = {"position_swap_agree": i % 3 != 0, "perturbation_caught": i % 4 != 0}
        out.append(CandidatesJudged(verdict_id=ids.verdict_id_for(task.task_id, version, 1 + i // len(tasks)),
                                    task=task, judge_version=version, attempt=1 + i // len(tasks),
                                    candidates=[cand(task, i, "train", str(i), "x")], produced_by="judge@test",
                                    trace=Trace(task_id=task.task_id), self_checks=checks))
    return out


def judge_view(deps: JudgeDeps) -> tuple:
    return (deps.aggregator.judged, {k: list(v) for k, v in deps.monitor.outcomes.items()},
            {k: v.maxlen for k, v in deps.monitor.outcomes.items()}, deps.monitor.closed)


@pytest.mark.parametrize("at", [0, 1, 150, 299, 300])
def test_the_judges_checkpoint_and_the_rest_rebuild_what_a_full_read_does(spec, at) -> None:
    gated = windowed(spec)
    verdicts = [(None, v) for v in judge_verdicts(gated)]
    full = JudgeDeps(spec=gated, version=V1)
    judged_fold(full).apply(VERDICTS, verdicts)
    head = JudgeDeps(spec=gated, version=V1)
    judged_fold(head).apply(VERDICTS, verdicts[:at])
    tail = JudgeDeps(spec=gated, version=V1)
    restore_judged(tail, json.loads(json.dumps(export_judged(head))))
    judged_fold(tail).apply(VERDICTS, verdicts[at:])
    assert judge_view(tail) == judge_view(full)
    assert full.monitor.closed and len(full.aggregator.judged) > 100  # the windows closed a gate
    assert all(isinstance(v, deque) for v in tail.monitor.outcomes.values())


def test_the_near_duplicate_index_restores_its_sorted_runs_tombstones_and_dict_tier() -> None:
    """Thousands of samples: several sorted runs, removals (tombstones) in them and in the dict tier."""
    from distillery_editor.dedup import RECENT_MAX, NearDuplicates

    texts = [f"{NAMES[i % 6]} packs {i} boxes of {TOPICS[i % 5]} for the {i % 17} trip on day {i % 31}"
             for i in range(4 * RECENT_MAX + 500)]
    index = NearDuplicates()
    for i, text in enumerate(texts):
        index.add("u", "answer", f"s{i}", text, 0.8)
        if i % 9 == 0 and i:
            index.remove(f"s{i - 5}")
        if i == 2999 or (i > 3000 and i % 256 == 255):  # a run of 3,000, then one of ~1,100, then the dict tier
            index.commit()
    index.commit()
    assert len(index._indexes[("u", "answer")].runs) == 2 and index._indexes[("u", "answer")].recent_slots
    assert index._rows.dead  # tombstones, in runs and in the dict tier
    indexes, ids, arrays = index.export()
    restored = NearDuplicates()
    restored.restore(json.loads(json.dumps(indexes)), ids, {k: np.array(v) for k, v in arrays.items()})
    probes = [("answer", f"{t} again") for t in texts[::37]]
    found = [index.find("u", p, t, 0.8) for p, t in probes]
    assert [restored.find("u", p, t, 0.8) for p, t in probes] == found
    assert sum(f is not None for f in found) >= len(found) // 2
    assert len(restored) == len(index) and set(ids) == set(index._slot_of)
    for copy in (index, restored):  # both go on alike: more adds, removals and merges
        for i in range(500):
            copy.add("u", "answer", f"t{i}", f"fresh text {i} about {TOPICS[i % 5]} and {NAMES[i % 6]}", 0.8)
            copy.remove(f"s{i * 3}")
        copy.commit()
    assert [restored.find("u", p, t, 0.8) for p, t in probes] == [index.find("u", p, t, 0.8) for p, t in probes]


def test_the_router_imports_its_runtime_without_numpy() -> None:
    """Its image installs no numpy (shared's base and grpc extras): checkpoints load only where they are used."""
    code = ("import sys, distillery_router.app, distillery.runtime.service, distillery.runtime.wiring; "
            "print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
