"""`sdgen export OUTPUT --format webdataset|imagefolder -o DEST`: a training set, part by part.

    webdataset   DEST/<shard>-<k>.tar: <key>.png + <key>.json per sample (the row's columns without
                 the image), at most --shard-size samples per tar; read with webdataset.WebDataset
    imagefolder  DEST/train/<shard>/<key>.png + DEST/train/<shard>/metadata.jsonl (file_name + columns);
                 load with datasets.load_dataset("imagefolder", data_dir=DEST)
    both         DEST/README.md, a Hugging Face dataset card (YAML header: features, size, configs,
                 license to fill); DEST/_export/<shard>.json, what each part became

Only ok rows with an image are exported, narrowed by --keep-only POLICY (sdgen filter decisions
keep/flag/blur; blur applied), --dedup NAME (near-duplicates left out) and --where COL=VALUE.
Streams one part, one row group at a time (memory bounded by a row group). Resumable and idempotent:
a part whose record exists with the same selection is skipped; files are written under a temporary
name and renamed (on an object store: uploaded whole), and tar members carry fixed metadata, so a
re-export gives the same bytes. DEST may be a local folder or an fsspec URL (s3://...).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from pipeline.core import layout
from pipeline.core.storage import Output

FORMATS = ("webdataset", "imagefolder")
LEFT_OUT_COLUMNS = ("image",)  # never in the per-sample JSON (the image is the .png beside it)


class ExportError(ValueError):
    """export cannot run as asked; the message names the output, option or value."""


def sample_key(prompt_id: str, sample_idx: int) -> str:
    """A file-name-safe key: webdataset splits a key from its extension at the first dot, so dots
    and path characters become '_' (with a short hash when that changed the id, to stay unique)."""
    safe = re.sub(r"[^\w-]", "_", str(prompt_id))
    if safe != str(prompt_id):
        safe += "-" + hashlib.sha1(str(prompt_id).encode()).hexdigest()[:8]
    return f"{safe}_{int(sample_idx)}"


def _jsonable(v):
    if isinstance(v, (np.floating, float)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


# ---------------------------------------------------------------- selection
class Selection:
    """Which rows leave: decisions joined once, then applied per row group."""

    def __init__(self, output_url: str, keep_only=None, dedup=None, where=(), storage=None):
        from pipeline.curate.dedup import read_dedup
        from pipeline.curate.policy import PolicyError, read_decisions

        self.where, self.keep_only, self.dedup = list(where), keep_only, dedup
        self.decisions = self.dups = None
        self.blur_radius = 8.0
        out = Output(output_url, storage)
        try:
            if keep_only:
                self.decisions = read_decisions(output_url, keep_only, storage).set_index(
                    ["prompt_id", "sample_idx"]
                )
                raw = yaml.safe_load(out.fs.cat_file(out.path(layout.policy_file(keep_only, "policy.yaml"))))
                self.blur_radius = float(raw.get("blur_radius", 8.0))  # as sdgen filter --materialize
            if dedup:
                d = read_dedup(output_url, dedup, storage)
                self.dups = set(zip(d.loc[d["duplicate"], "prompt_id"], d.loc[d["duplicate"], "sample_idx"]))
        except PolicyError as e:
            raise ExportError(str(e)) from None

    def fingerprint(self, out: Output, fmt: str, shard_size: int) -> str:
        """Equal fingerprints, equal exported files: what decides is hashed, decisions by their bytes."""
        parts = [fmt, str(shard_size), json.dumps(self.where)]
        for folder, name in ((layout.policy_file, self.keep_only), (layout.dedup_file, self.dedup)):
            if name:
                parts.append(
                    hashlib.sha256(out.fs.cat_file(out.path(folder(name, "decisions.parquet")))).hexdigest()
                )
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def apply(self, df: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """(rows kept, blur mask) of one row group (image column included)."""
        from pipeline.audit.data import apply_where

        df = df[(df["status"] == "ok") & df["image"].notna()]
        df = apply_where(df, self.where)
        blur = np.zeros(len(df), bool)
        if self.decisions is not None:
            d = self.decisions.reindex(pd.MultiIndex.from_frame(df[["prompt_id", "sample_idx"]]))["decision"]
            keep = d.isin(["keep", "flag", "blur"]).to_numpy()
            df, blur = df[keep].assign(policy_decision=d[keep].to_numpy()), (d[keep] == "blur").to_numpy()
        if self.dups:
            keep = np.array(
                [(p, s) not in self.dups for p, s in zip(df["prompt_id"], df["sample_idx"])], bool
            )
            df, blur = df[keep], blur[keep]
        return df, blur


# ---------------------------------------------------------------- writers
def _samples(part_file, fs, sel: Selection):
    """(key, png bytes, metadata dict) of the selected rows of one part, a row group at a time."""
    from pipeline.curate.materialize import blur_png

    with fs.open(part_file, "rb") as fh:  # reads retried by the output's RetryingFS
        f = pq.ParquetFile(fh)
        for i in range(f.num_row_groups):
            df, blur = sel.apply(f.read_row_group(i).to_pandas())
            for (_, r), b in zip(df.iterrows(), blur):
                png = r["image"]["bytes"]
                png = blur_png(png, sel.blur_radius) if b else png
                meta = {k: _jsonable(v) for k, v in r.items() if k not in LEFT_OUT_COLUMNS}
                yield sample_key(r["prompt_id"], r["sample_idx"]), png, meta


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o644, "", ""
    tar.addfile(info, io.BytesIO(data))


def _write_webdataset(samples, dst: Output, shard: str, shard_size: int) -> tuple[list[str], int]:
    """Tars of at most shard_size samples, each written to a local temp file and published whole."""
    files, rows, k, tar, tmp = [], 0, 0, None, None

    def close():
        tar.close()
        dst.publish_file(tmp, dst.path(files[-1]))

    for key, png, meta in samples:
        if tar is None or rows - k * shard_size >= shard_size:
            if tar is not None:
                close()
                k += 1
            files.append(f"{shard}-{k:06d}.tar")
            tmp = dst.temp_path(dst.path(files[-1]))
            tar = tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT)
        _add(tar, f"{key}.png", png)
        _add(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
        rows += 1
    if tar is not None:
        close()
    return files, rows


def _write_imagefolder(samples, dst: Output, shard: str) -> tuple[list[str], int]:
    """One PNG per sample, then the part's metadata.jsonl last: a folder with metadata is complete."""
    lines, names = [], []
    for key, png, meta in samples:
        dst.write_bytes_atomic(dst.path("train", shard, f"{key}.png"), png, sync=False)
        names.append(f"train/{shard}/{key}.png")
        lines.append(json.dumps({"file_name": f"{key}.png", **meta}, sort_keys=True))
    if not lines:  # nothing selected in this part: no metadata.jsonl (an empty one breaks loaders)
        return [], 0
    dst.write_bytes_atomic(
        dst.path("train", shard, "metadata.jsonl"), "".join(x + "\n" for x in lines).encode()
    )
    return [*names, f"train/{shard}/metadata.jsonl"], len(lines)


