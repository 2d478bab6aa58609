"""`sdgen audit`: per-group attribute distributions and safety rates of an output, with CIs.

Writes beside the output (never into its parts):
    OUTPUT/audit/summary.parquet  group, attribute, class, n, abstained, proportion, ci_low, ci_high
    OUTPUT/audit/metrics.json     {"attributes": {A: settings, per-group metrics and coverage, across-
                                  group tests}, "safety": per-group detector rates, "source": ...}
An audit of attribute A replaces A's rows and entry and keeps the other attributes' (so the report
can show several attributes, each with the grouping it was audited by).

Definitions are docs/AUDIT.md's, computed by pipeline.audit.stats. Only status == "ok" rows enter a
distribution; blocked, failed and invalid rows are counted in each group's coverage. Below min_n
(spec.MIN_N) non-abstained images a group shows its null floor, not a disparity. What an audit asks
and every default: pipeline/audit/spec.py (`AuditSpec`).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.audit import stats as S
from pipeline.audit import tables as T
from pipeline.audit.data import (
    AuditError,
    apply_where,
    attribute_labels,
    open_source,
    passthrough_columns,
    read_rows,
)
from pipeline.audit.spec import AUDIT_METHOD, CALIBRATION_BOOTSTRAP, AuditSpec
from pipeline.core.storage import read_frame

SUMMARY_COLUMNS = ["group", "attribute", "class", "n", "abstained", "proportion", "ci_low", "ci_high"]
DETECTORS = ("safety_flagged", "sd_checker_nsfw")


def jsonable(x):
    """numpy scalars/arrays, tuples and DataFrames -> JSON types; NaN and ±inf -> None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in x]
    if isinstance(x, pd.DataFrame):
        return [jsonable(r) for r in x.to_dict("records")]
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if x is pd.NA or x is pd.NaT:
        return None
    return x


# ---------------------------------------------------------------- inputs
def load_target(spec, classes):
    """ "uniform", a {class: weight} mapping, or {"groups": {group: {class: weight}}, "default": ...}.

    A YAML path may hold any of these; `skews:` is read like `groups:` (so the toy world's
    pipeline/data/toyworld.yaml gives the ground truth per shape).
    """
    import yaml

    if spec is None or spec == "uniform":
        return "uniform"
    raw = spec
    if isinstance(spec, str):
        try:
            with open(spec) as f:
                raw = yaml.safe_load(f)
        except OSError as e:
            raise AuditError(f"--target {spec!r}: neither 'uniform' nor a readable YAML file ({e})") from None
    if isinstance(raw, dict) and ("groups" in raw or "skews" in raw):
        groups = raw.get("groups", raw.get("skews"))
        out = {
            "groups": {str(g): _one_target(t, classes, f"group {g!r}") for g, t in groups.items()},
            "default": _one_target(raw.get("default", "uniform"), classes, "default"),
        }
        return out
    return _one_target(raw.get("target", raw) if isinstance(raw, dict) else raw, classes, "target")


def _one_target(t, classes, where):
    if t == "uniform":
        return "uniform"
    try:
        S.resolve_target(t, classes)
    except ValueError as e:
        raise AuditError(f"--target {where}: {e}") from None
    return {c: float(t[c]) for c in classes}


def run_audit_defaults(src) -> dict:
    """The job's `audit:` section as recorded in run.json ({} for outputs without one)."""
    return (((getattr(src, "run", None) or {}).get("config") or {}).get("audit")) or {}


def default_group_by(src) -> list[str]:
    """The grouping when none is given: the job's audit.group_by, else the first of the input's own
    columns (never a column sdgen derives)."""
    if run_audit_defaults(src).get("group_by"):
        return list(run_audit_defaults(src)["group_by"])
    cols = passthrough_columns(src.columns())
    if not cols:
        raise AuditError(f"{src.url!r} has no column of its input to group by; pass --group-by COLUMN")
    return cols[:1]


