"""The editor's batch path (issue 17): a batch's verdicts are curated ahead and their near-duplicate
texts hashed in one pass. Hostile texts go through it, and a batch gives exactly what the same
records give one at a time: the same samples, the same duplicates dropped, the same dead letters."""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord

from distillery.contracts import ids
from distillery.contracts.events import CandidatesJudged, JudgedCandidate, ReviewDecided, Task, Trace, decision_id_for
from distillery.contracts.settings import ServiceSettings
from distillery.contracts.spec import load_spec
from distillery.runtime.wiring import DeadLetter, In
from distillery_editor.handlers import EditorDeps, on_editor_inputs
from tests.support import ROOT

SPEC = load_spec(ROOT / "examples" / "spec.yaml")
SETTINGS = ServiceSettings(topic_prefix="unit")
VERSION = "rules-v1-aaaa"
BASE = ("Nadia buys 14 notebooks at 3 dollars each and sells 5 of them to Omar for 4 dollars each. "
        "How many dollars does Nadia have left if she started with 90?")

# What teachers and users can put in a prompt or an answer: no words, other scripts, control and
# format characters, one giant word, a long repetition. (A lone surrogate never gets here: the
# runtime's JSON decoding dead-letters it as invalid.)
HOSTILE = [
    "", "   ", "?!... ;;; ---", "\x00\x00\x00", "\t\n\r\x0b\x0c", "é" * 40, "中文 文本 测试 一 二 三 四 五",
    "🙂 🙃 🙂 🙃 🙂", "\u202eetats siht daer\u202c ok", "a" * 5_000, "word " * 1_000, "Ünïcode wörds, 3.5 ok",
    BASE, BASE.lower().replace(".", ";"), BASE.replace("buys", "well, buys"),
]


def task(i: int, prompt: str) -> Task:
    return Task(task_id=ids.content_id("task", str(i), prompt), unit="math_steps", prompt=prompt,
                reference={"answer": "1"})


def judged(t: Task, text: str) -> JudgedCandidate:
    return JudgedCandidate(candidate_id=ids.content_id("cand", t.task_id), teacher_id="qwen-coder", text=text,
                           pool="train", rank=1, score=1.0, final=text[-200:] or "1", reasons=["rules_passed"])


def verdict(t: Task, text: str) -> CandidatesJudged:
    return CandidatesJudged(verdict_id=ids.verdict_id_for(t.task_id, VERSION), task=t, judge_version=VERSION,
                            candidates=[judged(t, text)], produced_by="judge@test", trace=Trace(task_id=t.task_id))


def reject(v: CandidatesJudged) -> ReviewDecided:
    jc = v.candidates[0]
    return ReviewDecided(decision_id=decision_id_for(jc.candidate_id, "reject", None, "no", "ana"), task=v.task,
                         candidate=jc, judge_version=VERSION, verdict_id=v.verdict_id, decision="reject", note="no",
                         reviewer="ana", produced_by="cli@test", trace=Trace(task_id=v.task.task_id))


def items() -> list[In]:
    """Hostile prompts and answers, near-duplicates among them, and a human reject of a verdict that
    comes later in the batch (what the verdicts after it curate must honour it)."""
    verdicts = [verdict(task(i, text), text) for i, text in enumerate(HOSTILE)]
    verdicts += [verdict(task(100 + i, BASE), text) for i, text in enumerate(HOSTILE)]
    unknown = verdict(task(999, "Write a haiku."), "x").model_copy(update={"task": task(999, "x").model_copy(
        update={"unit": "poetry"})})
    records = [*verdicts[:5], unknown, reject(verdicts[-1]), *verdicts[5:]]
    topics = SETTINGS.topics
    return [In(event, ConsumerRecord(topics.reviews if isinstance(event, ReviewDecided) else topics.verdicts,
                                     0, offset, 0, 0, None, b"", None, 0, 0, ()))
            for offset, event in enumerate(records)]


def run(batches: list[list[In]]) -> list[tuple]:
    deps = EditorDeps(spec=SPEC, settings=SETTINGS, topics=SETTINGS.topics, produced_by="editor@test")
    out: list[tuple] = []
    for batch in batches:
        for o in asyncio.run(on_editor_inputs(batch, deps)):
            out.append((o.reason, o.record.offset) if isinstance(o, DeadLetter) else
                       (o.topic, type(o.event).__name__, getattr(o.event, "sample_id", None)))
        deps.state.commit()
    return out


def test_hostile_texts_through_the_batch_path_give_what_one_at_a_time_gives() -> None:
    records = items()
    one_at_a_time = run([[item] for item in records])
    assert run([records]) == one_at_a_time
    assert run([records[:9], records[9:]]) == one_at_a_time
    assert [o for o in one_at_a_time if o[0] != SETTINGS.topics.samples] == [("unknown_unit", 5)]
    samples = [o for o in one_at_a_time if o[1] == "SampleCurated"]
    # Every hostile text made a sample; of the verdicts on BASE's prompt, the exact and near
    # duplicates of one another (punctuation, a filler word, the same answer) and the rejected one did not.
    assert len(HOSTILE) <= len(samples) < 2 * len(HOSTILE) - 3
