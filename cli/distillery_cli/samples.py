"""``distillery samples``: what the sample repository holds, and an export of it as a dataset.

The repository is the samples topic: ``SampleCurated`` events and their ``SampleRetracted``
retractions, keyed by task id. A sample is live when the last event on its id is a curated one
(:func:`distillery.contracts.events.live_samples`); it is retracted when it was curated and is no longer live.
Both views read the topic from the start up to end offsets fixed when the read begins, so an
export names exactly the snapshot it holds.

``samples export`` writes ``samples.jsonl`` and ``samples.parquet`` (one row per live sample, the
same rows and columns in both, sorted by sample id) and ``manifest.json`` (offsets, filters,
counts, sha256 of each data file). Columns are the fields of ``SampleCurated``; nested models
stay nested (struct columns), fields of free-form shape (dicts, lists of dicts) are JSON strings,
so Parquet and HF ``datasets`` get one fixed type per column.

``samples import`` brings human-written or production-labelled samples (corrections, real failure
cases) into the repository as ``origin="real"`` samples: every line of a JSONL file is validated
against the running pipeline's spec, bad lines are reported with their number and reason, and the
valid ones not already in the repository are published to the samples topic. Validation, building
and the repository check are plain functions (:func:`plan_import`); the command only reads and writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import types
import typing
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.markup import escape
from rich.table import Table

from distillery import __version__
from distillery.contracts import ids
from distillery.contracts.events import (
    POOLS,
    SAMPLE_POOLS,
    Provenance,
    SampleCurated,
    SampleEvent,
    Tier,
    ToolSpec,
    Trace,
    live_samples,
    new_task,
    parse_sample_record,
)
from distillery.contracts.settings import ConfigError, ServiceSettings
from distillery.contracts.spec import CapabilitySpec, UnitSpec, load_spec
from distillery.contracts.submission import LineError
from distillery.domain.samples import hashed_tool_names, pathway_problem, sample_weight
from distillery.runtime.kafka import produce_all, replay
from distillery_cli import pipeline, stack
from distillery_cli.output import RUN_DIR, console, err

app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                  help="What the sample repository holds; 'samples export' writes it as JSONL and Parquet.")

TIER_ORDER = {"high": 0, "medium": 1, "low": 2}
ORIGINS = ("teacher", "real")
DUPLICATES_METRIC = "distillery_editor_duplicates_total"
PUBLISHED_METRIC = "distillery_editor_samples_total"

JSONL_FILE, PARQUET_FILE, MANIFEST_FILE = "samples.jsonl", "samples.parquet", "manifest.json"
FORMATS = {"jsonl": (JSONL_FILE,), "parquet": (PARQUET_FILE,), "both": (JSONL_FILE, PARQUET_FILE)}
EXPORT_FILES = (JSONL_FILE, PARQUET_FILE, MANIFEST_FILE)


# --- the repository at a snapshot -----------------------------------------------------------------------


@dataclass(frozen=True)
class SamplesSnapshot:
    """The samples topic read from the start to fixed end offsets."""

    topic: str
    end_offsets: dict[int, int]
    history: list[SampleEvent]  # in topic order within each partition
    unreadable: int = 0  # records that parse as neither a sample nor a retraction


@dataclass(frozen=True)
class Repository:
    """Live samples, and the last curated version of each sample retracted since."""

    live: list[SampleCurated]
    retracted: list[SampleCurated]


def repository_of(history: Iterable[SampleEvent]) -> Repository:
    history = list(history)
    live = live_samples(history)
    last_curated = {e.sample_id: e for e in history if isinstance(e, SampleCurated)}
    live_ids = {s.sample_id for s in live}
    retracted = [s for sample_id, s in last_curated.items() if sample_id not in live_ids]
    return Repository(live, retracted)


def of_units(samples: Iterable[SampleCurated], units: Collection | None) -> list[SampleCurated]:
    return [s for s in samples if not units or s.unit in units]


def of_pools(samples: Iterable[SampleCurated], pools: Collection | None) -> list[SampleCurated]:
    return [s for s in samples if not pools or s.pool in pools]


# --- counting ------------------------------------------------------------------------------------------------


MixKey = tuple[str, str, str, str]  # unit, pool, pathway, tier


def mix_counts(samples: Iterable[SampleCurated]) -> list[tuple[MixKey, int]]:
    """Samples per (unit, pool, pathway, tier), sorted by unit, pool, pathway, then tier high to low."""
    counts = Counter((s.unit, s.pool, s.pathway, s.tier) for s in samples)
    return sorted(counts.items(), key=lambda item: (*item[0][:3], TIER_ORDER.get(item[0][3], 9), item[0][3]))


def compression_ratio(samples: Iterable[SampleCurated]) -> float | None:
    """Tokens after compression over tokens before, over the samples that counted them; None if none did."""
    counted = [s for s in samples if s.tokens_before > 0]
    if not counted:
        return None
    return sum(s.tokens_after for s in counted) / sum(s.tokens_before for s in counted)


def mean_weight(samples: Sequence[SampleCurated]) -> float | None:
    return sum(s.weight for s in samples) / len(samples) if samples else None


def cluster_count(samples: Iterable[SampleCurated]) -> int:
    return len({s.cluster for s in samples if s.cluster is not None})


def origin_counts(samples: Iterable[SampleCurated]) -> Counter:
    return Counter(s.origin for s in samples)


@dataclass(frozen=True)
class UnitSummary:
    unit: str
    live: int
    retracted: int
    mean_weight: float | None
    compression: float | None  # tokens_after / tokens_before
    clusters: int
    origins: Counter


def unit_summaries(repo: Repository, unit: str | None = None) -> list[UnitSummary]:
    """One summary per unit with live or retracted samples, sorted by unit."""
    units = sorted({s.unit for s in [*repo.live, *repo.retracted] if unit is None or s.unit == unit})
    out = []
    for name in units:
        live = of_units(repo.live, {name})
        out.append(UnitSummary(name, len(live), len(of_units(repo.retracted, {name})), mean_weight(live),
                               compression_ratio(live), cluster_count(live), origin_counts(live)))
    return out


@dataclass(frozen=True)
class DedupRate:
    """Samples the editor dropped as duplicates for one reason, against the samples it published."""

    reason: str
    dropped: float
    published: float

    @property
    def rate(self) -> float:
        seen = self.dropped + self.published
        return self.dropped / seen if seen else 0.0


@dataclass(frozen=True)
class EditorDedup:
    """The editor's counters since it started: samples published, and dedup rates per reason."""

    published: float
    rates: list[DedupRate]


