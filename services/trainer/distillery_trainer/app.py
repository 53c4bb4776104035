"""Trainer wiring: training requests in, StudentTrained out; data come from a samples snapshot
(see handlers.SUBSCRIPTIONS)."""

from __future__ import annotations

from distillery.runtime.service import assemble
from distillery_trainer import __version__
from distillery_trainer.bootstrap import bootstrap, hooks
from distillery_trainer.handlers import SUBSCRIPTIONS


def build():
    deps = bootstrap()
    return assemble("trainer", __version__, deps.settings, deps, SUBSCRIPTIONS, hooks)