def default_where(src) -> list[str]:
    """The rows audited when no --where is given: the job's audit.where (COL=VALUE items), else all."""
    return list(run_audit_defaults(src).get("where") or [])


def default_attributes(src, given) -> list[str]:
    """The attributes to audit: those given, else every attribute the run (or a post-hoc probe) labelled."""
    from pipeline.audit.data import probed_attributes

    if given:
        return list(dict.fromkeys(given))
    attrs = list(probed_attributes(src))
    if not attrs:
        raise AuditError(
            f"{src.url!r} holds no probed attribute: pass --attribute A (and --attribute-set SET "
            f"to probe the stored images now)"
        )
    return job_attributes(src, attrs)


def job_attributes(src, probed) -> list[str]:
    """The job's audit.attributes (run.json) among ``probed``, else all of ``probed``; a name the run
    did not probe is an AuditError naming the key, the value and what was probed."""
    chosen = list(run_audit_defaults(src).get("attributes") or [])
    missing = [a for a in chosen if a not in probed]
    if missing:
        raise AuditError(
            f"audit.attributes in {src.url!r}/run.json: {missing[0]!r} was not probed in this run "
            f"(probed: {sorted(probed)}); pass --attribute A"
        )
    return chosen or list(probed)


# ---------------------------------------------------------------- metrics
def coverage(df: pd.DataFrame, group_by) -> dict:
    """Per group: rows by status, blocked/failed rates with Wilson CIs (all rows, not only ok)."""
    keys = T.group_keys(df, group_by)
    out = {}
    for g, sub in df.groupby(keys, sort=True):
        n = len(sub)
        st = sub["status"].value_counts()
        row = {"rows": n, **{s: int(st.get(s, 0)) for s in ("ok", "blocked", "failed", "invalid")}}
        for s in ("blocked", "failed"):
            lo, hi, _ = S.wilson(row[s], n)
            row[f"{s}_rate"], row[f"{s}_ci"] = row[s] / n, (lo, hi)
        out[str(g)] = row
    return out


def _audit_groups(ok, spec: AuditSpec, label, classes, target):
    """audit_table, or with per-group targets: audit_table per group and the across-group tests and
    BH q-values recomputed over all of them (per-group seeds are the same either way)."""
    opts = {"B": spec.bootstrap, "seed": spec.seed, "min_n": spec.min_n, "level": spec.level}
    opts["pool"] = spec.pool_icc
    if not isinstance(target, dict) or "groups" not in target:
        return T.audit_table(ok, list(spec.group_by), label, classes, target, **opts)
    if spec.pool_icc:  # pooled over every group once, not within each one-group call below
        opts["priors"] = T.pooled_priors(T._groups(ok, list(spec.group_by)), label, classes)
    keys = T.group_keys(ok, list(spec.group_by))
    summaries, groups = [], {}
    for g in sorted(keys.unique()):
        t = target["groups"].get(g, target["default"])
        s, m = T.audit_table(ok[keys == g], list(spec.group_by), label, classes, t, **opts)
        summaries.append(s)
        groups.update({k: {**v, "target": t} for k, v in m["groups"].items()})
    across = S.independence_test([[m["counts"][c] for c in classes] for m in groups.values()] or [[0]])
    q = S.benjamini_hochberg([np.nan if m["p_value"] is None else m["p_value"] for m in groups.values()])
    bh = {g: (None if np.isnan(v) else float(v)) for g, v in zip(groups, q)}
    summary = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame(columns=SUMMARY_COLUMNS)
    return summary, {"groups": groups, "across": across, "bh_q": bh}