Metrics = dict[str, list[tuple[dict[str, str], float]]]


def editor_dedup(metrics: Metrics) -> EditorDedup | None:
    """Dedup rates from the editor's counters; None when there are no metrics (editor not reachable)."""
    if not metrics:
        return None
    published = sum(value for _, value in metrics.get(PUBLISHED_METRIC, []))
    dropped: Counter = Counter()
    for labels, value in metrics.get(DUPLICATES_METRIC, []):
        dropped[labels.get("reason", "unknown")] += value
    return EditorDedup(published, [DedupRate(reason, dropped[reason], published) for reason in sorted(dropped)])


# --- formatting ------------------------------------------------------------------------------------------------


def format_compression(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f} ({1 - ratio:.0%} saved)" if ratio <= 1 else f"{ratio:.2f} ({ratio - 1:.0%} longer)"


def format_weight(weight: float | None) -> str:
    return "-" if weight is None else f"{weight:.2f}"


def format_count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def mix_table(samples: list[SampleCurated]) -> Table:
    table = Table("unit", "pool", "pathway", "tier", "samples", title="live samples per unit, pool, pathway and tier")
    for (unit, pool, pathway, tier), count in mix_counts(samples):
        table.add_row(unit, pool, pathway, tier, str(count))
    return table


def units_table(summaries: list[UnitSummary]) -> Table:
    table = Table("unit", "live", "retracted", "mean weight", "compression (after/before)", "clusters",
                  *ORIGINS, title="per unit")
    for s in summaries:
        table.add_row(s.unit, str(s.live), str(s.retracted), format_weight(s.mean_weight),
                      format_compression(s.compression), str(s.clusters), *(str(s.origins[o]) for o in ORIGINS))
    return table


