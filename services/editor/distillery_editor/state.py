"""What the editor remembers, rebuilt from topics at startup: the sample repository and who governs it.

- live samples per task, the content hash of each (exact dedup), and every sample id
  ever published (a redelivered verdict must not re-add a sample, retracted or not);
- the governing verdict per task: the judge version, partition and offset of the latest
  verdict processed, and the versions it superseded (an old version never takes a task back);
- the latest human review decision per candidate;
- the near-duplicate index (MinHash LSH) of the live samples, and the semantic clusters
  (MiniLM leaders and how many samples each admitted), for the units that declare them.

Every change is *pending* until the batch that caused it is durably published
(:meth:`EditorState.commit`); a failed batch is read again, so :meth:`EditorState.rollback`
undoes its changes. Changes apply at once, so a batch sees its own pending work
(a duplicate within one batch is still a duplicate); an undo log makes rollback exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any, NamedTuple

import numpy as np

from distillery.contracts.events import ReviewDecided, SampleCurated, SampleEvent, SampleRetracted, SourceOffset
from distillery.contracts.spec import CapabilitySpec, EditorSpec
from distillery.runtime.checkpoint import category_column, category_list, text_column, text_list
from distillery_editor.clusters import Clusters, Embed, cluster_id_for
from distillery_editor.dedup import NearDuplicates

_ABSENT = object()
REBUILD_CHUNK = 4096  # samples events hashed together while rebuilding


def _chunks(items: Iterable[SampleEvent], size: int) -> Iterator[list[SampleEvent]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class VerdictMark(NamedTuple):
    """Where a judge version spoke on a task. A task's verdicts share one partition, so offsets compare."""

    judge_version: str
    partition: int
    offset: int

    @classmethod
    def of(cls, judge_version: str, source: SourceOffset) -> VerdictMark:
        return cls(judge_version, source.partition, source.offset)

    def is_after(self, partition: int, offset: int) -> bool:
        return self.partition == partition and self.offset > offset


class LiveSample(NamedTuple):
    """What the editor keeps of a live sample: enough to retract it, and to tell whether a new judgement
    of its candidate keeps it. The full event is on the samples topic: in memory it took ~8.5 KiB a
    sample (the golden one, tracemalloc), 8 GiB at a million."""

    sample_id: str
    task_id: str
    candidate_id: str
    judge_version: str
    content_hash: str
    pool: str
    unit: str
    cluster: str | None

    @classmethod
    def of(cls, sample: SampleCurated) -> LiveSample:
        prov = sample.provenance
        return cls(sample.sample_id, prov.task_id, prov.candidate_id, prov.judge_version, sample.content_hash,
                   sample.pool, sample.unit, sample.cluster)


LIVE_IDS = ("sample_id", "task_id", "candidate_id", "content_hash")  # checkpointed as text columns
LIVE_CATEGORIES = ("judge_version", "pool", "unit")  # and as levels and codes (cluster too, None as "")


@dataclass(frozen=True)
class Decided:
    """A human decision and the reviews record it came from (the latest per candidate wins)."""

    decision: ReviewDecided
    source: SourceOffset


def near_text(sample: SampleCurated) -> str:
    """What near-duplicate detection compares: the question and everything the student would learn."""
    return "\n".join((sample.prompt, sample.final, sample.rationale, sample.limits, sample.contrast))


def cluster_text(sample: SampleCurated) -> str:
    """What clusters compare: the question, i.e. the kind of work (common kinds must not crowd out rare ones)."""
    return sample.prompt


