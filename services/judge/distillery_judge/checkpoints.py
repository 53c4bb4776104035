"""The judge's state as a fold over the verdicts topic, checkpointed (issue 17, runtime/checkpoint.py).

What a restarted judge must know is what its version already said: the rounds it judged (so
a redelivered candidate is not judged twice) and the rolling self-check windows and gates (so a
gate closed before the restart stays closed). Both come from the verdicts of its version, in
topic order; a checkpoint holds them with the offsets they cover.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from aiokafka import ConsumerRecord

from distillery.contracts.events import CandidatesJudged
from distillery.runtime.checkpoint import CheckpointStore, Fold, fingerprint
from distillery_judge.handlers import JudgeDeps, mark_judged


def judged_fold(deps: JudgeDeps) -> Fold:
    def reset() -> None:
        deps.aggregator.judged.clear()
        deps.monitor.outcomes.clear()
        deps.monitor.closed.clear()

    def apply(topic: str, items: list[tuple[ConsumerRecord, CandidatesJudged]]) -> None:
        for _, verdict in items:
            mark_judged(verdict, deps)

    return Fold(topics={deps.topics.verdicts: CandidatesJudged}, reset=reset, apply=apply,
                export=lambda: (export_judged(deps), {}), restore=lambda state, _: restore_judged(deps, state))


def export_judged(deps: JudgeDeps) -> dict[str, Any]:
    """The judged rounds, and every self-check window as a string of 0 and 1, oldest first."""
    monitor = deps.monitor
    return {"judged": sorted(deps.aggregator.judged),
            "windows": [[unit, check, "".join("1" if ok else "0" for ok in seen)]
                        for (unit, check), seen in monitor.outcomes.items()],
            "closed": sorted(monitor.closed)}


def restore_judged(deps: JudgeDeps, state: dict[str, Any]) -> None:
    deps.aggregator.judged.update(state["judged"])
    for unit, check, seen in state["windows"]:
        window = deps.spec.units[unit].judge.self_checks.window
        deps.monitor.outcomes[(unit, check)] = deque((c == "1" for c in seen), maxlen=window)
    deps.monitor.closed.update(state["closed"])


def store_of(deps: JudgeDeps) -> CheckpointStore | None:
    """Where this judge version's checkpoints live (None: checkpoints are off)."""
    if deps.settings.state_dir is None:
        return None
    shape = fingerprint("judge", deps.version, deps.topics.verdicts, deps.spec.model_dump_json())
    return CheckpointStore(deps.settings.state_dir, f"judge-{deps.version}", shape)


__all__ = ["export_judged", "judged_fold", "restore_judged", "store_of"]
