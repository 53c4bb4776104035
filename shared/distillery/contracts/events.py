"""The event contracts (docs/architecture.md §2): frozen pydantic models with an envelope.

Events are past-tense facts. Every event carries ``event_id`` (a deterministic
content hash of its cause, see :mod:`distillery.contracts.ids`), ``schema_version``,
``produced_by`` (``service@version``), ``produced_at`` and a ``trace``.
Readers upcast older schema versions through :data:`UPCASTERS`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from distillery.contracts import ids

POOLS = ("train", "hard_case", "contrastive", "refusal", "failure", "review", "discard")
Pool = Literal["train", "hard_case", "contrastive", "refusal", "failure", "review", "discard"]
# Pools the editor turns into samples (the others are kept on the verdicts topic for audit and review).
SAMPLE_POOLS = ("train", "hard_case", "refusal", "contrastive")
# Pools that accept a candidate as an answer to its task (routing learns from them; none: ask again).
ACCEPTED_POOLS = ("train", "refusal", "hard_case")
# Pools of candidates judged correct, whose own answer is taught (self-checks and gates act on these).
CORRECT_POOLS = ("train", "hard_case")
Pathway = Literal["answer", "process", "style", "tool_trajectory"]
Split = Literal["train", "eval"]
Tier = Literal["high", "medium", "low"]


def _safe_id(value: str) -> str:
    # every id of every event passes here: plain `in` tests, no generator (bench/pipeline_throughput.py)
    if not value.isprintable() or "/" in value or "\\" in value or ".." in value:
        raise ValueError("an id is printable text without '/', '\\' or '..'")
    return value


def _safe_path(value: str) -> str:
    if not value.isprintable() or ".." in re.split(r"[/\\]", value):
        raise ValueError("a path is printable text without '..' segments")
    return value


# What services key state, dedup and files by: never empty, bounded, printable, and never a path
# (no '/', '\\' or '..'), so a hostile id is dead-lettered as invalid, not used as a key or a file name.
Id = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_safe_id)]
OptionalId = Annotated[str, Field(max_length=256), AfterValidator(_safe_id)]  # "" where there is none
SafePath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_safe_path)]  # no '..' escapes


class Model(BaseModel):
    """Internal models forbid unknown fields and never change after creation. A float is finite:
    JSON has no infinity or NaN (1e400 parses as one), and they would go back on the wire as null."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    # Fields added to a shipped schema version. Each is declared with ``exclude_if``, so it stays off
    # the wire while it holds its default: every existing event dumps exactly as before (same
    # schema_version), and readers that predate it ignore it when set (docs/architecture.md §2).
    added_fields: ClassVar[tuple[str, ...]] = ()


def _unset(value: Any) -> bool:
    """An added field at its default (False, an empty list or dict): left off the wire."""
    return not value


def _none(value: Any) -> bool:
    return value is None


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- payload parts -----------------------------------------------------------