def dedup_table(rates: list[DedupRate]) -> Table:
    table = Table("reason", "dropped", "published", "dedup rate", title="editor dedup, since it started")
    for r in rates:
        table.add_row(r.reason, format_count(r.dropped), format_count(r.published), f"{r.rate:.1%}")
    return table


def print_overview(snapshot: SamplesSnapshot, dedup: EditorDedup | None, unit: str | None = None) -> None:
    repo = repository_of(snapshot.history)
    live = of_units(repo.live, {unit} if unit else None)
    summaries = unit_summaries(repo, unit)
    where = f" of unit '{unit}'" if unit else ""
    console.print(f"{snapshot.topic} at offsets {format_offsets(snapshot.end_offsets)}: {len(live)} live, "
                  f"{sum(s.retracted for s in summaries)} retracted sample(s){where}", soft_wrap=True)
    if snapshot.unreadable:
        err.print(f"[yellow]warning:[/yellow] {snapshot.unreadable} record(s) on {snapshot.topic} are not samples")
    if live:
        console.print(mix_table(live))
    if summaries:
        console.print(units_table(summaries))
    print_dedup(dedup)


def print_dedup(dedup: EditorDedup | None) -> None:
    if dedup is None:
        console.print("dedup rates: the editor is not reachable (they come from its metrics while it runs)")
    elif not dedup.rates:
        console.print(f"dedup rates: the editor dropped no duplicates since it started "
                      f"({format_count(dedup.published)} samples published)")
    else:
        console.print(dedup_table(dedup.rates))


def format_offsets(end_offsets: dict[int, int]) -> str:
    return " ".join(f"{p}:{o}" for p, o in sorted(end_offsets.items())) or "-"


# --- the export: rows and columns ------------------------------------------------------------------------------


