"""The capability spec (docs/architecture.md §5): one YAML file declaring every capability unit.

It is the "student responsibility spec": what each unit must, may and must not do,
its output form and pathways, risk, which teachers answer and how, the judge's
rules, the eval metric, and the recipes of the students. Errors name the unit and field.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from importlib.metadata import entry_points
from pathlib import Path
from string import Formatter
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from distillery.contracts import plugins
from distillery.contracts.settings import ConfigError


@functools.cache
def registered_tools() -> frozenset[str]:
    """Tool names the installed packages register under the entry-point group ``distillery.tools``.

    The spec is a contract: it names tools but does not import their implementations (the domain
    library registers its built-in ones; a team's package may add more)."""
    names: set[str] = set()
    for entry in entry_points(group="distillery.tools"):
        names.update(entry.load())
    return frozenset(names)


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(SpecModel):
    """USD per 1k tokens (hosted) or per second of generation (self-hosted)."""

    per_1k_prompt: float = Field(default=0.0, ge=0)
    per_1k_completion: float = Field(default=0.0, ge=0)
    per_second: float = Field(default=0.0, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int, seconds: float) -> float:
        return (
            prompt_tokens / 1000 * self.per_1k_prompt
            + completion_tokens / 1000 * self.per_1k_completion
            + seconds * self.per_second
        )


# Tokenizer family of each local model the registry ships (distillery.domain.models) and of each student base.
MODEL_TOKENIZERS = {"smollm2-135m-instruct": "smollm2", "qwen2.5-coder-0.5b-instruct": "qwen2.5"}
STUDENT_TOKENIZERS = {"tiny-llama": "smollm2", "smollm2-135m": "smollm2"}


class TeacherSpec(SpecModel):
    backend: Literal["transformers", "replay", "openai", "student"] = "transformers"
    # student backend: serve this student recipe's latest promoted artifact (shadow traffic, spec `promotion`)
    student: str | None = None
    # transformers: a registry name (distillery.domain.models); openai: the server's model name
    model: str = "smollm2-135m-instruct"
    replay_path: str | None = None
    replay_pace: bool = False  # replay sleeps each recording's latency, like the real teacher did
    # openai backend: any OpenAI-compatible chat-completions server (vLLM, llama.cpp, hosted APIs)
    base_url: str | None = None
    api_key_env: str | None = None  # name of the environment variable holding the key, never the key
    concurrency: int = Field(default=8, ge=1, le=1024)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=20)
    json_output: bool = False  # ask for JSON (response_format) where the server supports it
    max_new_tokens: int = Field(default=128, ge=1, le=4096)
    batch_size: int = Field(default=8, ge=1, le=256)
    temperature: float = Field(default=0.0, ge=0)
    stop: list[str] = Field(default_factory=list)  # stop sequences (text is cut before them)
    price: Price = Field(default_factory=Price)
    # logit distillation: cache this many top-k token logprobs per generated token on the candidate
    # (transformers backend; 0: none). A student on the same tokenizer can then learn the distribution.
    logprobs: int = Field(default=0, ge=0, le=64)
    # the tokenizer family, for the logit-distillation check; known for the registry's local models
    tokenizer: str | None = None

    def tokenizer_family(self) -> str | None:
        return self.tokenizer or (MODEL_TOKENIZERS.get(self.model) if self.backend == "transformers" else None)

    @model_validator(mode="after")
    def _backend_has_its_settings(self) -> TeacherSpec:
        if self.backend == "replay" and not self.replay_path:
            raise ValueError("backend 'replay' needs replay_path")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url")
        if (self.backend == "student") != (self.student is not None):
            raise ValueError("field 'student': backend 'student' needs student (a student recipe), and only it takes one")
        if self.logprobs and self.backend == "openai":
            # a replay serves the logprobs its recording holds; vLLM returns token strings, not ids
            raise ValueError(f"field 'logprobs': caching token logprobs needs the transformers or replay backend, "
                             f"not '{self.backend}'")
        return self


class ExpertRule(SpecModel):
    """Routes a task to ``teacher`` when every condition given matches (experts strategy)."""

    teacher: str
    risk: Literal["low", "medium", "high"] | None = None
    difficulty: str | None = None
    scenario: str | None = None
    has_tools: bool | None = None
    prompt_matches: str | None = None  # a regular expression searched in the prompt

    @property
    def name(self) -> str:
        conds = [f"{k}={v}" for k, v in self.model_dump(exclude={"teacher"}, exclude_none=True).items()]
        return " and ".join(conds) or "always"