class ToolSpec(Model):
    """A function the model may call, declared as in OpenAI/BFCL function calling."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)


class ToolCall(Model):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Reference(Model):
    """Ground truth for the judge's reference checks and the evaluator's metrics.

    ``answer``: the final answer (math). ``tool_calls``: BFCL possible answers,
    one ``{function: {argument: [allowed values]}}`` per expected call.
    ``no_call``: the right behaviour is to call no tool. ``fields``: the expected JSON object of a
    structured answer (``json_fields``), ``null`` where the input does not state the field.
    """

    answer: str | None = None
    tool_calls: list[dict[str, dict[str, list[Any]]]] | None = None
    no_call: bool = False
    fields: dict[str, Any] | None = Field(default=None, exclude_if=_none)

    added_fields: ClassVar[tuple[str, ...]] = ("fields",)


class Task(Model):
    task_id: Id
    unit: str
    prompt: str
    tools: list[ToolSpec] = Field(default_factory=list)
    reference: Reference | None = None
    split: Split = "train"
    metadata: dict[str, str] = Field(default_factory=dict)


class Usage(Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class TrajectoryStep(Model):
    """One act-observe step of a tool trajectory: the call, and what came back (or went wrong)."""

    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    observation: str = ""
    error: str | None = None


class ChainStep(Model):
    """One finished step of a role chain: who answered in which role, and what."""

    role: str
    teacher_id: str
    candidate_id: str
    text: str
    cost_usd: float = 0.0


class Chain(Model):
    """Where a request or candidate stands in a role chain (retrieval -> reasoning -> rewriting)."""

    roles: list[str]
    teachers: list[str]
    step: int
    prior: list[ChainStep] = Field(default_factory=list)

    @property
    def role(self) -> str:
        return self.roles[self.step]

    @property
    def is_final(self) -> bool:
        return self.step == len(self.teachers) - 1


class Trace(Model):
    task_id: str | None = None
    causation_id: str | None = None


class SourceOffset(Model):
    topic: str
    partition: int
    offset: int


# --- envelope ------------------------------------------------------------------


class Event(Model):
    """Envelope shared by every event. Subclasses name their id field."""

    id_field: ClassVar[str]
    schema_version: int = 1
    event_id: str = ""
    produced_by: str
    produced_at: datetime = Field(default_factory=utcnow)
    trace: Trace = Field(default_factory=Trace)

    def model_post_init(self, __context: Any) -> None:
        # event_id is derived from the entity id, so a redelivery has the same one.
        if not self.event_id:
            object.__setattr__(self, "event_id", getattr(self, self.id_field))

    @property
    def key(self) -> str:
        """Partition key: the task for task-scoped events, else the entity id."""
        return self.trace.task_id or getattr(self, self.id_field)


class TaskSubmitted(Event):
    id_field: ClassVar[str] = "task_id"
    task_id: Id
    task: Task


class GenerationRequested(Event):
    id_field: ClassVar[str] = "request_id"
    request_id: Id
    task: Task
    teacher_id: str
    strategy: str
    route_reason: str
    expected_candidates: int
    attempt: int = 1
    max_new_tokens: int
    route_rule: str | None = None
    route_score: float | None = None
    chain: Chain | None = None
    feedback: str | None = None  # why the previous attempt was rejected (regeneration)
    shadow: bool = Field(default=False, exclude_if=_unset)  # a promoted student tried on live traffic

    added_fields: ClassVar[tuple[str, ...]] = ("shadow",)


class TopTokens(Model):
    """The teacher's k most likely next tokens at one position, most likely first."""

    ids: list[int]
    logprobs: list[float]


class TokenLogprobs(Model):
    """A teacher's cached token distribution (teachers.<id>.logprobs), for logit distillation.

    ``tokenizer`` is the fingerprint of the teacher's tokenizer (ml.models.tokenizer_fingerprint):
    a student can learn these ids only if its own tokenizer has the same fingerprint."""

    tokenizer: str
    token_ids: list[int]
    top: list[TopTokens]


class CandidateGenerated(Event):
    id_field: ClassVar[str] = "candidate_id"
    candidate_id: Id
    request_id: Id
    task: Task
    teacher_id: str
    strategy: str
    route_reason: str
    expected_candidates: int
    text: str
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    cost_usd: float = 0.0
    finish_reason: str = "stop"
    confidence: float | None = None
    error: str | None = None
    chain: Chain | None = None
    attempt: int = 1
    trajectory: list[TrajectoryStep] = Field(default_factory=list)
    logprobs: TokenLogprobs | None = None
    # copied from the request: the judge judges it alone, the editor never reads it
    shadow: bool = Field(default=False, exclude_if=_unset)

    added_fields: ClassVar[tuple[str, ...]] = ("shadow",)


