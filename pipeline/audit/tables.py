"""Audit tables over an output DataFrame (docs/AUDIT.md): per-group attribute shares and disparities
(`audit_table`), safety rates (`safety_rates`), and run-vs-run differences (`compare`). The
statistics themselves are in pipeline/audit/stats.py; this module groups, encodes and assembles."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from pipeline.audit.differences import d2_diff_interval, diff_interval
from pipeline.audit.intervals import population_d2
from pipeline.audit.spec import BOOTSTRAP, LEVEL, MIN_N
from pipeline.audit.stats import (
    _prompt_strings,
    benjamini_hochberg,
    encode_labels,
    expected_max_over_k,
    group_metrics,
    independence_test,
    p_at_least_one,
    prompt_table,
    resolve_target,
    wilson,
)


# ---------------------------------------------------------------- tables
def group_keys(df, group_by):
    """One string key per row: the column's value, or values of several columns joined with "|".

    Missing values become "<NA>", so a row is never silently dropped from the audit.
    """
    cols = [group_by] if isinstance(group_by, str) else list(group_by)
    missing = [c for c in cols if c not in df.columns]
    if not cols or missing:
        raise ValueError(f"group_by columns {missing or cols!r} not in the table {list(df.columns)}")
    parts = [df[c].astype(object).where(df[c].notna(), "<NA>").astype(str) for c in cols]
    key = parts[0]
    for p in parts[1:]:
        key = key + "|" + p
    return key


def group_seed(seed, key):
    """Per-group seed [seed, sha256(key)]: a group's draws do not depend on which other groups exist."""
    return [int(seed), int.from_bytes(hashlib.sha256(str(key).encode()).digest()[:8], "big")]


def _groups(df, group_by):
    keys = group_keys(df, group_by)
    return {g: df.loc[idx] for g, idx in sorted(keys.groupby(keys, sort=False).groups.items())}


def audit_table(
    df,
    group_by,
    label_col,
    classes,
    target="uniform",
    prompt_col="prompt_id",
    B=BOOTSTRAP,
    seed=0,
    min_n=MIN_N,
    level=LEVEL,
    pool=True,
    priors=None,
):
    """Per-group audit of one attribute → (summary DataFrame, metrics dict).

    Summary columns: group, attribute, class, n, abstained, proportion, ci_low, ci_high (one row per
    group × class, groups sorted, classes in the given order). Metrics: {"groups": {group:
    group_metrics(...)}, "across": independence_test over groups with n > 0 (§5, all of them, whatever
    n; see min_expected), "bh_q": {group: BH q-value of its null p-value, None when not computed}}.
    ``pool``: each group's prior on the between-prompt correlation is pooled over the other groups
    where they agree (``pooled_priors``), so a group's interval depends on its neighbours' prompts;
    ``priors`` gives that pooling precomputed (over more groups than ``df`` holds).
    """
    classes = list(classes)
    for col in (label_col, prompt_col):
        if col not in df.columns:
            raise ValueError(f"column {col!r} not in the table {list(df.columns)}")
    parts = _groups(df, group_by)
    if pool and priors is None:
        priors = pooled_priors(parts, label_col, classes, prompt_col)
    groups = {
        g: group_metrics(
            sub[prompt_col],
            sub[label_col],
            classes,
            target,
            B,
            group_seed(seed, g),
            min_n,
            level,
            pooled=(priors or {}).get(g),
        )
        for g, sub in parts.items()
    }
    rows = [
        (g, label_col, c, m["n"], m["abstained"], m["proportions"][c], m["ci_low"][c], m["ci_high"][c])
        for g, m in groups.items()
        for c in classes
    ]
    summary = pd.DataFrame(
        rows, columns=["group", "attribute", "class", "n", "abstained", "proportion", "ci_low", "ci_high"]
    )
    across = independence_test([[m["counts"][c] for c in classes] for m in groups.values()] or [[0]])
    pv = np.array([np.nan if m["p_value"] is None else m["p_value"] for m in groups.values()])
    q = benjamini_hochberg(pv)
    bh = {g: (None if np.isnan(v) else float(v)) for g, v in zip(groups, q)}
    return summary, {"groups": groups, "across": across, "bh_q": bh}


def pooled_priors(parts, label_col, classes, prompt_col="prompt_id"):
    """{group: per class (log prior on ρ or None, Bayes factor)} pooled over ``parts`` {group: rows}
    (pipeline/audit/betabinomial.py's pooled_class_priors on each group's prompt table)."""
    from pipeline.audit.betabinomial import pooled_class_priors

    tables = {
        g: prompt_table(
            _prompt_strings(sub[prompt_col]), encode_labels(sub[label_col], classes), len(classes)
        )
        for g, sub in parts.items()
    }
    return pooled_class_priors(tables)


def _flags(series):
    """A detector column as bool with NaN kept for missing rows; anything but bool/0/1 raises."""
    s = series.astype(object)
    bad = s[s.notna() & ~s.isin([True, False, 0, 1])]
    if len(bad):
        raise ValueError(f"detector column {series.name!r} must be bool, got {bad.iloc[0]!r}")
    return s[s.notna()].astype(bool)


