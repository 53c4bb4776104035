"""Online semantic clusters (MiniLM) for representative sampling, and the sampling itself.

Leader clustering, per unit: a text joins the cluster whose leader embedding is most similar
to its own, if that cosine reaches the unit's ``cluster_similarity``; otherwise it founds a
cluster and its embedding leads it. Leaders never move, so a text's cluster depends only on
the leaders that existed before it: replaying the samples topic reproduces the clusters.

Cluster ids are ``f"{unit}:{sha256(leader text)[:12]}"``: they depend on no counter or order,
so a rebuild that meets the clusters in another order (partitions interleave differently)
still gives the same ids, and a sample's ``cluster`` field is all a rebuild needs to count it.

The leader of a cluster is the first *admitted* text of it (normally its founder; if the
founder was turned away for another reason, the first member admitted takes over, with its
own embedding, so that what the editor remembers is what the samples topic can show). The
editor marks that sample: ``metadata["cluster_leader"] = "1"`` when :meth:`Clusters.is_leader`
says so. On restart, :meth:`Clusters.restore_leader` for every curated sample so marked (also
ones retracted since: a retraction removes a sample, not the topic it opened) and
:meth:`Clusters.restore_member` for every live sample with a cluster. Leader texts are embedded
once, in one batch, at the next :meth:`Clusters.assign`.

Founding, admissions and releases are pending until :meth:`Clusters.commit`, like
:class:`~distillery_editor.state.EditorState`; :meth:`Clusters.rollback` undoes them exactly.
A cluster founded in a batch but with no admitted sample at commit is forgotten: no sample on
the topic carries it, so a rebuild would not know it either.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Embed = Callable[[list[str]], torch.Tensor]


def cluster_id_for(unit: str, leader_text: str) -> str:
    return f"{unit}:{hashlib.sha256(leader_text.encode()).hexdigest()[:12]}"


@dataclass
class _Cluster:
    cluster_id: str
    unit: str
    leader_text: str | None  # None: the leader is not known (a rebuild found members only)
    confirmed: bool  # a sample of it was admitted, so the samples topic knows it
    admitted: int = 0


class _Leaders:
    """One unit's leader embeddings: a growing matrix, one row per open cluster, in founding order."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._rows = torch.empty(0, 0)

    def __len__(self) -> int:
        return len(self.ids)

    def best(self, embedding: torch.Tensor) -> tuple[str, float] | None:
        """The most similar leader and its cosine (rows are unit length); ties go to the smallest id."""
        if not self.ids:
            return None
        scores = self._rows[: len(self.ids)] @ embedding
        top = float(scores.max())
        tied = [self.ids[i] for i in torch.nonzero(scores == top).flatten().tolist()]
        return min(tied), top

    def append(self, cluster_id: str, embedding: torch.Tensor) -> None:
        n = len(self.ids)
        if n == self._rows.shape[0]:  # grow by doubling: founding stays O(1) amortised
            grown = torch.zeros(max(16, 2 * n), embedding.shape[0], dtype=embedding.dtype, device=embedding.device)
            if n:
                grown[:n] = self._rows[:n]
            self._rows = grown
        self._rows[n] = embedding
        self.ids.append(cluster_id)

    def pop(self, cluster_id: str) -> None:
        i = self.ids.index(cluster_id)
        n = len(self.ids)
        self._rows[i:n - 1] = self._rows[i + 1:n].clone()
        self.ids.pop(i)

    def row(self, cluster_id: str) -> torch.Tensor:
        return self._rows[self.ids.index(cluster_id)].clone()

    def replace(self, cluster_id: str, embedding: torch.Tensor) -> None:
        self._rows[self.ids.index(cluster_id)] = embedding


