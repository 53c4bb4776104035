"""The built-in reference checkers and metrics, and the one way to run them (docs/units.md).

The judge (pools), the editor (parse checks) and the evaluator (metrics) all call
:func:`run_checker` with the unit's checker, so "correct" means one thing everywhere. The
registry itself is :mod:`distillery.contracts.plugins`: these functions are registered under the
entry-point groups ``distillery.checkers`` and ``distillery.metrics`` by this library's package,
a team's package registers its own the same way (or a spec names ``module:function``).

A checker is ``fn(text, task, **params)`` returning ``bool`` or :class:`CheckResult`; it is only
called when the task carries the reference field it declares (``reference`` attribute, set with
:func:`checker`). A metric is ``fn(scored)`` over one subject's :class:`Scored` answers to one
unit's held-out tasks, returning a float or ``{name: float}``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from distillery.contracts import plugins
from distillery.contracts.events import Task
from distillery.contracts.spec import UnitSpec
from distillery.domain.scoring import ReferenceResult, check_reference

log = logging.getLogger(__name__)

CheckResult = ReferenceResult  # the public name for plugin authors


def checker(reference: str | None = None) -> Callable[[Callable], Callable]:
    """Marks a checker function with the reference field its tasks must carry."""

    def mark(fn: Callable) -> Callable:
        fn.reference = reference
        return fn

    return mark


# --- running the unit's checker -------------------------------------------------------------------


def reference_fits(task: Task, needs: str | None) -> bool:
    """Whether the task's reference holds what the checker compares with (no reference: nothing to check)."""
    ref = task.reference
    if ref is None or needs is None:
        return True
    if needs == "tool_calls":
        return ref.tool_calls is not None or ref.no_call
    return getattr(ref, needs) is not None


def run_checker(unit: UnitSpec, task: Task, text: str) -> CheckResult:
    """The unit's checker on one answer. A task without the reference the checker needs is not
    compared (``correct`` None) unless the checker says ``runs_without_reference``; a checker that raises gives ``checker_error:<name>``, never a crash."""
    spec = unit.reference_checker
    fn = plugins.resolve("checker", spec.name)
    needs = unit.reference_needed()  # the unit's, not the function's: regex_match with a spec pattern needs none
    if needs is not None and not getattr(fn, "runs_without_reference", False) and (
            task.reference is None or not reference_fits(task, needs)):
        return CheckResult(None)
    try:
        out = fn(text or "", task, **unit.checker_params())
    except Exception as exc:  # noqa: BLE001 - a plugin's bug must not stop the judge
        log.warning("checker %s raised on task %s: %s: %s", spec.name, task.task_id, type(exc).__name__, exc)
        return CheckResult(False, [f"checker_error:{spec.name}"], {"checker_ran": False})
    if isinstance(out, bool):
        return CheckResult(out, [] if out else ["reference_mismatch"])
    if isinstance(out, ReferenceResult):
        return out
    log.warning("checker %s returned %s, not bool or CheckResult", spec.name, type(out).__name__)
    return CheckResult(False, [f"checker_error:{spec.name}"], {"checker_ran": False})


# --- JSON answers -----------------------------------------------------------------------------------

_FENCE = re.compile(r"```[A-Za-z0-9_+-]*")
_DECODER = json.JSONDecoder()


def parse_json_answer(text: str | None) -> dict | None:
    """The first JSON object in an answer (fences and prose around it allowed), or None."""
    s = _FENCE.sub(" ", text or "")
    for match in re.finditer(r"\{", s):
        try:
            value, _ = _DECODER.raw_decode(s, match.start())
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def declared_fields(unit: UnitSpec) -> list[str]:
    """The fields a structured unit names: required, may be missing, and those its checker normalises."""
    params = unit.reference_checker.params.get("fields")
    return list(dict.fromkeys([*unit.required_fields, *unit.may_be_missing, *(params if isinstance(params, dict) else [])]))


def canonical_answer(obj: dict, unit: UnitSpec) -> str:
    """A JSON answer as a sample keeps it: "not stated" in any wording becomes null in the unit's
    declared fields (one spelling for the student to learn), then :func:`canonical_json`."""
    fields = set(declared_fields(unit))
    return canonical_json({k: (None if k in fields and _stated(v) is None else v) for k, v in obj.items()})