def audit_attribute(df, attribute, info, spec: AuditSpec):
    """(summary rows, metrics entry) of one attribute over ``df`` (all statuses; ok rows counted),
    grouped by ``spec.group_by`` against ``spec.target``."""
    label = f"attr_{attribute}"
    classes = list(info["classes"])
    target = load_target(spec.target, classes)
    ok = df[df["status"] == "ok"]
    try:
        summary, m = _audit_groups(ok, spec, label, classes, target)
    except ValueError as e:
        raise AuditError(f"attribute {attribute!r}: {e}") from None
    summary["attribute"] = attribute
    cov = coverage(df, list(spec.group_by))
    groups = {}
    for g in sorted(set(cov) | set(m["groups"])):
        gm = m["groups"].get(g) or {"n": 0, "abstained": 0, "note": "no ok images"}
        groups[g] = {**gm, "floor": gm.get("null_mad"), "q_value": m["bh_q"].get(g), "coverage": cov.get(g)}
    entry = {
        "attribute": attribute,
        "classes": classes,
        "group_by": list(spec.group_by),
        "target": target,
        "bootstrap": spec.bootstrap,
        "seed": spec.seed,
        "min_n": spec.min_n,
        "level": spec.level,
        "pool_icc": spec.pool_icc,
        "audit_method": AUDIT_METHOD,
        "set": info.get("set"),
        "labels": info.get("origin"),
        "caveats": info.get("caveats", ""),
        "description": info.get("description", ""),
        "groups": groups,
        "across": m["across"],
    }
    return summary[SUMMARY_COLUMNS], entry


def safety_table(df: pd.DataFrame, group_by, k: int) -> pd.DataFrame:
    """§6 rates per group for every stored detector, the screening block rate, and E[max] of raw scores."""
    df = df.copy()
    detectors = [c for c in DETECTORS if c in df.columns]
    status = df["status"].to_numpy(object)  # invalid rows were never screened: not in n
    df["screening_blocked"] = pd.Series(
        np.where(status == "invalid", None, status == "blocked"), index=df.index, dtype=object
    )
    scores = [
        c
        for c in df.columns
        if c.startswith("safety_") and c != "safety_flagged" and pd.api.types.is_numeric_dtype(df[c])
    ]
    return T.safety_rates(df, [*detectors, "screening_blocked"], group_by, k=k, score_cols=scores)


# ---------------------------------------------------------------- the command
@dataclass
class AuditResult:
    """What one audit computed, for the caller (the CLI, the report) to use without re-reading:
    ``summary`` (rows of summary.parquet), ``metrics`` (this audit's metrics.json entries),
    ``merged`` (metrics.json as written: earlier audits of other attributes kept), ``paths``,
    ``source`` (the opened output) and ``rows`` (the audited rows, after --where)."""

    summary: pd.DataFrame
    metrics: dict
    merged: dict
    paths: dict
    source: object
    rows: pd.DataFrame

    def __getitem__(self, key):  # result["metrics"]: the dict-style access of earlier notebooks
        return getattr(self, key)


