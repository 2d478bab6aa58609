"""The read side of an sdgen output: what status, verify, the contact sheet, the audit, the policy and
the report read, and only through here, so every reader gets the same rows and the same storage
settings (an ``s3://`` output whose credentials live in the job config authenticates everywhere).

A ``Dataset`` is the committed shards of one output: a part counts only when its marker is valid
(``Output.valid_commits``; ``check="size"`` by default: readers trust the writer's checksum, resume
re-hashes). Parts without a marker (a run died between publish and commit) are never read.

    ds = Dataset("s3://bucket/out", storage)          # storage: a StorageConfig or None (environment)
    ds.run                                             # run.json, or None for a folder sdgen did not make
    ds.table(columns=["prompt_id", "status"])          # no image bytes unless asked for
    ds.images([("p1", 0), ("p2", 3)])                  # PNG bytes of exactly these rows
    for batch in ds.batches(["image"], 64): ...        # streaming, one row group at a time
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core import layout
from pipeline.core.storage import Output, OutputError, read_parquet, read_schema

KEYS = ("prompt_id", "sample_idx")  # unique in every output: one row per (prompt id, sample index)


class Dataset:
    def __init__(self, url: str, storage=None, check: str = "size"):
        self.url, self.storage = url, storage
        self.output = Output(url, storage)
        self.run = None if self.output.fs.isfile(self.output.root) else self.output.read_json(
            self.output.path(layout.RUN))
        self.commits = self.output.valid_commits(check) if self.run is not None else {}
        self.files = [self.output.part_path(s) for s in sorted(self.commits)]

    @property
    def fs(self):
        return self.output.fs

    def require_run(self) -> "Dataset":
        """This dataset, or an OutputError when the location holds no sdgen output."""
        if self.run is None:
            raise OutputError(f"{self.url!r} has no run.json: not an sdgen output")
        return self

    @property
    def rows(self) -> int:
        return sum(m["rows"] for m in self.commits.values())

    def columns(self) -> list[str]:
        """Column names of the first committed part (parts of one output share their schema)."""
        return read_schema(self.fs, self.files[0]).names if self.files else []

    def table(self, columns=None, images: bool = False) -> pa.Table:
        """Committed rows in shard order; ``columns`` missing from the parts are skipped; the image
        column is read only when ``images`` is true or it is named in ``columns``."""
        names = self.columns()
        if columns is None:
            columns = [c for c in names if images or c != "image"]
        cols = [c for c in columns if c in names]
        parts = [read_parquet(self.fs, f, cols) for f in self.files]
        return pa.concat_tables(parts, promote_options="default") if parts else pa.table({c: [] for c in cols})

    def batches(self, columns, batch_rows: int = 64):
        """Record batches of ``columns`` in the order of ``table()``, one part at a time."""
        for f in self.files:
            with self.fs.open(f, "rb") as fh:
                yield from pq.ParquetFile(fh).iter_batches(batch_size=batch_rows, columns=list(columns))

    def images(self, keys) -> dict[tuple, bytes | None]:
        """{(prompt_id, sample_idx): PNG bytes or None} for exactly ``keys``: each part's key columns
        are read, and its image column only for the row groups that hold a wanted key."""
        wanted = {(str(p), int(i)) for p, i in keys}
        out: dict[tuple, bytes | None] = {}
        for f in self.files:
            with self.fs.open(f, "rb") as fh:
                pf = pq.ParquetFile(fh)
                for g in range(pf.metadata.num_row_groups):
                    k = pf.read_row_group(g, columns=list(KEYS))
                    pairs = list(zip(k.column(0).to_pylist(), k.column(1).to_pylist()))
                    hit = [j for j, key in enumerate(pairs) if key in wanted]
                    if not hit:
                        continue
                    col = pc.take(pf.read_row_group(g, columns=["image"]).column(0), pa.array(hit))
                    for j, im in zip(hit, col.to_pylist()):
                        out[pairs[j]] = im["bytes"] if im else None
        return out