class JudgedCandidate(Model):
    candidate_id: Id
    teacher_id: str
    text: str
    pool: Pool
    rank: int
    score: float
    reasons: list[str] = Field(default_factory=list)
    checks: dict[str, bool] = Field(default_factory=dict)
    final: str | None = None
    tool_calls: list[ToolCall] | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    cost_usd: float = 0.0
    source: SourceOffset | None = None
    chain_steps: list[ChainStep] = Field(default_factory=list)
    trajectory: list[TrajectoryStep] = Field(default_factory=list)
    # per-dimension scores in [0, 1], and which scorer produced each (e.g. "llm:qwen-coder")
    dimensions: dict[str, float] = Field(default_factory=dict)
    scorers: dict[str, str] = Field(default_factory=dict)
    confidence: float | None = None  # the teacher's, carried for hard-case decisions downstream
    correction: str | None = None  # contrastive: the right answer this wrong one is kept against
    evidence: list[str] = Field(default_factory=list)  # complementary points other teachers raised
    judge_raw: str | None = None  # the judge model's unparseable output, kept when it failed


class CandidatesJudged(Event):
    id_field: ClassVar[str] = "verdict_id"
    verdict_id: Id
    task: Task
    judge_version: str
    candidates: list[JudgedCandidate]
    missing_candidates: int = 0
    attempt: int = 1
    # multi-teacher relation of the task's candidates: agree, complement, conflict (None: one candidate)
    relation: Literal["agree", "complement", "conflict"] | None = None
    relation_reasons: list[str] = Field(default_factory=list)
    # the judge's own checks on this task: position_swap_agree, perturbation_caught, two_judge_agree
    self_checks: dict[str, bool] = Field(default_factory=dict)
    # a promoted student's live answer, judged alone: the editor, the router's value table and
    # the judge's own bookkeeping pass over it; the evaluator's live quality reads it
    shadow: bool = Field(default=False, exclude_if=_unset)

    added_fields: ClassVar[tuple[str, ...]] = ("shadow",)

    @property
    def key(self) -> str:
        """Keyed by unit: the editor's dedup and quotas are per unit, so one replica sees all of a unit
        (a task's verdicts still share a partition, since a task has one unit)."""
        return self.task.unit


class RegenerationRequested(Event):
    """The judge asks the router for another, bounded attempt, with the reasons as feedback."""

    id_field: ClassVar[str] = "regeneration_id"
    regeneration_id: Id
    task: Task
    attempt: int
    teachers: list[str]
    feedback: str
    verdict_id: Id


class Provenance(Model):
    task_id: Id
    candidate_id: Id
    teacher_id: str
    judge_version: str
    verdict_id: OptionalId  # "": an unjudged raw teacher answer (the trainer's raw buckets)
    source: SourceOffset | None = None


class SampleCurated(Event):
    """A training sample (schema v2). v1 kept the judge score in ``metadata["score"]``; the
    upcaster moves it to ``score``. Fields added in v2 have defaults, so a replay back-fills them."""

    id_field: ClassVar[str] = "sample_id"
    schema_version: int = 2
    sample_id: Id
    unit: str
    pathway: Pathway
    pool: Pool
    prompt: str
    final: str
    rationale: str = ""
    limits: str = ""
    evidence: list[str] = Field(default_factory=list)
    tool_steps: list[dict[str, Any]] = Field(default_factory=list)
    tools: list[ToolSpec] = Field(default_factory=list)
    weight: float = 1.0
    content_hash: str
    provenance: Provenance
    metadata: dict[str, str] = Field(default_factory=dict)
    # --- v2 ---
    score: float | None = None  # the judge's weighted score of the candidate
    confidence: float | None = None  # the teacher's (mean token probability), where it had one
    tier: Tier = "high"
    cluster: str | None = None  # semantic cluster (MiniLM), where the unit clusters
    tokens_before: int = 0  # the teacher's text as written (students' tokenizer)
    tokens_after: int = 0  # what the student learns to write: final, rationale, limits (+ steps for trajectories)
    style_constraints: list[str] = Field(default_factory=list)  # style pathway: what the final was checked against
    contrast: str = ""  # contrastive samples: the wrong answer, kept beside the correction in `final`
    origin: Literal["teacher", "real"] = "teacher"  # real: imported human or production data