class EditorState:
    def __init__(self, verdicts_topic: str, spec: CapabilitySpec | None = None, embed: Embed | None = None) -> None:
        self._embed = embed
        # Only verdict records say which judge version governs a task; a human-accepted
        # sample's source is a reviews record, whose offsets do not compare with verdicts'.
        self.verdicts_topic = verdicts_topic
        self.live: dict[str, dict[str, LiveSample]] = {}  # task_id -> sample_id -> live sample
        self.live_hashes: dict[str, str] = {}  # content_hash -> sample_id of the live sample holding it
        self.published: set[str] = set()  # every sample id ever curated, live or retracted
        self.governing: dict[str, VerdictMark] = {}
        self.superseded: dict[str, set[str]] = {}  # task_id -> judge versions that governed it before
        self.decisions: dict[str, Decided] = {}  # candidate_id -> latest human decision
        self.spec = spec  # per-unit thresholds and quotas; None: exact dedup only
        self.near = NearDuplicates()
        self.clusters = Clusters(embed) if embed is not None else None
        self._undo: list[Callable[[], None]] = []
        self._recording = True  # off while rebuilding: what was read from a topic is durable already

    def reset(self) -> None:
        """Forget everything (before a rebuild from the topics)."""
        self.__init__(self.verdicts_topic, self.spec, self._embed)  # type: ignore[misc]

    # -- batch discipline -----------------------------------------------------------------

    def commit(self) -> None:
        """The batch is durable: its changes stay."""
        self._undo.clear()
        self.near.commit()
        if self.clusters is not None:
            self.clusters.commit()

    def rollback(self) -> None:
        """The batch failed and will be read again: forget its changes, newest first."""
        while self._undo:
            self._undo.pop()()
        self.near.rollback()
        if self.clusters is not None:
            self.clusters.rollback()

    @property
    def pending(self) -> int:
        """How many changes wait for their batch to be published."""
        return len(self._undo)

    # -- queries --------------------------------------------------------------------------

    def live_samples(self, task_id: str) -> list[LiveSample]:
        return list(self.live.get(task_id, {}).values())

    def is_live(self, sample: SampleCurated) -> bool:
        return sample.sample_id in self.live.get(sample.provenance.task_id, {})

    def is_stale(self, task_id: str, judge_version: str, source: SourceOffset) -> bool:
        """A verdict of a version that lost the task, or older than the governing verdict of another version
        (a redelivery after a crash): processing it would hand the task back to an old judgement."""
        if judge_version in self.superseded.get(task_id, ()):
            return True
        mark = self.governing.get(task_id)
        if mark is None or mark.judge_version == judge_version:
            return False
        return mark.is_after(source.partition, source.offset)

    def decision(self, candidate_id: str) -> ReviewDecided | None:
        decided = self.decisions.get(candidate_id)
        return decided.decision if decided else None

    def is_decision_stale(self, decision: ReviewDecided, source: SourceOffset) -> bool:
        """An older decision on the candidate than one already known (decisions of a task share a partition)."""
        known = self.decisions.get(decision.candidate.candidate_id)
        if known is None:
            return False
        return known.source.partition == source.partition and known.source.offset > source.offset

    # -- changes --------------------------------------------------------------------------

    def admit(self, sample: SampleCurated, *, revive: bool = False) -> str | None:
        """Add ``sample`` unless it is a duplicate; None when admitted, else why not.

        ``duplicate_id``: published before, live or retracted (a redelivery must not bring back
        what a judge retracted); ``revive`` lets a human accept bring back a retracted id.
        ``duplicate_content``: a live sample has the same normalised content.
        """
        revived = revive and not self.is_live(sample)
        if sample.sample_id in self.published and not revived:
            return "duplicate_id"
        if sample.content_hash in self.live_hashes:
            return "duplicate_content"
        editor = self._editor(sample.unit)
        if editor is not None and editor.near_duplicate_threshold > 0 and self.near.find(
                sample.unit, sample.pathway, near_text(sample), editor.near_duplicate_threshold):
            return "near_duplicate"
        if sample.cluster is not None and self.clusters is not None and editor is not None \
                and not self.clusters.admit(sample.cluster, editor.cluster_quota, cluster_text(sample)):
            return "cluster_quota"
        self._add(sample)
        return None

    def with_clusters(self, samples: list[SampleCurated]) -> list[SampleCurated]:
        """The samples with their semantic cluster, for units that cluster (one batched embedding per unit)."""
        if self.clusters is None:
            return samples
        out = list(samples)
        for unit in dict.fromkeys(s.unit for s in samples):
            editor = self._editor(unit)
            if editor is None or editor.cluster_similarity <= 0:
                continue
            at = [i for i, s in enumerate(samples) if s.unit == unit]
            ids = self.clusters.assign(unit, [cluster_text(samples[i]) for i in at], editor.cluster_similarity)
            for i, cluster in zip(at, ids):
                out[i] = samples[i].model_copy(update={"cluster": cluster})
        return out

    def prepare_near(self, samples: Iterable[SampleCurated]) -> None:
        """Hash the near-duplicate texts of samples about to be admitted, per (unit, pathway), in one pass each."""
        texts: dict[tuple[str, str], list[str]] = {}
        for sample in samples:
            editor = self._editor(sample.unit)
            if editor is not None and editor.near_duplicate_threshold > 0:
                texts.setdefault((sample.unit, sample.pathway), []).append(near_text(sample))
        for (unit, pathway), batch in texts.items():
            self.near.prepare(unit, pathway, batch, self.spec.units[unit].editor.near_duplicate_threshold)  # type: ignore[union-attr]

    def retract(self, retraction: SampleRetracted) -> None:
        """Remove the retracted sample, if live; its content hash is free again."""
        task_id = retraction.task_id or retraction.trace.task_id
        sample = self.live.get(task_id or "", {}).get(retraction.sample_id)
        if sample is None:
            return
        self._pop(self.live[task_id], sample.sample_id)
        if self.live_hashes.get(sample.content_hash) == sample.sample_id:
            self._pop(self.live_hashes, sample.content_hash)
        self.near.remove(sample.sample_id)
        if sample.cluster is not None and self.clusters is not None:
            self.clusters.release(sample.cluster)  # its place in the cluster's quota is free again

    def govern(self, task_id: str, mark: VerdictMark) -> None:
        """``mark`` is now the latest verdict processed for the task; a version it replaces is superseded."""
        current = self.governing.get(task_id)
        if current is not None and current.judge_version != mark.judge_version:
            self._set_add(self.superseded.setdefault(task_id, set()), current.judge_version)
        elif current is not None and current.is_after(mark.partition, mark.offset):
            return  # an earlier verdict of the same version (attempt 1 after attempt 2): the later one stays
        self._put(self.governing, task_id, mark)

    def decide(self, decision: ReviewDecided, source: SourceOffset) -> None:
        self._put(self.decisions, decision.candidate.candidate_id, Decided(decision, source))

    # -- startup rebuild ------------------------------------------------------------------

    def rebuild_samples(self, events: Iterable[SampleEvent]) -> None:
        """Replay the samples topic in order: live samples, published ids, governing verdicts."""
        with self._durable():
            for chunk in _chunks(events, REBUILD_CHUNK):
                self.prepare_near(e for e in chunk if isinstance(e, SampleCurated))
                for event in chunk:
                    if isinstance(event, SampleRetracted):
                        self.retract(event)
                        self._govern_from(event.task_id, event.judge_version, event.source)
                    else:
                        self._restore_cluster(event)
                        self._add(event)
                        prov = event.provenance
                        self._govern_from(prov.task_id, prov.judge_version, prov.source)
                self.near.commit()  # durable already; lets the index write its sorted runs as it grows
        if self.clusters is not None:
            self.clusters.commit()

    def _restore_cluster(self, sample: SampleCurated) -> None:
        """A cluster's id names its leader's text, so the sample that founded it is recognised on the topic."""
        if sample.cluster is None or self.clusters is None:
            return
        if cluster_id_for(sample.unit, cluster_text(sample)) == sample.cluster:
            self.clusters.restore_leader(sample.unit, sample.cluster, cluster_text(sample))
        self.clusters.restore_member(sample.unit, sample.cluster)

    def rebuild_decisions(self, decisions: Iterable[tuple[ReviewDecided, SourceOffset]]) -> None:
        """Replay the reviews topic in order: the latest decision per candidate."""
        with self._durable():
            for decision, source in decisions:
                if not self.is_decision_stale(decision, source):
                    self.decide(decision, source)

    # -- checkpoints (runtime/checkpoint.py) -----------------------------------------------

    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The committed state as JSON-able data and numpy arrays; :meth:`restore` puts it back.

        The per-sample and per-task maps go column by column into arrays (a million entries
        each): ids as one byte string, few-valued fields (versions, pools, units, clusters) as
        levels and codes. They load several times faster than JSON lists of lists.
        """
        assert not self._undo, "export a committed state"
        rows = [sample for samples in self.live.values() for sample in samples.values()]
        live = dict(zip(LiveSample._fields, zip(*rows))) if rows else dict.fromkeys(LiveSample._fields, ())
        marks = list(zip(*self.governing.values())) if self.governing else [(), (), ()]
        indexes, near_ids, near_arrays = self.near.export()
        texts = {**{f"live.{name}": live[name] for name in LIVE_IDS},
                 "emptied_tasks": [task_id for task_id, samples in self.live.items() if not samples],
                 "hashes.key": self.live_hashes.keys(), "hashes.sample_id": self.live_hashes.values(),
                 "published": self.published, "governing.task_id": self.governing.keys(), "near_ids": near_ids}
        categories = {**{f"live.{name}": live[name] for name in LIVE_CATEGORIES},
                      "live.cluster": [cluster or "" for cluster in live["cluster"]],
                      "governing.judge_version": marks[0]}
        levels = {}
        arrays = {name: text_column(column) for name, column in texts.items()}
        for name, column in categories.items():
            levels[name], arrays[name] = category_column(column)
        arrays |= {"governing.partition": np.array(marks[1], dtype=np.int32),
                   "governing.offset": np.array(marks[2], dtype=np.int64),
                   **{f"near.{name}": array for name, array in near_arrays.items()}}
        state = {
            "counts": {name: len(column) for name, column in texts.items()},
            "levels": levels,
            "superseded": {task_id: sorted(versions) for task_id, versions in self.superseded.items()},
            "decisions": [[d.decision.model_dump(mode="json"), d.source.model_dump(mode="json")]
                          for d in self.decisions.values()],
            "near_indexes": indexes,
            "clusters": self.clusters.export() if self.clusters is not None else None,
        }
        return state, arrays

    def restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Put back what :meth:`export` gave, into an empty state."""
        def text(name: str) -> list[str]:
            return text_list(arrays[name], state["counts"][name])

        def category(name: str) -> list[str]:
            return category_list(state["levels"][name], arrays[name])

        live = {**{name: text(f"live.{name}") for name in LIVE_IDS},
                **{name: category(f"live.{name}") for name in LIVE_CATEGORIES},
                "cluster": [cluster or None for cluster in category("live.cluster")]}
        self.live = {task_id: {} for task_id in text("emptied_tasks")}
        for sample in map(partial(tuple.__new__, LiveSample), zip(*(live[name] for name in LiveSample._fields))):
            samples = self.live.get(sample.task_id)
            if samples is None:
                samples = self.live[sample.task_id] = {}
            samples[sample.sample_id] = sample
        self.live_hashes = dict(zip(text("hashes.key"), text("hashes.sample_id")))
        self.published = set(text("published"))
        marks = zip(category("governing.judge_version"), arrays["governing.partition"].tolist(),
                    arrays["governing.offset"].tolist())
        self.governing = dict(zip(text("governing.task_id"), map(partial(tuple.__new__, VerdictMark), marks)))
        self.superseded = {task_id: set(versions) for task_id, versions in state["superseded"].items()}
        for decision, source in state["decisions"]:
            decided = Decided(ReviewDecided.model_validate(decision), SourceOffset.model_validate(source))
            self.decisions[decided.decision.candidate.candidate_id] = decided
        self.near.restore(state["near_indexes"], text("near_ids"),
                          {name.removeprefix("near."): array for name, array in arrays.items() if name.startswith("near.")})
        if self.clusters is not None and state["clusters"] is not None:
            self.clusters.restore(state["clusters"])

    @contextmanager
    def _durable(self) -> Iterator[None]:
        self._recording = False
        try:
            yield
        finally:
            self._recording = True

    def _govern_from(self, task_id: str | None, judge_version: str, source: SourceOffset | None) -> None:
        # Human retractions and human-accepted samples point at reviews records: they govern nothing.
        if task_id and source is not None and source.topic == self.verdicts_topic:
            self.govern(task_id, VerdictMark.of(judge_version, source))

    # -- undoable primitives --------------------------------------------------------------

    def _add(self, sample: SampleCurated) -> None:
        self._put(self.live.setdefault(sample.provenance.task_id, {}), sample.sample_id, LiveSample.of(sample))
        self._put(self.live_hashes, sample.content_hash, sample.sample_id)
        self._set_add(self.published, sample.sample_id)
        editor = self._editor(sample.unit)
        if editor is not None and editor.near_duplicate_threshold > 0:
            self.near.add(sample.unit, sample.pathway, sample.sample_id, near_text(sample),
                          editor.near_duplicate_threshold)

    def _editor(self, unit: str) -> EditorSpec | None:
        if self.spec is None or unit not in self.spec.units:
            return None
        return self.spec.units[unit].editor

    def _put(self, mapping: dict[str, Any], key: str, value: Any) -> None:
        old = mapping.get(key, _ABSENT)
        self._on_rollback(lambda: _restore(mapping, key, old))
        mapping[key] = value

    def _pop(self, mapping: dict[str, Any], key: str) -> None:
        old = mapping.pop(key)
        self._on_rollback(lambda: _restore(mapping, key, old))

    def _set_add(self, items: set[str], item: str) -> None:
        if item not in items:
            items.add(item)
            self._on_rollback(lambda: items.discard(item))

    def _on_rollback(self, undo: Callable[[], None]) -> None:
        if self._recording:
            self._undo.append(undo)


def _restore(mapping: dict[str, Any], key: str, old: Any) -> None:
    if old is _ABSENT:
        mapping.pop(key, None)
    else:
        mapping[key] = old
