"""Near-duplicate detection: MinHash signatures hashed a batch at a time, banded LSH in sorted arrays.

Exact duplicates are caught by the content hash (:class:`~distillery_editor.state.EditorState`);
this catches the light rewordings around them: a filler word added, a clause moved, a
number's punctuation changed. A text becomes the set of word 3-shingles of its normalised form
(:func:`shingles`), the set a 128-permutation MinHash (:func:`signatures`), and every
(unit, pathway) has its own banded LSH index tuned to that unit's ``near_duplicate_threshold``.
The LSH only proposes candidates; each is verified with the MinHash Jaccard estimate, so the
declared threshold is what decides.

Use (the editor, per batch, then per sample in batch order)::

    near.prepare(unit, pathway, texts, threshold)       # hashes the whole batch in numpy
    dup = near.find(unit, pathway, text, threshold)     # None: no admitted near-duplicate
    if dup is None and admitted_otherwise:
        near.add(unit, pathway, sample_id, text, threshold)
    ...
    near.commit()   # the batch was published   /   near.rollback(): it will be read again

``prepare`` is an optimisation only: ``find`` and ``add`` hash a text they were not prepared
for. Like :class:`EditorState`, changes apply at once (a batch sees its own pending adds) and
an undo log makes :meth:`NearDuplicates.rollback` exact. A restart rebuilds the index by
calling :meth:`NearDuplicates.add` for each live sample, committing every few thousand (``commit`` writes the
newest samples out as a sorted run once there are :data:`RECENT_MAX` of them).

Why not datasketch (issue 17, ``bench/editor_dedup.py``): hashing one text at a time in Python
and one dict entry per band per sample held it to ~7k samples/s and ~5 KiB per sample. Here a
batch's shingles are hashed in one numpy pass, and an index keeps its band keys in sorted
``uint64`` runs (a log-structured merge: a few runs, searched with ``searchsorted``) behind a
small dict for the samples added since the last run was written. Signatures live in fixed
chunks of ``uint32`` rows: about 0.7 KiB per sample in all.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from functools import cache
from itertools import chain, repeat
from typing import Any

import numpy as np

NUM_PERM = 128
SEED = 1  # fixed: signatures must compare across processes and restarts
SHINGLE_WORDS = 3
# The index is tuned to at most this threshold (a single band would make every candidate an exact
# signature match); the estimate check still demands the declared threshold (up to 1).
MAX_LSH_THRESHOLD = 0.98
# (false positive, false negative) weights of the LSH band tuning. A false positive costs one
# signature comparison (vectorised per batch); a false negative leaves a duplicate in the training
# set. At 0.85 this picks 14 bands of 9 rows: a pair whose estimate is exactly 0.85 is proposed
# ~97.5% of the time (datasketch's default weights: 8 bands of 16 rows, ~41%).
LSH_WEIGHTS = (0.02, 0.98)
CHUNK_ROWS = 4096  # signature rows per storage chunk: memory grows by chunks, not by doubling
RECENT_MAX = 1024  # samples kept in the dict tier before commit writes them out as a sorted run

_WORD = re.compile(r"\w+")
_U64 = np.uint64
_RNG = np.random.default_rng(SEED)
# The permutations are x -> a*x + b mod 2^32 with a odd (a bijection of 32-bit hashes) applied
# to well-mixed shingle hashes: numpy runs 32-bit multiplies in SIMD, ~5x faster than the 64-bit
# multiply-shift, and bench/editor_dedup.py's estimates stay as close to the true Jaccard.
_PERM_A = _RNG.integers(0, 2**31, size=NUM_PERM, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
_PERM_B = _RNG.integers(0, 2**32, size=NUM_PERM, dtype=np.uint32)
_SHINGLE_MIX = _RNG.integers(1, 2**63, size=SHINGLE_WORDS, dtype=np.uint64) * _U64(2) + _U64(1)
_BAND_MIX = _RNG.integers(1, 2**63, size=NUM_PERM, dtype=np.uint64) * _U64(2) + _U64(1)
_EMPTY = _U64(0x9E3779B97F4A7C15)  # the single shingle of a text without words

Signature = np.ndarray  # (NUM_PERM,) uint32


def words(text: str) -> list[str]:
    """Normalised words: lowercase, punctuation is a word break, whitespace collapsed.

    Punctuation breaks words rather than vanishing so that ``3.5`` stays apart from ``35``
    and ``a,b`` is two words.
    """
    return _WORD.findall(text.lower())


def shingles(text: str, size: int = SHINGLE_WORDS) -> set[bytes]:
    """Word ``size``-shingles of the normalised text; its words when it has fewer than ``size``.

    An empty text is the single empty shingle. This is the set the MinHash estimates Jaccard
    over (:func:`signatures` hashes the same shingles without building these strings).
    """
    tokens = words(text)
    if len(tokens) < size:
        return {t.encode() for t in tokens} or {b""}
    return {" ".join(tokens[i:i + size]).encode() for i in range(len(tokens) - size + 1)}


_WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_BREAKS = bytes(c if c in _WORD_BYTES else 0x20 for c in range(256))


def _word_bytes(text: str) -> list[bytes]:
    """:func:`words`, UTF-8 encoded; ASCII text takes a path ~3x faster than the regular expression."""
    if text.isascii():
        return text.encode().lower().translate(_BREAKS).split()
    return [w.encode() for w in words(text)]


class _WordHashes(dict[bytes, int]):
    """crc32 of each word, cached: deterministic across processes (Python's hash() is salted),
    and teachers' vocabularies are small, so a batch's words are mostly dictionary hits."""

    def __missing__(self, word: bytes) -> int:
        if len(self) > 1_000_000:
            self.clear()
        value = self[word] = zlib.crc32(word)
        return value


_WORD_HASHES = _WordHashes()


def _shingle_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every text's shingle hashes, concatenated, and where each text's run starts."""
    tokens = [_word_bytes(text) for text in texts]
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(texts))
    flat = np.fromiter(map(_WORD_HASHES.__getitem__, chain.from_iterable(tokens)), dtype=np.uint64,
                       count=int(lengths.sum()))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    # A shingle i of text t combines words i, i+1, i+2; positions whose window crosses into the
    # next text are dropped. Texts shorter than a shingle hash their words one by one.
    n = len(flat)
    combined = flat.copy()
    for k in range(1, SHINGLE_WORDS):
        combined[: n - k] = combined[: n - k] * _SHINGLE_MIX[k - 1] + flat[k:] * _SHINGLE_MIX[k]
    within = np.arange(n) - np.repeat(starts, lengths)
    keep = within <= np.repeat(lengths, lengths) - SHINGLE_WORDS
    short = np.repeat(lengths < SHINGLE_WORDS, lengths)
    hashes = _mix64(np.where(short, flat, combined)[keep | short])
    counts = np.where(lengths < SHINGLE_WORDS, lengths, lengths - SHINGLE_WORDS + 1)
    # A text without words is the one empty shingle.
    empty = counts == 0
    if empty.any():
        offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
        hashes = np.insert(hashes, offsets[empty], _EMPTY)
        counts = np.where(empty, 1, counts)
    return hashes, np.concatenate(([0], np.cumsum(counts)[:-1]))


