"""What every command prints through, and the options they share."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console

from distillery.contracts.settings import ConfigError

T = TypeVar("T")

console = Console()
if not console.is_terminal:  # logs and CI: wide enough for the report tables
    console.width = 120
err = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long

RUN_DIR = typer.Option(Path(".distillery/run"), "--run-dir", help="Folder of the running pipeline (logs, state, artifacts).")


def short_id(entity_id: str, hex_chars: int = 8) -> str:
    """``kind_`` plus a few hex characters: short to read, and still a valid prefix to type back."""
    kind, _, rest = entity_id.partition("_")
    return f"{kind}_{rest[:hex_chars]}" if rest else entity_id[:hex_chars]


def id_matches(entity_id: str, given: str) -> bool:
    """``given`` is a prefix of the id, with or without its ``kind_`` part."""
    return entity_id.startswith(given) or entity_id.split("_", 1)[-1].startswith(given)


def resolve_by_prefix(given: str, items: Iterable[T], id_of: Callable[[T], str], *, noun: str, empty: str,
                      missing: str, shown_of: Callable[[T], str]) -> T:
    """The one item whose id ``given`` names (a unique prefix); otherwise a one-line error.

    ``noun`` names the id in the ambiguity error, ``empty`` and ``missing`` are the other errors
    (``missing`` may use ``{given}``), ``shown_of`` lists the candidates of an ambiguous prefix.
    """
    given = given.strip()
    if not given:
        raise ConfigError(empty)
    matches = sorted((item for item in items if id_matches(id_of(item), given)), key=id_of)
    if not matches:
        raise ConfigError(missing.format(given=given))
    if len(matches) > 1:
        shown = ", ".join(shown_of(m) for m in matches[:5])
        more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
        raise ConfigError(f"{noun} '{given}' is ambiguous: {shown}{more}; give more characters")
    return matches[0]