class Routing(SpecModel):
    """Who answers a unit's tasks.

    single: one teacher. competition: every listed teacher, in parallel.
    experts: the first matching rule picks the teacher; else ``default``; else the DLQ.
    chain: the listed teachers in order, each step's output the next step's input
    (``roles`` names the steps). value: the teacher with the best learned acceptance
    per cost, sampled (Thompson) so the others keep being explored.
    """

    strategy: Literal["single", "competition", "experts", "chain", "value"] = "single"
    teachers: list[str] = Field(default_factory=list)
    rules: list[ExpertRule] = Field(default_factory=list)
    default: str | None = None
    roles: list[str] = Field(default_factory=list)
    role_prompts: dict[str, str] = Field(default_factory=dict)  # chain: instruction per role name
    max_new_tokens: int | None = Field(default=None, ge=1, le=4096)

    @model_validator(mode="after")
    def _strategy_is_complete(self) -> Routing:
        if self.strategy == "single" and len(self.teachers) != 1:
            raise ValueError("strategy 'single' takes exactly one teacher")
        if self.strategy in ("competition", "value", "chain") and not self.teachers:
            raise ValueError(f"strategy '{self.strategy}' needs teachers")
        if self.strategy == "experts" and not self.rules:
            raise ValueError("strategy 'experts' needs rules")
        if self.strategy == "chain" and self.roles and len(self.roles) != len(self.teachers):
            raise ValueError("strategy 'chain' needs one role per teacher")
        return self

    @field_validator("teachers")
    @classmethod
    def _no_duplicates(cls, teachers: list[str]) -> list[str]:
        if len(set(teachers)) != len(teachers):
            raise ValueError("a teacher is listed twice (the judge would wait for a candidate that never comes)")
        return teachers

    def all_teachers(self) -> list[str]:
        """Every teacher this routing may send to (for validation and topic creation)."""
        named = [*self.teachers, *(r.teacher for r in self.rules), *([self.default] if self.default else [])]
        return list(dict.fromkeys(named))


class Rules(SpecModel):
    """The rule floor of a unit. Each rule has a name that becomes a reason tag."""

    output_format: Literal["text", "final_answer", "tool_call", "json"] = "text"
    min_chars: int = Field(default=1, ge=0)
    max_chars: int = Field(default=4000, ge=1)
    required_fields: list[str] = Field(default_factory=list)
    forbidden_patterns: list[str] = Field(default_factory=list)
    reference: Literal["none", "final_answer", "tool_call"] = "none"
    require_tool_use: bool = False  # tool trajectories: at least one tool call must have succeeded
    # a JSON answer: the parsed object must carry these keys with these JSON types (object, string, ...)
    json_schema: dict[str, Literal["string", "number", "integer", "boolean", "array", "object"]] = Field(
        default_factory=dict)

    @field_validator("forbidden_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} does not compile: {exc}") from None
        return patterns


