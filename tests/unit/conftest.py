"""Fixtures shared by the unit tests: the example spec and the first task of each unit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distillery.contracts.events import Task
from distillery.contracts.spec import load_spec
from distillery_cli.workload import build_workload

SPEC_PATH = Path(__file__).resolve().parents[2] / "examples" / "spec.yaml"


@pytest.fixture(scope="module")
def spec_data() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


@pytest.fixture(scope="module")
def spec():
    return load_spec(SPEC_PATH)


@pytest.fixture(scope="module")
def tasks() -> dict[str, Task]:
    """The first train task of each unit of the real workload."""
    out: dict[str, Task] = {}
    for line in build_workload(2, 1):
        out.setdefault(line["unit"], Task.model_validate(line))
    return out
