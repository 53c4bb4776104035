"""The evaluation report: one Markdown file (PNG plots beside it) and one self-contained HTML file.

The report is built once as a list of neutral blocks (headings, paragraphs, tables, lists,
images) and then written out twice, so the Markdown and the HTML can never disagree. The HTML
embeds its plots as base64 PNG and its CSS inline: it is a single file a reviewer can mail or
archive, and it loads nothing from anywhere. All text is escaped, since unit names, subjects and
ledger keys come from a user's spec.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from statistics import mean
from typing import Any, Callable

from distillery.contracts.events import SubjectScore, subject_order
from distillery.domain.loop import RECOMMENDATION
from distillery_evaluator.signals import Round, Signal

__all__ = ["ReportData", "SECTIONS", "make_plots", "render", "write_report"]

SECTIONS = (
    "Summary", "Accuracy", "Metrics", "Breakdown by difficulty and scenario", "Cost and latency",
    "ROI ledger", "Stop signals", "Attribution", "Held-out check", "Real data share",
)
PLOT_NAMES = ("accuracy.png", "cost_quality.png", "marginal_gain.png", "ablation.png")


@dataclass
class ReportData:
    student: str
    student_id: str
    scores: list[SubjectScore]  # per unit x subject (teacher:<id>, student:before, student:after)
    breakdown: list[dict]  # {"unit","dimension": "difficulty"|"scenario","value","subject","n","accuracy"}
    metrics: list[dict]  # {"unit","subject","metric","value"}
    ledger: dict[str, float]  # ROI ledger (logic.roi keys and more)
    signals: list[Signal]
    rounds: list[Round]  # history incl. this one
    attribution: list[dict] | None = None  # {"unit","variant","accuracy","diff","ci_low","ci_high","n_seeds","samples"}
    heldout_overlap: int = 0
    real_samples: dict[str, int] = field(default_factory=dict)  # unit -> real (imported) samples
    unit_samples: dict[str, int] = field(default_factory=dict)  # unit -> all samples (share denominator)
    unit_signals: dict[str, dict[str, str]] = field(default_factory=dict)  # unit -> fired signal -> reason
    excluded_units: list[str] = field(default_factory=list)  # units this student's round left out


# --- blocks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Items:
    items: list[tuple[str, str]]  # (bold label, text)


@dataclass(frozen=True)
class Image:
    name: str
    alt: str


Block = Heading | Para | Table | Items | Image


# --- formatting ---------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    """Numbers as a reader wants them: integers plainly, small costs with 3 significant digits."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        if abs(value) >= 0.01:
            return f"{value:.4f}".rstrip("0").rstrip(".")
        return format(Decimal(f"{value:.3g}"), "f")  # 0.00001, not 1e-05
    return str(value)


def _subjects(scores: list[SubjectScore] | list[dict]) -> list[str]:
    names = {s.subject if isinstance(s, SubjectScore) else s["subject"] for s in scores}
    return sorted(names, key=subject_order)


def _units(scores: list[SubjectScore]) -> list[str]:
    return sorted({s.unit for s in scores})


def _acc_cell(accuracy: float, n: int) -> str:
    return f"{accuracy:.2f} (n={n})"


# --- sections -----------------------------------------------------------------------------------


def _summary(d: ReportData) -> list[Block]:
    """One line a reader can stop at: before/after/teacher, money, and the stop verdicts."""
    by = {(s.unit, s.subject): s.accuracy for s in d.scores}
    units = _units(d.scores)
    after = [by[(u, "student:after")] for u in units if (u, "student:after") in by]
    before = [by[(u, "student:before")] for u in units if (u, "student:before") in by]
    teach = [max(a for (uu, s), a in by.items() if uu == u and s.startswith("teacher:"))
             for u in units if any(uu == u and s.startswith("teacher:") for uu, s in by)]
    fired = [s.name for s in d.signals if s.fired]
    parts = [f"Mean held-out accuracy over {len(units)} unit(s): "
             f"{_mean_txt(before)} before training, {_mean_txt(after)} after, best teacher {_mean_txt(teach)}."]
    if "net_saving_usd" in d.ledger:
        parts.append(f"Net saving over the horizon: ${fmt(d.ledger['net_saving_usd'])} "
                     f"(ROI {fmt(d.ledger.get('roi', 0.0))}).")
    parts.append(f"Stop signals fired: {', '.join(fired) if fired else 'none'} ({len(fired)} of {len(d.signals)}).")
    return [Heading("Summary"), Para(" ".join(parts))]