class Dimension(SpecModel):
    """One scored dimension of a unit: which scorer, how much it weighs, where it fails.

    rules: share of the rule floor passed. reference: 1 on a reference match, 0 on a
    mismatch (left out where the task has no reference). embedding: MiniLM cosine similarity
    to the reference (or the prompt). llm: the judge model's 0-10 score on the rubric line
    ``description``, divided by 10.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    scorer: Literal["rules", "reference", "embedding", "llm"]
    weight: float = Field(default=1.0, ge=0)
    threshold: float = Field(default=0.0, ge=0, le=1)  # below it the dimension fails (reason `low:<name>`)
    description: str = ""
    against: Literal["reference", "prompt"] = "reference"  # embedding: what the answer is compared with


def default_dimensions() -> list[Dimension]:
    # A reference match outweighs the rule floor: a polite wrong answer must not outrank a terse right one.
    return [Dimension(name="rules", scorer="rules", weight=0.4), Dimension(name="reference", scorer="reference", weight=0.6)]


class SelfChecks(SpecModel):
    """The judge checking itself on this unit (docs/architecture.md §4, judge layer 4)."""

    position_swap: bool = False  # pairwise model comparison of the top two candidates, in both orders
    perturbation_rate: float = Field(default=0.0, ge=0, le=1)  # share of accepted candidates re-judged with a planted error
    # Gate: while the unit's worst self-check rate over the last `window` checks is below this,
    # nothing of the unit goes to `train` (it goes to `review`). 0 turns the gate off.
    min_agreement: float = Field(default=0.0, ge=0, le=1)
    window: int = Field(default=50, ge=1, le=10_000)
    min_observations: int = Field(default=5, ge=1)  # checks needed before the gate may close


class UnitJudge(SpecModel):
    """How the judge scores and pools one unit beyond the rule floor."""

    dimensions: list[Dimension] = Field(default_factory=default_dimensions, min_length=1)
    self_checks: SelfChecks = Field(default_factory=SelfChecks)
    hard_case_confidence: float = Field(default=0.0, ge=0, le=1)  # teacher confidence below it: hard_case
    contrastive: bool = True  # a wrong answer with a known correction is kept as `contrastive`
    keep_complements: bool = False  # complementary constraints of other teachers become sample evidence

    @field_validator("dimensions")
    @classmethod
    def _unique_names(cls, dims: list[Dimension]) -> list[Dimension]:
        names = [d.name for d in dims]
        if len(set(names)) != len(names):
            raise ValueError(f"dimension names repeat: {names}")
        return dims

    @property
    def uses_llm(self) -> bool:
        return any(d.scorer == "llm" for d in self.dimensions) or self.self_checks.position_swap


class StyleSpec(SpecModel):
    """The `style` pathway's constraints: checked on the final answer, kept with the sample."""

    max_chars: int | None = Field(default=None, ge=1)
    max_sentences: int | None = Field(default=None, ge=1)
    required_phrases: list[str] = Field(default_factory=list)  # each must appear (case-insensitive)
    forbidden_phrases: list[str] = Field(default_factory=list)  # none may appear; removed when possible
    tone: Literal["any", "plain", "formal"] = "any"  # plain/formal: no exclamation marks, emoji or filler

    def constraints(self) -> list[str]:
        """The constraint list a style sample carries as metadata."""
        out = []
        if self.max_chars:
            out.append(f"at most {self.max_chars} characters")
        if self.max_sentences:
            out.append(f"at most {self.max_sentences} sentences")
        out += [f"says '{p}'" for p in self.required_phrases]
        out += [f"never says '{p}'" for p in self.forbidden_phrases]
        if self.tone != "any":
            out.append(f"{self.tone} tone")
        return out


class Tiers(SpecModel):
    """Confidence tiers: a sample's confidence (judge score x teacher confidence) against the cut-offs,
    and the pool each tier sends a would-be `train` sample to."""

    high: float = Field(default=0.0, ge=0, le=1)  # at or above: high (0: every sample is high)
    medium: float = Field(default=0.0, ge=0, le=1)  # at or above: medium; below: low
    medium_pool: Literal["hard_case", "review"] = "hard_case"
    low_pool: Literal["contrastive", "failure", "review", "discard"] = "review"

    @model_validator(mode="after")
    def _ordered(self) -> Tiers:
        if self.medium > self.high:
            raise ValueError("tiers.medium must not be above tiers.high")
        return self


class EditorSpec(SpecModel):
    """How the editor turns this unit's accepted candidates into samples (docs/architecture.md §4, editor)."""

    # compression keeps these fields whole (the final answer always); the others are compressed
    essential: list[Literal["rationale", "limits", "evidence"]] = Field(default_factory=lambda: ["limits"])
    token_budget: int = Field(default=512, ge=8, le=8192)  # prompt excluded; over it after compression: review
    max_rationale_lines: int = Field(default=8, ge=1, le=64)
    near_duplicate_threshold: float = Field(default=0.85, ge=0, le=1)  # MinHash Jaccard; 0 turns it off
    cluster_similarity: float = Field(default=0.0, ge=0, le=1)  # MiniLM cosine to join a cluster; 0 turns clustering off
    cluster_quota: int = Field(default=0, ge=0)  # samples admitted per cluster (0: no quota)
    hard_case_weight: float = Field(default=2.0, ge=0)  # sampling weight of hard cases (upsampling)
    tiers: Tiers = Field(default_factory=Tiers)
    style: StyleSpec = Field(default_factory=StyleSpec)


