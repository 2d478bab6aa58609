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
    """``foreign=True`` also opens Parquet that sdgen did not make (a file, or the top-level .parquet files
    of a folder: post-hoc audits of any image dataset); then ``run`` is None and ``files`` are those."""

    def __init__(self, url: str, storage=None, check: str = "size", foreign: bool = False):
        self.url, self.storage = url, storage
        self.output = Output(url, storage)
        is_file = self.output.fs.isfile(self.output.root)
        self.run = None if is_file else self.output.read_json(self.output.path(layout.RUN))
        self.commits = self.output.valid_commits(check) if self.run is not None else {}
        self.files = [self.output.part_path(s) for s in sorted(self.commits)]
        self.audit_dir = self.output.path(layout.AUDIT)  # where audits of this dataset are written
        if self.run is None and foreign:
            self.files, self.audit_dir = self._foreign_files(is_file)

    def _foreign_files(self, is_file: bool) -> tuple[list[str], str]:
        fs, root = self.output.fs, self.output.root
        if is_file:  # FILE.parquet: audits go to FILE.audit/ beside it
            return [
                root
            ], f"{root.rsplit('/', 1)[0]}/{root.rsplit('/', 1)[-1].removesuffix('.parquet')}.audit"
        if not fs.isdir(root):
            return [], self.audit_dir
        return sorted(
            p
            for p in fs.ls(root, detail=False)
            if p.endswith(".parquet")  # top level only:
            and not p.rsplit("/", 1)[-1].startswith((".", "_"))
        ), self.audit_dir  # never audit/ back

    @property
    def fs(self):
        return self.output.fs

    @property
    def foreign(self) -> bool:
        return self.run is None

    def exists(self) -> bool:
        return self.run is not None or bool(self.files) or self.fs.isdir(self.output.root)

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
        return (
            pa.concat_tables(parts, promote_options="default") if parts else pa.table({c: [] for c in cols})
        )

    def batches(self, columns, batch_rows: int = 64):
        """Record batches of ``columns`` in the order of ``table()``, one part at a time."""
        for f in self.files:
            with self.fs.open(f, "rb") as fh:
                yield from pq.ParquetFile(fh).iter_batches(batch_size=batch_rows, columns=list(columns))

    def images_at(self, rows) -> dict[int, bytes | None]:
        """{row position in table() order: PNG bytes or None} for exactly ``rows``, reading the image
        column of only the row groups that hold one (foreign data may have no key columns)."""
        wanted, out, offset = sorted(set(int(r) for r in rows)), {}, 0
        for f in self.files:
            with self.fs.open(f, "rb") as fh:
                pf = pq.ParquetFile(fh)
                for g in range(pf.metadata.num_row_groups):
                    n = pf.metadata.row_group(g).num_rows
                    hit = [r - offset for r in wanted if offset <= r < offset + n]
                    if hit:
                        col = pc.take(pf.read_row_group(g, columns=["image"]).column(0), pa.array(hit))
                        out.update({offset + j: png_bytes(im) for j, im in zip(hit, col.to_pylist())})
                    offset += n
        return out

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


def png_bytes(im) -> bytes | None:
    """The PNG of an `image` cell: its bytes, or the file its `path` names (Hugging Face datasets may
    store a path instead of bytes)."""
    import os

    if im is None:
        return None
    if im.get("bytes") is not None:
        return im["bytes"]
    path = im.get("path")
    return open(path, "rb").read() if path and os.path.isfile(path) else None
