"""Teacher wiring: consumes only its own request topic, so each teacher scales by its own lag
(see handlers.SUBSCRIPTIONS and bootstrap.hooks)."""

from __future__ import annotations

from distillery.runtime.service import assemble
from distillery_teacher import __version__
from distillery_teacher.bootstrap import bootstrap, hooks
from distillery_teacher.handlers import SUBSCRIPTIONS


def build():
    deps = bootstrap()
    return assemble("teacher", __version__, deps.settings, deps, SUBSCRIPTIONS, hooks)
