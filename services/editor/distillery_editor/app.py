"""Editor wiring: verdicts in, samples out; dedup state rebuilt from the samples topic."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter

from distillery.bus import In, Out
from distillery.events import CandidatesJudged, SampleCurated, SourceOffset, parse_event
from distillery.kafka import read_snapshot
from distillery.service import make_app, make_bus
from distillery.settings import ServiceSettings, load_settings
from distillery.spec import load_spec
from distillery_editor import __version__
from distillery_editor.logic import Deduper, curate

SAMPLES = Counter("distillery_editor_samples_total", "Samples published", ["unit", "pool", "pathway"])
DROPPED = Counter("distillery_editor_duplicates_total", "Samples dropped as duplicates", ["reason"])
HELD_OUT = Counter("distillery_editor_heldout_skipped_total", "Verdicts of eval tasks, never made samples")


def build():
    settings = load_settings(ServiceSettings)
    spec = load_spec(settings.spec_path)
    bus = make_bus(settings, "editor", __version__)
    dedup = Deduper()

    def on_verdict(item: In[CandidatesJudged]) -> list[Out]:
        verdict = item.event
        if verdict.task.split == "eval":
            HELD_OUT.inc()
        rec = item.record
        source = SourceOffset(topic=rec.topic, partition=rec.partition, offset=rec.offset)
        outs = []
        for sample in curate(verdict, source, spec, bus.produced_by):
            reason = dedup.admit(sample)
            if reason:
                DROPPED.labels(reason).inc()
                continue
            SAMPLES.labels(sample.unit, sample.pool, sample.pathway).inc()
            outs.append(Out(bus.topics.samples, sample))
        return outs

    async def rebuild_dedup() -> None:
        """A restarted editor must not re-admit what it already published."""
        snapshot = await read_snapshot(settings, bus.topics.samples)
        for record in snapshot.records:
            with contextlib.suppress(Exception):
                dedup.remember(parse_event(SampleCurated, record.value))

    bus.subscribe(
        bus.topics.verdicts, CandidatesJudged, bus.per_event(on_verdict), group_id=settings.group("editor"),
        on_published=dedup.commit, on_failed=dedup.rollback,
    )
    return make_app(bus, spec, on_startup=[rebuild_dedup]), settings