class CheckerSpec(SpecModel):
    """The unit's reference checker by name (a built-in, an entry point of ``distillery.checkers`` or
    ``module:function``) and its parameters. In YAML a bare name is enough: ``checker: json_fields``."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: object) -> object:
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _resolves(self, info: ValidationInfo) -> CheckerSpec:
        fn = plugins.resolve("checker", self.name)
        prepare = getattr(fn, "prepare_params", None)  # a checker's own parameter check (files, patterns)
        if prepare is not None:
            base = (info.context or {}).get("base_dir", ".")
            object.__setattr__(self, "params", prepare(dict(self.params), base))
        return self


@functools.cache
def _named_checker(name: str) -> CheckerSpec:
    """The checker ``rules.reference`` names, built once (the judge asks per candidate)."""
    return CheckerSpec(name=name)


# The prompt template's placeholders (docs/units.md): the unit's own words, rendered as lists.
PROMPT_FIELDS = ("system_prompt", "description", "must", "may", "must_not", "fields")
DEFAULT_PROMPT_TEMPLATE = """{system_prompt}

Your task: {description}
You must:
{must}
You may:
{may}
You must not:
{must_not}

{fields}"""


class UnitSpec(SpecModel):
    description: str
    must: list[str] = Field(default_factory=list)
    may: list[str] = Field(default_factory=list)
    must_not: list[str] = Field(default_factory=list)
    # json: the answer is one JSON object; samples keep it canonical (sorted keys) in `final`
    output_form: Literal["text", "final_answer", "tool_call", "json"] = "text"
    pathways: list[Literal["answer", "process", "style", "tool_trajectory"]] = Field(
        default_factory=lambda: ["answer"], min_length=1)
    # tool_trajectory units: the registry tools (distillery.domain.tools) teachers may call, and the loop's bounds
    tools: list[str] = Field(default_factory=list)
    max_tool_steps: int = Field(default=4, ge=1, le=16)
    tool_timeout_s: float = Field(default=2.0, gt=0, le=60)
    risk: Literal["low", "medium", "high"] = "low"
    # high risk: what must back a `train` verdict besides the rule floor. rules_and_judge: a
    # reference match too (no reference -> review); review: a human always looks first.
    second_check: Literal["rules_and_judge", "review"] = "rules_and_judge"
    # attempts per task: above 1, a task none of whose candidates was accepted is asked again
    # (same teachers, the judge's reasons as feedback), up to this many times in all
    max_attempts: int = Field(default=1, ge=1, le=5)
    routing: Routing
    rules: Rules = Field(default_factory=Rules)
    judge: UnitJudge = Field(default_factory=UnitJudge)
    editor: EditorSpec = Field(default_factory=EditorSpec)
    system_prompt: str = ""
    # the teachers' system prompt around the unit's responsibilities; None: DEFAULT_PROMPT_TEMPLATE
    prompt_template: str | None = None
    # what "correct" means: the reference checker (None: the one `rules.reference` names) and the
    # metrics the evaluator reports; the judge, the editor and the evaluator use the same registry
    checker: CheckerSpec | None = None
    eval_metric: str = "exact_match"  # the headline metric: share of answers the checker calls correct
    metrics: list[str] = Field(default_factory=list)  # further metrics, each a registered name
    # structured answers: fields the answer must give, and fields the input may not state (the right
    # answer is then null, "not stated"); a value where the input states none is invented
    required_fields: list[str] = Field(default_factory=list)
    may_be_missing: list[str] = Field(default_factory=list)

    @field_validator("eval_metric")
    @classmethod
    def _headline_metric(cls, name: str) -> str:
        plugins.check_metric(name)
        return name

    @field_validator("metrics")
    @classmethod
    def _metrics_resolve(cls, names: list[str]) -> list[str]:
        for name in names:
            plugins.check_metric(name)
        return names

    @field_validator("prompt_template")
    @classmethod
    def _template_fields(cls, template: str | None) -> str | None:
        if template is None:
            return None
        try:
            used = [name for _, name, _, _ in Formatter().parse(template) if name is not None]
        except ValueError as exc:
            raise ValueError(f"does not parse as a template: {exc}") from None
        unknown = sorted(set(used) - set(PROMPT_FIELDS))
        if unknown:
            raise ValueError(f"unknown placeholder(s) {unknown}; the template may use {list(PROMPT_FIELDS)}")
        return template

    @model_validator(mode="after")
    def _checker_fits(self) -> UnitSpec:
        if self.checker is not None and self.rules.reference != "none":
            raise ValueError(f"field 'checker': set either checker or rules.reference, not both "
                             f"(rules.reference is '{self.rules.reference}')")
        overlap = sorted(set(self.required_fields) & set(self.may_be_missing))
        if overlap:
            raise ValueError(f"field 'may_be_missing': {overlap} are also required_fields")
        checker = self.reference_checker
        try:
            plugins.check_checker(checker.name, self.checker_params())
        except plugins.PluginError as exc:
            raise ValueError(f"field 'checker': {exc}") from None
        return self

    @property
    def reference_checker(self) -> CheckerSpec:
        return self.checker or _named_checker(self.rules.reference)

    def checker_params(self) -> dict[str, Any]:
        """The checker's parameters, with the unit's field boundaries where it declares them."""
        params = dict(self.reference_checker.params)
        if self.required_fields:
            params["required_fields"] = list(self.required_fields)
        if self.may_be_missing:
            params["may_be_missing"] = list(self.may_be_missing)
        return params

    def reference_needed(self) -> str | None:
        """The reference field a task of this unit must carry when it has a reference."""
        return plugins.reference_needed(self.reference_checker.name, self.checker_params())

    def metric_names(self) -> list[str]:
        return list(dict.fromkeys([self.eval_metric, *self.metrics]))

    @field_validator("tools")
    @classmethod
    def _tools_are_registered(cls, tools: list[str]) -> list[str]:
        known = registered_tools()
        unknown = [t for t in tools if t not in known]
        if unknown:
            raise ValueError(f"unknown tool(s) {unknown}; the registry has {sorted(known)}")
        return tools

    @property
    def uses_tools(self) -> bool:
        return "tool_trajectory" in self.pathways


class JudgeSpec(SpecModel):
    """The judge of a deployment. ``label`` is the human half of ``judge_version``."""

    label: str = Field(default="rules", pattern=r"^[A-Za-z0-9._-]+$")
    aggregation_timeout_s: float = Field(default=120.0, gt=0)
    # the LLM judge: a name from `teachers` (any backend); a second one measures two-judge agreement
    model: str | None = None
    second_model: str | None = None
    max_new_tokens: int = Field(default=96, ge=8, le=1024)
    retries: int = Field(default=1, ge=0, le=5)  # asks again on malformed scores, then `failure`


class LoraSpec(SpecModel):
    """LoRA adapters (peft) for ``method: lora``; merged into the weights after training."""

    r: int = Field(default=8, ge=1, le=256)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1)
    # adapters in the top N decoder layers only (None: every layer): backpropagation stops below
    # them, so a step costs about (1 + 2N/L) forward passes instead of 3
    top_layers: int | None = Field(default=None, ge=1)


class LogitDistill(SpecModel):
    """Logit distillation from a teacher's cached top-k logprobs (its ``logprobs`` setting).

    Loss = (1 - weight) x SFT + weight x KL to the teacher's top-k distribution, on the samples
    whose target is exactly that teacher's text; the others train with SFT alone."""

    teacher: str
    weight: float = Field(default=0.5, gt=0, le=1)
    temperature: float = Field(default=1.0, gt=0)


