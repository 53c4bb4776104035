"""What every command prints through, and the options they share."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()
if not console.is_terminal:  # logs and CI: wide enough for the report tables
    console.width = 120
err = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long

RUN_DIR = typer.Option(Path(".distillery/run"), "--run-dir", help="Folder of the running pipeline (logs, state, artifacts).")