def canonical_json(value: Any) -> str:
    """The one written form of a JSON answer: sorted keys, no spaces to vary, Unicode kept."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


# --- built-in checkers ---------------------------------------------------------------------------------


@checker(None)
def none(text: str, task: Task) -> CheckResult:
    """Nothing compared: the rule floor and the scorers decide."""
    return CheckResult(None)


@checker("answer")
def final_answer(text: str, task: Task) -> CheckResult:
    """The number after ``####`` against ``reference.answer`` (numerically)."""
    return check_reference(task, text, "final_answer")


@checker("tool_calls")
def tool_call(text: str, task: Task) -> CheckResult:
    """BFCL AST match of the calls against ``reference.tool_calls``; ``no_call``: call nothing, say so."""
    return check_reference(task, text, "tool_call")


# both still say something without a reference: no final answer at all, a call that breaks its signature
final_answer.runs_without_reference = tool_call.runs_without_reference = True


# Values that say "the input does not state this" (compared case-insensitively, after trimming).
NOT_STATED = {"", "not stated", "not provided", "not given", "unknown", "n/a", "na", "none", "null", "-", "missing"}
NORMALISERS = ("text", "exact", "number", "date")
_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y", "%d %B %Y", "%d %b %Y", "%B %d, %Y", "%b %d, %Y", "%B %d %Y")


def _stated(value: Any) -> Any:
    """None for a value that says "not stated", else the value."""
    if value is None or (isinstance(value, str) and value.strip().casefold() in NOT_STATED):
        return None
    return value


def _normalise(value: Any, how: str) -> Any:
    if how == "exact":
        return value
    if how == "number":
        if isinstance(value, bool):
            return value
        try:
            return float(str(value).replace(",", "").replace("$", "").strip())
        except ValueError:
            return str(value).strip().casefold()
    if how == "date":
        text = str(value).strip()
        for fmt in _DATE_FORMATS:
            try:
                return datetime.strptime(text, fmt).date().isoformat()
            except ValueError:
                continue
        return text.casefold()
    if isinstance(value, str):
        return re.sub(r"\s+", " ", value.strip().casefold())
    if isinstance(value, (dict, list)):
        return canonical_json(value)
    return value


def _field_status(got: Any, want: Any, how: str) -> str:
    """correct | wrong | invented | omitted | not_stated (input and answer agree it is not given)."""
    got, want = _stated(got), _stated(want)
    if want is None:
        return "not_stated" if got is None else "invented"
    if got is None:
        return "omitted"
    a, b = _normalise(got, how), _normalise(want, how)
    if isinstance(a, float) and isinstance(b, float):
        return "correct" if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) else "wrong"
    return "correct" if a == b else "wrong"


def _json_fields_params(params: dict, base_dir: str) -> dict:
    fields = params.get("fields") or {}
    if not isinstance(fields, dict):
        raise ValueError("json_fields: params.fields maps field names to a normaliser")
    bad = {k: v for k, v in fields.items() if v not in NORMALISERS}
    if bad:
        raise ValueError(f"json_fields: unknown normaliser(s) {bad}; use one of {list(NORMALISERS)}")
    return params


@checker("fields")
def json_fields(text: str, task: Task, fields: dict[str, str] | None = None, required_fields: Sequence[str] = (),
                may_be_missing: Sequence[str] = ()) -> CheckResult:
    """Per-field comparison of a JSON answer with ``reference.fields``.

    ``fields`` names a normaliser per field (``text``: trimmed, case-folded; ``exact``; ``number``;
    ``date``: ISO); unnamed fields compare as ``text``. ``null`` (or "not stated", "unknown", ...)
    means "not stated". A value where the reference is null is invented (``invented_value:<f>``);
    null where it has a value is ``missing_field:<f>``; a different value ``wrong_value:<f>``. The
    score is the share of fields right; a required field the input lacks, correctly left null, is a
    gap (the sample becomes a boundary sample)."""
    fields = fields or {}
    want = task.reference.fields or {}
    names = list(dict.fromkeys([*want, *required_fields, *may_be_missing, *fields]))
    got = parse_json_answer(text)
    if got is None:
        return CheckResult(False, ["unparseable_json"], {"json_parses": False}, score=0.0,
                           fields=dict.fromkeys(names, "unparsed"))
    statuses = {name: _field_status(got.get(name), want.get(name), fields.get(name, "text")) for name in names}
    tags = {"invented": "invented_value", "omitted": "missing_field", "wrong": "wrong_value"}
    reasons = [f"{tags[s]}:{name}" for name, s in statuses.items() if s in tags]
    ok = [name for name, s in statuses.items() if s in ("correct", "not_stated")]
    checks = {"json_parses": True, **{f"field:{name}": name in ok for name in names}}
    gaps = [name for name in required_fields if statuses.get(name) == "not_stated"]
    return CheckResult(not reasons, reasons, checks, final=canonical_json(got),
                       score=round(len(ok) / len(names), 4) if names else 1.0, fields=statuses, gaps=gaps)


