"""Judge wiring: candidates in (aggregated per task), verdicts out, commits held behind open tasks
(see handlers.SUBSCRIPTIONS; the flusher of timed-out tasks is in bootstrap.hooks)."""

from __future__ import annotations

from distillery.runtime.service import assemble
from distillery_judge import __version__
from distillery_judge.bootstrap import bootstrap, hooks
from distillery_judge.handlers import SUBSCRIPTIONS


def build():
    deps = bootstrap()
    return assemble("judge", __version__, deps.settings, deps, SUBSCRIPTIONS, hooks)
