"""The editor's distribution controls wired together: near-duplicates, clusters with quotas, and the
rebuild from the samples topic (a restarted editor admits no duplicate and keeps the quotas)."""

from __future__ import annotations

import copy

import pytest

from distillery.contracts import ids
from distillery.contracts.events import CandidatesJudged, JudgedCandidate, SourceOffset, Task, Trace, live_samples
from distillery.contracts.spec import parse_spec
from distillery.domain.embeddings import Embedder
from distillery_editor.governance import on_verdict
from distillery_editor.state import EditorState

pytestmark = pytest.mark.model  # the real MiniLM embedder

VERDICTS = "t.verdicts.v1"
VERSION = "rules-v1-aaaa"


@pytest.fixture(scope="module")
def embed():
    return Embedder().embed


def spec_with(spec_data, **editor):
    data = copy.deepcopy(spec_data)
    data["units"]["math_steps"]["editor"] = editor
    return parse_spec(data)


def math_task(prompt: str, answer: str) -> Task:
    return Task(task_id=ids.content_id("task", prompt), unit="math_steps", prompt=prompt,
                reference={"answer": answer})


def verdict_for(task: Task, answer: str) -> CandidatesJudged:
    jc = JudgedCandidate(candidate_id=ids.content_id("cand", task.task_id), teacher_id="qwen-coder",
                         text=f"#### {answer}", pool="train", rank=1, score=1.0, final=answer,
                         reasons=["rules_passed", "reference_match"])
    return CandidatesJudged(verdict_id=ids.verdict_id_for(task.task_id, VERSION), task=task, judge_version=VERSION,
                            candidates=[jc], produced_by="judge@test", trace=Trace(task_id=task.task_id))


class Editor:
    """One editor state; every batch is published (committed) and recorded in topic order."""

    def __init__(self, spec, embed=None) -> None:
        self.spec, self.embed = spec, embed
        self.state = EditorState(VERDICTS, spec, embed)
        self.topic: list = []
        self.dropped: list[str] = []
        self.offset = 0

    def feed(self, prompt: str, answer: str):
        self.offset += 1
        source = SourceOffset(topic=VERDICTS, partition=0, offset=self.offset)
        outcome = on_verdict(self.state, verdict_for(math_task(prompt, answer), answer), source, self.spec, "e@t")
        self.state.commit()
        self.topic += [*outcome.retractions, *outcome.samples]
        self.dropped += outcome.duplicates
        return outcome

    def restarted(self) -> Editor:
        fresh = Editor(self.spec, self.embed)
        fresh.state.rebuild_samples(self.topic)
        fresh.topic, fresh.offset = list(self.topic), self.offset
        return fresh


EGGS = "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins with four. How many eggs are left to sell?"
EGGS_REWORDED = "Janet's ducks lay 16 eggs per day. She eats three for breakfast each morning and bakes muffins with four. How many eggs are left to sell?"
TRAIN = "A train travels 60 miles per hour for 3 hours and then 40 miles per hour for 2 hours. How far does it travel in total?"


def test_a_reworded_copy_of_an_admitted_sample_is_a_near_duplicate(spec_data) -> None:
    editor = Editor(spec_with(spec_data, near_duplicate_threshold=0.7))
    assert len(editor.feed(EGGS, "9").samples) == 1
    assert editor.feed(EGGS_REWORDED, "9").samples == [] and editor.dropped == ["near_duplicate"]
    assert len(editor.feed(TRAIN, "260").samples) == 1  # a different problem is not


def test_near_duplicate_detection_can_be_turned_off(spec_data) -> None:
    editor = Editor(spec_with(spec_data, near_duplicate_threshold=0))
    editor.feed(EGGS, "9")
    assert len(editor.feed(EGGS_REWORDED, "9").samples) == 1


def test_a_restarted_editor_admits_no_near_duplicate(spec_data) -> None:
    editor = Editor(spec_with(spec_data, near_duplicate_threshold=0.7))
    editor.feed(EGGS, "9")
    restarted = editor.restarted()
    assert restarted.feed(EGGS_REWORDED, "9").samples == [] and restarted.dropped == ["near_duplicate"]


def test_a_retracted_sample_no_longer_blocks_its_near_duplicates(spec_data) -> None:
    from distillery.contracts.events import SampleRetracted

    editor = Editor(spec_with(spec_data, near_duplicate_threshold=0.7))
    (sample,) = editor.feed(EGGS, "9").samples
    editor.state.retract(SampleRetracted(sample_id=sample.sample_id, judge_version="human", reason="x",
                                         task_id=sample.provenance.task_id, produced_by="t"))
    editor.state.commit()
    assert len(editor.feed(EGGS_REWORDED, "9").samples) == 1


KINDS = {
    "eggs": ["Janet's ducks lay {n} eggs a day and she sells them at the market. How many does she sell in a week?",
             "A hen lays {n} eggs each day. How many eggs does the farm collect over {m} days?"],
    "travel": ["A car drives {n} miles per hour for {m} hours. How far does it go?",
               "A cyclist rides at {n} km per hour for {m} hours. What distance does she cover?"],
}
RARE = "A bakery sells cupcakes in boxes of {n}. How many boxes are needed for {m} cupcakes?"


def test_cluster_quotas_keep_common_kinds_from_crowding_out_rare_ones(spec_data, embed) -> None:
    spec = spec_with(spec_data, near_duplicate_threshold=0, cluster_similarity=0.5, cluster_quota=2)
    editor = Editor(spec, embed)
    for i in range(6):  # many common problems...
        for template in KINDS["eggs"] + KINDS["travel"]:
            editor.feed(template.format(n=10 + i, m=3 + i), str(i))
    editor.feed(RARE.format(n=6, m=40), "7")  # ...and one rare one
    live = live_samples(editor.topic)
    clusters = {s.cluster for s in live}
    assert all(s.cluster for s in live) and len(clusters) >= 3
    assert all(sum(s.cluster == c for s in live) <= 2 for c in clusters)  # the quota held
    assert any("cupcakes" in s.prompt for s in live)  # the rare kind got in
    assert editor.dropped.count("cluster_quota") == 24 + 1 - len(live)

    restarted = editor.restarted()  # the counts survive a restart: a full cluster stays full
    full = next(c for c in clusters if sum(s.cluster == c for s in live) == 2)
    prompt = next(s.prompt for s in live if s.cluster == full)
    assert restarted.feed(prompt.replace("a", "a", 1) + " Explain.", "1").samples == []
    assert restarted.dropped == ["cluster_quota"]