json_fields.prepare_params = _json_fields_params


def _load_schema(params: dict, base_dir: str) -> dict:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if "schema_file" in params:
        path = Path(base_dir) / params.pop("schema_file")
        if not path.is_file():
            raise ValueError(f"json_schema: schema_file not found: {path}")
        text = path.read_text()
        params["schema"] = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(params.get("schema"), dict):
        raise ValueError("json_schema: give params.schema (inline) or params.schema_file")
    try:
        Draft202012Validator.check_schema(params["schema"])
    except SchemaError as exc:
        raise ValueError(f"json_schema: not a valid JSON Schema: {exc.message}") from None
    return params


@checker(None)
def json_schema(text: str, task: Task, schema: dict) -> CheckResult:
    """JSON Schema validation (draft 2020-12, ``jsonschema``) of the answer's JSON object; no reference needed.
    Reasons ``schema:<path>:<keyword>`` for the first five violations."""
    from jsonschema import Draft202012Validator

    got = parse_json_answer(text)
    if got is None:
        return CheckResult(False, ["unparseable_json"], {"json_parses": False})
    errors = sorted(Draft202012Validator(schema).iter_errors(got), key=lambda e: list(e.absolute_path))
    reasons = [f"schema:{'/'.join(str(p) for p in e.absolute_path) or '(root)'}:{e.validator}" for e in errors[:5]]
    return CheckResult(not errors, reasons, {"json_parses": True, "schema_valid": not errors}, final=canonical_json(got))


json_schema.prepare_params = _load_schema