def arrow_type(annotation: Any):
    """The Parquet type of a field, or None when the column carries the field as a JSON string.

    Scalars, string literals, lists of those and models made of them keep their shape (models
    become structs); anything free-form (dicts, ``Any``, models holding either) is JSON text.
    """
    import pyarrow as pa

    scalars = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(), datetime: pa.string()}
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in scalars:
        return scalars[annotation]
    if origin is Literal:
        return pa.string() if all(isinstance(a, str) for a in args) else None
    if origin in (typing.Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        return arrow_type(present[0]) if len(present) == 1 else None
    if origin is list:
        item = arrow_type(args[0]) if args else None
        return pa.list_(item) if item is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = [(name, arrow_type(f.annotation)) for name, f in annotation.model_fields.items()]
        return pa.struct(fields) if all(t is not None for _, t in fields) else None
    return None


def json_columns() -> list[str]:
    """The SampleCurated fields exported as JSON strings (tool_steps, tools, metadata as of schema v2)."""
    return [name for name, f in SampleCurated.model_fields.items() if arrow_type(f.annotation) is None]


def export_schema():
    """The Arrow schema of samples.parquet: one column per SampleCurated field, in field order."""
    import pyarrow as pa

    fields = [pa.field(name, arrow_type(f.annotation) or pa.string()) for name, f in SampleCurated.model_fields.items()]
    return pa.schema(fields, metadata={"distillery.json_columns": ",".join(json_columns()),
                                       "distillery.sample_schema_version": str(sample_schema_version())})


def sample_schema_version() -> int:
    return SampleCurated.model_fields["schema_version"].default


def timestamp_columns() -> list[str]:
    return [name for name, f in SampleCurated.model_fields.items() if f.annotation is datetime]


def utc_text(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds, always the same width: sortable as text, and never guessed into a
    timestamp by the JSON reader of pyarrow / HF ``datasets`` (it does that to whole-second values only)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return aware.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def export_row(sample: SampleCurated, encoded: Collection[str], timestamps: Collection[str]) -> dict[str, Any]:
    """``model_dump(mode="json")`` with the ``encoded`` fields as JSON strings (keys sorted) and the
    ``timestamps`` as fixed-width UTC text."""
    row = sample.model_dump(mode="json")
    for name in encoded:
        row[name] = json.dumps(row[name], ensure_ascii=False, sort_keys=True)
    for name in timestamps:
        row[name] = utc_text(getattr(sample, name))
    return row


def export_rows(samples: Iterable[SampleCurated]) -> list[dict[str, Any]]:
    """One row per sample id, sorted by sample id."""
    encoded, timestamps = json_columns(), timestamp_columns()
    by_id = {s.sample_id: s for s in samples}
    return [export_row(by_id[sample_id], encoded, timestamps) for sample_id in sorted(by_id)]


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    path.write_bytes("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode())


def write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows, schema=export_schema()), path)


WRITERS = {JSONL_FILE: write_jsonl, PARQUET_FILE: write_parquet}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def count_by(samples: Iterable[SampleCurated], field: str) -> dict[str, int]:
    return dict(sorted(Counter(getattr(s, field) for s in samples).items()))


def build_manifest(snapshot: SamplesSnapshot, repo: Repository, exported: list[SampleCurated],
                   filters: dict[str, list[str]], files: dict[str, Path], rows: int) -> dict[str, Any]:
    """Lineage of an export: what was read (offsets), what was kept (filters, counts), and the files' sha256."""
    return {
        "topic": snapshot.topic,
        "end_offsets": {str(p): o for p, o in sorted(snapshot.end_offsets.items())},
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "schema_version": sample_schema_version(),
        "filters": filters,
        "rows": rows,
        "live_samples": len(repo.live),
        "retracted_samples": len(repo.retracted),
        "unreadable_records": snapshot.unreadable,
        "counts": {f"per_{field}": count_by(exported, field) for field in ("unit", "pool", "pathway", "tier")},
        "json_columns": json_columns(),
        "files": {name: {"sha256": sha256_of(path), "bytes": path.stat().st_size} for name, path in files.items()},
    }


# --- the export: files on disk ---------------------------------------------------------------------------------


def formats_for(fmt: str) -> tuple[str, ...]:
    """The data files a ``--format`` value asks for."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)} (got '{fmt}')")
    return FORMATS[fmt]


def check_pools(pools: Iterable[str]) -> None:
    unknown = sorted(set(pools) - set(POOLS))
    if unknown:
        raise ConfigError(f"unknown pool(s) {', '.join(unknown)} (pools: {', '.join(POOLS)})")


def prepare_out_dir(out_dir: Path, force: bool) -> None:
    """Create ``out_dir``; a non-empty one only with ``force``, and then the files of an earlier export go."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise ConfigError(f"{out_dir} is not empty; choose another folder or pass --force to overwrite")
        for name in EXPORT_FILES:  # a stale file of another --format must not sit beside the new manifest
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def write_export(snapshot: SamplesSnapshot, out_dir: Path, files: Sequence[str] = FORMATS["both"],
                 units: Sequence[str] = (), pools: Sequence[str] = ()) -> dict[str, Any]:
    """Write the live samples of ``snapshot`` (filtered) and the manifest; returns the manifest.

    The manifest is written last: a folder with a manifest holds a complete export.
    """
    repo = repository_of(snapshot.history)
    exported = of_pools(of_units(repo.live, set(units)), set(pools))
    rows = export_rows(exported)
    paths = {name: out_dir / name for name in files}
    for name, path in paths.items():
        WRITERS[name](rows, path)
    manifest = build_manifest(snapshot, repo, exported, {"units": sorted(set(units)), "pools": sorted(set(pools))},
                              paths, len(rows))
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


# --- import: real samples, as plain functions -------------------------------------------------------------------

HUMAN = "human"  # teacher_id (unless metadata names a source) and judge_version of an imported sample


class RealSampleLine(BaseModel):
    """One line of a ``samples import`` file: a sample a human wrote or production labelled.

    ``pathway`` and ``pool`` are plain strings here: what they may be depends on the unit and is
    checked against the spec with a reason that says so. ``weight`` None: the editor's default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: str
    prompt: str
    final: str
    pathway: str = "answer"
    pool: str = "train"
    rationale: str = ""
    limits: str = ""
    evidence: list[str] = Field(default_factory=list)
    contrast: str = ""
    tool_steps: list[dict[str, Any]] = Field(default_factory=list)
    tools: list[ToolSpec] = Field(default_factory=list)
    weight: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    tier: Tier = "high"
    metadata: dict[str, str] = Field(default_factory=dict)
    task_id: str | None = Field(default=None, min_length=1)  # the task this sample corrects, if any


def numbered_lines(data: bytes) -> Iterable[tuple[int, bytes]]:
    """The non-blank lines of a JSONL file with their 1-based numbers (split on \\n only, like ``submit``)."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.rstrip(b"\r")
        if line.strip():
            yield number, line


def read_line_object(raw: bytes, max_bytes: int) -> dict[str, Any]:
    """The JSON object of one line; ValueError when it is too long, not UTF-8, not JSON or not an object."""
    if len(raw) > max_bytes:
        raise ValueError(f"line is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        text = raw.decode("utf-8-sig")  # -sig: a byte-order mark some editors write is not content
    except UnicodeDecodeError:
        raise ValueError("not valid UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ValueError("a sample line must be a JSON object")
    return data


def check_known_fields(data: dict[str, Any]) -> None:
    unknown = [name for name in data if name not in RealSampleLine.model_fields]
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(repr(n) for n in unknown)} "
                         f"(allowed: {', '.join(RealSampleLine.model_fields)})")


def parse_line_fields(data: dict[str, Any]) -> RealSampleLine:
    """The fields with their types checked; ValueError names the first field that is wrong."""
    try:
        return RealSampleLine.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(line)"
        raise ValueError(f"field '{field}': {first['msg']}") from None


def check_not_empty(line: RealSampleLine) -> None:
    for name in ("prompt", "final"):
        if not getattr(line, name).strip():
            raise ValueError(f"field '{name}' is empty")


def check_against_spec(line: RealSampleLine, spec: CapabilitySpec) -> UnitSpec:
    """The line's unit, pathway and pool exist where it says; returns the unit's spec."""
    unit = spec.units.get(line.unit)
    if unit is None:
        raise ValueError(f"unknown capability unit '{line.unit}' (spec has {', '.join(sorted(spec.units))})")
    if line.pathway not in unit.pathways:
        raise ValueError(f"unit '{line.unit}' has no pathway '{line.pathway}' (it declares {', '.join(unit.pathways)})")
    if line.pool not in SAMPLE_POOLS:
        raise ValueError(f"pool '{line.pool}' does not hold samples (sample pools: {', '.join(SAMPLE_POOLS)})")
    return unit


def check_editor_rules(line: RealSampleLine) -> None:
    """What the editor never curates is refused here too (domain.samples holds the rules for both)."""
    problem = pathway_problem(line.pool, line.pathway, line.rationale, bool(line.tool_steps), line.contrast)
    if problem:
        raise ValueError(problem)


def validate_real_line(data: dict[str, Any], spec: CapabilitySpec) -> tuple[RealSampleLine, UnitSpec]:
    """Every rule a line obeys, in the order the reasons are reported; ValueError with the first broken one."""
    check_known_fields(data)
    line = parse_line_fields(data)
    check_not_empty(line)
    unit = check_against_spec(line, spec)
    check_editor_rules(line)
    return line, unit


def real_sample_id(line: RealSampleLine) -> str:
    return ids.content_id("real", line.unit, line.pathway, line.prompt, line.final, line.rationale, line.limits,
                          line.contrast)


def real_task_id(line: RealSampleLine) -> str:
    """The task the sample corrects, else the id ``submit`` would give its prompt (``events.new_task``)."""
    return line.task_id or new_task(line.unit, line.prompt, tools=list(line.tools)).task_id


def import_verdict_id(data: bytes) -> str:
    """What an imported sample names as its verdict: the import file, by content."""
    return f"import:{hashlib.sha256(data).hexdigest()[:12]}"


def build_real_sample(line: RealSampleLine, unit: UnitSpec, verdict_id: str, produced_by: str) -> SampleCurated:
    """The ``origin="real"`` sample of one valid line (no judge score, tokens not counted)."""
    task_id = real_task_id(line)
    content_hash = ids.sample_content_hash(line.unit, line.pathway, hashed_tool_names(line.tools, unit), line.prompt,
                                       line.final, line.rationale, line.limits, line.tool_steps, line.contrast)
    return SampleCurated(
        sample_id=real_sample_id(line), unit=line.unit, pathway=line.pathway, pool=line.pool, prompt=line.prompt,
        final=line.final, rationale=line.rationale, limits=line.limits, evidence=line.evidence,
        tool_steps=line.tool_steps, tools=line.tools,
        weight=line.weight if line.weight is not None else sample_weight(line.pool, unit),
        content_hash=content_hash,
        provenance=Provenance(task_id=task_id, candidate_id=f"real:{content_hash}",
                              teacher_id=line.metadata.get("source", HUMAN), judge_version=HUMAN,
                              verdict_id=verdict_id),
        metadata=line.metadata, score=None, tier=line.tier, tokens_before=0, tokens_after=0,
        contrast=line.contrast, origin="real", produced_by=produced_by, trace=Trace(task_id=task_id),
    )


def check_not_repeated(sample: SampleCurated, seen: dict[str, int]) -> None:
    """A sample an earlier line of the same file already gave (same id, or same normalised content)."""
    if sample.sample_id in seen:
        raise ValueError(f"the same sample as line {seen[sample.sample_id]}")
    if sample.content_hash in seen:
        raise ValueError(f"the same content as line {seen[sample.content_hash]} (case and whitespace aside)")


def parse_real_samples(data: bytes, spec: CapabilitySpec, max_bytes: int, produced_by: str,
                       verdict_id: str | None = None) -> tuple[list[SampleCurated], list[LineError]]:
    """Valid lines become samples; every other line is reported with its number and reason, not fatal."""
    verdict_id = verdict_id or import_verdict_id(data)
    samples: list[SampleCurated] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}  # sample id and content hash -> the line that gave them first
    for number, raw in numbered_lines(data):
        try:
            line, unit = validate_real_line(read_line_object(raw, max_bytes), spec)
            sample = build_real_sample(line, unit, verdict_id, produced_by)
            check_not_repeated(sample, seen)
        except ValueError as exc:
            errors.append(LineError(number, str(exc)))
            continue
        seen.setdefault(sample.sample_id, number)
        seen.setdefault(sample.content_hash, number)
        samples.append(sample)
    return samples, errors