# ---------------------------------------------------------------- the command
def export(
    output_url: str,
    fmt: str,
    dest: str,
    keep_only=None,
    dedup=None,
    where=(),
    shard_size: int = 1000,
    storage=None,
) -> dict:
    """Export every committed part of the output to ``dest`` (a folder or an fsspec URL such as
    s3://bucket/set; ``storage`` reaches both); returns counts and the card's path."""
    from pipeline.curate.card import write_card

    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if shard_size < 1:
        raise ExportError(f"--shard-size must be >= 1, got {shard_size!r}")
    out, dst = Output(output_url, storage), Output(dest, storage)
    run = out.read_json(out.path(layout.RUN))
    if run is None:
        raise ExportError(f"{output_url!r} is not an sdgen output (no run.json)")
    markers = out.valid_commits("size")  # committed parts only, checked against their markers
    if not markers:
        raise ExportError(f"{output_url!r} has no committed parts yet")
    sel = Selection(output_url, keep_only, dedup, where, storage)
    fp = sel.fingerprint(out, fmt, shard_size)
    total = {"rows": 0, "skipped": 0, "files": 0, "reused": 0}
    for shard in sorted(markers):
        rec_path = dst.path(layout.export_record(shard))
        rec = dst.read_json(rec_path)  # what this part became last time, if anything
        if (
            rec
            and rec["selection"] == fp
            and rec["part_sha256"] == markers[shard].get("sha256")
            and all(dst.exists(dst.path(f)) for f in rec["files"])
        ):
            total["reused"] += len(rec["files"])
        else:
            samples = _samples(out.part_path(shard), out.fs, sel)
            files, rows = (
                _write_webdataset(samples, dst, shard, shard_size)
                if fmt == "webdataset"
                else _write_imagefolder(samples, dst, shard)
            )
            rec = {
                "shard": shard,
                "files": files,
                "rows": rows,
                "part_rows": markers[shard]["rows"],
                "selection": fp,
                "part_sha256": markers[shard].get("sha256"),
            }
            dst.write_json(rec_path, rec)  # last: a part without its record is redone
            total["files"] += len(files)
        total["rows"] += rec["rows"]
        total["skipped"] += rec["part_rows"] - rec["rows"]
    card = write_card(out, run, dst, fmt, sel, total["rows"], shard_size)
    return {**total, "card": card}