def _mix64(x: np.ndarray) -> np.ndarray:
    # splitmix64's finalizer: the shingle hashes above are linear in the word hashes, and the
    # permutations below are too; this makes the shingle hashes look independent.
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def signatures(texts: list[str]) -> np.ndarray:
    """The MinHash of each text's shingles, one ``uint32`` row per text, hashed in one numpy pass.

    Deterministic: same text, same row, in any process.
    """
    if not texts:
        return np.empty((0, NUM_PERM), dtype=np.uint32)
    hashes, offsets = _shingle_hashes(texts)
    # (permutation, shingle) so that each text's shingles are contiguous for the reduction.
    permuted = _PERM_A[:, None] * (hashes >> _U64(32)).astype(np.uint32)[None, :]
    permuted += _PERM_B[:, None]
    return np.minimum.reduceat(permuted, offsets, axis=1).T.copy()


def signature(text: str) -> Signature:
    """The MinHash of one text (see :func:`signatures`)."""
    return signatures([text])[0]


def estimate(a: Signature, b: Signature) -> float:
    """The MinHash estimate of the Jaccard similarity of the two texts' shingle sets."""
    return float(np.count_nonzero(a == b)) / NUM_PERM


@cache
def bands_for(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false-positive and false-negative areas at ``threshold``.

    A pair of estimated similarity s is proposed with probability 1 - (1 - s^rows)^bands.
    """
    s = np.linspace(0.0, 1.0, 1001)
    below, above = s <= threshold, s >= threshold
    best, best_cost = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            proposed = 1.0 - (1.0 - s**rows) ** bands
            # the two areas, as Riemann sums on the grid
            cost = (LSH_WEIGHTS[0] * proposed[below].sum() + LSH_WEIGHTS[1] * (1.0 - proposed[above]).sum()) / len(s)
            if cost < best_cost:
                best, best_cost = (bands, rows), cost
    return best


def band_keys(rows: np.ndarray, bands: int, per_band: int) -> np.ndarray:
    """(n, bands) ``uint64`` keys: band j of a row hashes its ``per_band`` values and j itself."""
    used = rows[:, : bands * per_band].astype(np.uint64).reshape(len(rows), bands, per_band)
    mix = _BAND_MIX[: bands * per_band].reshape(bands, per_band)
    return (used * mix).sum(axis=2, dtype=np.uint64) ^ np.arange(bands, dtype=np.uint64)


class _Rows:
    """Signature rows by slot, in fixed chunks, and which sample each slot holds."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.ids: list[str | None] = []  # slot -> sample id; None once removed or rolled back
        self.dead: set[int] = set()  # slots whose id is None (their band keys go when their run merges)

    def append(self, sample_id: str, sig: Signature) -> int:
        slot = len(self.ids)
        if slot % CHUNK_ROWS == 0:
            self.chunks.append(np.empty((CHUNK_ROWS, NUM_PERM), dtype=np.uint32))
        self.chunks[-1][slot % CHUNK_ROWS] = sig
        self.ids.append(sample_id)
        return slot

    def take(self, slots: np.ndarray) -> np.ndarray:
        """The rows of ``slots``, in their order."""
        if len(slots) <= 8:  # a find()'s few candidates: cheaper one by one than grouped by chunk
            return np.stack([self.chunks[s // CHUNK_ROWS][s % CHUNK_ROWS] for s in slots.tolist()])
        out = np.empty((len(slots), NUM_PERM), dtype=np.uint32)
        chunk_of = slots // CHUNK_ROWS
        for chunk in np.unique(chunk_of):
            at = chunk_of == chunk
            out[at] = self.chunks[chunk][slots[at] % CHUNK_ROWS]
        return out

    def extend(self, ids: list[str], rows: np.ndarray) -> None:
        """Append many rows at once (a restore into an empty store)."""
        assert not self.ids, "extend an empty store"
        full = len(ids) // CHUNK_ROWS * CHUNK_ROWS
        self.chunks = [rows[start:start + CHUNK_ROWS] for start in range(0, full, CHUNK_ROWS)]  # views, no copy
        if full < len(ids):  # the last chunk is appended to: a chunk of its own
            chunk = np.empty((CHUNK_ROWS, NUM_PERM), dtype=np.uint32)
            chunk[: len(ids) - full] = rows[full:]
            self.chunks.append(chunk)
        self.ids.extend(ids)

    def take_sorted(self, slots: np.ndarray) -> np.ndarray:
        """The rows of ascending ``slots``, a slice of each chunk at a time (a million rows in ~0.1 s)."""
        out = np.empty((len(slots), NUM_PERM), dtype=np.uint32)
        bounds = np.searchsorted(slots, np.arange(len(self.chunks) + 1) * CHUNK_ROWS)
        for chunk, (lo, hi) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist())):
            out[lo:hi] = self.chunks[chunk][slots[lo:hi] - chunk * CHUNK_ROWS]
        return out

    def kill(self, slot: int) -> None:
        self.ids[slot] = None
        self.dead.add(slot)

    def revive(self, slot: int, sample_id: str) -> None:
        self.ids[slot] = sample_id
        self.dead.discard(slot)


class _Index:
    """One (unit, pathway)'s band keys: sorted runs of (key, slot), and a dict of the newest slots."""

    def __init__(self, threshold: float, rows: _Rows) -> None:
        self.threshold = threshold  # tuned once: a changed spec takes effect when the index is rebuilt
        self.bands, self.rows = bands_for(round(min(threshold, MAX_LSH_THRESHOLD), 4))
        self.store = rows
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted band keys, their slots)
        # band key -> the newest slot added since the last run was written, and the slots before it
        self.recent: dict[int, int] = {}
        self.older: defaultdict[int, list[int]] = defaultdict(list)
        self.recent_slots: list[int] = []

    def keys(self, rows: np.ndarray) -> np.ndarray:
        return band_keys(rows, self.bands, self.rows)

    def insert(self, slot: int, keys: list[int]) -> None:
        for key in list(filter(self.recent.__contains__, keys)):  # rare: a band shared with a recent sample
            self.older[key].append(self.recent[key])
        self.recent.update(zip(keys, repeat(slot)))
        self.recent_slots.append(slot)

    def uninsert(self, slot: int, keys: list[int]) -> None:
        """Undo :meth:`insert` of the newest pending slot (rollback runs newest first)."""
        for key in keys:
            if self.older.get(key):
                self.recent[key] = self.older[key].pop()
            else:
                del self.recent[key]
        self.recent_slots.remove(slot)

    def run_candidates(self, keys: np.ndarray) -> list[np.ndarray]:
        """For each row of ``keys`` (n, bands), the slots in the sorted runs sharing a band key."""
        found: list[list[np.ndarray]] = [[] for _ in range(len(keys))]
        if not self.runs:
            return [_NO_SLOTS] * len(keys)
        flat = keys.ravel()
        order = np.argsort(flat)  # probing in key order walks each run once: ~3x faster on large runs
        probes = flat[order]
        for run_keys, run_slots in self.runs:
            lo = np.searchsorted(run_keys, probes)
            hit = run_keys[np.minimum(lo, len(run_keys) - 1)] == probes
            if not hit.any():
                continue
            hi = np.searchsorted(run_keys, probes[hit], side="right")  # a key can hold several slots
            for at, start, end in zip(order[hit].tolist(), lo[hit].tolist(), hi.tolist()):
                found[at // self.bands].append(run_slots[start:end])
        return [np.concatenate(f) if f else _NO_SLOTS for f in found]

    def run_matches(self, sigs: np.ndarray, keys: np.ndarray, threshold: float) -> list[dict[int, int]]:
        """For each text, {slot: permutations equal} of the samples in the runs sharing a band with it
        whose estimate reaches ``threshold``.

        One gather and one comparison for a whole prepared batch: the runs do not change until
        the next commit (a slot removed meanwhile is skipped by find()).
        """
        per_text = self.run_candidates(keys)
        counts = [len(found) for found in per_text]
        if not any(counts):
            return [{} for _ in per_text]
        slots = np.concatenate(per_text)
        owner = np.repeat(np.arange(len(sigs)), counts)
        equal = np.count_nonzero(self.store.take(slots) == sigs[owner], axis=1)
        near = equal / NUM_PERM >= threshold
        out: list[dict[int, int]] = [{} for _ in per_text]
        for at, slot, n in zip(owner[near].tolist(), slots[near].tolist(), equal[near].tolist()):
            out[at][slot] = n
        return out

    def recent_candidates(self, keys: Iterable[int]) -> list[int]:
        """Slots added since the last run was written that share a band key with ``keys``."""
        found = [slot for slot in map(self.recent.get, keys) if slot is not None]
        if self.older:
            found += [slot for slots in filter(None, map(self.older.get, keys)) for slot in slots]
        return found

    def write_run(self) -> None:
        """Move the dict tier into a sorted run, then merge runs of similar size (log-structured)."""
        slots = np.array(self.recent_slots, dtype=np.int64)
        self.recent, self.older, self.recent_slots = {}, defaultdict(list), []
        if len(slots):
            self._push(self.keys(self.store.take(slots)).ravel(), np.repeat(slots, self.bands))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            (k1, s1), (k2, s2) = self.runs.pop(), self.runs.pop()
            self._push(np.concatenate((k2, k1)), np.concatenate((s2, s1)))

    def runs_without(self, alive: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """The sorted runs with only the keys of ``alive`` slots (a mask by slot), the dict tier as one more
        run (newest last)."""
        runs = list(self.runs)
        recent = np.array(self.recent_slots, dtype=np.int64)
        if len(recent):
            keys = self.keys(self.store.take(recent)).ravel()
            order = np.argsort(keys, kind="stable")
            runs.append((keys[order], np.repeat(recent, self.bands)[order]))
        kept = []
        for keys, slots in runs:
            keep = alive[slots]
            if keep.any():  # an empty run would break run_candidates' lookups
                kept.append((keys[keep], slots[keep]))
        return kept

    def _push(self, keys: np.ndarray, slots: np.ndarray) -> None:
        if self.store.dead:  # removed samples' keys are dropped here
            alive = ~np.isin(slots, np.fromiter(self.store.dead, dtype=np.int64))
            keys, slots = keys[alive], slots[alive]
        order = np.argsort(keys, kind="stable")
        self.runs.append((keys[order], slots[order].astype(np.int32)))


_NO_SLOTS = np.empty(0, dtype=np.int32)


class _Prepared:
    """A text's signature and, for one index, its band keys and its near-duplicates in the sorted runs
    at ``threshold`` (a find() at a lower threshold hashes the text again)."""

    __slots__ = ("sig", "keys", "run_matches", "threshold")

    def __init__(self, sig: Signature, keys: list[int], run_matches: dict[int, int], threshold: float) -> None:
        self.sig, self.keys, self.run_matches, self.threshold = sig, keys, run_matches, threshold


class NearDuplicates:
    """Admitted samples' signatures, one LSH index per (unit, pathway), with pending changes.

    ``threshold`` is the unit's ``near_duplicate_threshold`` (estimated Jaccard of shingle
    sets, 0 to 1). The first call that names a (unit, pathway) with a threshold above 0 builds
    its index, tuned to that threshold; later calls verify candidates against the threshold
    they pass (a changed spec takes effect on restart, when the index is rebuilt). A threshold
    of 0 turns near-duplicate detection off: ``find`` answers None and ``add`` keeps nothing.
    """

    def __init__(self) -> None:
        self._indexes: dict[tuple[str, str], _Index] = {}
        self._rows = _Rows()  # every index's signatures: a slot names a sample whatever its index
        self._slot_of: dict[str, int] = {}  # sample id -> its slot
        self._undo: list[Callable[[], None]] = []
        # Texts hashed by prepare() for the current batch, per index; the runs do not change
        # until commit(), so their candidates stay valid until then.
        self._prepared: dict[tuple[int, str], _Prepared] = {}

    # -- batch discipline -----------------------------------------------------------------

    def commit(self) -> None:
        """The batch is durable: its adds and removes stay."""
        self._undo.clear()
        self._prepared.clear()
        for index in self._indexes.values():
            if len(index.recent_slots) >= RECENT_MAX:
                index.write_run()

    def rollback(self) -> None:
        """The batch failed and will be read again: undo its adds and removes, newest first."""
        while self._undo:
            self._undo.pop()()
        self._prepared.clear()

    @property
    def pending(self) -> int:
        return len(self._undo)

    def __len__(self) -> int:
        """How many samples are indexed (pending ones included)."""
        return len(self._slot_of)

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self._slot_of

    # -- queries --------------------------------------------------------------------------

    def prepare(self, unit: str, pathway: str, texts: list[str], threshold: float) -> None:
        """Hash a batch's texts in one pass, and look up the sorted runs for all of them at once."""
        if threshold <= 0 or not texts:
            return
        index = self._index(unit, pathway, threshold)
        todo = list(dict.fromkeys(t for t in texts if (id(index), t) not in self._prepared))
        if todo:
            self._hash(index, todo, threshold)

    def find(self, unit: str, pathway: str, text: str, threshold: float) -> str | None:
        """The id of an indexed sample of (unit, pathway) whose estimated Jaccard with ``text``
        is at least ``threshold``: the most similar one, ties by smallest id. None if there is none."""
        if threshold <= 0:
            return None
        index = self._indexes.get((unit, pathway))
        if index is None:
            return None
        probe = self._lookup(index, text, threshold)
        equal = dict(probe.run_matches)
        recent = [slot for slot in index.recent_candidates(probe.keys) if slot not in equal]
        if recent:
            counts = np.count_nonzero(self._rows.take(np.array(recent)) == probe.sig, axis=1)
            equal.update(zip(recent, counts.tolist()))
        ids = self._rows.ids
        matches = [(-n, ids[slot]) for slot, n in equal.items() if n / NUM_PERM >= threshold and ids[slot] is not None]
        return min(matches)[1] if matches else None  # type: ignore[return-value]

    # -- changes --------------------------------------------------------------------------

    def add(self, unit: str, pathway: str, sample_id: str, text: str, threshold: float) -> None:
        """Index an admitted sample (pending). Does nothing when ``threshold`` is 0 or the id is indexed."""
        if threshold <= 0 or sample_id in self._slot_of:
            return
        index = self._index(unit, pathway, threshold)
        prepared = self._lookup(index, text, threshold)
        slot = self._rows.append(sample_id, prepared.sig)
        index.insert(slot, prepared.keys)
        self._slot_of[sample_id] = slot
        self._undo.append(lambda: self._unadd(index, slot, prepared.keys))

    def remove(self, sample_id: str) -> None:
        """Forget a sample, e.g. a retracted one (pending). Unknown ids are ignored."""
        slot = self._slot_of.pop(sample_id, None)
        if slot is None:
            return
        self._rows.kill(slot)  # a tombstone: lookups skip it, the next merge of its run drops its keys
        self._undo.append(lambda: self._unremove(sample_id, slot))

    # -- checkpoints ----------------------------------------------------------------------

    def export(self) -> tuple[list[list[Any]], list[str], dict[str, np.ndarray]]:
        """The committed index as plain data: its indexes as ``[unit, pathway, threshold, run sizes]``,
        the ids of the indexed samples in the order added, and arrays: per sample its index number
        (``which``) and signature (``rows``); the indexes' sorted runs, back to back (``run_keys``,
        ``run_slots``; the dict tier becomes one more run). Removed samples are left out and the
        slots renumbered, so a restore reads the runs as they are, without sorting again."""
        assert not self._undo, "export a committed index"
        owner = np.full(len(self._rows.ids), -1, dtype=np.int32)  # slot -> number of its index, -1: removed
        for number, index in enumerate(self._indexes.values()):
            for _, slots in index.runs:
                owner[slots] = number
            owner[index.recent_slots] = number
        owner[np.fromiter(self._rows.dead, dtype=np.int64)] = -1
        live = np.flatnonzero(owner >= 0)
        renumbered = np.full(len(owner), -1, dtype=np.int32)
        renumbered[live] = np.arange(len(live), dtype=np.int32)
        indexes, run_keys, run_slots = [], [], []
        for (unit, pathway), index in self._indexes.items():
            runs = index.runs_without(owner >= 0)
            indexes.append([unit, pathway, index.threshold, [len(keys) for keys, _ in runs]])
            run_keys += [keys for keys, _ in runs]
            run_slots += [renumbered[slots] for _, slots in runs]
        arrays = {"which": owner[live], "rows": self._rows.take_sorted(live),
                  "run_keys": np.concatenate([*run_keys, np.empty(0, dtype=np.uint64)]),
                  "run_slots": np.concatenate([*run_slots, _NO_SLOTS])}
        ids = self._rows.ids
        return indexes, [ids[s] for s in live.tolist()], arrays  # type: ignore[misc]

    def restore(self, indexes: list[list[Any]], ids: list[str], arrays: dict[str, np.ndarray]) -> None:
        """Put back what :meth:`export` gave, into an empty index."""
        assert not self._slot_of, "restore into an empty index"
        self._rows.extend(ids, arrays["rows"])
        self._slot_of = dict(zip(ids, range(len(ids))))
        at = 0
        for unit, pathway, threshold, sizes in indexes:
            index = self._index(unit, pathway, float(threshold))
            for size in sizes:
                index.runs.append((arrays["run_keys"][at:at + size], arrays["run_slots"][at:at + size]))
                at += size

    # -- internals ------------------------------------------------------------------------

    def _index(self, unit: str, pathway: str, threshold: float) -> _Index:
        key = (unit, pathway)
        if key not in self._indexes:
            self._indexes[key] = _Index(threshold, self._rows)
        return self._indexes[key]

    def _lookup(self, index: _Index, text: str, threshold: float) -> _Prepared:
        prepared = self._prepared.get((id(index), text))
        if prepared is not None and prepared.threshold <= threshold:
            return prepared
        return self._hash(index, [text], threshold)[0]

    def _hash(self, index: _Index, texts: list[str], threshold: float) -> list[_Prepared]:
        sigs = signatures(texts)
        keys = index.keys(sigs)
        matches = index.run_matches(sigs, keys, threshold)
        prepared = [_Prepared(sig, row_keys, near, threshold)
                    for sig, row_keys, near in zip(sigs, keys.tolist(), matches)]
        self._prepared.update(((id(index), text), p) for text, p in zip(texts, prepared))
        return prepared

    def _unadd(self, index: _Index, slot: int, keys: list[int]) -> None:
        del self._slot_of[self._rows.ids[slot]]  # type: ignore[arg-type]
        index.uninsert(slot, keys)
        self._rows.kill(slot)

    def _unremove(self, sample_id: str, slot: int) -> None:
        self._rows.revive(slot, sample_id)
        self._slot_of[sample_id] = slot