def run_audit(src, spec: AuditSpec, *, write=True, storage=None) -> AuditResult:
    """Audit ``spec.attributes`` of the output ``src`` (a URL or an opened Source) grouped by
    ``spec.group_by``; ``storage`` is the job config's storage section for cloud URLs.

    ``spec.probe`` matters only for attributes the run did not probe. Writes audit/summary.parquet and
    audit/metrics.json when ``write``. ``spec.calibration``: a LABELS file (prompt_id, sample_idx,
    label) for error-corrected shares (pipeline/audit/calibration.py; one attribute only).
    """
    src = open_source(src, storage)
    df = _audited_rows(src, spec)
    where, group_by = list(spec.where), list(spec.group_by)
    summaries, entries = [], {}
    for a in spec.attributes:
        labelled, info = attribute_labels(src, df, a, **spec.probe.kwargs())
        s, e = audit_attribute(labelled, a, info, spec)
        if spec.calibration:
            from pipeline.audit.calibration import apply_calibration

            s, e = apply_calibration(
                labelled,
                a,
                group_by,
                s,
                e,
                spec.calibration,
                B=min(spec.bootstrap, CALIBRATION_BOOTSTRAP),
                seed=spec.seed,
                level=spec.level,
            )
        summaries.append(s)
        entries[a] = {**e, "where": where}
    k = spec.k
    if k is None:
        k = int(((src.run or {}).get("config") or {}).get("generation", {}).get("images_per_prompt") or 25)
    safety = safety_table(df, group_by, k)
    metrics = {
        "attributes": entries,
        "safety": {"group_by": group_by, "k": k, "where": where, "rows": safety},
        "source": {
            "output": src.url,
            "run_fingerprint": (src.run or {}).get("fingerprint"),
            "rows": len(df),
            "sdgen_output": not src.foreign,
        },
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if spec.diversity:  # Vendi score and mean cosine per prompt and group (pipeline/audit/diversity.py)
        metrics["diversity"] = _diversity(src, df, spec)
    summary = pd.concat(summaries, ignore_index=True)
    paths, merged = write_results(src, summary, metrics) if write else ({}, jsonable(metrics))
    return AuditResult(summary, jsonable(metrics), merged, paths, src, df)


def _audited_rows(src, spec: AuditSpec) -> pd.DataFrame:
    """The output's rows that ``spec.where`` picks, after checking the grouping columns exist."""
    df = read_rows(src)
    if df.empty:
        raise AuditError(f"{src.url!r} has no committed rows")
    missing = [c for c in spec.group_by if c not in df.columns]
    if missing:
        raise AuditError(
            f"--group-by {missing[0]!r} is not a column of {src.url!r}; passthrough columns are "
            f"{passthrough_columns(df.columns)}"
        )
    df = apply_where(df, spec.where)
    if df.empty:
        raise AuditError(f"--where {list(spec.where)} leaves no rows")
    return df


def _diversity(src, df, spec: AuditSpec) -> dict:
    from pipeline.audit.diversity import diversity_metrics
    from pipeline.probes.scorer import ScorerError

    try:
        return diversity_metrics(src, df, list(spec.group_by), spec.seed, **spec.probe.kwargs())
    except (
        AuditError,
        ScorerError,
    ) as e:  # e.g. foreign data without a CLIP named: the rest of the audit stands
        return {"skipped": str(e)}


def write_results(src, summary: pd.DataFrame, metrics: dict) -> tuple[dict, dict]:
    """Merge into audit/summary.parquet and audit/metrics.json (other attributes' results kept);
    returns (paths, the merged metrics as written)."""

    spath, mpath = f"{src.audit_dir}/summary.parquet", f"{src.audit_dir}/metrics.json"
    old = src.output.read_json(mpath) or {}
    if src.output.exists(spath):
        prev = read_frame(src.fs, spath)
        summary = pd.concat(
            [prev[~prev["attribute"].isin(summary["attribute"].unique())], summary], ignore_index=True
        )
    merged = {**old, **metrics, "attributes": {**old.get("attributes", {}), **metrics["attributes"]}}
    from pipeline.audit.calibration import CORRECTED_COLUMNS

    cols = SUMMARY_COLUMNS + [c for c in CORRECTED_COLUMNS if c in summary.columns]
    table = pa.Table.from_pandas(
        summary[cols].astype({"n": "int64", "abstained": "int64"}), preserve_index=False
    )
    src.output.write_table(spath, table)
    merged = jsonable(merged)
    src.output.write_bytes_atomic(mpath, dumps(merged).encode())
    return {"summary": spath, "metrics": mpath}, merged


def dumps(obj) -> str:
    import json

    return json.dumps(obj, indent=1, sort_keys=True, allow_nan=False)


def read_results(url, storage=None) -> tuple[pd.DataFrame | None, dict | None]:
    """(summary, metrics) of the last audits of an output (a URL or an opened Source), or (None, None)."""
    src = open_source(url, storage)
    mpath = f"{src.audit_dir}/metrics.json"
    metrics = src.output.read_json(mpath)
    if metrics is None:
        return None, None
    return read_frame(src.fs, f"{src.audit_dir}/summary.parquet"), metrics
