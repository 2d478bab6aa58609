"""The shard plan: deterministic shards (input file x row range x config fingerprint) from Parquet
footers only, and the work a run asks for (`sdgen plan`: seconds for 10M rows, no torch).
docs/DESIGN.md §5: a shard's name never changes for the same file, rows and config."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core import schema
from pipeline.generate.inputs import Scan, Shard, check_schema, read_footer


def _relpath(path: str, root: str) -> str:
    return (
        path[len(root) :].lstrip("/") if path.startswith(root) and path != root else path.rsplit("/", 1)[-1]
    )


def shard_name(relpath: str, start: int, stop: int, fingerprint: str) -> str:
    stem = "".join(
        c if c.isalnum() or c in "-_" else "_" for c in relpath.rsplit("/", 1)[-1].removesuffix(".parquet")
    )
    path_hash = hashlib.sha256(relpath.encode()).hexdigest()[:8]
    return f"{stem[:40]}-{path_hash}-{start:09d}-{stop:09d}-{fingerprint[:8]}"


def plan_shards(
    fs,
    files: list[str],
    root: str,
    rows_per_shard: int,
    fingerprint: str,
    scan: Scan | None = None,
    policy: str = "number",
) -> tuple[list[Shard], dict[str, int]]:
    """Shards from Parquet footers only. Returns (shards, rows per file)."""
    shards, rows = [], {}
    occ_by_file: dict[str, dict[int, int]] = {}
    for (path, row), k in scan.occurrence.items() if scan else ():
        occ_by_file.setdefault(path, {})[row] = k
    for path in files:
        n = read_footer(fs, path).num_rows
        rows[path] = n
        rel, occ = _relpath(path, root), occ_by_file.get(path, {})
        for start in range(0, n, rows_per_shard):
            stop = min(n, start + rows_per_shard)
            local = {r: k for r, k in occ.items() if start <= r < stop}
            shard = Shard(shard_name(rel, start, stop, fingerprint), path, start, stop)
            if policy == "first":
                shard.skip = tuple(sorted(local))
            elif policy == "number":
                shard.renames = local
            shards.append(shard)
    return shards, rows


def shard_images(fs, path: str, shards: list[Shard], default_ipp: int) -> dict[str, int]:
    """Images each shard of one (small) file asks for, exactly: a quota round's file, which the scan
    never sees, so the progress bar's total counts what the round really makes."""
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        if "images_per_prompt" not in pf.schema_arrow.names:
            return {s.name: (s.stop - s.start) * default_ipp for s in shards}
        v = np.asarray(
            pc.fill_null(pf.read(columns=["images_per_prompt"]).column(0), default_ipp), dtype=np.int64
        )
    return {s.name: int(v[s.start : s.stop].sum()) for s in shards}


def count_work(fs, files: list[str], g) -> dict:
    """Images and pixel-steps (sum of images x width x height x steps) the input asks for under the
    generation config `g` (resolved sizes), and how many rows set their own images_per_prompt. Reads
    the footers and the override columns only; a file without a `prompt` column is an InputError."""
    out = {"images": 0, "pixel_steps": 0, "rows_overriding_images_per_prompt": 0}
    for path in files:
        sch = read_footer(fs, path).schema.to_arrow_schema()
        check_schema(path, sch)
        cols = [c for c in ("images_per_prompt", "width", "height", "steps") if c in sch.names]
        with fs.open(path, "rb") as f:
            # ParquetFile, not read_table: pyarrow 25-26's dataset reader over a Python file object can
            # abort the interpreter at exit ("terminate called without an active exception")
            t = pq.ParquetFile(f).read(columns=cols or [schema.PROMPT])
        v = {
            c: np.asarray(pc.fill_null(t.column(c), d).cast(pa.float64()), dtype=np.float64)
            if c in cols
            else np.full(t.num_rows, float(d))
            for c, d in (
                ("images_per_prompt", g.images_per_prompt),
                ("width", g.width),
                ("height", g.height),
                ("steps", g.steps),
            )
        }
        out["images"] += int(v["images_per_prompt"].sum())
        out["pixel_steps"] += int((v["images_per_prompt"] * v["width"] * v["height"] * v["steps"]).sum())
        if "images_per_prompt" in cols:
            out["rows_overriding_images_per_prompt"] += t.num_rows - t.column("images_per_prompt").null_count
    return out
