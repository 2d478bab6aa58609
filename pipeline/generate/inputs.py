"""Input: list Parquet files, validate them (schema, then every row value), derive prompt ids,
handle duplicate ids, and cut deterministic shards (file × row range) (docs/DESIGN.md §2, §5).

Two entry points with different costs:
- `plan.plan_shards` reads only Parquet footers (seconds for 10M rows; what `sdgen plan` does);
- `scan_input` streams the few meaningful columns once to find bad values and duplicate ids
  before any model loads (what `sdgen run` does first).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import retry, schema
from pipeline.core.storage import filesystem

MAX_LISTED_PROBLEMS = 20  # an error lists this many bad rows, then the total count


class InputError(ValueError):
    """An input problem, found before any model loads; the message names file, row, column, value."""


@dataclass
class Shard:
    name: str  # deterministic: input file + row range + config fingerprint
    file: str  # path as the input filesystem sees it
    start: int  # first row (inclusive) in the file
    stop: int  # last row (exclusive)
    renames: dict = field(default_factory=dict)  # row -> prompt_id, for numbered duplicates
    skip: tuple = ()  # rows dropped as duplicates (policy "first")
    in_output: bool = False  # the rows live in the output (a quota round's file), read with its filesystem


@dataclass
class Problem:
    file: str
    row: int
    column: str
    value: object
    reason: str

    def __str__(self):
        return f"{self.file} row {self.row} column {self.column!r}: {self.reason} (value {self.value!r})"


# ---- listing and schema --------------------------------------------------------------------------------
def list_input_files(url: str, storage=None) -> tuple[object, list[str]]:
    """(fs, sorted Parquet file paths) for a file, a directory/prefix (recursive) or a glob."""
    fs, path = filesystem(url, storage)
    return fs, retry.call(_list_files, fs, url, path, what=f"listing input {url!r}")


def _list_files(fs, url: str, path: str) -> list[str]:
    if any(c in path for c in "*?["):
        files = sorted(fs.glob(path))
    elif fs.isfile(path):
        return [path]
    elif fs.isdir(path):
        files = sorted(
            p
            for p in fs.find(path)
            if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith((".", "_"))
        )
    else:
        raise InputError(f"input {url!r} does not exist")
    if not files:
        raise InputError(f"input {url!r} holds no .parquet files")
    return files


def check_audit_defaults(cfg, fs, files: list[str]) -> None:
    """`audit.group_by` and the columns of `audit.where` must be the input's own columns (what an audit
    groups by), named before any work starts."""
    if not files or not (cfg.audit.group_by or cfg.audit.where):
        return
    names = read_footer(fs, files[0]).schema.to_arrow_schema().names
    own = [c for c in names if not schema.is_derived(c)]
    for key, cols in (
        ("group_by", cfg.audit.group_by),
        ("where", [w.split("=", 1)[0].strip() for w in cfg.audit.where]),
    ):
        for c in cols:
            if c not in own:
                raise InputError(
                    f"audit.{key}: {c!r} is not a column of the input {files[0]!r}; its own columns are {own}"
                )


def read_footer(fs, path: str) -> pq.FileMetaData:
    """The Parquet footer, or an InputError saying why the file is not usable Parquet."""
    size = retry.call(fs.size, path, what=f"reading the size of {path!r}")
    if size == 0:
        raise InputError(f"input file {path!r} is empty (0 bytes), not a Parquet file")
    try:
        return retry.call(_footer, fs, path, what=f"reading the footer of {path!r}")
    except retry.StorageError:
        raise  # transient faults that outlasted the retries: the storage's fault, not the file's
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for non-Parquet bytes
        raise InputError(f"input file {path!r} is not a readable Parquet file: {e}") from None


def _footer(fs, path: str) -> pq.FileMetaData:
    with fs.open(path, "rb") as f:
        return pq.ParquetFile(f).metadata


def check_schema(path: str, sch: pa.Schema) -> None:
    """Column presence and types; a passthrough column may not shadow an output column."""
    if schema.PROMPT not in sch.names:
        raise InputError(f"input file {path!r} has no 'prompt' column (columns: {sch.names})")
    t = sch.field(schema.PROMPT).type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise InputError(f"input file {path!r}: column 'prompt' must be strings, got type {t}")
    if schema.PROMPT_ID in sch.names:
        t = sch.field(schema.PROMPT_ID).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)):
            raise InputError(
                f"input file {path!r}: column 'prompt_id' must be strings or integers, got type {t}"
            )
    for col, ok in schema.OVERRIDES.items():
        if col in sch.names and not ok(sch.field(col).type):
            raise InputError(
                f"input file {path!r}: override column {col!r} has type {sch.field(col).type}, "
                f"which does not fit (docs/OUTPUT.md, section Input)"
            )
    consumed = {schema.PROMPT, schema.PROMPT_ID, *schema.OVERRIDES}
    clash = [c for c in sch.names if c in schema.CORE_NAMES and c not in consumed]
    if clash:
        raise InputError(
            f"input file {path!r}: column(s) {clash} would overwrite output columns; rename them"
        )
    if len(set(sch.names)) != len(sch.names):
        raise InputError(f"input file {path!r} has duplicate column names: {sch.names}")


# ---- rows ------------------------------------------------------------------------------------------------
def _col(table: pa.Table, name: str):
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


@dataclass(frozen=True)
class RowLimits:
    """What one row may ask for (config `limits`, the scheduler's training timesteps) and the config
    values a row without overrides takes (a width override is checked against the default height)."""

    max_steps: int = 1000
    max_pixels: int = 4096 * 4096
    max_images_per_prompt: int = 10_000
    max_side: int = 8192
    width: int | None = None
    height: int | None = None
    steps_why: str = "limits.max_steps"  # named in the error: the config key or the scheduler


def row_limits(cfg, train_timesteps: int | None = None) -> RowLimits:
    """The RowLimits of a job config; `train_timesteps` (the scheduler's) caps the steps when lower."""
    lim, g = cfg.limits, cfg.generation
    steps, why = lim.max_steps, "limits.max_steps"
    if train_timesteps is not None and train_timesteps < steps:
        steps, why = train_timesteps, "the scheduler's training timesteps"
    return RowLimits(steps, lim.max_pixels, lim.max_images_per_prompt, lim.max_side, g.width, g.height, why)


def _limit_problems(table: pa.Table, lim: RowLimits, bad) -> None:
    for col, cap, why in (
        ("steps", lim.max_steps, lim.steps_why),
        ("images_per_prompt", lim.max_images_per_prompt, "limits.max_images_per_prompt"),
        ("width", lim.max_side, "limits.max_side"),
        ("height", lim.max_side, "limits.max_side"),
    ):
        for i, v in enumerate(_col(table, col)):
            if v is not None and v > cap:
                bad(i, col, v, f"exceeds {why} ({cap})")
    if "width" in table.column_names or "height" in table.column_names:
        for i, (w, h) in enumerate(zip(_col(table, "width"), _col(table, "height"))):
            w, h = w if w is not None else lim.width, h if h is not None else lim.height
            if w and h and w > 0 and h > 0 and w * h > lim.max_pixels:
                bad(
                    i,
                    "width" if "width" in table.column_names else "height",
                    f"{w}x{h}",
                    f"{w * h} pixels exceed limits.max_pixels ({lim.max_pixels})",
                )


def row_problems(
    table: pa.Table, path: str, offset: int, limits: RowLimits | None = None
) -> dict[int, Problem]:
    """Bad values per row (first problem per row), keyed by row index within the file."""
    out: dict[int, Problem] = {}

    def bad(i, col, value, reason):
        out.setdefault(offset + i, Problem(path, offset + i, col, value, reason))

    for i, p in enumerate(_col(table, schema.PROMPT)):
        if p is None or not str(p).strip():
            bad(i, "prompt", p, "prompt is null or empty")
    for i, v in enumerate(_col(table, schema.PROMPT_ID)):
        if schema.PROMPT_ID in table.column_names and (v is None or not str(v).strip()):
            bad(i, "prompt_id", v, "prompt_id is null or empty")
    checks = {
        "images_per_prompt": (lambda v: v >= 1, "must be >= 1"),
        "sample_start": (lambda v: 0 <= v < 2**31 - 2**20, "must be in [0, 2**31 - 2**20)"),
        "steps": (lambda v: v >= 1, "must be >= 1"),
        "width": (lambda v: v >= 8 and v % 8 == 0, "must be a positive multiple of 8"),
        "height": (lambda v: v >= 8 and v % 8 == 0, "must be a positive multiple of 8"),
        "seed": (lambda v: 0 <= v < 2**62, "must be in [0, 2**62)"),
        "guidance_scale": (lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0"),
    }
    for col, (ok, reason) in checks.items():
        if col in table.column_names:
            for i, v in enumerate(table.column(col).to_pylist()):
                if v is not None and not ok(v):
                    bad(i, col, v, reason)
    _limit_problems(table, limits or RowLimits(), bad)
    return out


def row_overrides(table: pa.Table) -> list[dict]:
    """Per row: the override columns that hold a value (null = use the config's value)."""
    cols = {c: table.column(c).to_pylist() for c in schema.OVERRIDES if c in table.column_names}
    rows = []
    for i in range(table.num_rows):
        rows.append(
            {c: (float(v[i]) if c == "guidance_scale" else v[i]) for c, v in cols.items() if v[i] is not None}
        )
    return rows


def derive_prompt_id(prompt: str, overrides: dict) -> str:
    """Content id: the prompt plus every override that changes what an image looks like (not
    images_per_prompt or sample_start: asking for more samples must keep the first ones). Never positional."""
    content = {k: v for k, v in overrides.items() if k not in ("images_per_prompt", "sample_start")}
    blob = json.dumps([prompt, content], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prompt_ids(table: pa.Table, overrides: list[dict] | None = None) -> list[str]:
    """Base ids before numbering: as given (integers become strings; null becomes "") or derived from
    content (a null prompt and an empty prompt derive different ids). Never null."""
    if schema.PROMPT_ID in table.column_names:
        return ["" if v is None else str(v) for v in table.column(schema.PROMPT_ID).to_pylist()]
    overrides = overrides if overrides is not None else row_overrides(table)
    return [derive_prompt_id(p, o) for p, o in zip(_col(table, schema.PROMPT), overrides)]


def _id_hash(ids: list[str]) -> np.ndarray:
    return np.array(
        [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "big") for i in ids],
        dtype=np.uint64,
    )


# ---- scan: validate every row and find duplicate ids, streaming ------------------------------------------
@dataclass
class Scan:
    rows: int = 0  # input rows
    images: int = 0  # images the valid rows ask for
    problems: list = field(default_factory=list)  # Problem, in file/row order
    occurrence: dict = field(default_factory=dict)  # (file, row) -> k >= 1 for the k-th duplicate of an id
    duplicates: int = 0  # rows whose id appeared earlier
    ipp_overrides: int = 0  # rows whose own images_per_prompt overrides the config's (said in run output)
    file_images: dict = field(default_factory=dict)  # path -> (rows, images): the progress bar's total


def _scan_columns(sch: pa.Schema) -> list[str]:
    wanted = [schema.PROMPT, schema.PROMPT_ID, *schema.OVERRIDES]
    return [c for c in wanted if c in sch.names]


def scan_input(
    fs, files: list[str], default_ipp: int, batch_rows: int = 65536, limits: RowLimits | None = None
) -> Scan:
    """Stream the meaningful columns once: row problems, image count, duplicate ids."""
    scan, hashes, where = Scan(), [], []
    for fi, path in enumerate(files):
        meta = read_footer(fs, path)
        check_schema(path, meta.schema.to_arrow_schema())
        try:
            part, h, w = retry.call(
                _scan_file, fs, fi, path, default_ipp, batch_rows, limits, what=f"scanning {path!r}"
            )
        except retry.StorageError:
            raise  # transient storage faults are not bad input
        except (OSError, pa.ArrowException) as e:  # pyarrow: OSError "Corrupt snappy compressed data"
            if isinstance(e, FileNotFoundError):
                raise
            raise InputError(
                f"input file {path!r} has a valid footer but its data cannot be decoded "
                f"(corrupt data pages?): {e}; re-create the file"
            ) from None
        scan.problems += part.problems
        scan.ipp_overrides += part.ipp_overrides
        scan.images += part.images
        scan.file_images[path] = (meta.num_rows, part.images)
        hashes += h
        where += w
        scan.rows += meta.num_rows
    if hashes:
        _mark_duplicates(scan, np.concatenate(hashes), np.concatenate(where), files, fs)
    return scan


def _scan_file(fs, fi, path, default_ipp, batch_rows, limits) -> tuple[Scan, list, list]:
    """One file's rows: (its own Scan, id hashes, (file, row) positions), so a retried scan starts clean."""
    scan, hashes, where = Scan(), [], []
    with fs.open(path, "rb") as f:
        pf, offset = pq.ParquetFile(f), 0
        for batch in pf.iter_batches(batch_size=batch_rows, columns=_scan_columns(pf.schema_arrow)):
            t = pa.Table.from_batches([batch])
            probs = row_problems(t, path, offset, limits)
            scan.problems.extend(probs[k] for k in sorted(probs))
            ovr = row_overrides(t)
            valid = np.array([offset + i not in probs for i in range(t.num_rows)], dtype=bool)
            scan.ipp_overrides += sum("images_per_prompt" in o for o in ovr)
            scan.images += sum(o.get("images_per_prompt", default_ipp) for o, v in zip(ovr, valid) if v)
            hashes.append(_id_hash(prompt_ids(t, ovr)))  # every row, invalid ones too: keys stay unique
            where.append(np.stack([np.full(t.num_rows, fi), offset + np.arange(t.num_rows)], 1))
            offset += t.num_rows
    return scan, hashes, where


def _mark_duplicates(scan: Scan, h: np.ndarray, where: np.ndarray, files: list[str], fs=None) -> None:
    """The k-th repeat (in file, row order) of an id becomes ``id~k``; the first keeps its id. k skips
    any number whose ``id~k`` is another row's own id or already given, so ids `x`, `x`, `x~1` become
    `x`, `x~2`, `x~1`: every (prompt_id, sample_idx) of an output is unique, invalid rows included."""
    _, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
    dup = np.nonzero(counts[inverse] > 1)[0]
    if not len(dup):
        return
    order = dup[np.argsort(inverse[dup], kind="stable")]  # group by id, keep file/row order inside
    taken = set(h.tolist())
    names = _ids_at(fs, files, where[order]) if fs is not None else None
    k = 0
    for j, pos in enumerate(order):
        if j == 0 or inverse[pos] != inverse[order[j - 1]]:
            k = 0
            continue
        k += 1
        while names is not None and (c := int(_id_hash([f"{names[j]}~{k}"])[0])) in taken:
            k += 1
        if names is not None:
            taken.add(c)
        scan.occurrence[(files[int(where[pos, 0])], int(where[pos, 1]))] = k
    scan.duplicates = len(scan.occurrence)


def _ids_at(fs, files: list[str], where: np.ndarray) -> list[str]:
    """Base ids of the given (file index, row) positions, re-read (only files holding repeats)."""
    cache: dict[int, list[str]] = {}
    out = []
    for fi, row in where.tolist():
        if fi not in cache:
            with fs.open(files[fi], "rb") as f:
                pf = pq.ParquetFile(f)
                cache[fi] = prompt_ids(pf.read(columns=_scan_columns(pf.schema_arrow)))
        out.append(cache[fi][row])
    return out


def duplicate_report(fs, scan: Scan, limit: int = 5) -> str:
    """Human-readable list of the first duplicate rows, with their ids (re-read from the files)."""
    lines = []
    for (path, row), k in list(scan.occurrence.items())[:limit]:
        t = read_rows(fs, path, row, row + 1)
        lines.append(
            f"{path} row {row}: prompt_id {prompt_ids(t)[0]!r} (repeat #{k}), prompt {_col(t, 'prompt')[0]!r}"
        )
    return "\n".join(lines)


# ---- range reads -------------------------------------------------------------------------------------
def read_rows(fs, path: str, start: int, stop: int, columns=None) -> pa.Table:
    """Rows [start, stop) of a file, reading only the row groups that overlap them."""
    try:
        return retry.call(
            _read_rows, fs, path, start, stop, columns, what=f"reading rows {start}-{stop} of {path!r}"
        )
    except (OSError, pa.ArrowException) as e:
        if isinstance(e, (FileNotFoundError, retry.StorageError)):
            raise
        raise InputError(
            f"input file {path!r} rows {start}-{stop} cannot be decoded (corrupt data pages?): {e}"
        ) from None


def _read_rows(fs, path: str, start: int, stop: int, columns=None) -> pa.Table:
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        groups, first, pos = [], None, 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if pos < stop and pos + n > start:
                groups.append(g)
                first = pos if first is None else first
            pos += n
        if not groups:
            return pf.schema_arrow.empty_table()
        t = pf.read_row_groups(groups, columns=columns)
    return t.slice(start - first, stop - start)
