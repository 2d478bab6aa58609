"""Dataset-side costs (issue 12): pHash per 512x512 image on one core; sdgen dedup's pair finding over
1,000,000 synthetic hashes and 1,000,000 synthetic embeddings (time and peak RSS, each stage in its own
process so peaks do not mix). Numbers printed and saved, not asserted.

    python benchmarks/bench_dataset.py [--n 1000000] [--dim 64] [--only phash|hashes|embeddings]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bench_phash(reps: int = 200) -> dict:
    from PIL import Image

    from pipeline.probes.phash import phash_image

    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (16, 16, 3)), np.ones((32, 32, 1))).astype(np.uint8)  # 512x512
    imgs = [Image.fromarray(np.roll(smooth, k, axis=0)) for k in range(8)]
    for im in imgs:
        phash_image(im)
    t = time.perf_counter()
    for k in range(reps):
        phash_image(imgs[k % 8])
    return {"phash_ms_per_512px_image": round((time.perf_counter() - t) / reps * 1000, 3), "reps": reps}


def synthetic_hashes(n: int, dup_frac: float = 0.05, seed: int = 0) -> np.ndarray:
    """n random 64-bit hashes; a dup_frac share are copies of others with 0-3 bits flipped."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) | (
        rng.integers(0, 2, n).astype(np.uint64) << 63
    )
    k = int(n * dup_frac)
    src, dst = rng.choice(n, k, replace=False), rng.choice(n, k, replace=False)
    flips = np.zeros(k, np.uint64)
    for _ in range(3):
        flips |= (rng.random(k) < 0.5).astype(np.uint64) << rng.integers(0, 64, k).astype(np.uint64)
    h[dst] = h[src] ^ flips
    return h


def bench_hashes(n: int, threshold: int = 4) -> dict:
    from benchmarks.common import peak_rss_mb
    from pipeline.curate.dedup import clusters, hash_pairs

    h = synthetic_hashes(n)
    t = time.perf_counter()
    i, j = hash_pairs(h, threshold)
    t_pairs = time.perf_counter() - t
    labels = clusters(n, i, j)
    total = time.perf_counter() - t
    dups = n - len(np.unique(labels))
    return {
        "hashes": n,
        "threshold": threshold,
        "pairs": int(len(i)),
        "duplicates": int(dups),
        "pairs_s": round(t_pairs, 2),
        "total_s": round(total, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def bench_embeddings(n: int, dim: int, threshold: float = 0.95) -> dict:
    from benchmarks.common import peak_rss_mb
    from pipeline.curate.dedup import clusters, embedding_pairs

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(n // 100, dim)).astype(np.float32)  # clustered, like images of prompts
    x = centres[rng.integers(0, len(centres), n)] + rng.normal(size=(n, dim)).astype(np.float32) * 0.6
    k = n // 50  # 2% near-copies
    x[rng.choice(n, k, replace=False)] = x[rng.choice(n, k, replace=False)] + 0.01 * rng.normal(size=(k, dim))
    x = x.astype(np.float16)  # as stored
    t = time.perf_counter()
    i, j, _ = embedding_pairs(x.astype(np.float32), threshold)
    labels = clusters(n, i, j)
    return {
        "embeddings": n,
        "dim": dim,
        "threshold": threshold,
        "pairs": int(len(i)),
        "duplicates": int(n - len(np.unique(labels))),
        "total_s": round(time.perf_counter() - t, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def _synthetic_output(root: str, n: int, size: int = 64, parts: int = 4) -> str:
    """An sdgen-shaped output of n noisy size x size PNGs in committed parts (as a run writes them)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from pipeline.core import schema
    from pipeline.core.storage import Output

    out, rng = Output(root), np.random.default_rng(0)
    sch = schema.output_schema(pa.schema([pa.field("group", pa.string())]), [pa.field("phash", pa.string())])
    for k, idx in enumerate(np.array_split(np.arange(n), parts)):
        rows = []
        for i in idx:
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(buf, format="PNG")
            rows.append(
                {
                    "prompt_id": f"p{i // 8}",
                    "sample_idx": int(i % 8),
                    "prompt": f"prompt {i // 8}",
                    "seed": int(i),
                    "status": "ok",
                    "group": "ab"[i % 2],
                    "phash": f"{int(i):016x}",
                    "image": {"bytes": buf.getvalue(), "path": f"p{i // 8}_{i % 8}.png"},
                }
            )
        spool = out.spool_path(f"s{k}")
        pq.write_table(pa.Table.from_pylist(rows, schema=sch), spool, row_group_size=32)
        out.commit_part(f"s{k}", spool, {"rows": len(rows)})
    out.write_json(out.path("run.json"), {"config": {"model": "synthetic"}, "fingerprint": "0" * 64})
    return root


def bench_export(n: int = 1000) -> dict:
    import shutil
    import tempfile

    from benchmarks.common import peak_rss_mb
    from pipeline.curate.export import export

    tmp = tempfile.mkdtemp(prefix="sdgen-bench-export-")
    try:
        url = _synthetic_output(os.path.join(tmp, "out"), n)
        size_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(url) for f in fs) / 1e6
        r = {"images": n, "output_mb": round(size_mb, 1)}
        for fmt in ("webdataset", "imagefolder"):
            t = time.perf_counter()
            export(url, fmt, os.path.join(tmp, fmt), shard_size=1000)
            r[f"{fmt}_s"] = round(time.perf_counter() - t, 2)
            t = time.perf_counter()
            export(url, fmt, os.path.join(tmp, fmt), shard_size=1000)  # everything reused
            r[f"{fmt}_rerun_s"] = round(time.perf_counter() - t, 3)
        r["peak_rss_mb"] = round(peak_rss_mb(), 1)
        return r
    finally:
        shutil.rmtree(tmp)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--only", choices=["phash", "hashes", "embeddings", "export"])
    a = p.parse_args()
    if a.only:
        r = {
            "phash": bench_phash,
            "hashes": lambda: bench_hashes(a.n),
            "embeddings": lambda: bench_embeddings(a.n, a.dim),
            "export": bench_export,
        }[a.only]()
        print(json.dumps(r))
        return
    results = {}
    for stage in ("phash", "hashes", "embeddings", "export"):
        cmd = [sys.executable, __file__, "--only", stage, "--n", str(a.n), "--dim", str(a.dim)]
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1" if stage == "phash" else os.environ.get("OMP_NUM_THREADS", "2"),
        }
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        results[stage] = json.loads(out.strip().splitlines()[-1])
    from benchmarks.common import report

    report("bench_dataset", results)


if __name__ == "__main__":
    main()