def _regex_params(params: dict, base_dir: str) -> dict:
    pattern = params.get("pattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"regex_match: pattern {pattern!r} does not compile: {exc}") from None
    return params


@checker("answer")
def regex_match(text: str, task: Task, pattern: str | None = None, fullmatch: bool = False,
                ignore_case: bool = True) -> CheckResult:
    """The answer matches ``pattern`` (from the spec, else the task's ``reference.answer``)."""
    pattern = pattern or (task.reference.answer if task.reference else None)
    if pattern is None:
        return CheckResult(None)
    flags = re.IGNORECASE if ignore_case else 0
    body = (text or "").strip()
    found = (re.fullmatch if fullmatch else re.search)(pattern, body, flags) is not None
    return CheckResult(found, [] if found else ["no_regex_match"], {"regex_match": found})


regex_match.prepare_params = _regex_params


def _label_of(text: str, field: str | None) -> str | None:
    if field:
        obj = parse_json_answer(text)
        value = obj.get(field) if obj else None
        return value.strip() if isinstance(value, str) else None
    first = next((line for line in (text or "").splitlines() if line.strip()), "")
    return first.strip().strip("\"'`*.").strip() or None


def _choice_params(params: dict, base_dir: str) -> dict:
    labels = params.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ValueError("choice: params.labels is a non-empty list of label strings")
    return params


@checker("answer")
def choice(text: str, task: Task, labels: Sequence[str], field: str | None = None) -> CheckResult:
    """A label from the closed set ``labels`` (the answer's first line, or its JSON ``field``),
    against ``reference.answer``, case-insensitively. Reasons ``not_a_label``, ``wrong_label``."""
    by_fold = {label.casefold(): label for label in labels}
    said = _label_of(text, field)
    label = by_fold.get(said.casefold()) if said else None
    if label is None:
        return CheckResult(False, ["not_a_label"], {"label_in_set": False})
    right = label.casefold() == str(task.reference.answer).strip().casefold()
    return CheckResult(right, [] if right else ["wrong_label"], {"label_in_set": True}, final=label)


choice.prepare_params = _choice_params


_EMBEDDER = None


def _embedder():
    global _EMBEDDER
    if _EMBEDDER is None:
        from distillery.domain.embeddings import Embedder

        _EMBEDDER = Embedder()
    return _EMBEDDER


def _similarity_params(params: dict, base_dir: str) -> dict:
    threshold = params.get("threshold", 0.8)
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError("embedding_similarity: params.threshold is a number from 0 to 1")
    return params


@checker("answer")
def embedding_similarity(text: str, task: Task, threshold: float = 0.8) -> CheckResult:
    """MiniLM cosine similarity to ``reference.answer`` at or above ``threshold``; the score is the similarity."""
    sim = _embedder().similarity([(text or "", task.reference.answer)])[0]
    ok = sim >= threshold
    return CheckResult(ok, [] if ok else ["low_similarity"], {"similar_enough": ok}, score=round(max(sim, 0.0), 4))


embedding_similarity.prepare_params = _similarity_params


# --- metrics ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """One subject's answer to one held-out task and what the unit's checker made of it."""

    task: Task
    text: str
    result: CheckResult
    missing: bool = False  # no answer came (counts wrong)


def accuracy(scored: list[Scored]) -> float:
    """Share of answers the unit's checker calls correct (unanswered tasks count wrong)."""
    return sum(bool(s.result.correct) and not s.missing for s in scored) / len(scored) if scored else 0.0


# The historical names of the headline metric: the same share, named for the unit's kind of answer.
exact_match = tool_call_accuracy = refusal_correctness = accuracy


def field_accuracy(scored: list[Scored]) -> dict[str, float]:
    """Share of (answer, field) pairs right, overall and per field (``field_accuracy:<field>``)."""
    per: dict[str, list[bool]] = {}
    for s in scored:
        for name, status in s.result.fields.items():
            per.setdefault(name, []).append(status in ("correct", "not_stated"))
    everything = [ok for oks in per.values() for ok in oks]
    out = {"field_accuracy": round(sum(everything) / len(everything), 4) if everything else 0.0}
    out.update({f"field_accuracy:{name}": round(sum(oks) / len(oks), 4) for name, oks in sorted(per.items())})
    return out


def _unstated(s: Scored) -> list[str]:
    ref = s.task.reference.fields if s.task.reference and s.task.reference.fields else {}
    return [name for name in s.result.fields if _stated(ref.get(name)) is None]


def invented_value_rate(scored: list[Scored]) -> float:
    """Among answers to tasks whose input leaves some field unstated, the share that invent at least one value."""
    exposed = [s for s in scored if _unstated(s)]
    invented = [s for s in exposed if any(st == "invented" for st in s.result.fields.values())]
    return round(len(invented) / len(exposed), 4) if exposed else 0.0


def missing_field_recall(scored: list[Scored]) -> float:
    """Among (answer, field) pairs the input does not state, the share the answer marks "not stated"."""
    pairs = [s.result.fields[name] for s in scored for name in _unstated(s)]
    return round(sum(st == "not_stated" for st in pairs) / len(pairs), 4) if pairs else 0.0


# Metrics every unit with a json_fields checker reports, declared or not (the missing-field boundary).
FIELD_METRICS = ("field_accuracy", "invented_value_rate", "missing_field_recall")


def metric_values(name: str, scored: list[Scored]) -> dict[str, float]:
    """A metric's values by row name; a metric that raises or returns a non-number gives no row (logged)."""
    fn = plugins.resolve("metric", name)
    try:
        out = fn(scored)
    except Exception as exc:  # noqa: BLE001 - a plugin's bug must not stop the evaluation
        log.warning("metric %s raised: %s: %s", name, type(exc).__name__, exc)
        return {}
    if isinstance(out, dict):
        values = out
    else:
        values = {name: out}
    good = {k: round(float(v), 4) for k, v in values.items() if isinstance(v, (int, float)) and v == v}
    if len(good) != len(values):
        log.warning("metric %s returned non-numbers: %s", name, sorted(set(values) - set(good)))
    return good


def unit_metric_names(unit: UnitSpec) -> list[str]:
    names = unit.metric_names()
    if unit.reference_checker.name == "json_fields":
        names += [m for m in FIELD_METRICS if m not in names]
    return names


__all__ = ["CheckResult", "Scored", "canonical_json", "checker", "choice", "embedding_similarity",
           "json_fields", "json_schema", "metric_values", "parse_json_answer", "regex_match", "run_checker"]
