"""`sdgen dedup OUTPUT`: near-duplicate images, within and across prompts, as decisions beside the data.

    OUTPUT/dedup/<name>/decisions.parquet  prompt_id, sample_idx, duplicate, dup_of (key of the kept
                                           image, "<prompt_id>#<sample_idx>"), dup_of_prompt_id,
                                           dup_of_sample_idx, distance (to the kept image), cluster_size
    OUTPUT/dedup/<name>/dedup.json         method, threshold, counts, the run it was applied to

Parts are never rewritten. Pairs are found without comparing all pairs:
  * pHash (default): multi-index hashing. With threshold T the 64 bits are cut into T+1 bands; two
    hashes within Hamming distance T agree exactly on at least one band (pigeonhole), so only rows
    sharing a band value are compared. Rows without a stored `phash` are hashed from their PNG.
  * --by-embedding: cosine similarity of `clip_image_embedding` through a faiss inverted-file index
    (k nearest neighbours of every row, kept when cos >= threshold); exact (flat) below 20k rows.
Near-duplicate pairs are joined into clusters (connected components); each cluster keeps its first
row in (prompt_id, sample_idx) order and marks the rest `duplicate` with `dup_of` = the kept key.
A policy reads them with `dedup: <name>` and a rule on `duplicate` (pipeline/curate/policy.py).
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import layout
from pipeline.core.storage import Output, read_decisions
from pipeline.probes.phash import hamming, phash_png, to_uint64

DECISION_COLUMNS = [
    "prompt_id",
    "sample_idx",
    "duplicate",
    "dup_of",
    "dup_of_prompt_id",
    "dup_of_sample_idx",
    "distance",
    "cluster_size",
]
MAX_PAIRS_PER_STEP = 1 << 22  # candidate pairs verified at once: bounds memory on crowded buckets


class DedupError(ValueError):
    """dedup cannot run as asked; the message names the output, column or value."""


# ---------------------------------------------------------------- pairs
def _bands(threshold: int) -> list[tuple[int, int]]:
    m = threshold + 1
    edges = np.linspace(0, 64, m + 1).round().astype(int)
    return [(int(a), int(b - a)) for a, b in zip(edges[:-1], edges[1:])]


def hash_pairs(h: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j), i < j, with Hamming(h[i], h[j]) <= threshold; each pair may appear more than once."""
    if not 0 <= threshold < 32:
        raise DedupError(f"--threshold for pHash is a Hamming distance in [0, 31], got {threshold!r}")
    h = np.asarray(h, np.uint64)
    out_i, out_j = [], []
    for shift, width in _bands(threshold):
        band = (h >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(band, kind="stable")
        sb = band[order]
        starts = np.flatnonzero(np.r_[True, sb[1:] != sb[:-1]])
        end = np.repeat(np.r_[starts[1:], len(sb)], np.diff(np.r_[starts, len(sb)]))
        pos, d = np.flatnonzero(end - np.arange(len(sb)) > 1), 1
        while len(pos):  # positions k with a partner k + d in the same bucket: work = candidate pairs
            for chunk in np.array_split(pos, max(1, len(pos) // MAX_PAIRS_PER_STEP + 1)):
                a, b = order[chunk], order[chunk + d]
                ok = hamming(h[a], h[b]) <= threshold
                out_i.append(np.minimum(a, b)[ok])
                out_j.append(np.maximum(a, b)[ok])
            d += 1
            pos = pos[pos + d < end[pos]]
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_i), np.concatenate(out_j)


def embedding_pairs(
    x: np.ndarray, threshold: float, k: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, cos) for each row's k nearest neighbours with cos >= threshold (faiss, inner product of
    normalised rows); an IVF index above 20k rows (nlist ~ 4 sqrt(n), 8 probes), exact below."""
    import faiss

    if not -1.0 <= threshold <= 1.0:
        raise DedupError(f"--threshold for embeddings is a cosine in [-1, 1], got {threshold!r}")
    x = np.ascontiguousarray(x, np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    n, dim = x.shape
    if n < 20_000:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        index.train(x[rng.choice(n, min(n, 64 * nlist), replace=False)])
        index.nprobe = 8
    index.add(x)
    out = ([], [], [])
    kk = min(k + 1, n)
    for s in range(0, n, 65536):
        sims, nn = index.search(x[s : s + 65536], kk)
        rows = np.repeat(np.arange(s, s + len(nn)), kk)
        nn, sims = nn.ravel(), sims.ravel()
        ok = (nn >= 0) & (nn != rows) & (sims >= threshold)
        out[0].append(np.minimum(rows, nn)[ok])
        out[1].append(np.maximum(rows, nn)[ok])
        out[2].append(sims[ok])
    return tuple(np.concatenate(o) if o else np.zeros(0) for o in out)


def clusters(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component label of each of n rows, given undirected edges (i, j)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    return connected_components(g, directed=False)[1]


def decide(keys: pd.DataFrame, labels: np.ndarray, distance_to) -> pd.DataFrame:
    """Keep the first row of each cluster in (prompt_id, sample_idx) order; the rest point to it.
    `distance_to(rows, kept_rows)` gives each duplicate's distance to its kept image."""
    keys = keys.reset_index(drop=True)
    order = np.lexsort((keys["sample_idx"].to_numpy(), keys["prompt_id"].to_numpy().astype(str)))
    first = np.full(labels.max() + 1 if len(labels) else 0, -1)
    for r in order[::-1]:  # the last write wins: the first row in order
        first[labels[r]] = r
    kept = first[labels]
    dup = kept != np.arange(len(keys))
    size = np.bincount(labels)[labels]
    distance = np.full(len(keys), np.nan)
    if dup.any():
        distance[dup] = distance_to(np.flatnonzero(dup), kept[dup])
    kp, ks = keys["prompt_id"].to_numpy(object)[kept], keys["sample_idx"].to_numpy()[kept]
    return pd.DataFrame(
        {
            "prompt_id": keys["prompt_id"],
            "sample_idx": keys["sample_idx"].astype("int32"),
            "duplicate": dup,
            "dup_of": np.where(dup, [f"{p}#{s}" for p, s in zip(kp, ks)], None),
            "dup_of_prompt_id": np.where(dup, kp, None),
            "dup_of_sample_idx": pd.Series(ks, dtype="Int32").where(dup),
            "distance": distance,
            "cluster_size": size.astype("int32"),
        },
        columns=DECISION_COLUMNS,
    )


# ---------------------------------------------------------------- reading an output
def _ok_rows(out: Output, column: str):
    """(keys DataFrame, values) of every ok row, part by part; rows missing a pHash are hashed from PNG."""
    keys, values = [], []
    for shard in out.valid_commits("size"):  # committed parts only, checked against their markers
        with out.fs.open(out.part_path(shard), "rb") as fh:
            keys, values = _part_rows(shard, pq.ParquetFile(fh), column, keys, values)
    return _finish_rows(keys, values, column, out.url)


def _part_rows(shard: str, f, column: str, keys: list, values: list):
    """Append one part's ok rows (keys, values of ``column``) to the running lists."""
    names = f.schema_arrow.names
    if column == "clip_image_embedding" and column not in names:
        raise DedupError(
            f"part {shard!r} has no clip_image_embedding column; run with write.embeddings: true "
            f"or dedup by pHash (without --by-embedding)"
        )
    cols = ["prompt_id", "sample_idx", "status"] + ([column] if column in names else [])
    for batch in f.iter_batches(columns=cols, batch_size=8192):
        t = pa.Table.from_batches([batch])
        t = t.filter(pa.compute.equal(t.column("status"), "ok"))
        if column == "phash" and "phash" not in names or column == "phash" and t.column("phash").null_count:
            t = _hash_missing(f, t, names)
        keys.append(t.select(["prompt_id", "sample_idx"]).to_pandas())
        col = t.column(column)
        values.append(
            to_uint64(col.to_pylist())
            if column == "phash"
            else col.combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(len(t), -1)
        )
    return keys, values


def _finish_rows(keys: list, values: list, column: str, url: str = ""):
    if not keys:
        raise DedupError(f"{url!r} has no committed rows yet")
    return pd.concat(keys, ignore_index=True), np.concatenate(values)


def _hash_missing(f, t: pa.Table, names) -> pa.Table:
    """pHash from the stored PNGs for rows without one (outputs written before the column existed)."""
    have = t.column("phash").to_pylist() if "phash" in names else [None] * t.num_rows
    want = {
        (p, s)
        for p, s, h in zip(t.column("prompt_id").to_pylist(), t.column("sample_idx").to_pylist(), have)
        if h is None
    }
    found = {}
    for b in f.iter_batches(columns=["prompt_id", "sample_idx", "image"], batch_size=256):
        for p, s, im in zip(*(b.column(c).to_pylist() for c in ("prompt_id", "sample_idx", "image"))):
            if (p, s) in want and im is not None:
                found[(p, s)] = phash_png(im["bytes"])
    hashes = [
        h if h is not None else found[(p, s)]
        for p, s, h in zip(t.column("prompt_id").to_pylist(), t.column("sample_idx").to_pylist(), have)
    ]
    t = t.drop_columns(["phash"]) if "phash" in names else t
    return t.append_column("phash", pa.array(hashes, pa.string()))


def dedup_dir(out: Output, name: str) -> str:
    if not re.fullmatch(r"[\w.-]+", name):
        raise DedupError(f"dedup name {name!r} must use letters, digits, '.', '_' or '-' (it names a folder)")
    return out.path(layout.dedup_file(name))


def run_dedup(
    output_url: str, threshold=None, by_embedding: bool = False, name: str | None = None, storage=None
) -> dict:
    """Find near-duplicates among the ok rows and write the decisions; returns the record."""
    out = Output(output_url, storage)
    run = out.read_json(out.path(layout.RUN))
    if run is None:
        raise DedupError(f"{output_url!r} is not an sdgen output (no run.json)")
    if by_embedding:
        threshold = 0.95 if threshold is None else float(threshold)
        keys, x = _ok_rows(out, "clip_image_embedding")
        i, j, _ = embedding_pairs(x.astype(np.float32), threshold)
        xn = x.astype(np.float32) / np.linalg.norm(x.astype(np.float32), axis=1, keepdims=True).clip(1e-12)
        dist = lambda a, b: 1.0 - (xn[a] * xn[b]).sum(1)  # noqa: E731  cosine distance to the kept image
    else:
        threshold = 4 if threshold is None else int(threshold)
        keys, h = _ok_rows(out, "phash")
        i, j = hash_pairs(h, threshold)
        dist = lambda a, b: hamming(h[a], h[b])  # noqa: E731
    dec = decide(keys, clusters(len(keys), i, j), dist)
    name = name or ("embedding" if by_embedding else "phash")
    d = dedup_dir(out, name)
    out.write_table(f"{d}/decisions.parquet", dec)
    record = {
        "name": name,
        "method": "embedding-cosine" if by_embedding else "phash-hamming",
        "threshold": threshold,
        "rows": len(dec),
        "duplicates": int(dec["duplicate"].sum()),
        "clusters_with_duplicates": int(dec.loc[dec["duplicate"], "dup_of"].nunique()),
        "run_fingerprint": run.get("fingerprint"),
        "dir": d,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    out.write_json(f"{d}/dedup.json", record)
    return record


def read_dedup(output_url: str, name: str, storage=None) -> pd.DataFrame:
    out = Output(output_url, storage)
    folder = dedup_dir(out, name)
    return read_decisions(
        out,
        folder,
        DedupError(
            f"no dedup decisions at {folder + '/decisions.parquet'!r}; run sdgen dedup {output_url} first"
        ),
    )