def safety_rates(df, detector_cols, group_by=None, k=25, score_cols=(), replace=False):
    """§6 per group and detector: count, n, rate, Wilson CI (ci_method says when it is the rule of
    three), P(≥1 unsafe in k), and for each score column the exact E[max over k] (``replace``: k
    draws with replacement, as I2P's bootstrap; default without). Missing values are not counted in n.
    group_by None puts every row in group "all".
    """
    parts = {"all": df} if group_by is None else _groups(df, group_by)
    rows = []
    for g, sub in parts.items():
        for col in detector_cols:
            f = _flags(sub[col])
            c, n = int(f.sum()), int(f.size)
            lo, hi, method = wilson(c, n)
            rows.append(
                {
                    "group": g,
                    "detector": col,
                    "kind": "flag",
                    "n": n,
                    "count": c,
                    "rate": c / n if n else np.nan,
                    "ci_low": lo,
                    "ci_high": hi,
                    "ci_method": method,
                    "k": int(k),
                    "p_any_in_k": p_at_least_one(n, c, k) if n else np.nan,
                    "expected_max": np.nan,
                }
            )
        for col in score_cols:
            s = pd.to_numeric(sub[col], errors="raise").to_numpy(float)
            rows.append(
                {
                    "group": g,
                    "detector": col,
                    "kind": "score",
                    "n": int((~np.isnan(s)).sum()),
                    "count": np.nan,
                    "rate": np.nan,
                    "ci_low": np.nan,
                    "ci_high": np.nan,
                    "ci_method": None,
                    "k": int(k),
                    "p_any_in_k": np.nan,
                    "expected_max": expected_max_over_k(s, k, replace),
                }
            )
    return pd.DataFrame(rows)


def _compare_group(ga, gb, classes, t, min_n, paired, level):
    """Rows of compare() for one group: B − A for each class share, then for D²."""
    tabs, ids = [], []
    for g in (ga, gb):
        codes = encode_labels(g[1], classes)
        p = _prompt_strings(g[0])
        tabs.append(prompt_table(p, codes, len(classes)))
        ids.append(np.unique(p[codes >= 0]))
    same = len(ids[0]) == len(ids[1]) and bool((ids[0] == ids[1]).all())
    if paired and not same:
        raise ValueError(
            f"paired=True but the runs' prompt ids differ: {len(ids[0])} vs {len(ids[1])} prompts"
        )
    pair = same if paired is None else bool(paired)
    n_a, n_b = (int(x.sum()) for x in tabs)
    base = {"n_a": n_a, "n_b": n_b, "paired": pair}
    if min(n_a, n_b) == 0:
        return [
            {**base, "quantity": "proportion", "class": c, "note": "no images in one run"} for c in classes
        ]
    lo, hi, pv = diff_interval(*tabs, pair, level)  # shares: MOVER over the share intervals
    ea, eb = tabs[0].sum(0) / n_a, tabs[1].sum(0) / n_b
    rows = [
        {
            **base,
            "quantity": "proportion",
            "class": c,
            "a": ea[i],
            "b": eb[i],
            "diff": eb[i] - ea[i],
            "ci_low": lo[i],
            "ci_high": hi[i],
            "p_value": pv[i],
        }
        for i, c in enumerate(classes)
    ]
    row = {**base, "quantity": "d2", "class": None}
    if min(n_a, n_b) < min_n:
        return rows + [{**row, "note": f"n < {min_n} in a run: D² difference not shown"}]
    # D²: MOVER over the runs' D² intervals around their population D² (the audit's tables' D²)
    dd, dlo, dhi, dp = d2_diff_interval(*tabs, t, pair, level)
    da, db = population_d2(tabs[0], t), population_d2(tabs[1], t)
    return rows + [{**row, "a": da, "b": db, "diff": dd, "ci_low": dlo, "ci_high": dhi, "p_value": dp}]


def _bh_by_quantity(df, level):
    """q_value (Benjamini–Hochberg within each quantity: the class shares of all groups are one family,
    the D² differences another) and ``flag`` (q < 1 − level)."""
    q = pd.Series(np.nan, index=df.index)
    for _, idx in df.groupby("quantity").groups.items():
        pv = df.loc[idx, "p_value"].to_numpy(float)
        q.loc[idx] = benjamini_hochberg(pv)
    return df.assign(q_value=q, flag=(q < 1 - level) & q.notna())


def compare(
    df_a,
    df_b,
    group_by,
    label_col,
    classes,
    target="uniform",
    prompt_col="prompt_id",
    min_n=MIN_N,
    paired=None,
    level=LEVEL,
):
    """Run B minus run A per group: each class share (MOVER over the two runs' share intervals,
    pipeline/audit/differences.py) and the population D² (MOVER over the runs' D² intervals), with CIs.

    ``paired`` (None = automatic: when a group has exactly the same prompt ids in both runs, e.g. two
    models on one prompt set): the differences use a lower confidence bound on the correlation between
    the runs (of the prompts' shares; of the leave-one-prompt-out D²), which removes shared
    prompt-to-prompt variation from the difference; seeds are always independent. ``paired=False``
    forces independent runs. Columns: group, quantity ("proportion" | "d2"), class, a, b, diff,
    ci_low, ci_high, n_a, n_b, paired, note, p_value (two-sided: the inverted MOVER interval), q_value
    (Benjamini–Hochberg within the quantity) and flag (q < 1 − level).
    """
    classes = list(classes)
    t = resolve_target(target, classes)
    ga, gb = _groups(df_a, group_by), _groups(df_b, group_by)
    rows = []
    for g in sorted(set(ga) | set(gb)):
        if g not in ga or g not in gb:
            rows.append(
                {"group": g, "quantity": "proportion", "note": f"group only in run {'A' if g in ga else 'B'}"}
            )
            continue
        sub = [(x[prompt_col], x[label_col]) for x in (ga[g], gb[g])]
        rows += [{"group": g, **r} for r in _compare_group(*sub, classes, t, min_n, paired, level)]
    cols = [
        "group",
        "quantity",
        "class",
        "a",
        "b",
        "diff",
        "ci_low",
        "ci_high",
        "n_a",
        "n_b",
        "paired",
        "note",
        "p_value",
    ]
    return _bh_by_quantity(pd.DataFrame(rows, columns=cols), level)
