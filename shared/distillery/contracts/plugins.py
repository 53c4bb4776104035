"""Checkers and metrics by name: the registry a unit's spec names them from (docs/architecture.md §5).

A name resolves, in order, to a function a package registers under the entry-point group
``distillery.checkers`` or ``distillery.metrics`` (the built-ins are registered by this library's
own package, a team's package adds its own), or to ``module:function``. The spec resolves every
name at load, so an unknown name, a module that does not import or a function of the wrong shape
stops the load with one line naming the unit and field. The spec is a contract: it never imports
the domain, it looks the functions up here.

Shapes (docs/units.md):

* a **checker** is ``fn(text, task, **params)`` and returns ``bool`` or a ``CheckResult``
  (:mod:`distillery.domain.checkers`); its optional attribute ``reference`` names the reference
  field a task must carry for it (``answer``, ``fields`` or ``tool_calls``).
* a **metric** is ``fn(scored)`` over one subject's scored answers to one unit's held-out tasks,
  and returns a float or a mapping of names to floats.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Literal

Kind = Literal["checker", "metric"]
GROUPS: dict[Kind, str] = {"checker": "distillery.checkers", "metric": "distillery.metrics"}
REFERENCE_FIELDS = ("answer", "fields", "tool_calls")


class PluginError(ValueError):
    """A name that does not resolve to a usable function (the message is one line)."""


@functools.cache
def registered(kind: Kind) -> dict[str, object]:
    """Entry points of the kind's group by name (loaded lazily, on first resolve)."""
    return {entry.name: entry for entry in entry_points(group=GROUPS[kind])}


def registered_names(kind: Kind) -> list[str]:
    return sorted(registered(kind))


@functools.cache
def resolve(kind: Kind, name: str) -> Callable:
    """The function behind a checker or metric name; raises :class:`PluginError` with the reason."""
    entry = registered(kind).get(name)
    if entry is not None:
        try:
            fn = entry.load()
        except Exception as exc:  # noqa: BLE001 - any import failure is reported as one line
            raise PluginError(f"{kind} '{name}' (entry point {entry.value}) does not import: "
                              f"{type(exc).__name__}: {exc}") from None
    elif ":" in name:
        fn = _import(kind, name)
    else:
        raise PluginError(f"unknown {kind} '{name}'; registered: {', '.join(registered_names(kind))} "
                          f"(or give module:function)")
    if not callable(fn):
        raise PluginError(f"{kind} '{name}' is not a function")
    return fn


def _import(kind: Kind, name: str) -> Callable:
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001
        raise PluginError(f"{kind} '{name}': module '{module_name}' does not import: "
                          f"{type(exc).__name__}: {exc}") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise PluginError(f"{kind} '{name}': module '{module_name}' has no attribute '{attr}'")
    return fn


def check_checker(name: str, params: dict) -> Callable:
    """Resolve a checker and bind its parameters the way the judge will call it."""
    fn = resolve("checker", name)
    try:
        inspect.signature(fn).bind("text", object(), **params)
    except TypeError as exc:
        raise PluginError(f"checker '{name}' has the wrong signature for fn(text, task, **params) with params "
                          f"{sorted(params)}: {exc}") from None
    except ValueError:  # a builtin without a signature: trusted
        pass
    needs = getattr(fn, "reference", None)
    if needs is not None and needs not in REFERENCE_FIELDS:
        raise PluginError(f"checker '{name}': attribute 'reference' must be one of {REFERENCE_FIELDS}, not {needs!r}")
    return fn


def check_metric(name: str) -> Callable:
    """Resolve a metric and check it takes the scored answers as its one argument."""
    fn = resolve("metric", name)
    try:
        inspect.signature(fn).bind([])
    except TypeError as exc:
        raise PluginError(f"metric '{name}' has the wrong signature for fn(scored): {exc}") from None
    except ValueError:
        pass
    return fn


def reference_needed(name: str, params: dict) -> str | None:
    """The reference field a task of a unit with this checker must carry (None: any or none)."""
    fn = resolve("checker", name)
    needs = getattr(fn, "reference", None)
    # a regex given in the spec needs no per-task pattern
    return None if (name == "regex_match" and params.get("pattern")) else needs
