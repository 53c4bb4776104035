"""Variant runs, real-data mixing and the logit-distillation checks, on built datasets (no training)."""

from __future__ import annotations

import copy
from collections import Counter

import pytest

from distillery.contracts.events import CandidateGenerated, Task, TokenLogprobs, TopTokens, Variant
from distillery.contracts.settings import ConfigError
from distillery.contracts.spec import StudentSpec, parse_spec
from distillery_trainer.dataset import build, cap_per_unit, mix_real, raw_samples, samples_per_unit
from distillery_trainer.training import Inputs, plan, teacher_tokens, variant_recipe
from tests.unit.test_trainer_recipes import sample

pytestmark = pytest.mark.model  # loads or trains a real model


def real(i: int, unit: str = "math_steps"):
    return sample(i, unit=unit).model_copy(update={"origin": "real", "sample_id": f"r{i:03d}"})


def candidate(i: int, teacher: str, unit: str = "math_steps", split: str = "train", text: str = "#### 1",
              logprobs: TokenLogprobs | None = None) -> CandidateGenerated:
    return CandidateGenerated(
        candidate_id=f"c{teacher}{i}", request_id=f"r{teacher}{i}", teacher_id=teacher, strategy="single",
        route_reason="test", expected_candidates=1, text=text, produced_by="teacher@test", logprobs=logprobs,
        task=Task(task_id=f"t{i}", unit=unit, prompt=f"q{i}", split=split),
    )


def test_real_samples_take_the_declared_share_and_zero_removes_them() -> None:
    samples = [sample(i) for i in range(12)] + [real(i) for i in range(5)]
    mixed = mix_real(samples, StudentSpec(units=["math_steps"], real_share=0.25))
    # the largest set with a quarter real: 16 = 4 / 0.25 (12 distilled allow 16 / 0.75 = 16)
    assert Counter(s.origin for s in mixed) == {"real": 4, "teacher": 12}
    assert all(s.origin == "teacher" for s in mix_real(samples, StudentSpec(units=["math_steps"], real_share=0.0)))
    assert mix_real(samples, StudentSpec(units=["math_steps"])) == samples  # no share: like any sample


def test_a_real_share_without_real_samples_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no real samples.*samples import"):
        mix_real([sample(i) for i in range(4)], StudentSpec(units=["math_steps"], real_share=0.2))


def test_raw_samples_are_every_training_answer_of_the_named_teachers_unedited() -> None:
    cands = [candidate(i, "a") for i in range(3)] + [candidate(i, "b") for i in range(3)]
    cands += [candidate(9, "a", split="eval"), candidate(8, "a", text=""), candidate(7, "a", unit="other")]
    both = raw_samples(cands, ["math_steps"], {"math_steps": {"a", "b"}})
    assert len(both) == 6 and {s.final for s in both} == {"#### 1"} and all(s.rationale == "" for s in both)
    assert {s.provenance.judge_version for s in both} == {"unjudged"}
    assert len(raw_samples(cands, ["math_steps"], {"math_steps": {"a"}})) == 3


def test_matching_caps_each_unit_at_the_reference_count_deterministically() -> None:
    samples = [sample(i) for i in range(10)] + [sample(20 + i, unit="tool_call") for i in range(3)]
    capped = cap_per_unit(samples, {"math_steps": 4, "tool_call": 5}, seed=0)
    assert Counter(s.unit for s in capped) == {"math_steps": 4, "tool_call": 3}
    assert capped == cap_per_unit(samples, {"math_steps": 4, "tool_call": 5}, seed=0)
    assert capped != cap_per_unit(samples, {"math_steps": 4, "tool_call": 5}, seed=1)


def test_variant_recipes_apply_overrides_and_bucket_pools() -> None:
    base = StudentSpec(units=["math_steps"], pools=["train", "refusal"], fields=["final", "rationale", "limits"])
    ablated = variant_recipe(base, Variant(name="no_rationale", overrides={"fields": ["final", "limits"], "seed": 3}))
    assert ablated.fields == ["final", "limits"] and ablated.seed == 3 and base.seed == 0
    assert variant_recipe(base, Variant(name="jf", bucket="judge_filtered")).pools == ["train"]
    raw = variant_recipe(base, Variant(name="naive", bucket="multi_teacher"))
    assert raw.pools == ["train"] and raw.pathways == ["answer"]
    with pytest.raises(ValueError, match="variant 'bad': field 'fields.0'"):
        variant_recipe(base, Variant(name="bad", overrides={"fields": ["vibes"]}))


def test_a_naive_variant_matches_the_full_recipes_count_on_the_same_snapshot(spec) -> None:
    from distillery.domain.models import smollm2_tokenizer

    curated = [sample(i) for i in range(4)]
    cands = [candidate(i, t) for i in range(6) for t in spec.units["math_steps"].routing.all_teachers()]
    inputs = Inputs(curated, cands, {"samples": {0: 4}})
    name = next(iter(spec.students))
    recipe = spec.students[name].model_copy(update={"units": ["math_steps"], "pathways": ["answer"]})
    spec = spec.model_copy(update={"students": {name: recipe}})
    full = plan(name, spec, inputs, "samples", smollm2_tokenizer())
    naive = plan(name, spec, inputs, "samples", smollm2_tokenizer(), Variant(name="naive", bucket="multi_teacher", match=True))
    assert full["manifest"]["samples"] == naive["manifest"]["samples"] == 4
    assert naive["manifest"]["judge_versions"] == ["unjudged"]
    assert naive["student_id"] != full["student_id"]
    assert samples_per_unit(build(curated, recipe, name)) == {"math_steps": 4}


