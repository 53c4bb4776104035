"""Evaluator wiring: StudentTrained in, EvaluationCompleted (and a report) out (see handlers.SUBSCRIPTIONS)."""

from __future__ import annotations

from distillery.runtime.service import assemble
from distillery_evaluator import __version__
from distillery_evaluator.bootstrap import bootstrap
from distillery_evaluator.handlers import SUBSCRIPTIONS


def build():
    deps = bootstrap()
    return assemble("evaluator", __version__, deps.settings, deps, SUBSCRIPTIONS)