def _mean_txt(values: list[float]) -> str:
    return f"{mean(values):.2f}" if values else "-"


def _accuracy(d: ReportData) -> list[Block]:
    subjects = _subjects(d.scores)
    table = {(s.unit, s.subject): s for s in d.scores}
    rows = [[u] + [_acc_cell(table[(u, s)].accuracy, table[(u, s)].n) if (u, s) in table else "-" for s in subjects]
            for u in _units(d.scores)]
    return [Heading("Accuracy"),
            Para("Accuracy on held-out tasks per capability unit (n tasks); the same reference checks as the judge."),
            Table(["unit"] + subjects, rows), Image(PLOT_NAMES[0], "accuracy per unit and subject")]


def _metrics(d: ReportData) -> list[Block]:
    if not d.metrics:
        return [Heading("Metrics"), Para("No per-metric results were recorded.")]
    subjects = _subjects(d.metrics)
    cells = {(m["unit"], m["metric"], m["subject"]): m["value"] for m in d.metrics}
    keys = sorted({(m["unit"], m["metric"]) for m in d.metrics})
    rows = [[u, metric] + [fmt(cells[(u, metric, s)]) if (u, metric, s) in cells else "-" for s in subjects]
            for u, metric in keys]
    return [Heading("Metrics"), Table(["unit", "metric"] + subjects, rows)]


def _breakdown(d: ReportData) -> list[Block]:
    title = "Breakdown by difficulty and scenario"
    if not d.breakdown:
        return [Heading(title), Para("No task metadata to break the scores down by.")]
    subjects = _subjects(d.breakdown)
    cells = {(r["unit"], r["dimension"], str(r["value"]), r["subject"]): r for r in d.breakdown}
    order = {"difficulty": 0, "scenario": 1}
    keys = sorted({(r["unit"], r["dimension"], str(r["value"])) for r in d.breakdown},
                  key=lambda k: (k[0], order.get(k[1], 2), k[1], k[2]))
    rows = [[u, dim, val] + [_acc_cell(cells[(u, dim, val, s)]["accuracy"], cells[(u, dim, val, s)]["n"])
                             if (u, dim, val, s) in cells else "-" for s in subjects]
            for u, dim, val in keys]
    return [Heading(title), Table(["unit", "dimension", "value"] + subjects, rows)]


def _cost(d: ReportData) -> list[Block]:
    rows = [[s.unit, s.subject, f"{s.mean_latency_s:.3f}", fmt(s.cost_per_request_usd), f"{s.mean_output_tokens:.1f}"]
            for s in sorted(d.scores, key=lambda s: (s.unit, subject_order(s.subject)))]
    return [Heading("Cost and latency"),
            Table(["unit", "subject", "mean latency (s/request)", "cost per request (USD)", "mean output tokens"],
                  rows),
            Image(PLOT_NAMES[1], "cost per request against accuracy")]


def _ledger_group(key: str) -> str:
    if key.startswith("offline_"):
        return "Offline"
    if key.startswith("break_even"):
        return "Break-even"
    return "Online"


def _ledger(d: ReportData) -> list[Block]:
    """Offline spend, online (serving) figures and break-even, each as its own table."""
    blocks: list[Block] = [Heading("ROI ledger")]
    for group in ("Offline", "Online", "Break-even"):
        rows = [[k, fmt(v)] for k, v in d.ledger.items() if _ledger_group(k) == group]
        if rows:
            blocks += [Heading(group, 3), Table(["item", "value"], rows)]
    if len(blocks) == 1:
        blocks.append(Para("No ledger was computed."))
    return blocks


