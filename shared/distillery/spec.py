"""The capability spec (ARCHITECTURE §5): one YAML file declaring every capability unit.

It is the "student responsibility spec": what each unit must, may and must not do,
its output form and pathways, risk, which teachers answer and how, the judge's
rules, the eval metric, and the recipes of the students. Errors name the unit and field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distillery.settings import ConfigError


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


class TeacherSpec(SpecModel):
    backend: Literal["transformers", "replay"] = "transformers"
    model: str = "smollm2-135m-instruct"
    replay_path: str | None = None
    replay_pace: bool = False  # replay sleeps each recording's latency, like the real teacher did
    max_new_tokens: int = Field(default=128, ge=1, le=4096)
    batch_size: int = Field(default=8, ge=1, le=256)
    temperature: float = Field(default=0.0, ge=0)
    price: Price = Field(default_factory=Price)


    @model_validator(mode="after")
    def _replay_has_path(self) -> TeacherSpec:
        if self.backend == "replay" and not self.replay_path:
            raise ValueError("backend 'replay' needs replay_path")
        return self


class Routing(SpecModel):
    strategy: Literal["single", "competition"] = "single"
    teachers: list[str] = Field(min_length=1)
    max_new_tokens: int | None = Field(default=None, ge=1, le=4096)

    @model_validator(mode="after")
    def _single_has_one(self) -> Routing:
        if self.strategy == "single" and len(self.teachers) != 1:
            raise ValueError("strategy 'single' takes exactly one teacher")
        return self

    @field_validator("teachers")
    @classmethod
    def _no_duplicates(cls, teachers: list[str]) -> list[str]:
        if len(set(teachers)) != len(teachers):
            raise ValueError("a teacher is listed twice (the judge would wait for a candidate that never comes)")
        return teachers


class Rules(SpecModel):
    """The rule floor of a unit. Each rule has a name that becomes a reason tag."""

    output_format: Literal["text", "final_answer", "tool_call"] = "text"
    min_chars: int = Field(default=1, ge=0)
    max_chars: int = Field(default=4000, ge=1)
    required_fields: list[str] = Field(default_factory=list)
    forbidden_patterns: list[str] = Field(default_factory=list)
    reference: Literal["none", "final_answer", "tool_call"] = "none"


class UnitSpec(SpecModel):
    description: str
    must: list[str] = Field(default_factory=list)
    may: list[str] = Field(default_factory=list)
    must_not: list[str] = Field(default_factory=list)
    output_form: Literal["text", "final_answer", "tool_call"] = "text"
    pathways: list[Literal["answer", "process"]] = Field(default_factory=lambda: ["answer"], min_length=1)
    risk: Literal["low", "medium", "high"] = "low"
    routing: Routing
    rules: Rules = Field(default_factory=Rules)
    system_prompt: str = ""
    eval_metric: Literal["exact_match", "tool_call_accuracy", "refusal_correctness"] = "exact_match"


class JudgeSpec(SpecModel):
    label: str = "rules"
    aggregation_timeout_s: float = Field(default=120.0, gt=0)


class StudentSpec(SpecModel):
    base: Literal["tiny-llama", "smollm2-135m"] = "tiny-llama"
    units: list[str] = Field(min_length=1)
    pathways: list[Literal["answer", "process"]] = Field(default_factory=lambda: ["answer", "process"])
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


class Economics(SpecModel):
    """Inputs of the ROI ledger (the seed's estimator, generalised)."""

    requests_per_day: float = Field(default=10_000, ge=0)
    horizon_days: float = Field(default=30, gt=0)
    judge_cost_per_candidate_usd: float = Field(default=0.0, ge=0)
    train_cost_per_second_usd: float = Field(default=0.0, ge=0)
    quality_tolerance: float = Field(default=0.05, ge=0, le=1)  # student may trail the best teacher by this much


class CapabilitySpec(SpecModel):
    version: int = 1
    teachers: dict[str, TeacherSpec] = Field(min_length=1)
    units: dict[str, UnitSpec] = Field(min_length=1)
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    students: dict[str, StudentSpec] = Field(default_factory=dict)
    economics: Economics = Field(default_factory=Economics)

    @model_validator(mode="after")
    def _references_resolve(self) -> CapabilitySpec:
        for name, unit in self.units.items():
            for teacher in unit.routing.teachers:
                if teacher not in self.teachers:
                    raise ValueError(f"unit '{name}': field 'routing.teachers': unknown teacher '{teacher}'")
        for name, student in self.students.items():
            for unit in student.units:
                if unit not in self.units:
                    raise ValueError(f"student '{name}': field 'units': unknown unit '{unit}'")
        return self

    def digest(self) -> str:
        """Content hash of the spec: part of the judge version and the recipe lineage."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _describe(error: dict) -> str:
    loc = [str(p) for p in error["loc"]]
    error = {**error, "msg": str(error["msg"]).removeprefix("Value error, ")}
    if len(loc) >= 2 and loc[0] in ("units", "teachers", "students"):
        kind = loc[0].rstrip("s")
        field = ".".join(loc[2:]) or "(whole entry)"
        return f"{kind} '{loc[1]}': field '{field}': {error['msg']}"
    if not loc:  # cross-field checks already name their unit and field
        return str(error["msg"]).removeprefix("Value error, ")
    return f"field '{'.'.join(loc)}': {error['msg']}"


def parse_spec(data: object, source: str = "spec") -> CapabilitySpec:
    try:
        return CapabilitySpec.model_validate(data)
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
    return parse_spec(data, str(path))
