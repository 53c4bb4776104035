"""Trainer wiring: training requests in, StudentTrained out; data come from a samples snapshot."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from prometheus_client import Counter, Gauge

from distillery.bus import In, Out, Rejected
from distillery.events import StudentTrained, Trace, TrainingRequested, parse_sample_record
from distillery.kafka import read_snapshot
from distillery.service import make_app, make_bus
from distillery.settings import ServiceSettings, load_settings
from distillery.spec import load_spec
from distillery_trainer import __version__
from distillery_trainer.dataset import repository
from distillery_trainer.training import run

STEP = Gauge("distillery_trainer_step", "Current optimisation step of the running job", ["student"])
TOTAL = Gauge("distillery_trainer_total_steps", "Steps of the running job", ["student"])
LOSS = Gauge("distillery_trainer_loss", "Latest training loss", ["student"])
RUNS = Counter("distillery_trainer_runs_total", "Finished training runs", ["student"])
SAMPLES = Gauge("distillery_trainer_dataset_samples", "Samples in the last snapshot of a student", ["student"])


class TrainerSettings(ServiceSettings):
    artifact_dir: Path = Path(".distillery/artifacts")
    device: str = "cpu"


def build():
    settings = load_settings(TrainerSettings)
    spec = load_spec(settings.spec_path)
    bus = make_bus(settings, "trainer", __version__)

    async def train(request: TrainingRequested) -> StudentTrained:
        name = request.student
        if name not in spec.students:
            raise Rejected("unknown_student", f"unknown student '{name}' (spec has {sorted(spec.students)})")
        snapshot = await read_snapshot(settings, bus.topics.samples)
        events = []
        for record in snapshot.records:
            with contextlib.suppress(ValueError):  # the editor's records; nothing else should be there
                events.append(parse_sample_record(record.value or b""))
        samples, retracted = repository(events)

        def progress(step: int, total: int, loss: float) -> None:
            STEP.labels(name).set(step)
            TOTAL.labels(name).set(total)
            LOSS.labels(name).set(loss)

        lineage = await asyncio.to_thread(
            run, name, spec, samples, snapshot.end_offsets, bus.topics.samples,
            settings.artifact_dir, settings.device, progress,
        )
        # Not part of the dataset's identity (the student id): the same live samples train the same student.
        lineage["manifest"]["retracted"] = retracted
        RUNS.labels(name).inc()
        SAMPLES.labels(name).set(lineage["manifest"]["samples"])
        fields = {k: lineage[k] for k in ("student_id", "student", "version", "artifact_dir", "base_model",
                                           "recipe", "manifest", "loss_curve", "train_seconds", "train_cost_usd")}
        return StudentTrained(**fields, produced_by=bus.produced_by, trace=Trace(causation_id=request.event_id))

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