def _sample_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    metadata = dict(data.get("metadata") or {})
    score = metadata.pop("score", None)
    return {**data, "metadata": metadata, "score": float(score) if score is not None else None, "schema_version": 2}


class SampleRetracted(Event):
    """A sample leaves the repository: a newer judge version or a human rejected its candidate.

    ``judge_version`` is the version (or ``human``) that decided; ``source`` the verdict or
    decision record that caused it, so a restarted editor knows which verdict governs a task.
    """

    id_field: ClassVar[str] = "retraction_id"
    sample_id: Id
    judge_version: str
    reason: str
    task_id: str | None = None
    candidate_id: str | None = None
    source: SourceOffset | None = None
    retraction_id: OptionalId = ""  # derived: h(sample_id, judge_version)

    def model_post_init(self, __context: Any) -> None:
        if not self.retraction_id:  # one retraction per sample and decider: a redelivery repeats the id
            object.__setattr__(self, "retraction_id", ids.content_id("retract", self.sample_id, self.judge_version))
        super().model_post_init(__context)


Decision = Literal["accept", "reject"]


class ReviewDecided(Event):
    """A human decision on a candidate of the review pool; it outranks the model judge, replays included."""

    id_field: ClassVar[str] = "decision_id"
    decision_id: Id
    task: Task
    candidate: JudgedCandidate
    judge_version: str  # of the verdict that sent the candidate to review
    verdict_id: Id
    decision: Decision
    pool: Pool | None = None  # accept: the pool the human put it in
    note: str = ""
    reviewer: str = ""

    @property
    def key(self) -> str:
        """Keyed by unit, like verdicts: the editor reads both in one consumer, co-partitioned."""
        return self.task.unit


def decision_id_for(candidate_id: str, decision: str, pool: str | None, note: str, reviewer: str) -> str:
    return ids.content_id("review", candidate_id, decision, pool or "", note, reviewer)


class Variant(Model):
    """A variant run of a student's recipe, for attribution (distillery attribute).

    ``bucket`` says which samples: ``curated`` (the editor's samples, the recipe's pools),
    ``judge_filtered`` (curated, ``train`` pool only), ``multi_teacher`` (every teacher's raw
    output, unfiltered and unstructured: naive distillation), ``single_teacher`` (the same, one
    teacher). ``overrides`` change recipe fields (fields, pathways, seed, real_share); ``match``
    caps each unit's sample count at the full recipe's count on the same snapshot."""

    name: str
    bucket: Literal["curated", "judge_filtered", "multi_teacher", "single_teacher"] = "curated"
    overrides: dict[str, Any] = Field(default_factory=dict)
    match: bool = False
    experiment_id: OptionalId = ""
    members: int = 1  # runs in the experiment, so the evaluator knows when the table is complete


class TrainingRequested(Event):
    id_field: ClassVar[str] = "request_id"
    request_id: Id
    student: str
    reason: str = "command"
    variant: Variant | None = None
    # topic -> partition -> end offset: train on exactly this snapshot (attribution runs share one)
    snapshot: dict[str, dict[str, int]] = Field(default_factory=dict)
    # units this run leaves out of the recipe: a round's units whose stop signal holds
    exclude_units: list[str] = Field(default_factory=list, exclude_if=_unset)

    added_fields: ClassVar[tuple[str, ...]] = ("exclude_units",)


class StudentTrained(Event):
    id_field: ClassVar[str] = "student_id"
    student_id: Id
    student: str
    version: str
    artifact_dir: SafePath
    base_model: str
    recipe: dict[str, Any]
    manifest: dict[str, Any]
    loss_curve: list[float] = Field(default_factory=list)
    train_seconds: float = 0.0
    train_cost_usd: float = 0.0
    variant: Variant | None = None


