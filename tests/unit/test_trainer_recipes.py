"""Recipes: validation, the pool mix, confidence weighting and the curriculum on a built dataset."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch

from distillery.contracts.events import Provenance, SampleCurated, Trace
from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import StudentSpec, parse_spec
from distillery_trainer.dataset import build, entries, mix_pools, select
from distillery_trainer.sft import _batches

pytestmark = pytest.mark.model  # loads or trains a real model


def sample(i: int, pool: str = "train", unit: str = "math_steps", pathway: str = "answer", tier: str = "high",
           cluster: str | None = None, weight: float = 1.0) -> SampleCurated:
    return SampleCurated(
        sample_id=f"s{i:03d}", unit=unit, pathway=pathway, pool=pool, prompt=f"q{i}", final=f"#### {i}",
        content_hash=f"h{i}", weight=weight, tier=tier, cluster=cluster,
        provenance=Provenance(task_id=f"t{i}", candidate_id=f"c{i}", teacher_id="qwen-coder", judge_version="j",
                              verdict_id=f"v{i}"),
        produced_by="editor@test", trace=Trace(task_id=f"t{i}"),
    )


def recipe(**fields) -> StudentSpec:
    return StudentSpec(units=["math_steps"], **fields)


def test_a_recipe_naming_an_unknown_unit_pool_or_field_stops_the_spec(spec_data) -> None:
    for field, value, message in [("units", ["astrology"], "unknown unit 'astrology'"),
                                  ("pools", ["train", "gossip"], "field 'pools.1'"),
                                  ("fields", ["final", "vibes"], "field 'fields.1'"),
                                  ("pool_mix", {"train": 0.5, "hard_case": 0.5}, "not in pools"),
                                  ("pool_mix", {"train": 0.5, "refusal": 0.2}, "sum to 1")]:
        data = copy.deepcopy(spec_data)
        data["students"]["tiny"][field] = value
        with pytest.raises(ConfigError, match=message) as err:
            parse_spec(data)
        assert "student 'tiny'" in str(err.value)


def test_the_pool_mix_has_the_declared_shares_and_every_cluster_of_a_pool(spec) -> None:
    samples = ([sample(i, "train") for i in range(10)] + [sample(20 + i, "hard_case", weight=2) for i in range(6)]
               + [sample(40 + i, "refusal", cluster=f"k{i % 2}") for i in range(5)])
    r = recipe(pools=["train", "hard_case", "refusal"], pool_mix={"train": 0.5, "hard_case": 0.3, "refusal": 0.2})
    mixed = mix_pools(select(samples, r), r)
    # the largest dataset the pools allow without repeats: 20 = 10 / 0.5 = 6 / 0.3
    assert Counter(s.pool for s in mixed) == {"train": 10, "hard_case": 6, "refusal": 4}
    assert {s.cluster for s in mixed if s.pool == "refusal"} == {"k0", "k1"}  # both kinds of refusal
    assert len({s.sample_id for s in mixed}) == len(mixed)


def test_without_a_mix_every_selected_sample_is_used_once(spec) -> None:
    samples = [sample(i, pool) for i, pool in enumerate(["train", "train", "refusal", "contrastive"])]
    r = recipe(pools=["train", "refusal"])
    assert [e.sample.sample_id for e in build(samples, r, "tiny")] == ["s000", "s001", "s002"]


def test_tier_weights_become_loss_weights_or_repeats() -> None:
    samples = [sample(0, tier="high"), sample(1, tier="medium"), sample(2, "hard_case", tier="low", weight=2.0)]
    tiers = {"high": 1.0, "medium": 0.5, "low": 1.5}
    loss = entries(samples, recipe(pools=["train", "hard_case"], tier_weights=tiers))
    assert [(e.sample.sample_id, e.weight) for e in loss] == [("s000", 1.0), ("s001", 0.5), ("s002", 3.0)]
    repeats = entries(samples, recipe(pools=["train", "hard_case"], tier_weights=tiers, weighting="sampling"))
    # 1 + 0.5 + 3 = 4.5 -> 4 copies in all, error diffusion: s000 once, s001 carried, s002 three times
    assert Counter(e.sample.sample_id for e in repeats) == {"s000": 1, "s002": 3}
    assert all(e.weight == 1.0 for e in repeats)


def test_a_curriculum_puts_answers_before_steps_in_every_epoch() -> None:
    samples = [sample(i, pathway=p) for i, p in enumerate(["process", "answer", "process", "answer", "answer"])]
    run = entries(samples, recipe(pathways=["answer", "process"], curriculum=True))
    assert [e.stage for e in run] == [0, 0, 0, 1, 1]
    rows = [{"id": e.sample.sample_id, "stage": e.stage} for e in run]
    batches = _batches(rows, batch_size=2, epochs=2, shuffler=torch.Generator().manual_seed(0))
    stages = [[row["stage"] for row in batch] for batch in batches]
    assert stages == [[0, 0], [0], [1, 1]] * 2  # per epoch: all answers (shuffled), then all process samples


def test_no_curriculum_keeps_the_plain_shuffled_epochs() -> None:
    rows = [{"id": i, "stage": 0} for i in range(5)]
    plain = _batches(rows, 2, 1, torch.Generator().manual_seed(3))
    order = torch.randperm(5, generator=torch.Generator().manual_seed(3)).tolist()
    assert [[r["id"] for r in b] for b in plain] == [order[0:2], order[2:4], order[4:5]]


def test_a_unit_without_samples_is_an_error_before_training() -> None:
    r = StudentSpec(units=["math_steps", "tool_call"])
    with pytest.raises(ValueError, match=r"student 'tiny': the snapshot has no samples for unit\(s\) \['tool_call'\]"):
        build([sample(0)], r, "tiny")


def test_a_contrastive_sample_teaches_its_correction_only() -> None:
    from distillery_trainer.dataset import render_target

    wrong = sample(1, "contrastive").model_copy(update={"final": "#### 42", "contrast": "#### 41",
                                                         "limits": "Wrong because: wrong_final_answer."})
    assert render_target(wrong, ["final", "rationale", "limits"]) == "#### 42"