class StudentSpec(SpecModel):
    base: Literal["tiny-llama", "smollm2-135m"] = "tiny-llama"
    units: list[str] = Field(min_length=1)
    pathways: list[Literal["answer", "process", "style", "tool_trajectory"]] = Field(
        default_factory=lambda: ["answer", "process"])
    fields: list[Literal["final", "rationale", "limits"]] = Field(
        default_factory=lambda: ["final", "rationale", "limits"]
    )
    pools: list[Literal["train", "refusal", "hard_case", "contrastive"]] = Field(
        default_factory=lambda: ["train", "refusal"]
    )
    max_seq_len: int = Field(default=256, ge=16, le=4096)
    epochs: int = Field(default=3, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=8, ge=1)
    seed: int = 0
    hidden_size: int = Field(default=128, ge=16)
    layers: int = Field(default=2, ge=1)
    max_new_tokens: int = Field(default=64, ge=1)
    price: Price = Field(default_factory=Price)
    # --- the dataset mix (trainer: distillery_trainer.dataset) ---
    # shares of the dataset per pool, e.g. {train: 0.7, hard_case: 0.2, refusal: 0.1}; empty: every
    # selected sample once. Within a pool the samples are chosen round-robin across clusters.
    pool_mix: dict[Literal["train", "refusal", "hard_case", "contrastive"], float] = Field(default_factory=dict)
    # confidence weighting: a factor per tier, applied as the loss weight or as repeats of the sample
    tier_weights: dict[Literal["high", "medium", "low"], float] = Field(
        default_factory=lambda: {"high": 1.0, "medium": 1.0, "low": 1.0})
    weighting: Literal["loss", "sampling"] = "loss"
    # curriculum: answer samples first, then process, style, tool trajectories (shuffled within each)
    curriculum: bool = False
    # --- the method (ml.sft) ---
    method: Literal["full", "lora"] = "full"
    lora: LoraSpec = Field(default_factory=LoraSpec)
    distill: LogitDistill | None = None
    # share of the dataset from imported real samples (origin real); None: they count like any sample
    real_share: float | None = Field(default=None, ge=0, lt=1)
    # at most this many samples per unit (a seeded, deterministic pick), one number for every unit or
    # one per unit: a run sized to the student and the machine, and the x axis of a learning curve
    max_samples_per_unit: int | dict[str, int] | None = None
    # a unit of the recipe with no sample in the snapshot stops the run (an ablation that removes a
    # unit's only pools, e.g. no_boundary, sets this false: the student then never sees that unit)
    require_every_unit: bool = True

    def sample_caps(self) -> dict[str, int] | None:
        """``max_samples_per_unit`` per unit (a unit a per-unit cap leaves out is not capped)."""
        cap = self.max_samples_per_unit
        if cap is None:
            return None
        return dict.fromkeys(self.units, cap) if isinstance(cap, int) else {u: cap.get(u, 10**9) for u in self.units}

    @model_validator(mode="after")
    def _mix_is_a_distribution(self) -> StudentSpec:
        if self.pool_mix:
            outside = sorted(set(self.pool_mix) - set(self.pools))
            if outside:
                raise ValueError(f"pool_mix names pool(s) {outside} that are not in pools {self.pools}")
            if abs(sum(self.pool_mix.values()) - 1.0) > 1e-6 or min(self.pool_mix.values()) <= 0:
                raise ValueError(f"pool_mix shares must be positive and sum to 1 (got {dict(self.pool_mix)})")
        if any(w < 0 for w in self.tier_weights.values()):
            raise ValueError("tier_weights must not be negative")
        caps = self.max_samples_per_unit
        if isinstance(caps, dict) and sorted(set(caps) - set(self.units)):
            raise ValueError(f"max_samples_per_unit names unit(s) {sorted(set(caps) - set(self.units))} "
                             f"that are not in units {self.units}")
        if caps is not None and min([caps] if isinstance(caps, int) else caps.values(), default=1) < 1:
            raise ValueError("max_samples_per_unit must be at least 1")
        return self