class SubjectScore(Model):
    """One subject (teacher, student before, student after) on one unit."""

    unit: str
    subject: str
    n: int
    accuracy: float
    mean_latency_s: float
    cost_per_request_usd: float
    mean_output_tokens: float
    # tasks the subject gave no answer to, by reason (counted wrong, never dropped from n)
    unanswered: dict[str, int] = Field(default_factory=dict)


def subject_order(subject: str) -> tuple[int, str]:
    """How reports list subjects: teachers first, then the student before and after training."""
    return ({"student:before": 1, "student:after": 2}.get(subject, 0), subject)


class EvaluationCompleted(Event):
    id_field: ClassVar[str] = "evaluation_id"
    evaluation_id: Id
    student_id: Id
    scores: list[SubjectScore]
    roi: dict[str, float]
    report_path: str
    student: str = ""
    samples: int = 0  # in the student's dataset: the x axis of marginal gain
    variant: Variant | None = None
    # the trained student's correctness per held-out task id (attribution pairs runs by task)
    correct: dict[str, bool] = Field(default_factory=dict)
    agreement: dict[str, float] = Field(default_factory=dict)  # unit -> student agrees with best teacher
    error_classes: dict[str, int] = Field(default_factory=dict)
    signals: dict[str, str] = Field(default_factory=dict)  # fired stop signal -> reason
    attribution_path: str | None = None  # set on the evaluation that completed an experiment
    # unit -> its fired stop signals (name -> reason): the next round leaves these units out
    unit_signals: dict[str, dict[str, str]] = Field(default_factory=dict, exclude_if=_unset)

    added_fields: ClassVar[tuple[str, ...]] = ("unit_signals",)


LoopAction = Literal["promote", "demote", "resume"]


class LoopDecided(Event):
    """A decision of the closed loop about one student recipe and one unit (the promotions topic).

    ``promote``: the evaluator found the trained student ``student_id`` within tolerance of the
    unit's best teacher and paying at the configured traffic; a share of the unit's live tasks now
    also goes to the student (shadow). ``demote``: its live judged quality fell below the
    tolerance; shadow traffic stops. ``resume``: an operator brought a unit whose stop signal held
    back into the rounds (``distillery resume``). Replaying the topic gives who serves what.
    """

    id_field: ClassVar[str] = "decision_id"
    decision_id: Id
    action: LoopAction
    student: str  # the recipe
    unit: str
    student_id: OptionalId = ""  # the trained student promoted or demoted ("" for resume)
    artifact_dir: str = ""
    reason: str = ""
    figures: dict[str, float] = Field(default_factory=dict)  # what the decision read: accuracies, window

    @property
    def key(self) -> str:
        return f"{self.student}/{self.unit}"


def loop_decision_id(action: str, student: str, unit: str, cause: str) -> str:
    """One decision per action, recipe, unit and cause (an evaluation, a trained student, a stop)."""
    return ids.content_id("loop", action, student, unit, cause)


class EventDeadLettered(Event):
    id_field: ClassVar[str] = "dead_letter_id"
    dead_letter_id: Id
    service: str
    source_topic: str
    partition: int
    offset: int
    record_key: str | None
    payload: str
    error: str


SampleEvent = SampleCurated | SampleRetracted


def parse_sample_record(payload: bytes | str) -> SampleEvent:
    """The samples topic carries both curated samples and their retractions."""
    try:
        return parse_event(SampleCurated, payload)
    except ValueError:
        return parse_event(SampleRetracted, payload)


def live_samples(events: list[SampleEvent]) -> list[SampleCurated]:
    """What the repository holds after these events, in topic order: the last word on each sample id wins."""
    live: dict[str, SampleCurated] = {}
    for event in events:
        if isinstance(event, SampleRetracted):
            live.pop(event.sample_id, None)
        else:
            live[event.sample_id] = event
    return list(live.values())


def task_key(task: Task) -> Trace:
    return Trace(task_id=task.task_id)


