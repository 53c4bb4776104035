"""The alert rules (deploy/prometheus) load and fire as intended, checked by promtool itself."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package 'prometheus'; .ci/run installs it)")


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_the_rules_are_valid() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_each_alert_fires_on_its_series_and_stays_quiet_otherwise() -> None:
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts.test.yml").read_text()))
    assert tested == set(alert_names()), "every alert has a unit test"


@needs_promtool
def test_promtool_catches_a_wrong_expectation(tmp_path) -> None:
    """The unit tests can fail: a changed expected label makes promtool report the mismatch."""
    broken = (PROMETHEUS / "alerts.test.yml").read_text().replace("unit: math_steps}", "unit: tool_call}", 1)
    (tmp_path / "alerts.yml").write_text((PROMETHEUS / "alerts.yml").read_text())
    (tmp_path / "alerts.test.yml").write_text(broken)
    result = subprocess.run([PROMTOOL, "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def alert_names() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule["alert"] for group in rules["groups"] for rule in group["rules"]]


@needs_promtool
def test_every_dashboard_query_parses_as_promql(tmp_path) -> None:
    """promtool's rule check runs Prometheus's own PromQL parser: each panel query becomes a
    recording rule in a scratch file."""
    from tests.support import deploy_queries

    rules = {"groups": [{"name": "dashboards", "rules": [{"record": f"dashboard:query_{i}", "expr": q}
                                                          for i, q in enumerate(deploy_queries())]}]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    result = subprocess.run([PROMTOOL, "check", "rules", "queries.yml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