class Clusters:
    """Leader clusters of every unit, with per-cluster admission counts (quota) and pending changes.

    ``embed(texts)`` returns one unit-length row per text (:meth:`distillery.domain.embeddings.Embedder.embed`).
    """

    def __init__(self, embed: Embed) -> None:
        self._embed = embed
        self._clusters: dict[str, _Cluster] = {}
        self._leaders: dict[str, _Leaders] = {}  # unit -> open clusters' leader embeddings
        self._batch_embeddings: dict[str, torch.Tensor] = {}  # text -> embedding, for this batch's admissions
        self._unembedded: list[tuple[str, str]] = []  # (cluster_id, leader text) restored, not yet embedded
        self._founded: list[str] = []  # clusters founded since the last commit
        self._undo: list[Callable[[], None]] = []

    # -- batch discipline -----------------------------------------------------------------

    def commit(self) -> None:
        """The batch is durable. Clusters founded in it with nothing admitted are forgotten."""
        for cluster_id in self._founded:
            if cluster_id in self._clusters and not self._clusters[cluster_id].confirmed:
                self._forget(cluster_id)
        self._founded.clear()
        self._undo.clear()
        self._batch_embeddings.clear()

    def rollback(self) -> None:
        """The batch failed and will be read again: undo its foundings, admissions and releases, newest first."""
        while self._undo:
            self._undo.pop()()
        self._founded.clear()
        self._batch_embeddings.clear()

    @property
    def pending(self) -> int:
        return len(self._undo)

    def __len__(self) -> int:
        """How many clusters are known (pending foundings included)."""
        return len(self._clusters)

    # -- queries --------------------------------------------------------------------------

    def size(self, cluster_id: str) -> int:
        """How many samples of the cluster are admitted (and not released)."""
        cluster = self._clusters.get(cluster_id)
        return cluster.admitted if cluster else 0

    def is_leader(self, cluster_id: str, text: str) -> bool:
        """Whether ``text`` leads the cluster: the editor then marks its sample ``cluster_leader``."""
        cluster = self._clusters.get(cluster_id)
        return cluster is not None and cluster.confirmed and cluster.leader_text == text

    def leaders(self, unit: str) -> list[str]:
        """The unit's open clusters (those with a known leader), in founding or restore order."""
        self._embed_restored()
        return list(self._leaders.get(unit, _Leaders()).ids)

    # -- changes --------------------------------------------------------------------------

    def assign(self, unit: str, texts: Sequence[str], similarity: float) -> list[str | None]:
        """The cluster of each text, in order; a text may join a cluster founded earlier in the batch.

        ``similarity`` is the unit's ``cluster_similarity`` (cosine); 0 turns clustering off
        (every id None). New clusters are pending until a sample of theirs is admitted and committed.
        """
        if similarity <= 0 or not texts:
            return [None] * len(texts)
        self._embed_restored()
        embeddings = self._embed(list(texts))
        return [self._assign_one(unit, text, row, similarity) for text, row in zip(texts, embeddings)]

    def admit(self, cluster_id: str, quota: int, text: str) -> bool:
        """Count one more admitted sample of the cluster, unless it holds ``quota`` already (0: no quota).

        ``cluster_id`` comes from :meth:`assign` (or a restore); ``text`` is the sample's clustering
        text, the one given to :meth:`assign`: the first admitted text of a cluster becomes its leader.
        """
        cluster = self._clusters[cluster_id]
        if quota and cluster.admitted >= quota:
            return False
        if not cluster.confirmed:
            self._confirm(cluster, text)
        self._set_admitted(cluster, cluster.admitted + 1)
        return True

    def release(self, cluster_id: str) -> None:
        """A sample of the cluster left the repository (retraction): one fewer counts against the quota."""
        cluster = self._clusters.get(cluster_id)
        if cluster is not None and cluster.admitted > 0:
            self._set_admitted(cluster, cluster.admitted - 1)

    # -- startup rebuild (durable, not pending) --------------------------------------------

    def restore_leader(self, unit: str, cluster_id: str, text: str) -> None:
        """A curated sample marked ``cluster_leader`` (live or retracted since) leads ``cluster_id``.
        The first leader restored for a cluster wins; its embedding is computed lazily, in one batch."""
        cluster = self._clusters.get(cluster_id)
        if cluster is not None and cluster.leader_text is not None:
            return
        if cluster is None:
            self._clusters[cluster_id] = _Cluster(cluster_id, unit, text, confirmed=True)
        else:
            cluster.leader_text = text
        self._unembedded.append((cluster_id, text))

    def restore_member(self, unit: str, cluster_id: str) -> None:
        """A live sample of ``cluster_id``: it counts against the quota."""
        cluster = self._clusters.setdefault(cluster_id, _Cluster(cluster_id, unit, None, confirmed=True))
        cluster.admitted += 1

    # -- checkpoints ----------------------------------------------------------------------

    def export(self) -> dict[str, list]:
        """The committed clusters as plain data: each cluster, and the leaders in embedding order."""
        assert not self._undo, "export committed clusters"
        clusters = [[c.cluster_id, c.unit, c.leader_text, c.admitted] for c in self._clusters.values()]
        leaders = [cid for leaders in self._leaders.values() for cid in leaders.ids]
        return {"clusters": clusters, "leaders": leaders + [cid for cid, _ in self._unembedded]}

    def restore(self, state: dict[str, list]) -> None:
        """Put back what :meth:`export` gave; leader embeddings are computed at the next assign."""
        for cluster_id, unit, leader_text, admitted in state["clusters"]:
            self._clusters[cluster_id] = _Cluster(cluster_id, unit, leader_text, confirmed=True, admitted=admitted)
        self._unembedded = [(cid, self._clusters[cid].leader_text) for cid in state["leaders"]]  # type: ignore[misc]

    # -- internals ------------------------------------------------------------------------

    def _assign_one(self, unit: str, text: str, embedding: torch.Tensor, similarity: float) -> str:
        self._batch_embeddings[text] = embedding
        leaders = self._leaders.setdefault(unit, _Leaders())
        best = leaders.best(embedding)
        if best is not None and best[1] >= similarity:
            return best[0]
        cluster_id = cluster_id_for(unit, text)
        if cluster_id in self._clusters:  # same text again, below a threshold of ~1 by rounding
            return cluster_id
        self._found(leaders, _Cluster(cluster_id, unit, text, confirmed=False), embedding)
        return cluster_id

    def _found(self, leaders: _Leaders, cluster: _Cluster, embedding: torch.Tensor) -> None:
        self._clusters[cluster.cluster_id] = cluster
        leaders.append(cluster.cluster_id, embedding)
        self._founded.append(cluster.cluster_id)
        self._on_rollback(lambda: self._forget(cluster.cluster_id))

    def _confirm(self, cluster: _Cluster, text: str) -> None:
        """The first admission: ``text`` leads from now on (its own embedding, if it is not the founder)."""
        old_text = cluster.leader_text
        leaders = self._leaders[cluster.unit]
        if text != old_text:
            old_row = leaders.row(cluster.cluster_id)
            leaders.replace(cluster.cluster_id, self._embedding_of(text))
            self._on_rollback(lambda: leaders.replace(cluster.cluster_id, old_row))
        cluster.confirmed, cluster.leader_text = True, text

        def undo() -> None:
            cluster.confirmed, cluster.leader_text = False, old_text
        self._on_rollback(undo)

    def _set_admitted(self, cluster: _Cluster, admitted: int) -> None:
        old = cluster.admitted
        cluster.admitted = admitted

        def undo() -> None:
            cluster.admitted = old
        self._on_rollback(undo)

    def _forget(self, cluster_id: str) -> None:
        cluster = self._clusters.pop(cluster_id)
        self._leaders[cluster.unit].pop(cluster_id)

    def _embedding_of(self, text: str) -> torch.Tensor:
        if text not in self._batch_embeddings:
            self._batch_embeddings[text] = self._embed([text])[0]
        return self._batch_embeddings[text]

    def _embed_restored(self) -> None:
        if not self._unembedded:
            return
        rows = self._embed([text for _, text in self._unembedded])
        for (cluster_id, _), row in zip(self._unembedded, rows):
            unit = self._clusters[cluster_id].unit
            self._leaders.setdefault(unit, _Leaders()).append(cluster_id, row)
        self._unembedded.clear()

    def _on_rollback(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)


# representative sampling lives in the shared library: the trainer's pool mix uses it too
from distillery.domain.sampling import representative, upsampled  # noqa: E402, F401
