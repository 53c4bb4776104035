"""Editor dedup and clustering throughput: exact hash vs MinHash vs MinHash LSH, and MiniLM clusters.

    python bench/editor_dedup.py [--n 100000] [--planted 0.1] [--threshold 0.85] [--dedup-batch 500] [--cluster-n 2000]

Samples are synthetic and deterministic (--seed): templated math word problems with worked
steps, tool-call transcripts and policy answers, with random names, numbers, items and cities;
a share (--planted) are planted near-duplicates of an earlier sample (a filler word, a synonym,
two sentences swapped, case and punctuation changed; one or two edits). Dedup rows, each over
all samples in order, samples per second and the ratio against the exact row of the same run:
  exact normalised hash   distillery.contracts.ids.normalized_hash + a set (the editor's exact dedup; baseline)
  MinHash signature only  distillery_editor.dedup.signatures (word 3-shingles, 128 permutations), batches of --dedup-batch
  NearDuplicates find+add the editor path: prepare() a batch of --dedup-batch (the editor's consumer batch,
                          up to batch_max_records = 500), find() each sample, add() it when
                          no near-duplicate, commit() per batch
  NearDuplicates rebuild  add() every sample, commit() every 4,096, as a restart does
"planted found" counts planted near-duplicates flagged; "recall J>=t" is the share flagged of those
whose true shingle-set Jaccard with their source reaches the threshold, "recall est>=t" of those whose
MinHash estimate does (what the LSH can lose, plus copies of a sample that was itself flagged and
so never indexed, compared with its source's source), "source kept" of those whose source was
admitted (what the index alone can lose); "other flagged" counts non-planted
samples flagged, with how many of them truly reach the threshold (shingle-set Jaccard) against
the sample named (templated texts can genuinely be near-duplicates). Then clustering: MiniLM
embeddings alone (baseline) and Clusters.assign + admit + commit, in batches of --batch.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from distillery.contracts.ids import normalized_hash
from distillery_editor.clusters import Clusters
from distillery_editor.dedup import NUM_PERM, NearDuplicates, estimate, shingles, signature, signatures

NAMES = ["Alice", "Bruno", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Julia", "Kofi", "Lena",
         "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor", "Wen", "Yusuf"]
ITEMS = ["apple", "notebook", "ticket", "candle", "shirt", "battery", "plant", "mug", "cable", "lamp", "ball", "kite"]
CITIES = ["Paris", "Lagos", "Osaka", "Lima", "Oslo", "Cairo", "Quito", "Perth", "Denver", "Hanoi", "Porto", "Accra"]
TOOLS = [("get_weather", "city", "unit"), ("convert_currency", "amount", "target"), ("book_table", "restaurant", "time"),
         ("search_flights", "origin", "date"), ("get_stock_price", "symbol", "exchange")]
METRICS = ["price", "rating", "distance", "duration", "popularity"]
FILLERS = ["well", "so", "basically", "actually", "then", "now"]
SYNONYMS = {"buys": "purchases", "sells": "gives", "returns": "gives back", "started": "began", "answer": "reply",
            "lists": "shows", "customer": "client", "allows": "permits", "each": "apiece", "calls": "invokes"}


def math_sample(r: random.Random) -> str:
    name, other = r.sample(NAMES, 2)
    item = r.choice(ITEMS)
    a, b, c, d, e = r.randint(3, 40), r.randint(2, 30), r.randint(1, 20), r.randint(2, 50), r.randint(200, 2000)
    return (f"{name} buys {a} {item}s at {b} dollars each and sells {c} of them to {other} for {d} dollars each. "
            f"{name} started with {e} dollars. How many dollars does {name} have now? "
            f"Step 1: {a} * {b} = {a * b} dollars spent. Step 2: {c} * {d} = {c * d} dollars earned. "
            f"Step 3: {e} - {a * b} + {c * d} = {e - a * b + c * d}. #### {e - a * b + c * d}")


def tool_sample(r: random.Random) -> str:
    tool, arg1, arg2 = r.choice(TOOLS)
    name, city, metric = r.choice(NAMES), r.choice(CITIES), r.choice(METRICS)
    n, k, v = r.randint(3, 60), r.randint(1, 5), r.randint(10, 9999)
    return (f"{name} in {city} asks the assistant for help. The assistant calls {tool} with {arg1}={v} and "
            f"{arg2}={r.choice(CITIES).lower()}. The tool returns {n} results for {city}. "
            f"The answer lists the top {k} of them by {metric} and explains why {name} should pick the first.")


def policy_sample(r: random.Random) -> str:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    days, refund, credit = r.randint(5, 90), r.randint(7, 45), r.randint(46, 120)
    verdict = "a refund is possible" if days <= refund else (
        "only store credit is possible" if days <= credit else "neither a refund nor store credit is possible")
    return (f"The customer {name} bought a {item} {days} days ago and asks to return it. The policy allows refunds "
            f"within {refund} days and store credit within {credit} days of purchase, so the answer is that {verdict}.")


def edited(text: str, r: random.Random) -> str:
    """A light rewording: one or two edits of the kinds an LLM teacher repeats."""
    for _ in range(r.randint(1, 2)):
        words = text.split(" ")
        kind = r.randrange(4)
        if kind == 0:  # a filler word
            words.insert(r.randrange(len(words)), r.choice(FILLERS))
            text = " ".join(words)
        elif kind == 1:  # a synonym
            present = [w for w in SYNONYMS if f" {w} " in text]
            text = text.replace(f" {r.choice(present)} ", f" {SYNONYMS[r.choice(present)]} ", 1) if present else text
        elif kind == 2:  # two sentences swapped
            sentences = text.split(". ")
            if len(sentences) > 2:
                i = r.randrange(len(sentences) - 2)
                sentences[i], sentences[i + 1] = sentences[i + 1], sentences[i]
            text = ". ".join(sentences)
        else:  # case and punctuation
            text = text.lower().replace(". ", "; ").replace(" = ", "=")
    return text


@dataclass(frozen=True)
class Corpus:
    texts: list[str]
    source: dict[int, int]  # planted index -> the index it was derived from


def corpus(n: int, planted: float, seed: int) -> Corpus:
    r = random.Random(seed)
    makers = [math_sample, tool_sample, policy_sample]
    texts: list[str] = []
    source: dict[int, int] = {}
    for i in range(n):
        if i > 10 and r.random() < planted:
            j = r.randrange(i)
            source[i] = j
            texts.append(edited(texts[j], r))
        else:
            texts.append(makers[i % 3](r))
    return Corpus(texts, source)


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


@dataclass
class Row:
    name: str
    seconds: float
    flagged: dict[int, int] | None  # sample index -> index of the sample it duplicates


def timed(name: str, run: Callable[[], dict[int, int] | None]) -> Row:
    started = time.perf_counter()
    flagged = run()
    return Row(name, time.perf_counter() - started, flagged)


def exact(texts: list[str]) -> dict[int, int]:
    seen: dict[str, int] = {}
    flagged: dict[int, int] = {}
    for i, text in enumerate(texts):
        key = normalized_hash(text)
        if key in seen:
            flagged[i] = seen[key]
        else:
            seen[key] = i
    return flagged


def signatures_only(texts: list[str], batch: int) -> None:
    for start in range(0, len(texts), batch):
        signatures(texts[start:start + batch])


def find_and_add(texts: list[str], threshold: float, batch: int, unit: str = "bench") -> dict[int, int]:
    near = NearDuplicates()
    flagged: dict[int, int] = {}
    for start in range(0, len(texts), batch):  # the editor prepares, checks and commits per consumed batch
        near.prepare(unit, "answer", texts[start:start + batch], threshold)
        for i in range(start, min(start + batch, len(texts))):
            dup = near.find(unit, "answer", texts[i], threshold)
            if dup is None:
                near.add(unit, "answer", str(i), texts[i], threshold)
            else:
                flagged[i] = int(dup)
        near.commit()
    return flagged


def rebuild(texts: list[str], threshold: float, chunk: int = 4096) -> NearDuplicates:
    near = NearDuplicates()
    for start in range(0, len(texts), chunk):  # as EditorState.rebuild_samples does
        near.prepare("bench", "answer", texts[start:start + chunk], threshold)
        for i in range(start, min(start + chunk, len(texts))):
            near.add("bench", "answer", str(i), texts[i], threshold)
        near.commit()
    return near


def bytes_per_sample(texts: list[str], threshold: float) -> float:
    """Memory a NearDuplicates holds per indexed sample (signatures + LSH buckets), by tracemalloc."""
    tracemalloc.start()
    near = rebuild(texts, threshold)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return held / len(near)


def share(flagged: dict[int, int], among: set[int]) -> str:
    return f"{sum(i in flagged for i in among) / max(len(among), 1):.1%}"


def quality(row: Row, data: Corpus, reachable: set[int], estimated: set[int], threshold: float) -> list[str]:
    """Planted found, recall of the truly reachable, of the estimated-reachable ones, and of those whose
    source was itself admitted (what the index alone can lose), and the others flagged."""
    if row.flagged is None:
        return ["-"] * 5
    found = sum(i in row.flagged for i in data.source)
    indexed = {i for i in estimated if data.source[i] not in row.flagged}
    others = {i: j for i, j in row.flagged.items() if i not in data.source}
    genuine = sum(jaccard(data.texts[i], data.texts[j]) >= threshold for i, j in others.items())
    return [f"{found}/{len(data.source)}", share(row.flagged, reachable), share(row.flagged, estimated),
            share(row.flagged, indexed), f"{len(others)} ({genuine} true)"]


def clustering(texts: list[str], batch: int, similarity: float) -> list[tuple[str, float, str]]:
    from distillery.domain.embeddings import Embedder

    embedder = Embedder()
    embedder.embed(texts[:batch])  # load and warm up
    batches = [texts[i:i + batch] for i in range(0, len(texts), batch)]

    started = time.perf_counter()
    for chunk in batches:
        embedder.embed(chunk)
    embed_s = time.perf_counter() - started

    clusters = Clusters(embedder.embed)
    started = time.perf_counter()
    for chunk in batches:
        ids = clusters.assign("bench", chunk, similarity)
        for text, cluster_id in zip(chunk, ids):
            clusters.admit(cluster_id, 0, text)
        clusters.commit()
    assign_s = time.perf_counter() - started
    return [("MiniLM embed only (baseline)", embed_s, "-"),
            ("Clusters.assign + admit + commit", assign_s, str(len(clusters)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--planted", type=float, default=0.1)
    parser.add_argument("--threshold", type=float, default=0.85)  # EditorSpec.near_duplicate_threshold default
    parser.add_argument("--cluster-n", type=int, default=2000)
    parser.add_argument("--dedup-batch", type=int, default=500)
    parser.add_argument("--batch", type=int, default=64, help="clustering batch")
    parser.add_argument("--similarity", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    data = corpus(args.n, args.planted, args.seed)
    planted_j = {i: jaccard(data.texts[i], data.texts[j]) for i, j in data.source.items()}
    reachable = {i for i, j in planted_j.items() if j >= args.threshold}
    median = sorted(planted_j.values())[len(planted_j) // 2]
    estimated = {i for i, j in data.source.items()
                 if estimate(signature(data.texts[i]), signature(data.texts[j])) >= args.threshold}
    rows = [
        timed("exact normalised hash (baseline)", lambda: exact(data.texts)),
        timed("MinHash signature only", lambda: signatures_only(data.texts, args.dedup_batch)),
        timed("NearDuplicates find+add", lambda: find_and_add(data.texts, args.threshold, args.dedup_batch)),
        timed("NearDuplicates rebuild (add+commit)", lambda: (rebuild(data.texts, args.threshold), None)[1]),
    ]
    base = args.n / rows[0].seconds

    print(f"editor dedup: {args.n:,} synthetic samples, {len(data.source):,} planted near-duplicates "
          f"({len(reachable):,} at true shingle Jaccard >= {args.threshold}; median {median:.2f}), "
          f"threshold {args.threshold}, num_perm {NUM_PERM}, batches of {args.dedup_batch}")
    print(f"{'method':38} {'seconds':>8} {'samples/s':>10} {'vs exact':>9} {'planted found':>14} "
          f"{'recall J>=t':>11} {'recall est>=t':>13} {'source kept':>11} {'other flagged':>15}")
    for row in rows:
        rate = args.n / row.seconds
        found, recall, recall_est, recall_kept, others = quality(row, data, reachable, estimated, args.threshold)
        print(f"{row.name:38} {row.seconds:8.2f} {rate:10,.0f} {rate / base:9.3g} {found:>14} {recall:>11} "
              f"{recall_est:>13} {recall_kept:>11} {others:>15}")
    per_sample = bytes_per_sample(data.texts[:20_000], args.threshold)
    print(f"NearDuplicates memory: {per_sample / 1024:.1f} KiB per indexed sample (tracemalloc, first "
          f"{min(args.n, 20_000):,}), ~{per_sample * args.n / 2**20:,.0f} MiB for {args.n:,}; "
          f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")

    texts = data.texts[: args.cluster_n]
    results = clustering(texts, args.batch, args.similarity)
    print(f"\neditor clusters: {len(texts):,} samples, batches of {args.batch}, similarity {args.similarity}, "
          f"all-MiniLM-L6-v2 CPU, torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(f"{'method':38} {'seconds':>8} {'samples/s':>10} {'vs embed':>9} {'clusters':>14}")
    embed_rate = len(texts) / results[0][1]
    for name, seconds, note in results:
        rate = len(texts) / seconds
        print(f"{name:38} {seconds:8.2f} {rate:10,.0f} {rate / embed_rate:9.3g} {note:>14}")


if __name__ == "__main__":
    main()
