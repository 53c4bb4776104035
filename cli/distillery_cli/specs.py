"""``distillery spec``: check a capability spec and show what a unit's teachers and judge are told."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import judge_version, load_spec
from distillery.domain.prompts import unit_instruction
from distillery_cli.output import console

app = typer.Typer(no_args_is_help=True, help="Check a capability spec; show a unit's prompt, checker and metrics.")
SPEC = typer.Option(Path("examples/spec.yaml"), "--spec", help="Capability spec (YAML).")


@app.command()
def check(spec: Path = SPEC) -> None:
    """Load the spec (every checker, metric and plugin resolved) and list its units."""
    loaded = load_spec(spec)
    table = Table("unit", "output form", "checker", "metrics", "teachers")
    for name, unit in loaded.units.items():
        table.add_row(name, unit.output_form, unit.reference_checker.name, ", ".join(unit.metric_names()),
                      ", ".join(unit.routing.all_teachers()))
    console.print(table)
    console.print(f"spec OK: {len(loaded.units)} unit(s), judge version {judge_version(loaded)}")


@app.command()
def show(unit: str = typer.Argument(..., help="Unit name from the spec."), spec: Path = SPEC) -> None:
    """The unit's teacher system prompt (rendered from its template), checker, metrics and judge version."""
    loaded = load_spec(spec)
    if unit not in loaded.units:
        raise ConfigError(f"unknown unit '{unit}' (spec has {', '.join(sorted(loaded.units))})")
    u = loaded.units[unit]
    checker = u.reference_checker
    console.print(f"[bold]{unit}[/bold]: output form {u.output_form}, risk {u.risk}")
    console.print(f"checker: {checker.name} {json.dumps(u.checker_params(), sort_keys=True)}")
    console.print(f"metrics: {', '.join(u.metric_names())}")
    if u.required_fields or u.may_be_missing:
        console.print(f"required fields: {', '.join(u.required_fields) or '-'}; "
                      f"may be missing: {', '.join(u.may_be_missing) or '-'}")
    console.print(f"judge version: {judge_version(loaded)}")
    template = "the spec's prompt_template" if u.prompt_template else "the default template"
    console.rule(f"teacher system prompt ({template}; the task's functions are listed after it)")
    console.print(unit_instruction(u), markup=False, highlight=False)
