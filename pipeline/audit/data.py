"""What an audit reads: the rows of an output (sdgen's, or any Parquet with an `image` column), and
attribute labels, either stored by the run or probed after the fact from the stored PNGs.

Post-hoc probes never rewrite a part. They go beside the output:

    OUTPUT/audit/probes/<set>.parquet   prompt_id, sample_idx + the probe columns of the set
    OUTPUT/audit/probes/<set>.json      class order (as run.json's `probes.attributes`), CLIP spec,
                                        rows and a hash of their keys (reused while they match)

They are computed exactly as in the actor: PNG -> uint8 (N, 3, H, W) tensor -> ClipScorer
.encode_images -> ImageProbes.compute; PNG is lossless, so the same CLIP gives the same labels.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.core.dataset import Dataset, png_bytes
from pipeline.core.storage import read_frame, read_parquet

KEYS = ["prompt_id", "sample_idx"]


class AuditError(ValueError):
    """An audit cannot run as asked; the message names the output, column or value."""


Source = Dataset  # what an audit reads: core.dataset.Dataset, sdgen output or foreign Parquet


def open_source(url, storage=None) -> Dataset:
    """An sdgen output (run.json + committed parts) or a Parquet file / folder with an `image` column,
    as a core.dataset.Dataset (the one reader). Given a Dataset, returns it: open once, pass it on."""
    if isinstance(url, Dataset):
        return url
    ds = Dataset(url, storage, foreign=True)
    if not ds.foreign:
        return ds
    if not ds.exists():
        raise AuditError(f"{url!r} does not exist")
    if not ds.files:
        raise AuditError(f"{url!r} is neither an sdgen output (no run.json) nor holds .parquet files")
    if "image" not in ds.columns():
        raise AuditError(
            f"{url!r}: Parquet without run.json needs an `image` column (struct of bytes, path); "
            f"columns are {ds.columns()}"
        )
    return ds


def read_rows(src: Source, columns=None) -> pd.DataFrame:
    """Every row without the image bytes, in file order; foreign data gets prompt_id, sample_idx and
    status when it lacks them (from the prompt text when there is one, else the row index)."""
    names = src.columns()
    cols = [c for c in names if c != "image"] if columns is None else [c for c in columns if c in names]
    if src.foreign:
        cols = list(dict.fromkeys([*cols, *(c for c in ("prompt", *KEYS, "status") if c in names)]))
    parts = [read_parquet(src.fs, f, cols) for f in src.files]
    df = (
        pa.concat_tables(parts, promote_options="default").to_pandas()
        if parts
        else pd.DataFrame(columns=cols)
    )
    if src.foreign:
        df = _foreign_defaults(src, df)
    return df.reset_index(drop=True)


def _foreign_defaults(src: Source, df: pd.DataFrame) -> pd.DataFrame:
    if "prompt_id" not in df.columns:
        if "prompt" in df.columns:  # several images of one prompt form one cluster of the bootstrap
            df["prompt_id"] = [hashlib.sha256(str(p).encode()).hexdigest()[:16] for p in df["prompt"]]
        else:
            df["prompt_id"] = [f"row{i}" for i in range(len(df))]
    df["prompt_id"] = df["prompt_id"].astype(str)
    if "sample_idx" not in df.columns:
        df["sample_idx"] = df.groupby("prompt_id").cumcount()
    if "status" not in df.columns:  # a row without an image counts as failed (coverage, not a label)
        missing = np.concatenate(
            [[png is None for png in pngs] for _, pngs in iter_images(src, 1024)] or [[]]
        )
        df["status"] = np.where(missing.astype(bool), "failed", "ok")
    if df.duplicated(KEYS).any():
        dup = df[df.duplicated(KEYS, keep=False)][KEYS].iloc[0].tolist()
        raise AuditError(f"{src.url!r}: (prompt_id, sample_idx) must be unique, {dup} repeats")
    return df


def iter_images(src: Source, batch_rows: int = 64):
    """(row offset, [PNG bytes or None]) batches in read_rows order, reading only the image column."""
    offset = 0
    for batch in src.batches(["image"], batch_rows):
        images = batch.column(0).to_pylist()
        yield offset, [png_bytes(im) for im in images]
        offset += len(images)


def read_images(src: Source, keys: pd.DataFrame) -> dict:
    """{(prompt_id, sample_idx): PNG bytes} for the wanted rows, reading only their row groups (by row
    position: foreign data gets its keys from read_rows, not from its files)."""
    want = set(zip(keys["prompt_id"], keys["sample_idx"]))
    all_keys = read_rows(src, columns=KEYS)  # read_rows order = file order, row by row
    at = {i: k for i, k in enumerate(zip(all_keys["prompt_id"], all_keys["sample_idx"])) if k in want}
    return {at[i]: png for i, png in src.images_at(at).items() if png}


def decode_batch(pngs) -> dict[tuple, tuple[list[int], np.ndarray]]:
    """{(H, W): (positions, uint8 N x 3 x H x W)}: images of one size are encoded together."""
    from PIL import Image

    groups: dict = {}
    for i, png in enumerate(pngs):
        if png is None:
            continue
        a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        groups.setdefault(a.shape[:2], []).append((i, a))
    return {
        hw: ([i for i, _ in items], np.stack([a for _, a in items]).transpose(0, 3, 1, 2))
        for hw, items in groups.items()
    }


# ---------------------------------------------------------------- attribute labels
def stored_attribute(src: Source, attribute: str, columns) -> dict | None:
    """run.json's description of an attribute the run probed (classes in order), if its column exists."""
    if f"attr_{attribute}" not in columns:
        return None
    info = ((src.run or {}).get("probes") or {}).get("attributes", {}).get(attribute)
    if info is None:
        raise AuditError(
            f"{src.url!r} has column attr_{attribute} but no class order for it in run.json probes"
        )
    return {**info, "origin": "run"}