_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> int:
    """``90s``, ``30m``, ``6h``, ``1d`` as seconds; ValueError otherwise."""
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"'{text}' is not a duration like 90s, 30m, 6h or 1d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class RoundPolicy(SpecModel):
    """When the trainer starts a round for a student on its own (distillery_trainer.rounds):
    ``every_samples: N`` new live samples of its units, or ``every: 6h`` (a round only when there
    are new samples); ``manual`` (or no policy): only ``distillery train`` starts one."""

    every_samples: int | None = Field(default=None, gt=0)
    every: str | None = None
    manual: bool = False

    @model_validator(mode="before")
    @classmethod
    def _bare_manual(cls, data: object) -> object:
        return {"manual": True} if data == "manual" else data

    @field_validator("every")
    @classmethod
    def _parses(cls, every: str | None) -> str | None:
        if every is not None:
            duration_seconds(every)
        return every

    @model_validator(mode="after")
    def _one_trigger(self) -> RoundPolicy:
        triggers = [name for name in ("every_samples", "every") if getattr(self, name) is not None]
        if self.manual and triggers:
            raise ValueError(f"a manual policy takes no {triggers[0]}")
        if not self.manual and len(triggers) != 1:
            raise ValueError("give one of every_samples, every, or manual")
        return self

    @property
    def every_seconds(self) -> int | None:
        return duration_seconds(self.every) if self.every else None


class PromotionPolicy(SpecModel):
    """How a promoted student is tried on live traffic (docs/evaluator.md "Promotion in shadow").

    The evaluator promotes the student for a unit when its held-out accuracy is within
    ``economics.quality_tolerance`` of the unit's best teacher and the ledger says it pays at the
    configured traffic. The router then also sends ``share`` of that unit's live tasks to
    ``deployment`` (a teacher entry with ``backend: student``); the judge judges those answers as
    ``shadow`` (never samples). Over the last ``window`` shadow answers, a judged quality below the
    best teacher's minus the tolerance demotes the student for the unit."""

    deployment: str = Field(min_length=1)
    share: float = Field(default=0.1, gt=0, le=1)
    window: int = Field(default=50, ge=1)
    # the live check's tolerance; None: economics.quality_tolerance, the one promotion used
    live_tolerance: float | None = Field(default=None, ge=0, le=1)


