"""Editor wiring: verdicts and review decisions in, samples and retractions out; state rebuilt from topics
whenever partitions are assigned (see handlers.SUBSCRIPTIONS and handlers.RebuildOnAssign)."""

from __future__ import annotations

from distillery.runtime.service import assemble
from distillery_editor import __version__
from distillery_editor.bootstrap import bootstrap
from distillery_editor.handlers import SUBSCRIPTIONS


def build():
    deps = bootstrap()
    return assemble("editor", __version__, deps.settings, deps, SUBSCRIPTIONS)
