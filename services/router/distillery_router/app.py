"""Router wiring: tasks in, per-teacher generation requests out (see handlers.SUBSCRIPTIONS)."""

from __future__ import annotations

from distillery.runtime.service import assemble
from distillery_router import __version__
from distillery_router.bootstrap import bootstrap, hooks
from distillery_router.handlers import SUBSCRIPTIONS


def build():
    deps = bootstrap()
    return assemble("router", __version__, deps.settings, deps, SUBSCRIPTIONS, hooks)