def new_task(unit: str, prompt: str, **fields: Any) -> Task:
    """A task with its deterministic id (used by ``submit`` when a line has none)."""
    tools = fields.get("tools") or []
    tool_dump = [t if isinstance(t, dict) else t.model_dump() for t in tools]
    return Task(task_id=ids.task_id_for(unit, prompt, tool_dump), unit=unit, prompt=prompt, **fields)


# Readers upcast older schema versions: {(event class name, from_version): fn(dict) -> dict}.
# Version 1 is the first wire format; golden files in tests/golden pin it.
UPCASTERS: dict[tuple[str, int], Any] = {("SampleCurated", 1): _sample_v1_to_v2}


class NewerSchema(ValueError):
    """An event written by a newer producer than this reader: dead-letter it, replay it after upgrading."""


def known_version(model: type[Event]) -> int:
    return int(model.model_fields["schema_version"].default)


def parse_event(model: type[Event], payload: bytes | str | dict[str, Any]) -> Event:
    """Validate a wire payload into ``model``, upcasting older schema versions first.

    Readers are tolerant, writers strict: fields this reader does not know (a newer producer's
    optional additions) are ignored, and so never re-published; constructing an event in code still
    refuses them. A ``schema_version`` above the reader's raises :class:`NewerSchema`."""
    if isinstance(payload, dict):
        return model.model_validate(_upcast(model, _not_newer(model, payload)), extra="ignore")
    if not any(name == model.__name__ for name, _ in UPCASTERS):
        try:  # the fast path: nothing to upcast for this model
            event = model.model_validate_json(payload, extra="ignore")
        except ValidationError:
            _raise_if_newer(model, payload)  # a newer version explains the failure better
            raise
        _not_newer(model, {"schema_version": event.schema_version})
        return event
    return parse_event(model, _json_object(payload))


_EVENT_ID = b'"event_id":"'


def event_id_of(payload: bytes) -> str | None:
    """The ``event_id`` of a record as events are written (the envelope's second field), read
    without parsing it; None where it is not found there plainly. For passing over records a
    reader knows already: an id found here still says nothing of the record's validity."""
    at = payload.find(_EVENT_ID, 0, 64)
    if at < 0:
        return None
    start = at + len(_EVENT_ID)
    end = payload.find(b'"', start, start + 300)
    if end < 0 or b"\\" in payload[start:end]:
        return None
    return payload[start:end].decode("utf-8", errors="replace")


def load_json(payload: bytes | str) -> Any:
    """JSON from the wire. Every failure is a ValueError: a record nested too deeply for the parser
    (a RecursionError) must be dead-lettered like any invalid one, never stop a batch."""
    try:
        return json.loads(payload)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _json_object(payload: bytes | str) -> dict[str, Any]:
    data = load_json(payload)
    if not isinstance(data, dict):
        raise ValueError(f"an event is a JSON object, not {type(data).__name__}")
    return data


def _not_newer(model: type[Event], data: dict[str, Any]) -> dict[str, Any]:
    version = data.get("schema_version", 1)
    if isinstance(version, int) and version > known_version(model):
        raise NewerSchema(f"{model.__name__} schema_version {version} is newer than this reader's "
                          f"{known_version(model)}: replay it after upgrading")
    return data


def _raise_if_newer(model: type[Event], payload: bytes | str) -> None:
    """NewerSchema if the payload is an object of a newer version; anything else keeps its own error."""
    try:
        data = load_json(payload)
    except ValueError:
        return
    if isinstance(data, dict):
        _not_newer(model, data)


def _upcast(model: type[Event], data: dict[str, Any]) -> dict[str, Any]:
    version = data.get("schema_version", 1)  # not an integer (1e400 is infinity): validation says so
    while isinstance(version, int) and (model.__name__, version) in UPCASTERS:
        data = UPCASTERS[(model.__name__, version)](data)
        version = data["schema_version"]
    return data