@dataclass(frozen=True)
class Present:
    """What the repository already holds, as far as an import is concerned."""

    ids: frozenset[str]  # every sample id ever curated, live or retracted (a retracted one stays out)
    live_hashes: frozenset[str]  # content hashes of the live samples (the editor's exact dedup)


def present_in(history: Iterable[SampleEvent]) -> Present:
    history = list(history)
    curated_ids = {e.sample_id for e in history if isinstance(e, SampleCurated)}
    return Present(frozenset(curated_ids), frozenset(s.content_hash for s in live_samples(history)))


def is_present(sample: SampleCurated, present: Present) -> bool:
    return sample.sample_id in present.ids or sample.content_hash in present.live_hashes


@dataclass(frozen=True)
class ImportPlan:
    """An import file against the repository: what to publish, what is there already, what was refused."""

    new: list[SampleCurated]
    present: list[SampleCurated]
    rejected: list[LineError]


def plan_import(data: bytes, spec: CapabilitySpec, max_bytes: int, present: Present,
                produced_by: str = f"cli@{__version__}") -> ImportPlan:
    """Validate and build every line, and set aside the samples the repository already holds."""
    samples, rejected = parse_real_samples(data, spec, max_bytes, produced_by)
    new = [s for s in samples if not is_present(s, present)]
    return ImportPlan(new, [s for s in samples if is_present(s, present)], rejected)