def _signals(d: ReportData) -> list[Block]:
    items = []
    for s in d.signals:
        text = f"{'FIRED' if s.fired else 'not fired'} ({s.reason}). {s.detail}"
        if s.fired and s.advice:
            text += f" Advice: {s.advice}"
        items.append((s.name, text))
    blocks: list[Block] = [Heading("Stop signals")]
    blocks.append(Items(items) if items else Para("No stop signals were computed."))
    if d.excluded_units:
        blocks.append(Para(f"This round left out {', '.join(d.excluded_units)}: a stop signal held for them."))
    stopped = [(unit, f"{', '.join(f'{k} ({v})' for k, v in fired.items())}. The next round leaves it out. "
                      f"Recommendation: {RECOMMENDATION}.") for unit, fired in sorted(d.unit_signals.items())]
    if stopped:
        blocks += [Heading("Units the next round leaves out", 3), Items(stopped)]
    return blocks + [Image(PLOT_NAMES[2], "mean accuracy against training samples per round")]


def _ci(row: dict) -> str:
    lo, hi = row.get("ci_low"), row.get("ci_high")
    return f"[{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None else "-"


def _excludes_zero(row: dict) -> str:
    lo, hi = row.get("ci_low"), row.get("ci_high")
    if lo is None or hi is None:
        return "-"
    return "yes" if lo > 0 or hi < 0 else "no"


def _attribution(d: ReportData) -> list[Block]:
    if not d.attribution:
        return [Heading("Attribution"), Para("No attribution (ablation) run for this student.")]
    rows = [[r["unit"], str(r["variant"]), f"{r['accuracy']:.3f}", f"{r.get('diff', 0.0):+.3f}", _ci(r),
             _excludes_zero(r), fmt(r.get("n_seeds", "-")), fmt(r.get("samples", "-"))]
            for r in sorted(d.attribution, key=lambda r: (r["unit"], r["variant"] != "full", str(r["variant"])))]
    return [Heading("Attribution"),
            Para("Accuracy of each variant, trained from the same snapshot and scored on the same held-out tasks, "
                 "against the full recipe (variant `full`); diff = variant - full, mean over seeds, with a 95% "
                 "interval from a paired bootstrap over tasks and seeds."),
            Table(["unit", "variant", "accuracy", "diff vs full", "95% CI", "CI excludes 0", "seeds", "samples"], rows),
            Image(PLOT_NAMES[3], "accuracy difference against the full dataset per variant")]


def _heldout(d: ReportData) -> list[Block]:
    verdict = "OK" if d.heldout_overlap == 0 else "FAIL: the evaluation leaks into training"
    return [Heading("Held-out check"),
            Para(f"{d.heldout_overlap} evaluation tasks appear in the training manifest (must be 0): {verdict}.")]


def _real_data(d: ReportData) -> list[Block]:
    """Real (imported) samples per unit: distilled data alone copies the teacher's blind spots."""
    units = sorted(set(_units(d.scores)) | set(d.real_samples) | set(d.unit_samples))
    total = d.rounds[-1].samples if d.rounds else 0
    rows = []
    for u in units:
        real = d.real_samples.get(u, 0)
        denom = d.unit_samples.get(u) or total
        rows.append([u, str(real), str(denom) if denom else "-", f"{real / denom:.1%}" if denom else "-"])
    note = "Share of the unit's samples" if d.unit_samples else "Share of all samples in the dataset"
    return [Heading("Real data share"), Para(f"{note} that are real (imported) rather than distilled."),
            Table(["unit", "real samples", "samples", "real share"], rows)]


def build_blocks(d: ReportData) -> list[Block]:
    """The whole report, in reading order."""
    head: list[Block] = [Heading(f"Distillery evaluation: student {d.student} ({d.student_id})", 1)]
    sections: list[Callable[[ReportData], list[Block]]] = [
        _summary, _accuracy, _metrics, _breakdown, _cost, _ledger, _signals, _attribution, _heldout, _real_data]
    return head + [b for section in sections for b in section(d)]


# --- plots --------------------------------------------------------------------------------------