def lp(tokenizer: str) -> TokenLogprobs:
    return TokenLogprobs(tokenizer=tokenizer, token_ids=[1], top=[TopTokens(ids=[1, 2], logprobs=[-0.1, -2.5])])


def test_cached_logprobs_from_another_tokenizer_stop_the_run_before_training(spec_data) -> None:
    data = copy.deepcopy(spec_data)
    data["teachers"]["smollm2"]["logprobs"] = 4
    data["students"]["tiny"]["distill"] = {"teacher": "smollm2", "weight": 0.5}
    recipe = parse_spec(data).students["tiny"]
    good = [candidate(1, "smollm2", logprobs=lp("fp-student"))]
    assert set(teacher_tokens(recipe, good, "fp-student")) == {"csmollm21"}
    with pytest.raises(ValueError, match="tokenizer mismatch"):
        teacher_tokens(recipe, [candidate(2, "smollm2", logprobs=lp("fp-other"))], "fp-student")
    with pytest.raises(ValueError, match="no cached logprobs"):
        teacher_tokens(recipe, [candidate(3, "smollm2")], "fp-student")


def test_the_spec_refuses_logit_distillation_it_cannot_do(spec_data) -> None:
    cases = [({"teacher": "nobody"}, {}, "unknown teacher 'nobody'"),
             ({"teacher": "smollm2"}, {}, "caches no logprobs"),
             ({"teacher": "qwen-coder"}, {"qwen-coder": 4}, "tokenizer mismatch: student 'tiny-llama' uses smollm2")]
    for distill, logprobs, message in cases:
        data = copy.deepcopy(spec_data)
        for teacher, k in logprobs.items():
            data["teachers"][teacher]["logprobs"] = k
        data["students"]["tiny"]["distill"] = distill
        with pytest.raises(ConfigError, match=message) as err:
            parse_spec(data)
        assert "student 'tiny': field 'distill.teacher'" in str(err.value)


def test_max_samples_per_unit_sizes_a_run_with_a_seeded_pick() -> None:
    samples = [sample(i) for i in range(10)] + [sample(20 + i, unit="tool_call") for i in range(3)]
    recipe = StudentSpec(units=["math_steps", "tool_call"], max_samples_per_unit=4)
    run = build(samples, recipe, "s")
    assert samples_per_unit(run) == {"math_steps": 4, "tool_call": 3}
    assert run == build(samples, recipe, "s")  # a redelivered request trains on the same data
    other_seed = build(samples, recipe.model_copy(update={"seed": 1}), "s")
    assert {e.sample.sample_id for e in other_seed} != {e.sample.sample_id for e in run}


def test_no_boundary_drops_refusal_and_contrastive_samples_and_trains_without_their_unit(spec_data) -> None:
    """The ablation removes the boundary samples; the unit that has only those is left untaught
    (the recipe allows it) instead of stopping the run."""
    from distillery_cli.attribute import variants_for

    data = copy.deepcopy(spec_data)
    data["students"]["tiny"].update(units=["math_steps", "tool_boundary"], pools=["train", "refusal", "contrastive"])
    spec = parse_spec(data)
    (variant,) = variants_for(spec.students["tiny"], ["full", "no_boundary"], 1, None, "x")[1:]
    assert variant.match and variant.overrides["pools"] == ["train"]
    samples = [sample(i) for i in range(6)] + [sample(10 + i, pool="contrastive") for i in range(3)]
    samples += [sample(20 + i, pool="refusal", unit="tool_boundary") for i in range(4)]
    recipe = variant_recipe(spec.students["tiny"], variant)
    full = samples_per_unit(build(samples, spec.students["tiny"], "tiny"))
    run = build(samples, recipe, "tiny", full)
    assert {e.sample.pool for e in run} == {"train"}
    assert samples_per_unit(run) == {"math_steps": 6}
    with pytest.raises(ValueError, match="no samples for unit"):  # the recipe as declared still insists
        build(samples, spec.students["tiny"].model_copy(update={"pools": ["train"]}), "tiny")


def test_max_samples_per_unit_may_be_one_cap_per_unit() -> None:
    samples = [sample(i) for i in range(10)] + [sample(20 + i, unit="tool_call") for i in range(6)]
    recipe = StudentSpec(units=["math_steps", "tool_call"], max_samples_per_unit={"math_steps": 2})
    assert samples_per_unit(build(samples, recipe, "s")) == {"math_steps": 2, "tool_call": 6}
    with pytest.raises(ValueError, match="not in units"):
        StudentSpec(units=["math_steps"], max_samples_per_unit={"tool_use": 2})
    with pytest.raises(ValueError, match="at least 1"):
        StudentSpec(units=["math_steps"], max_samples_per_unit=0)
