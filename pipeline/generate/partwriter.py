"""Assemble output rows for one shard and write them as a Parquet part, one row group at a time.

Rows go to a spool file (beside the final part locally, a temp dir for object stores) in row
groups of `write.row_group_size`, so a worker's memory is bounded by its batch, not its shard.
`finish()` closes the spool; the worker commits it through ``Output.commit_part`` (the one commit path).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import schema

PHASH_FIELD = pa.field("phash", pa.string())  # 64-bit perceptual hash, 16 hex digits (probes/phash.py)


def embedding_field(dim: int) -> pa.Field:
    """The scorer's normalised image embedding, float16, fixed size (write.embeddings)."""
    return pa.field("clip_image_embedding", pa.list_(pa.float16(), dim))


def encode_png(host_images, j: int, event, level: int, phash: bool = False):
    """(PNG bytes, seconds, pHash hex or None) of image j of a host uint8 (N, H, W, 3) tensor; runs
    in a worker thread (zlib releases the GIL). `event` is the CUDA event of the async device->host
    copy, if any. The pHash is taken from the same host pixels, off the GPU path."""
    from PIL import Image

    t = time.perf_counter()
    if event is not None:
        event.synchronize()
    buf = io.BytesIO()
    img = Image.fromarray(host_images[j].numpy())
    img.save(buf, format="PNG", compress_level=level)
    h = None
    if phash:
        from pipeline.probes.phash import phash_image

        h = phash_image(img)
    return buf.getvalue(), time.perf_counter() - t, h


def _consumed() -> set:
    return {schema.PROMPT, schema.PROMPT_ID, *schema.OVERRIDES}


class PartWriter:
    def __init__(
        self, output, shard: str, table: pa.Table, cfg, scheduler_name: str, extra_fields: list[pa.Field] = ()
    ):
        self.output, self.shard, self.cfg = output, shard, cfg
        keep = [c for c in table.column_names if c not in _consumed()]
        self.passthrough = {c: table.column(c).to_pylist() for c in keep}
        self.schema = schema.output_schema(table.select(keep).schema, list(extra_fields))
        self.model, self.scheduler = cfg.model, scheduler_name
        self.buffer: list[dict] = []
        self.counts = {s: 0 for s in schema.STATUSES}
        self.spool = output.spool_path(shard)
        self.writer = pq.ParquetWriter(self.spool, self.schema, compression="snappy")

    def _base(self, i: int, pid: str, prompt: str) -> dict:
        row = {c: v[i] for c, v in self.passthrough.items()}
        row.update(prompt_id=pid, prompt=prompt, model=self.model, shard=self.shard)
        return row

    def add_invalid(self, i: int, pid: str, prompt: str, reason: str) -> None:
        """An invalid input row (on_invalid_row: mark): one row, no image, the reason as data."""
        row = self._base(i, pid, prompt)
        row.update(sample_idx=0, status=schema.INVALID, error=reason, scheduler=self.scheduler)
        self._append(row)

    def add_blocked(self, s, reason: str) -> None:
        """A sample whose prompt screening blocked: every field but the image, status "blocked"."""
        self._append(self._sample_row(s, schema.BLOCKED, reason))

    def _sample_row(self, s, status: str, error: str | None) -> dict:
        row = self._base(s.row, s.prompt_id, s.prompt)
        row.update(
            sample_idx=s.sample_idx,
            negative_prompt=s.negative_prompt,
            seed=s.seed,
            width=s.width,
            height=s.height,
            scheduler=self.scheduler,
            steps=s.steps,
            guidance_scale=s.guidance_scale,
            status=status,
            error=error,
        )
        if s.source_prompt is not None:
            row.update(source_prompt=s.source_prompt, mitigation_variant=s.variant)
        return row

    def add_batch(self, batch, res, scores, encoded, score_seconds: float = 0.0) -> None:
        """Rows of one generated batch; `scores` maps column -> per-row values (CLIP score, probes,
        safety); encoded[j] is (png bytes, encode seconds) or None."""
        timing = self.cfg.write.timing_columns
        n = len(batch)
        for j, (s, err, enc) in enumerate(zip(batch, res.errors, encoded)):
            png, t_encode, ph = enc if enc is not None else (None, None, None)
            row = self._sample_row(s, schema.OK if err is None else schema.FAILED, err)
            if png is not None:
                row["image"] = {"bytes": png, "path": image_path(s.prompt_id, s.sample_idx)}
            if ph is not None:
                row["phash"] = ph
            if scores is not None and err is None:
                row.update({k: v[j] for k, v in scores.items()})
            if timing:
                row.update(t_generate_s=res.seconds / n, t_score_s=score_seconds / n, t_encode_s=t_encode)
            self._append(row)

    def _append(self, row: dict) -> None:
        self.counts[row["status"]] += 1
        self.buffer.append(row)
        if len(self.buffer) >= self.cfg.write.row_group_size:
            self._flush()

    def _flush(self) -> None:
        if self.buffer:
            self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema))
            self.buffer = []

    def finish(self) -> dict:
        """Flush and close the spool file; returns the marker fields (rows, counts) for
        ``Output.commit_part``, which publishes it. The writer publishes nothing itself."""
        self._flush()
        self.writer.close()
        return {"rows": sum(self.counts.values()), "status_counts": dict(self.counts)}

    def abort(self) -> None:
        self.writer.close()
        if os.path.exists(self.spool):
            os.remove(self.spool)


_UNSAFE = re.compile(r"[/\\:\x00-\x1f\x7f]")  # separators, a drive colon, control characters


def image_path(prompt_id: str, sample_idx: int) -> str:
    """``image.path``: ``<prompt_id>_<k>.png``, a plain relative file name. An id that is not one
    already (``/``, ``\\``, ``:``, a leading dot, control characters) is cleaned and takes 8 hex of
    its sha256, so tools extracting by this name stay in their folder and names stay distinct."""
    name = f"{prompt_id}_{sample_idx}.png"
    if prompt_id and not _UNSAFE.search(prompt_id) and not prompt_id.startswith("."):
        return name
    clean = _UNSAFE.sub("_", prompt_id).lstrip(".")[:80] or "id"
    return f"{clean}-{hashlib.sha256(prompt_id.encode()).hexdigest()[:8]}_{sample_idx}.png"
