"""The evaluation report: Markdown with PNGs beside it, and one self-contained, escaped HTML file."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from pathlib import Path

import pytest

from distillery.contracts.events import SubjectScore
from distillery_evaluator.report import SECTIONS, ReportData, render, write_report
from distillery_evaluator.signals import Round, StopConfig, stop_signals

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def score(unit: str, subject: str, acc: float, cost: float) -> SubjectScore:
    return SubjectScore(unit=unit, subject=subject, n=20, accuracy=acc, mean_latency_s=0.4,
                        cost_per_request_usd=cost, mean_output_tokens=42.0)


def data(attribution: bool = True, student: str = "tiny") -> ReportData:
    scores = [score(u, s, a, c) for u in ("math_steps", "tool_call")
              for s, a, c in (("teacher:qwen", 0.8, 0.002), ("student:before", 0.1, 0.00001),
                              ("student:after", 0.6, 0.00001))]
    rounds = [Round("s0", 500, {"math_steps": 0.4, "tool_call": 0.5}, {"math_steps": 0.5, "tool_call": 0.5},
                    2.0, 60.0, {"reasoning": 4}),
              Round("s1", 1500, {"math_steps": 0.6, "tool_call": 0.6}, {"math_steps": 0.6, "tool_call": 0.6},
                    3.0, 60.0, {"reasoning": 2, "missing_knowledge": 3})]
    attr = [{"unit": u, "variant": v, "accuracy": acc, "diff": acc - 0.6, "ci_low": acc - 0.65,
             "ci_high": acc - 0.55, "n_seeds": 3, "samples": n}
            for u in ("math_steps", "tool_call")
            for v, acc, n in (("full", 0.6, 1500), ("no_hard_cases", 0.5, 1200), ("no_refusals", 0.58, 1400))]
    return ReportData(
        student=student, student_id="tiny-0001",
        scores=scores,
        breakdown=[{"unit": "math_steps", "dimension": d, "value": v, "subject": "student:after", "n": 10,
                    "accuracy": 0.5} for d, v in (("difficulty", "easy"), ("scenario", "word_problem"))],
        metrics=[{"unit": "tool_call", "subject": "student:after", "metric": "tool_call_accuracy", "value": 0.6},
                 {"unit": "tool_call", "subject": "teacher:qwen", "metric": "agreement", "value": 1.0}],
        ledger={"offline_teacher_generation_usd": 1.5, "offline_total_usd": 3.0, "saving_per_request_usd": 0.00199,
                "horizon_requests": 300000.0, "net_saving_usd": 594.0, "roi": 198.0,
                "break_even_requests": 1507.5, "break_even_days": 0.151},
        signals=stop_signals(rounds, StopConfig(rounds=2)),
        rounds=rounds,
        attribution=attr if attribution else None,
        heldout_overlap=0,
        real_samples={"math_steps": 50},
    )


def images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in IMG.findall(page)]


@pytest.fixture(scope="module")
def rendered() -> tuple[str, str]:
    return render(data())


def test_html_embeds_four_png_plots_with_attribution(rendered):
    _, page = rendered
    assert page.count("data:image/png;base64,") == 4
    pngs = images(page)
    assert len(pngs) == 4 and all(p.startswith(PNG_MAGIC) for p in pngs)


def test_three_plots_without_attribution():
    md, page = render(data(attribution=False))
    assert page.count("data:image/png;base64,") == 3
    assert all(p.startswith(PNG_MAGIC) for p in images(page))
    assert "ablation.png" not in md
    assert "No attribution" in md


def test_html_is_self_contained(rendered):
    _, page = rendered
    for ref in ("http://", "https://", "<script src", "<link"):
        assert ref not in page
    assert "<style>" in page


def test_markdown_has_every_section(rendered):
    md, _ = rendered
    assert md.startswith("# Distillery evaluation")
    for heading in SECTIONS:
        assert f"\n## {heading}\n" in md
    for group in ("Offline", "Online", "Break-even"):
        assert f"\n### {group}\n" in md


def test_markdown_content(rendered):
    md, _ = rendered
    assert "| math_steps | 0.80 (n=20) | 0.10 (n=20) | 0.60 (n=20) |" in md
    assert "| tool_call | tool_call_accuracy | - | 0.6 |" in md  # subjects are columns, teachers first
    assert "| tool_call | agreement | 1 | - |" in md
    assert "| math_steps | no_hard_cases | 0.500 | -0.100 | [-0.150, -0.050] | yes | 3 | 1200 |" in md
    assert "| horizon_requests | 300000 |" in md
    assert "- **marginal_gain**:" in md and "- **error_shift**: FIRED" in md
    assert "Advice:" in md
    assert "0 evaluation tasks appear in the training manifest (must be 0): OK" in md
    assert "| math_steps | 50 | 1500 | 3.3% |" in md


def test_html_escapes_user_text():
    _, page = render(data(student="<b>bold</b> & co"))
    assert "<b>bold" not in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page


def test_one_round_still_renders_the_gain_plot():
    d = data(attribution=False)
    d = replace(d, rounds=d.rounds[:1], signals=stop_signals(d.rounds[:1]))
    md, page = render(d)
    assert page.count("data:image/png;base64,") == 3
    assert "not_enough_rounds" in md


def test_write_report(tmp_path: Path):
    paths = write_report(data(), tmp_path / "evaluation")
    md = paths["markdown"].read_text()
    for name in ("accuracy.png", "cost_quality.png", "marginal_gain.png", "ablation.png"):
        assert f"]({name})" in md
        assert paths[name].read_bytes().startswith(PNG_MAGIC)
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "http://" not in page and "https://" not in page