def _figure(width: float = 6.5, height: float = 3.2):
    """A pyplot-free figure: no global state, safe in the evaluator's worker thread."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def plot_accuracy(scores: list[SubjectScore]) -> bytes:
    """Grouped bars: every subject's accuracy per unit, students before/after next to the teachers."""
    units, subjects = _units(scores), _subjects(scores)
    width = 0.8 / max(1, len(subjects))
    fig, ax = _figure()
    for i, subject in enumerate(subjects):
        acc = {s.unit: s.accuracy for s in scores if s.subject == subject}
        ax.bar([u + i * width for u in range(len(units))], [acc.get(u, 0) for u in units], width, label=subject)
    ax.set_xticks([u + width * (len(subjects) - 1) / 2 for u in range(len(units))], units)
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out accuracy")
    if subjects:
        ax.legend(fontsize=7)
    return _png(fig)


def _cost_scale(ax, costs: list[float]) -> None:
    """Log x when costs span more than two orders of magnitude (teacher vs student usually do)."""
    positive = [c for c in costs if c > 0]
    if len(positive) < 2 or max(positive) / min(positive) <= 100:
        return
    if len(positive) == len(costs):
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=min(positive))


def plot_cost_quality(scores: list[SubjectScore]) -> bytes:
    """Cost per request against accuracy, one labelled point per subject and unit."""
    fig, ax = _figure()
    subjects, units = _subjects(scores), _units(scores)
    colors = {sub: f"C{i % 10}" for i, sub in enumerate(subjects)}
    markers = {u: "osD^vP*X"[i % 8] for i, u in enumerate(units)}
    for s in sorted(scores, key=lambda s: (s.unit, subject_order(s.subject))):
        # colour = subject, marker = unit, and a legend entry each: text labels collide when points coincide
        ax.scatter(s.cost_per_request_usd, s.accuracy, s=28, color=colors[s.subject], marker=markers[s.unit],
                   label=f"{s.subject} / {s.unit}", alpha=0.85)
    if scores:
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _cost_scale(ax, [s.cost_per_request_usd for s in scores])
    ax.set_xlabel("cost per request (USD)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(-0.05, 1.05)
    return _png(fig)


def plot_marginal_gain(rounds: list[Round]) -> bytes:
    """Mean accuracy against training samples per round: a flattening curve is the stop signal."""
    fig, ax = _figure()
    xs = [r.samples for r in rounds]
    ys = [mean(r.accuracy.values()) if r.accuracy else 0.0 for r in rounds]
    ax.plot(xs, ys, marker="o")
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x1 > x0:
            ax.annotate(f"{(y1 - y0) / ((x1 - x0) / 1000):+.3f}/1k", (x1, y1), fontsize=6,
                        xytext=(3, -10), textcoords="offset points")
    if len(rounds) < 2:
        note = "only one round so far: no gain to measure yet" if rounds else "no rounds yet"
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", fontsize=9, color="gray")
    ax.set_xlabel("training samples in the dataset")
    ax.set_ylabel("mean held-out accuracy")
    ax.set_ylim(-0.05, 1.05)
    return _png(fig)


def _yerr(rows: list[dict]) -> list[list[float]]:
    """Asymmetric error bars from the CI around each diff (zero where no CI was computed)."""
    low, high = [], []
    for r in rows:
        diff, lo, hi = r.get("diff", 0.0), r.get("ci_low"), r.get("ci_high")
        low.append(max(0.0, diff - lo) if lo is not None else 0.0)
        high.append(max(0.0, hi - diff) if hi is not None else 0.0)
    return [low, high]


def plot_ablation(attribution: list[dict]) -> bytes:
    """Diff against the full dataset per variant and unit, with 95% CI error bars."""
    rows = [r for r in attribution if r["variant"] != "full"]
    units = sorted({r["unit"] for r in rows})
    variants = sorted({str(r["variant"]) for r in rows})
    width = 0.8 / max(1, len(variants))
    fig, ax = _figure()
    for i, variant in enumerate(variants):
        vrows = {r["unit"]: r for r in rows if str(r["variant"]) == variant}
        present = [u for u in units if u in vrows]
        ax.bar([units.index(u) + i * width for u in present], [vrows[u].get("diff", 0.0) for u in present], width,
               yerr=_yerr([vrows[u] for u in present]), capsize=3, label=variant)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks([u + width * (len(variants) - 1) / 2 for u in range(len(units))], units)
    ax.set_ylabel("accuracy diff vs full")
    if variants:
        ax.legend(fontsize=7)
    return _png(fig)


def make_plots(d: ReportData) -> dict[str, bytes]:
    """File name -> PNG bytes; the ablation plot only when an attribution run exists."""
    plots = {PLOT_NAMES[0]: plot_accuracy(d.scores), PLOT_NAMES[1]: plot_cost_quality(d.scores),
             PLOT_NAMES[2]: plot_marginal_gain(d.rounds)}
    if d.attribution:
        plots[PLOT_NAMES[3]] = plot_ablation(d.attribution)
    return plots


# --- markdown -----------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_block(b: Block, plots: dict[str, bytes]) -> list[str]:
    if isinstance(b, Heading):
        return ["#" * b.level + " " + b.text, ""]
    if isinstance(b, Para):
        return [b.text, ""]
    if isinstance(b, Table):
        lines = ["| " + " | ".join(_md_cell(h) for h in b.header) + " |", "|" + "---|" * len(b.header)]
        return lines + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows] + [""]
    if isinstance(b, Items):
        return [f"- **{label}**: {text}" for label, text in b.items] + [""]
    if isinstance(b, Image):
        return [f"![{b.alt}]({b.name})", ""] if b.name in plots else []
    raise TypeError(f"unknown block {b!r}")