def import_summary(plan: ImportPlan, topic: str, dry_run: bool) -> str:
    imported = f"would import {len(plan.new)}" if dry_run else f"imported {len(plan.new)}"
    line = (f"{imported} sample(s) into {topic}, {len(plan.present)} already in the repository, "
            f"{len(plan.rejected)} line(s) rejected")
    return line + (" (dry run: nothing published)" if dry_run else "")



# --- topic I/O ---------------------------------------------------------------------------------------------------


def read_samples(settings: ServiceSettings) -> SamplesSnapshot:
    """The samples topic up to its end offsets at call time."""
    topic = settings.topics.samples
    replayed = asyncio.run(replay(settings, topic, parse_sample_record))
    return SamplesSnapshot(topic, replayed.end_offsets, replayed.events, replayed.skipped)


def export_samples(settings: ServiceSettings, out_dir: Path, files: Sequence[str] = FORMATS["both"],
                   units: Sequence[str] = (), pools: Sequence[str] = (), force: bool = False) -> dict[str, Any]:
    """What ``distillery samples export`` does, given the pipeline's settings."""
    check_pools(pools)
    prepare_out_dir(out_dir, force)
    return write_export(read_samples(settings), out_dir, files, units, pools)


def read_import_file(file: Path) -> bytes:
    if not file.is_file():
        raise ConfigError(f"no such file: {file}")
    return file.read_bytes()


