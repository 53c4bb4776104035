"""Near-duplicate detection (distillery_editor.dedup): planted paraphrases are caught at the
declared threshold, distinct samples are not, and pending changes commit and roll back exactly."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from distillery_cli.workload import build_workload
from distillery_editor.dedup import NearDuplicates, estimate, shingles, signature, signatures, words

THRESHOLD = 0.7  # a unit's near_duplicate_threshold in these tests

# Real-ish samples as the editor would compare them (prompt, then the curated answer).
BASE = {
    "penguins": (
        "There are 36 penguins sunbathing in the snow. One-third of them jump in and swim in the ocean. "
        "Another one-third go inside the cave to eat their dinner. How many penguins are still sunbathing? "
        "Step 1: one-third of 36 is 12, so 12 penguins swim. Step 2: another 12 go into the cave. "
        "Step 3: 36 - 12 - 12 = 12 penguins are still sunbathing. #### 12"
    ),
    "street": (
        "It costs $194 per meter to repave a street. Monica's street is 150 meters long and Lewis' street is "
        "490 meters long. How much more does it cost to repave Lewis' street? Repaving Lewis' street costs "
        "194 * 490 = 95060 dollars and Monica's costs 194 * 150 = 29100 dollars, so the difference is "
        "95060 - 29100 = 65960 dollars. #### 65960"
    ),
    "weather": (
        "User: What's the weather going to be like in Paris tomorrow afternoon, in celsius please? "
        "The assistant calls get_weather with city Paris, date tomorrow and unit celsius, reads the forecast "
        "of 18 degrees with light rain, and answers that it will be 18 degrees celsius with light rain, "
        "so an umbrella is a good idea."
    ),
    "refund": (
        "Customer asks whether a jacket bought 40 days ago can still be returned for a refund. The policy "
        "allows refunds within 30 days of purchase and store credit within 60 days, so the answer is that a "
        "refund is no longer possible but the customer can return the jacket for store credit until day 60."
    ),
}

# (base, kind of edit, planted near-duplicate)
PLANTED = [
    ("penguins", "reworded", BASE["penguins"].replace("the ocean", "the sea").replace("inside the cave", "into the cave")),
    ("penguins", "filler words", BASE["penguins"].replace("There are", "So, there are").replace("Step 1: one", "Step 1: well, one")),
    ("street", "reordered clauses",
     BASE["street"].replace("Monica's street is 150 meters long and Lewis' street is 490 meters long",
                            "Lewis' street is 490 meters long and Monica's street is 150 meters long")),
    ("street", "punctuation and case",
     BASE["street"].lower().replace(". ", "; ").replace(" * ", "*").replace("?", "??").replace("#### ", "####")),
    ("weather", "reworded",
     BASE["weather"].replace("answers that", "replies that").replace("so an umbrella", "so taking an umbrella")),
    ("refund", "reordered clauses",
     BASE["refund"].replace("refunds within 30 days of purchase and store credit within 60 days",
                            "store credit within 60 days and refunds within 30 days of purchase")),
]


def admitted(texts: dict[str, str], unit: str = "math", pathway: str = "answer") -> NearDuplicates:
    near = NearDuplicates()
    for sample_id, text in texts.items():
        near.add(unit, pathway, sample_id, text, THRESHOLD)
    near.commit()
    return near


@pytest.fixture(scope="module")
def real_prompts() -> list[str]:
    """Distinct real tasks: the GSM8K problems and BFCL requests of the example workload."""
    # The workload has a few prompts twice up to case and punctuation: real duplicates, left out here.
    by_words = {tuple(words(line["prompt"])): line["prompt"] for line in build_workload(60, 0)}
    return list(by_words.values())


# -- signature ------------------------------------------------------------------------------


def test_normalisation_ignores_case_punctuation_and_spacing() -> None:
    assert words("It costs $194, per   METER!\n(Lewis')") == ["it", "costs", "194", "per", "meter", "lewis"]
    assert words("3.5 is not 35") == ["3", "5", "is", "not", "35"]  # punctuation breaks words, never glues them
    assert np.array_equal(signature("Hello,   World! How are you?"), signature("hello world how are you"))


def test_shingles_are_word_trigrams_and_unigrams_for_short_texts() -> None:
    assert shingles("a b c d") == {b"a b c", b"b c d"}
    assert shingles("Hi there") == {b"hi", b"there"}
    assert shingles("") == shingles("  ?! ") == {b""}


def test_signature_is_the_same_in_another_process() -> None:
    text = BASE["weather"]
    code = ("from distillery_editor.dedup import signature; "
            f"print(','.join(map(str, signature({text!r}).tolist())))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == ",".join(map(str, signature(text).tolist()))


def test_estimate_tracks_the_true_jaccard_of_shingle_sets() -> None:
    for base, _, planted in PLANTED:
        a, b = shingles(BASE[base]), shingles(planted)
        true = len(a & b) / len(a | b)
        assert abs(estimate(signature(BASE[base]), signature(planted)) - true) < 0.1


# -- detection ------------------------------------------------------------------------------


@pytest.mark.parametrize(("base", "kind", "planted"), PLANTED, ids=[f"{b}-{k}" for b, k, _ in PLANTED])
def test_planted_paraphrase_is_found_at_the_declared_threshold(base: str, kind: str, planted: str) -> None:
    near = admitted(BASE)
    assert near.find("math", "answer", planted, THRESHOLD) == base


def test_distinct_samples_are_not_near_duplicates() -> None:
    near = admitted(BASE)
    assert [near.find("math", "answer", text, THRESHOLD) for text in BASE.values()] == list(BASE)  # itself only
    near = NearDuplicates()
    for sample_id, text in BASE.items():
        assert near.find("math", "answer", text, THRESHOLD) is None
        near.add("math", "answer", sample_id, text, THRESHOLD)


def test_real_tasks_are_distinct_and_their_filler_variants_are_caught(real_prompts: list[str]) -> None:
    near = NearDuplicates()
    for i, prompt in enumerate(real_prompts):
        assert near.find("mixed", "answer", prompt, THRESHOLD) is None, prompt
        near.add("mixed", "answer", f"s{i}", prompt, THRESHOLD)
    near.commit()
    assert len(near) == len(real_prompts) > 100
    long_ones = [(i, p) for i, p in enumerate(real_prompts) if len(words(p)) >= 25]
    found = [near.find("mixed", "answer", f"Okay, so {p} Thanks!", THRESHOLD) == f"s{i}" for i, p in long_ones]
    assert len(found) >= 30 and all(found)


def test_threshold_is_honoured_exactly() -> None:
    base, _, planted = PLANTED[4]  # the weather rewording, estimated Jaccard ~0.77
    estimated = estimate(signature(BASE[base]), signature(planted))
    near = admitted({base: BASE[base]})
    assert near.find("math", "answer", planted, estimated) == base
    just_above = estimated + 1 / 128  # one more matching permutation than the pair has
    assert near.find("math", "answer", planted, just_above) is None


def test_the_most_similar_duplicate_is_named() -> None:
    near = admitted({"far": PLANTED[0][2], "exact": BASE["penguins"]})
    assert near.find("math", "answer", BASE["penguins"], THRESHOLD) == "exact"


def test_a_threshold_of_one_means_identical_shingles() -> None:
    near = NearDuplicates()
    near.add("u", "answer", "a", BASE["street"], 1.0)
    assert near.find("u", "answer", PLANTED[3][2], 1.0) == "a"  # differs in punctuation and case only
    assert near.find("u", "answer", PLANTED[2][2], 1.0) is None


def test_units_and_pathways_are_separate() -> None:
    near = admitted(BASE, unit="math", pathway="answer")
    planted = PLANTED[0][2]
    assert near.find("math", "answer", planted, THRESHOLD) == "penguins"
    assert near.find("math", "process", planted, THRESHOLD) is None
    assert near.find("other", "answer", planted, THRESHOLD) is None


def test_threshold_zero_disables() -> None:
    near = NearDuplicates()
    near.add("u", "answer", "a", BASE["refund"], 0.0)
    assert len(near) == 0 and near.pending == 0
    near.add("u", "answer", "a", BASE["refund"], THRESHOLD)
    assert near.find("u", "answer", BASE["refund"], 0.0) is None


# -- pending changes ------------------------------------------------------------------------


def test_a_batch_sees_its_own_pending_adds() -> None:
    near = NearDuplicates()
    near.add("u", "answer", "a", BASE["refund"], THRESHOLD)
    assert near.pending == 1
    assert near.find("u", "answer", PLANTED[5][2], THRESHOLD) == "a"


def test_rollback_undoes_adds_and_removes_exactly() -> None:
    near = admitted({"penguins": BASE["penguins"], "street": BASE["street"]})
    near.add("math", "answer", "weather", BASE["weather"], THRESHOLD)
    near.remove("penguins")
    near.remove("unknown")  # ignored, nothing to undo
    assert near.find("math", "answer", PLANTED[0][2], THRESHOLD) is None
    assert len(near) == 2 and near.pending == 2
    near.rollback()
    assert len(near) == 2 and near.pending == 0 and "weather" not in near
    assert near.find("math", "answer", PLANTED[0][2], THRESHOLD) == "penguins"
    assert near.find("math", "answer", PLANTED[4][2], THRESHOLD) is None


def test_rollback_of_remove_then_add_of_the_same_id() -> None:
    near = admitted({"a": BASE["refund"]})
    near.remove("a")
    near.add("math", "answer", "a", BASE["street"], THRESHOLD)  # a revived id with other content
    assert near.find("math", "answer", BASE["street"], THRESHOLD) == "a"
    near.rollback()
    assert near.find("math", "answer", BASE["refund"], THRESHOLD) == "a"
    assert near.find("math", "answer", BASE["street"], THRESHOLD) is None


def test_commit_keeps_changes_and_a_later_rollback_does_not_touch_them() -> None:
    near = NearDuplicates()
    near.add("u", "answer", "a", BASE["refund"], THRESHOLD)
    near.commit()
    near.remove("a")
    near.commit()
    near.rollback()
    assert len(near) == 0 and near.find("u", "answer", BASE["refund"], THRESHOLD) is None


def test_adding_an_indexed_id_again_changes_nothing() -> None:
    near = admitted({"a": BASE["refund"]})
    near.add("math", "answer", "a", BASE["street"], THRESHOLD)
    assert near.pending == 0 and near.find("math", "answer", BASE["street"], THRESHOLD) is None


def test_rebuild_by_adding_live_samples_gives_the_same_answers() -> None:
    live = dict(BASE)
    first = admitted(live)
    second = admitted(live)  # a restart: add() per live sample, then commit()
    for _, _, planted in PLANTED:
        assert first.find("math", "answer", planted, THRESHOLD) == second.find("math", "answer", planted, THRESHOLD)


# -- batch hashing and the sorted runs --------------------------------------------------------


def test_a_batch_hashes_each_text_as_it_would_alone() -> None:
    texts = ["", "two words", *BASE.values(), "?!", "a b c"]
    batch = signatures(texts)
    assert batch.shape == (len(texts), 128) and batch.dtype == np.uint32
    for text, row in zip(texts, batch):
        assert np.array_equal(row, signature(text)), text
    assert np.array_equal(signature(""), signature("  ?! "))  # both the one empty shingle


def test_prepared_batches_give_the_same_answers_as_one_text_at_a_time() -> None:
    probes = [planted for _, _, planted in PLANTED] + list(BASE.values())
    plain = admitted(BASE)
    prepared = admitted(BASE)
    prepared.prepare("math", "answer", probes, THRESHOLD)
    assert [prepared.find("math", "answer", p, THRESHOLD) for p in probes] == \
        [plain.find("math", "answer", p, THRESHOLD) for p in probes]


def many(n: int) -> dict[str, str]:
    """``n`` distinct texts: every one its own numbers, so no two are near-duplicates."""
    return {f"s{i}": f"Order {i} ships {i * 7 % 13} boxes of item {i * 31} to depot {i % 97} on day {i * 3}, "
                     f"then invoice {i * 11} is paid by account {i * 17} with reference {i * 19}."
            for i in range(n)}


def test_samples_written_out_to_sorted_runs_are_found_and_removed_like_recent_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("distillery_editor.dedup.RECENT_MAX", 16)  # write runs (and merge them) early
    texts = many(200)
    near = NearDuplicates()
    for i, (sample_id, text) in enumerate(texts.items()):
        near.add("u", "answer", sample_id, text, THRESHOLD)
        if i % 10 == 9:
            near.commit()
    near.commit()
    index = near._indexes[("u", "answer")]
    assert len(index.runs) >= 2 and len(index.recent_slots) < 16  # runs of several sizes, merged as they grew
    assert all(near.find("u", "answer", text + " thanks", THRESHOLD) == sample_id for sample_id, text in texts.items())
    near.remove("s5")
    assert near.find("u", "answer", texts["s5"], THRESHOLD) is None
    near.rollback()
    assert near.find("u", "answer", texts["s5"], THRESHOLD) == "s5"
    near.remove("s5")
    near.commit()
    for i in range(200, 240):  # more runs written: the merges drop the removed sample's keys
        near.add("u", "answer", f"s{i}", many(240)[f"s{i}"], THRESHOLD)
        near.commit()
    assert near.find("u", "answer", texts["s5"], THRESHOLD) is None and len(near) == 239
    held = sum(len(keys) for keys, _ in index.runs) + len(index.recent) + sum(map(len, index.older.values()))
    assert 239 * index.bands <= held <= 240 * index.bands  # a tombstone's keys go when its run is merged


def test_ascii_fast_path_splits_words_like_the_regular_expression() -> None:
    from distillery_editor.dedup import _word_bytes

    for text in [*BASE.values(), *(p for _, _, p in PLANTED), "a_b c-d 3.5\tx\x0by", "Ünïcode wörds, 3.5 ok"]:
        assert _word_bytes(text) == [w.encode() for w in words(text)], text