def find_set(attribute: str, attribute_set: str | None) -> str:
    """The attribute set to probe with: the one given, else the shipped set defining the attribute."""
    from pipeline.probes.functions import load_attribute_set
    from pipeline.probes.safety import DATA_DIR

    if attribute_set:
        try:
            aset = load_attribute_set(attribute_set)
        except ValueError as e:
            raise AuditError(f"--attribute-set: {e}") from None
        if attribute not in aset.attributes:
            raise AuditError(
                f"attribute set {attribute_set!r} has no attribute {attribute!r}; it has "
                f"{list(aset.attributes)}"
            )
        return attribute_set
    shipped = sorted(p.stem for p in (DATA_DIR / "attributes").glob("*.yaml"))
    hits = [s for s in shipped if attribute in load_attribute_set(s).attributes]
    if not hits:
        raise AuditError(
            f"attribute {attribute!r} was not probed during the run and no shipped attribute set "
            f"defines it (shipped: {shipped}); pass --attribute-set NAME_OR_PATH"
        )
    return hits[0]


def _keys_hash(df: pd.DataFrame) -> str:
    keys = sorted(f"{p}#{i}" for p, i in zip(df["prompt_id"], df["sample_idx"]))
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def _set_label(attribute_set: str) -> str:
    """File stem for a set: its name for shipped sets, the YAML file's stem for paths."""
    from pipeline.probes.functions import load_attribute_set

    return load_attribute_set(attribute_set).name