def publish_samples(settings: ServiceSettings, samples: Sequence[SampleCurated]) -> None:
    """Samples onto the samples topic keyed by task id, as the editor publishes them."""
    items = [(settings.topics.samples, s.key, s.model_dump_json().encode()) for s in samples]
    asyncio.run(produce_all(settings, items))


def import_samples(settings: ServiceSettings, spec: CapabilitySpec, file: Path, dry_run: bool = False) -> ImportPlan:
    """What ``distillery samples import`` does, given the pipeline's settings and spec."""
    data = read_import_file(file)
    plan = plan_import(data, spec, settings.max_task_bytes, present_in(read_samples(settings).history))
    if plan.new and not dry_run:
        publish_samples(settings, plan.new)
    return plan


def editor_metrics(state: stack.StackState) -> Metrics:
    """The editor's /metrics; empty when the pipeline has no editor or it does not answer."""
    editor = next((p for p in state.processes if p.name == "editor"), None)
    if editor is None or not stack.pid_alive(editor.pid):
        return {}
    return pipeline.metrics(state, "editor")


# --- commands -------------------------------------------------------------------------------------------------


@app.callback()
def samples(
    ctx: typer.Context,
    unit: str | None = typer.Option(None, "--unit", help="Only this capability unit."),
    run_dir: Path = RUN_DIR,
) -> None:
    """Live samples per unit, pool, pathway and tier; per-unit summaries; the editor's dedup rates."""
    if ctx.invoked_subcommand is not None:
        return
    state = stack.StackState.load(run_dir)
    snapshot = read_samples(pipeline.settings_for(state))
    print_overview(snapshot, editor_dedup(editor_metrics(state)), unit)


@app.command("export")
def export_command(
    out_dir: Path = typer.Argument(..., help="Folder for samples.jsonl, samples.parquet and manifest.json."),
    fmt: str = typer.Option("both", "--format", help="jsonl, parquet or both."),
    units: list[str] | None = typer.Option(None, "--unit", help="Only this unit (repeat for more)."),
    pools: list[str] | None = typer.Option(None, "--pool", help="Only this pool (repeat for more)."),
    force: bool = typer.Option(False, "--force", help="Overwrite a non-empty OUT_DIR."),
    run_dir: Path = RUN_DIR,
) -> None:
    """Snapshot the live samples at fixed offsets into OUT_DIR, with a manifest of what was read and written."""
    files = formats_for(fmt)
    check_pools(pools or [])
    settings = pipeline.settings_for(stack.StackState.load(run_dir))
    manifest = export_samples(settings, out_dir, files, units or [], pools or [], force)
    if manifest["rows"] == 0:
        err.print("[yellow]warning:[/yellow] no live sample matches; the export is empty")
    console.print(f"exported {manifest['rows']} sample(s) from {manifest['topic']} at offsets "
                  f"{format_offsets({int(p): o for p, o in manifest['end_offsets'].items()})} to {out_dir} "
                  f"({', '.join(manifest['files'])}, {MANIFEST_FILE})", soft_wrap=True)


@app.command("import")
def import_command(
    file: Path = typer.Argument(..., help="JSONL file, one sample per line."),
    run_dir: Path = RUN_DIR,
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and report; publish nothing."),
) -> None:
    """Import human-written or production-labelled samples (origin 'real'); bad lines are listed with their reason."""
    state = stack.StackState.load(run_dir)
    settings = pipeline.settings_for(state)
    plan = import_samples(settings, load_spec(state.spec_path), file, dry_run)
    for error in plan.rejected:
        err.print(f"[red]{escape(str(file))}:{error.line}[/red]: {escape(error.reason)}")
    console.print(import_summary(plan, settings.topics.samples, dry_run), soft_wrap=True)
    if plan.rejected:
        raise typer.Exit(1)
