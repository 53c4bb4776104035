"""Trainer wiring: training requests in, StudentTrained out; data come from a samples snapshot."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from prometheus_client import Counter, Gauge

from distillery.runtime.bus import In, Out, Rejected
from distillery.contracts.events import (CandidateGenerated, StudentTrained, Trace, TrainingRequested, parse_event,
                               parse_sample_record)
from distillery.runtime.kafka import read_snapshot
from distillery.runtime.service import make_app, make_bus
from distillery.contracts.settings import ServiceSettings, load_settings
from distillery.domain.students import check_student_bases
from distillery.contracts.spec import load_spec
from distillery_trainer import __version__
from distillery_trainer.dataset import repository
from distillery_trainer.training import Inputs, run

STEP = Gauge("distillery_trainer_step", "Current optimisation step of the running job", ["student"])
TOTAL = Gauge("distillery_trainer_total_steps", "Steps of the running job", ["student"])
LOSS = Gauge("distillery_trainer_loss", "Latest training loss", ["student"])
RUNS = Counter("distillery_trainer_runs_total", "Finished training runs", ["student"])
SAMPLES = Gauge("distillery_trainer_dataset_samples", "Samples in the last snapshot of a student", ["student"])
THROUGHPUT = Gauge("distillery_trainer_tokens_per_second", "Training tokens per second of the last run", ["student"])
KD_EXAMPLES = Gauge("distillery_trainer_kd_examples", "Examples of the last run with a logit-distillation signal", ["student"])


class TrainerSettings(ServiceSettings):
    artifact_dir: Path = Path(".distillery/artifacts")
    device: str = "cpu"


def build():
    settings = load_settings(TrainerSettings)
    spec = load_spec(settings.spec_path)
    check_student_bases(spec)  # a base that cannot load stops the service now, not at the first request
    bus = make_bus(settings, "trainer", __version__)

    async def train(request: TrainingRequested) -> StudentTrained:
        name = request.student
        if name not in spec.students:
            raise Rejected("unknown_student", f"unknown student '{name}' (spec has {sorted(spec.students)})")
        inputs, retracted = await read_inputs(request)

        def progress(step: int, total: int, loss: float) -> None:
            STEP.labels(name).set(step)
            TOTAL.labels(name).set(total)
            LOSS.labels(name).set(loss)

        lineage = await asyncio.to_thread(
            run, name, spec, inputs, bus.topics.samples, settings.artifact_dir, settings.device, progress, request.variant,
        )
        # Not part of the dataset's identity (the student id): the same live samples train the same student.
        lineage["manifest"]["retracted"] = retracted
        RUNS.labels(name).inc()
        SAMPLES.labels(name).set(lineage["manifest"]["samples"])
        THROUGHPUT.labels(name).set(lineage["tokens"] / max(lineage["train_seconds"], 1e-9))
        KD_EXAMPLES.labels(name).set(lineage["manifest"].get("kd_examples", 0))
        fields = {k: lineage[k] for k in ("student_id", "student", "version", "artifact_dir", "base_model",
                                           "recipe", "manifest", "loss_curve", "train_seconds", "train_cost_usd")}
        return StudentTrained(**fields, variant=request.variant, produced_by=bus.produced_by,
                              trace=Trace(causation_id=request.event_id))

    async def read_inputs(request: TrainingRequested) -> tuple[Inputs, int]:
        """The samples (and candidates, which raw buckets and logit distillation need) at the
        request's snapshot, or at the topics' current ends."""
        def upto(topic: str) -> dict[int, int] | None:
            ends = request.snapshot.get(topic)
            return {int(p): o for p, o in ends.items()} if ends is not None else None

        samples_snap = await read_snapshot(settings, bus.topics.samples, upto(bus.topics.samples))
        events = []
        for record in samples_snap.records:
            with contextlib.suppress(ValueError):  # the editor's records; nothing else should be there
                events.append(parse_sample_record(record.value or b""))
        samples, retracted = repository(events)
        offsets = {bus.topics.samples: samples_snap.end_offsets}
        candidates = []
        recipe = spec.students[request.student]
        if recipe.distill is not None or (request.variant and request.variant.bucket.endswith("_teacher")):
            snap = await read_snapshot(settings, bus.topics.candidates, upto(bus.topics.candidates))
            for record in snap.records:
                with contextlib.suppress(ValueError):
                    candidates.append(parse_event(CandidateGenerated, record.value or b""))
            offsets[bus.topics.candidates] = snap.end_offsets
        return Inputs(samples, candidates, offsets), retracted

    async def on_requests(items: list[In[TrainingRequested]]) -> list[Out]:
        outs = []
        for item in items:
            try:
                outs.append(Out(bus.topics.students, await train(item.event)))
            except Rejected as exc:
                outs.append(bus.dead_letter(item.record, str(exc), exc.reason))
            except ValueError as exc:  # e.g. no samples match the recipe yet
                outs.append(bus.dead_letter(item.record, str(exc), "untrainable"))
        return outs

    bus.subscribe(
        bus.topics.training_requests, TrainingRequested, on_requests,
        group_id=settings.group("trainer"), max_records=1, max_poll_interval_ms=3_600_000,
    )
    return make_app(bus, spec), settings