def posthoc_probes(
    src: Source,
    attribute: str,
    attribute_set: str | None = None,
    clip_model: str | None = None,
    clip_weights: str | None = None,
    device: str = "auto",
    batch_rows: int = 64,
) -> tuple[pd.DataFrame, dict]:
    """(probe columns keyed by prompt_id, sample_idx; the attribute's description) for an attribute
    the run did not probe: reused from audit/probes/ while they match, else computed and stored.
    Always over every row of the source (not an audit's --where subset), so any later audit reuses them."""
    keys = read_rows(src, columns=KEYS)
    khash = _keys_hash(keys)
    stored = _stored_probes(src, attribute, attribute_set, clip_model, clip_weights, khash)
    if stored is not None:
        return stored
    set_name = find_set(attribute, attribute_set)
    label = _set_label(set_name)
    clip, weights = _clip_spec(src, clip_model, clip_weights)
    table, attrs = _compute_probes(src, keys, set_name, clip, weights, device, batch_rows)
    src.output.write_table(f"{src.audit_dir}/probes/{label}.parquet", table)
    meta = {
        "set": label,
        "source": str(set_name),
        "attributes": attrs,
        "clip_model": clip,
        "clip_weights": weights,
        "rows": len(keys),
        "keys_sha256": khash,
        "run_fingerprint": (src.run or {}).get("fingerprint"),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    src.output.write_json(f"{src.audit_dir}/probes/{label}.json", meta)
    return table.to_pandas(), {**attrs[attribute], "origin": "posthoc"}


def _stored_probes(src, attribute, attribute_set, clip_model, clip_weights, khash):
    """Earlier post-hoc probes of ``attribute`` over exactly these rows, unless the call asks for
    another set (or an edited one) or another CLIP; None when they must be computed."""
    from pipeline.probes.image import describe

    try:
        names = sorted(n for n in src.fs.ls(f"{src.audit_dir}/probes", detail=False) if n.endswith(".json"))
    except FileNotFoundError:
        return None
    wanted = describe([attribute_set])["attributes"] if attribute_set else None
    for p in names:
        meta = json.loads(src.fs.cat_file(p))
        if attribute not in meta.get("attributes", {}) or meta.get("keys_sha256") != khash:
            continue
        if wanted is not None and meta["attributes"] != jsonable_attrs(wanted):
            continue
        if clip_model and (meta.get("clip_model"), meta.get("clip_weights")) != (clip_model, clip_weights):
            continue
        table = read_frame(src.fs, p.removesuffix(".json") + ".parquet")
        return table, {**meta["attributes"][attribute], "origin": "posthoc"}
    return None


def jsonable_attrs(attrs: dict) -> dict:
    """describe()'s attribute dict as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(attrs))


def _clip_spec(src: Source, clip_model, clip_weights) -> tuple[str, str | None]:
    scoring = ((src.run or {}).get("config") or {}).get("scoring") or {}
    clip = clip_model or scoring.get("clip_model")
    if not clip:
        raise AuditError(
            f"{src.url!r} has no run.json naming its CLIP: pass --clip-model (tiny, toy, "
            f"local-dir:/path, or an open_clip name with --clip-weights)"
        )
    return clip, clip_weights if clip_model else (clip_weights or scoring.get("clip_weights"))


def _compute_probes(src, keys, set_name, clip, weights, device, batch_rows):
    import torch

    from pipeline.probes.image import ImageProbes, describe
    from pipeline.probes.scorer import ClipScorer, check_scorer_spec, resolve_device_dtype

    check_scorer_spec(clip, weights)
    dev, dtype = resolve_device_dtype(device, "auto")  # as in the actor: float16 on CUDA, float32 on CPU
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AuditError(f"--device {device!r}: no CUDA device is visible here; use --device cpu (or auto)")
    scorer = ClipScorer(clip, weights, dev, dtype)
    probes = ImageProbes(scorer, [set_name])
    fields = probes.fields()
    cols = {f.name: [None] * len(keys) for f in fields}
    for offset, pngs in iter_images(src, batch_rows):
        for positions, u8 in decode_batch(pngs).values():
            values = probes.compute(scorer.encode_images(torch.from_numpy(u8)), torch.from_numpy(u8))
            for name, vals in values.items():
                for p, v in zip(positions, vals):
                    cols[name][offset + p] = v
    arrays = [
        pa.array(keys["prompt_id"].astype(str).tolist(), pa.string()),
        pa.array(keys["sample_idx"].astype("int64").tolist(), pa.int32()),
    ]
    table = pa.Table.from_arrays(
        arrays + [pa.array(cols[f.name], f.type) for f in fields],
        schema=pa.schema([pa.field("prompt_id", pa.string()), pa.field("sample_idx", pa.int32()), *fields]),
    )
    return table, describe([set_name])["attributes"]


def attribute_labels(
    src: Source, df: pd.DataFrame, attribute: str, **probe_args
) -> tuple[pd.DataFrame, dict]:
    """``df`` with the attribute's columns (stored, or joined from post-hoc probes) and its description
    (classes in order, set, caveats, origin "run" or "posthoc")."""
    info = None if probe_args.get("attribute_set") else stored_attribute(src, attribute, df.columns)
    if info is not None:
        return df, info
    probes, info = posthoc_probes(src, attribute, **probe_args)
    drop = [c for c in probes.columns if c in df.columns and c not in KEYS]
    merged = df.drop(columns=drop).merge(
        probes.astype({"sample_idx": df["sample_idx"].dtype}), on=KEYS, how="left", validate="one_to_one"
    )
    return merged, info


def probed_attributes(src: Source) -> dict[str, dict]:
    """Attributes with labels available without probing: the run's, then earlier post-hoc ones."""
    out = {
        a: {**i, "origin": "run"}
        for a, i in ((src.run or {}).get("probes") or {}).get("attributes", {}).items()
    }
    try:
        names = src.fs.ls(f"{src.audit_dir}/probes", detail=False)
    except FileNotFoundError:
        names = []
    for p in sorted(n for n in names if n.endswith(".json")):
        meta = json.loads(src.fs.cat_file(p))
        for a, i in meta.get("attributes", {}).items():
            out.setdefault(a, {**i, "origin": "posthoc", "set_file": meta.get("source")})
    return out


def with_posthoc_labels(src: Source, df: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """``df`` joined with the stored post-hoc probe columns of ``attribute`` (as last computed), or
    unchanged when there are none (e.g. a report of an output whose probes were removed)."""
    try:
        names = sorted(n for n in src.fs.ls(f"{src.audit_dir}/probes", detail=False) if n.endswith(".json"))
    except FileNotFoundError:
        return df
    for p in names:
        if attribute in json.loads(src.fs.cat_file(p)).get("attributes", {}):
            probes = read_frame(src.fs, p.removesuffix(".json") + ".parquet")
            probes = probes.astype({"sample_idx": df["sample_idx"].dtype})
            return df.drop(columns=[c for c in probes.columns if c in df.columns and c not in KEYS]).merge(
                probes, on=KEYS, how="left"
            )
    return df


# ---------------------------------------------------------------- which rows and columns
def apply_where(df: pd.DataFrame, where) -> pd.DataFrame:
    """Rows matching every COL=VALUE (VALUE read as YAML, so true/3 match bools/ints, or as text)."""
    import yaml

    for item in where or ():
        col, sep, value = str(item).partition("=")
        if not sep or col not in df.columns:
            raise AuditError(
                f"--where expects COLUMN=VALUE with a column of the output, got {item!r} "
                f"(columns: {passthrough_columns(df.columns)})"
            )
        df = df[_matches(df[col], yaml.safe_load(value) if value else value, value)]
    return df


def _matches(s: pd.Series, parsed, text: str) -> np.ndarray:
    """Rows whose value equals ``parsed`` (YAML) or reads as ``text``; a column of lists or arrays is
    matched as text only ("[2 3]", as its group keys read), since == on arrays is elementwise."""
    as_text = (s.astype(str) == text).to_numpy(bool)
    first = s.dropna().iloc[:1]  # a Parquet column holds one type: its first value says if it is a list
    if isinstance(parsed, (list, dict)) or (s.dtype == object and len(first) and np.ndim(first.iloc[0]) > 0):
        return as_text
    return (s == parsed).fillna(False).to_numpy(bool) | as_text


def passthrough_columns(columns) -> list[str]:
    """Input columns carried through the run (what audits group by), in output order: never a column
    sdgen derives (core/schema.py is_derived: phash, embeddings, scores, probes, ...)."""
    from pipeline.core.schema import is_derived

    return [c for c in columns if not is_derived(c)]
