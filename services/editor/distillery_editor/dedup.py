"""Near-duplicate detection with MinHash LSH (datasketch 2.x public API only).

Exact duplicates are caught by the content hash (:class:`~distillery_editor.state.EditorState`);
this catches the light rewordings around them: a filler word added, a clause moved, a
number's punctuation changed. A text becomes a set of word 3-shingles of its normalised form
(:func:`shingles`), the set a 128-permutation MinHash (:func:`signature`), and every
(unit, pathway) has its own :class:`datasketch.MinHashLSH` tuned to that unit's
``near_duplicate_threshold``. The LSH only proposes candidates; each is verified with the
MinHash Jaccard estimate, so the declared threshold is what decides.

Use (the editor, per sample, in batch order)::

    dup = near.find(unit, pathway, text, threshold)     # None: no admitted near-duplicate
    if dup is None and admitted_otherwise:
        near.add(unit, pathway, sample_id, text, threshold)
    ...
    near.commit()   # the batch was published   /   near.rollback(): it will be read again

Like :class:`EditorState`, changes apply at once (a batch sees its own pending adds) and an
undo log makes :meth:`NearDuplicates.rollback` exact. A restart rebuilds the index by calling
:meth:`NearDuplicates.add` for each live sample, then :meth:`NearDuplicates.commit`
(bench/editor_dedup.py: ~9k samples/s on 2 cores, ~5 KiB held per indexed sample at threshold
0.85, most of it datasketch's per-band buckets).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable

from datasketch import MinHash, MinHashLSH

NUM_PERM = 128
SEED = 1  # fixed: signatures must compare across processes and restarts
SCHEME = "affine32"  # datasketch 2.x default, named so a future default change cannot mix schemes
SHINGLE_WORDS = 3
# MinHashLSH cannot be tuned above 0.98 (it would need fewer than 2 bands); the index is tuned
# there and the estimate check still demands the declared threshold (up to 1).
MAX_LSH_THRESHOLD = 0.98
# (false positive, false negative) weights of the LSH band tuning. A false positive costs one
# signature comparison in find(); a false negative leaves a duplicate in the training set. With
# datasketch's default (0.5, 0.5), a pair whose estimate is exactly 0.7 is proposed only ~41% of
# the time (14 bands of 9 rows); with these weights ~98% (23 bands of 5 rows), for ~1.6x the
# index memory. At 0.85: 8 bands of 16 rows, ~41% -> 14 bands of 9 rows, ~97%.
LSH_WEIGHTS = (0.02, 0.98)

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Normalised words: lowercase, punctuation is a word break, whitespace collapsed.

    Punctuation breaks words rather than vanishing so that ``3.5`` stays apart from ``35``
    and ``a,b`` is two words.
    """
    return _WORD.findall(text.lower())


def shingles(text: str, size: int = SHINGLE_WORDS) -> set[bytes]:
    """Word ``size``-shingles of the normalised text; its words when it has fewer than ``size``.

    An empty text is the single empty shingle, so it has a signature like any other text.
    """
    tokens = words(text)
    if len(tokens) < size:
        return {t.encode() for t in tokens} or {b""}
    return {" ".join(tokens[i:i + size]).encode() for i in range(len(tokens) - size + 1)}


def _hash32(shingle: bytes) -> int:
    # crc32 is about twice as fast as datasketch's default sha1 and deterministic across
    # processes (Python's hash() is salted). The affine32 scheme pre-mixes every input
    # hash with the MurmurHash3 finalizer, which is there for weak hashes like this one.
    return zlib.crc32(shingle)


_TEMPLATES: dict[int, MinHash] = {}


def _template(num_perm: int) -> MinHash:
    # Building a MinHash draws its permutations (~100 us); copying a template shares them.
    if num_perm not in _TEMPLATES:
        _TEMPLATES[num_perm] = MinHash(num_perm=num_perm, seed=SEED, hashfunc=_hash32, scheme=SCHEME)
    return _TEMPLATES[num_perm]


def signature(text: str, num_perm: int = NUM_PERM) -> MinHash:
    """The MinHash of the text's shingles. Deterministic: same text, same signature, any process."""
    minhash = _template(num_perm).copy()
    minhash.update_batch(shingles(text))
    return minhash