def render_markdown(blocks: list[Block], plots: dict[str, bytes]) -> str:
    return "\n".join(line for b in blocks for line in _md_block(b, plots)).rstrip() + "\n"


# --- html ---------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:960px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{font-size:1em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}
tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;display:block;margin:.6em 0}
li{margin:.3em 0}
"""


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_block(b: Block, plots: dict[str, bytes]) -> str:
    if isinstance(b, Heading):
        return f"<h{b.level}>{_h(b.text)}</h{b.level}>"
    if isinstance(b, Para):
        return f"<p>{_h(b.text)}</p>"
    if isinstance(b, Table):
        head = "".join(f"<th>{_h(c)}</th>" for c in b.header)
        body = "".join("<tr>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>" for row in b.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(b, Items):
        lis = "".join(f"<li><strong>{_h(label)}</strong>: {_h(text)}</li>" for label, text in b.items)
        return f"<ul>{lis}</ul>"
    if isinstance(b, Image):
        if b.name not in plots:
            return ""
        data = base64.b64encode(plots[b.name]).decode("ascii")
        return f'<img alt="{_h(b.alt)}" src="data:image/png;base64,{data}">'
    raise TypeError(f"unknown block {b!r}")


def render_html(blocks: list[Block], plots: dict[str, bytes], title: str) -> str:
    body = "\n".join(part for b in blocks if (part := _html_block(b, plots)))
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_h(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


# --- entry points -------------------------------------------------------------------------------


def _render(d: ReportData, plots: dict[str, bytes]) -> tuple[str, str]:
    blocks = build_blocks(d)
    return render_markdown(blocks, plots), render_html(blocks, plots, f"Distillery evaluation: {d.student}")


def render(data: ReportData) -> tuple[str, str]:
    """(markdown, html). The Markdown refers to the plots by file name (see :func:`write_report`)."""
    return _render(data, make_plots(data))


def write_report(data: ReportData, out_dir: Path) -> dict[str, Path]:
    """Write ``report.md``, its PNG plots and the self-contained ``report.html``; returns the paths
    by name (``markdown``, ``html`` and each plot's file name)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = make_plots(data)
    markdown, page = _render(data, plots)
    paths: dict[str, Path] = {}
    for name, png in plots.items():
        paths[name] = out_dir / name
        paths[name].write_bytes(png)
    paths["markdown"] = out_dir / "report.md"
    paths["markdown"].write_text(markdown, encoding="utf-8")
    paths["html"] = out_dir / "report.html"
    paths["html"].write_text(page, encoding="utf-8")
    return paths