class Economics(SpecModel):
    """Inputs of the ROI ledger (the seed's estimator, generalised)."""

    requests_per_day: float = Field(default=10_000, ge=0)
    horizon_days: float = Field(default=30, gt=0)
    judge_cost_per_candidate_usd: float = Field(default=0.0, ge=0)
    train_cost_per_second_usd: float = Field(default=0.0, ge=0)
    quality_tolerance: float = Field(default=0.05, ge=0, le=1)  # student may trail the best teacher by this much
    # human review time: each decision costs this many seconds of a reviewer at this hourly rate
    review_seconds_per_decision: float = Field(default=60, ge=0)
    reviewer_rate_usd_per_hour: float = Field(default=0.0, ge=0)


class StopSignals(SpecModel):
    """When to stop distilling (distillery_evaluator.signals): thresholds over the last rounds."""

    min_gain_per_1k: float = Field(default=0.02, ge=0)  # accuracy (0..1) per 1,000 new samples
    rounds: int = Field(default=3, ge=2)
    agreement_rise: float = Field(default=0.05, ge=0)
    flat_tolerance: float = Field(default=0.02, ge=0)
    error_shift_share: float = Field(default=0.5, gt=0, le=1)


class CapabilitySpec(SpecModel):
    version: int = 1
    teachers: dict[str, TeacherSpec] = Field(min_length=1)
    units: dict[str, UnitSpec] = Field(min_length=1)
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    students: dict[str, StudentSpec] = Field(default_factory=dict)
    economics: Economics = Field(default_factory=Economics)
    stop_signals: StopSignals = Field(default_factory=StopSignals)
    rounds: dict[str, RoundPolicy] = Field(default_factory=dict)  # student -> when it trains on its own
    promotion: dict[str, PromotionPolicy] = Field(default_factory=dict)  # student -> its shadow serving

    @model_validator(mode="after")
    def _references_resolve(self) -> CapabilitySpec:
        for field in ("rounds", "promotion"):
            unknown = sorted(set(getattr(self, field)) - set(self.students))
            if unknown:
                raise ValueError(f"field '{field}': unknown student(s) {unknown} (students: {sorted(self.students)})")
        self._check_served_students()
        for field in ("model", "second_model"):
            name = getattr(self.judge, field)
            if name is not None and name not in self.teachers:
                raise ValueError(f"field 'judge.{field}': unknown teacher '{name}' (the judge model is declared under teachers)")
        for name, unit in self.units.items():
            if unit.judge.uses_llm and self.judge.model is None:
                raise ValueError(f"unit '{name}': field 'judge': llm scoring or position_swap needs judge.model")
            for teacher in unit.routing.all_teachers():
                if teacher not in self.teachers:
                    raise ValueError(f"unit '{name}': field 'routing.teachers': unknown teacher '{teacher}'")
        for name, student in self.students.items():
            for unit in student.units:
                if unit not in self.units:
                    raise ValueError(f"student '{name}': field 'units': unknown unit '{unit}'")
            if student.distill is not None:
                self._check_distill(name, student)
        return self

    def _check_served_students(self) -> None:
        """A promotion policy serves through a ``backend: student`` teacher of the same recipe."""
        for name, policy in self.promotion.items():
            served = self.teachers.get(policy.deployment)
            if served is None or served.backend != "student" or served.student != name:
                raise ValueError(f"field 'promotion.{name}.deployment': '{policy.deployment}' must be a teacher with "
                                 f"backend 'student' and student '{name}'")
        for teacher_id, teacher in self.teachers.items():
            if teacher.student is not None and teacher.student not in self.students:
                raise ValueError(f"teacher '{teacher_id}': field 'student': unknown student '{teacher.student}'")

    def _check_distill(self, name: str, student: StudentSpec) -> None:
        """Logit distillation needs a teacher that caches logprobs on the student's tokenizer."""
        teacher_id = student.distill.teacher
        teacher = self.teachers.get(teacher_id)
        where = f"student '{name}': field 'distill.teacher'"
        if teacher is None:
            raise ValueError(f"{where}: unknown teacher '{teacher_id}'")
        if teacher.logprobs == 0:
            raise ValueError(f"{where}: teacher '{teacher_id}' caches no logprobs (set teachers.{teacher_id}.logprobs)")
        ours, theirs = STUDENT_TOKENIZERS[student.base], teacher.tokenizer_family()
        if theirs != ours:
            raise ValueError(f"{where}: tokenizer mismatch: student '{student.base}' uses {ours}, teacher "
                             f"'{teacher_id}' uses {theirs or 'an undeclared tokenizer (set its tokenizer)'}")

    def routed_teachers(self) -> list[str]:
        """Teachers some unit routes to: each gets a deployment. A teacher entry named only as
        the judge model is run inside the judge, not as a teacher service."""
        routed = {t for unit in self.units.values() for t in unit.routing.all_teachers()}
        routed |= {policy.deployment for policy in self.promotion.values()}  # shadow traffic reaches these
        return [t for t in self.teachers if t in routed]

    def live_tolerance(self, student: str) -> float:
        policy = self.promotion[student]
        return self.economics.quality_tolerance if policy.live_tolerance is None else policy.live_tolerance

    def digest(self) -> str:
        """Content hash of the spec: part of the judge version and the recipe lineage."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


# The judge's pool policy (distillery_judge.logic): bump when the same spec would pool differently.
JUDGE_POLICY = "judge-v4"  # v4: checkers by name; invented values never train; stated gaps are boundary


def judge_version(spec: CapabilitySpec) -> str:
    """Names rubric, rules and judge together: the label plus a hash of what decides a verdict."""
    decisive = {
        "judge": spec.judge.model_dump(mode="json", exclude={"aggregation_timeout_s"}),  # tuning, not judging
        "units": {name: _decisive_unit(u) for name, u in sorted(spec.units.items())},
        # the judge models themselves: a different model (or backend, or decoding) is a different judge
        "models": {name: spec.teachers[name].model_dump(mode="json", exclude={"concurrency", "timeout_s", "max_retries"})
                   for name in (spec.judge.model, spec.judge.second_model) if name},
        "code": JUDGE_POLICY,
    }
    digest = hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:10]
    return f"{spec.judge.label}-{digest}"


def _decisive_unit(unit: UnitSpec) -> dict:
    """What of a unit decides its verdicts: rules, checker, scoring, risk, and the responsibilities
    where the judge reads them (an LLM judge's rubric carries them)."""
    decisive = {"rules": unit.rules.model_dump(mode="json"), "judge": unit.judge.model_dump(mode="json"),
                "risk": unit.risk, "second_check": unit.second_check,
                "checker": {"name": unit.reference_checker.name, "params": unit.checker_params()}}
    if unit.judge.uses_llm:
        decisive["responsibility"] = {"description": unit.description, "must": unit.must, "may": unit.may,
                                      "must_not": unit.must_not}
    return decisive


def with_label(spec: CapabilitySpec, label: str | None) -> CapabilitySpec:
    """The spec under another judge label (a replay names its version without editing the file)."""
    if not label:
        return spec
    return spec.model_copy(update={"judge": spec.judge.model_copy(update={"label": label})})


def _describe(error: dict) -> str:
    loc = [str(p) for p in error["loc"]]
    error = {**error, "msg": str(error["msg"]).removeprefix("Value error, ")}
    if len(loc) >= 2 and loc[0] in ("units", "teachers", "students"):
        kind = loc[0].rstrip("s")
        if len(loc) == 2 and error["msg"].startswith("field '"):  # an entry-level check names its field
            return f"{kind} '{loc[1]}': {error['msg']}"
        field = ".".join(loc[2:]) or "(whole entry)"
        return f"{kind} '{loc[1]}': field '{field}': {error['msg']}"
    if not loc:  # cross-field checks already name their unit and field
        return str(error["msg"]).removeprefix("Value error, ")
    return f"field '{'.'.join(loc)}': {error['msg']}"


def parse_spec(data: object, source: str = "spec", base_dir: str | Path = ".") -> CapabilitySpec:
    """Validate a spec; files it names (a checker's schema_file) are read relative to ``base_dir``."""
    try:
        return CapabilitySpec.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc.errors()[0])}") from None


def load_spec(path: str | Path) -> CapabilitySpec:
    """Load and validate a capability spec; :class:`ConfigError` names unit and field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"capability spec not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".splitlines()[0]) from None
    return parse_spec(data, str(path), path.parent)