class NearDuplicates:
    """Admitted samples' signatures, one LSH index per (unit, pathway), with pending changes.

    ``threshold`` is the unit's ``near_duplicate_threshold`` (estimated Jaccard of shingle
    sets, 0 to 1). The first call that names a (unit, pathway) with a threshold above 0 builds
    its index, tuned to that threshold; later calls verify candidates against the threshold
    they pass (a changed spec takes effect on restart, when the index is rebuilt). A threshold
    of 0 turns near-duplicate detection off: ``find`` answers None and ``add`` keeps nothing.
    """

    def __init__(self, num_perm: int = NUM_PERM) -> None:
        self.num_perm = num_perm
        self._indexes: dict[tuple[str, str], MinHashLSH] = {}
        self._signatures: dict[str, MinHash] = {}  # sample_id -> signature of an indexed sample
        self._index_of: dict[str, tuple[str, str]] = {}  # sample_id -> (unit, pathway)
        self._undo: list[Callable[[], None]] = []
        self._last: tuple[str, MinHash] | None = None  # find() then add() of one text hashes it once

    # -- batch discipline -----------------------------------------------------------------

    def commit(self) -> None:
        """The batch is durable: its adds and removes stay."""
        self._undo.clear()

    def rollback(self) -> None:
        """The batch failed and will be read again: undo its adds and removes, newest first."""
        while self._undo:
            self._undo.pop()()

    @property
    def pending(self) -> int:
        return len(self._undo)

    def __len__(self) -> int:
        """How many samples are indexed (pending ones included)."""
        return len(self._signatures)

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self._signatures

    # -- queries --------------------------------------------------------------------------

    def find(self, unit: str, pathway: str, text: str, threshold: float) -> str | None:
        """The id of an indexed sample of (unit, pathway) whose estimated Jaccard with ``text``
        is at least ``threshold``: the most similar one, ties by smallest id. None if there is none."""
        if threshold <= 0:
            return None
        index = self._indexes.get((unit, pathway))
        if index is None:
            return None
        probe = self._signature(text)
        scored = [(probe.jaccard(self._signatures[key]), key) for key in index.query(probe)]
        matches = [(-score, key) for score, key in scored if score >= threshold]
        return min(matches)[1] if matches else None

    # -- changes --------------------------------------------------------------------------

    def add(self, unit: str, pathway: str, sample_id: str, text: str, threshold: float) -> None:
        """Index an admitted sample (pending). Does nothing when ``threshold`` is 0 or the id is indexed."""
        if threshold <= 0 or sample_id in self._signatures:
            return
        self._insert(self._index(unit, pathway, threshold), (unit, pathway), sample_id, self._signature(text))
        self._on_rollback(lambda: self._delete(sample_id))

    def remove(self, sample_id: str) -> None:
        """Forget a sample, e.g. a retracted one (pending). Unknown ids are ignored."""
        if sample_id not in self._signatures:
            return
        where, minhash = self._index_of[sample_id], self._signatures[sample_id]
        self._delete(sample_id)
        self._on_rollback(lambda: self._insert(self._indexes[where], where, sample_id, minhash))

    # -- internals ------------------------------------------------------------------------

    def _index(self, unit: str, pathway: str, threshold: float) -> MinHashLSH:
        key = (unit, pathway)
        if key not in self._indexes:
            # Built once per (unit, pathway): a rollback that empties it keeps it, and its tuning.
            tuned = min(threshold, MAX_LSH_THRESHOLD)
            self._indexes[key] = MinHashLSH(threshold=tuned, num_perm=self.num_perm, weights=LSH_WEIGHTS)
        return self._indexes[key]

    def _signature(self, text: str) -> MinHash:
        if self._last is None or self._last[0] != text:
            self._last = (text, signature(text, self.num_perm))
        return self._last[1]

    def _insert(self, index: MinHashLSH, where: tuple[str, str], sample_id: str, minhash: MinHash) -> None:
        index.insert(sample_id, minhash, check_duplication=False)  # ids are checked above
        self._signatures[sample_id] = minhash
        self._index_of[sample_id] = where

    def _delete(self, sample_id: str) -> None:
        self._indexes[self._index_of.pop(sample_id)].remove(sample_id)
        del self._signatures[sample_id]

    def _on_rollback(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)
