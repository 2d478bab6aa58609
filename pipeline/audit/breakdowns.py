"""Per-prompt and per-image breakdowns of one or more runs, for `sdgen report` and `sdgen report --compare`
(docs/AUDIT.md §8-§9), as numbers (their page sections: pipeline/pages/breakdowns.py):

- template sensitivity: an attribute's class shares per prompt wording within each group, Wilson
  intervals per prompt, the spread across prompts (largest range of a class share) and a χ² test of
  homogeneity of the prompt × class table (`template_sensitivity`, `template_homogeneity`);
- CLIP-score distributions per group: quantiles and mean (`clip_distribution`).

``rows`` are an output's rows as `audit.data.read_rows` gives them (labels joined for attributes
probed after the run); only status == "ok" rows count.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

from pipeline.audit.proportions import wilson
from pipeline.audit.stats import ABSTAIN, LEVEL, benjamini_hochberg, encode_labels
from pipeline.audit.tables import group_keys

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)  # box plot: whiskers at 5/95%, box at the quartiles


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] == "ok"] if "status" in rows.columns else rows


def _classes(rows, label, classes):
    if classes is not None:
        return list(classes)
    seen = rows[label].dropna().astype(str)
    return sorted(set(seen[seen != ABSTAIN]))


# ---------------------------------------------------------------- template sensitivity
def template_sensitivity(
    rows, attribute, group_by, classes=None, by="prompt_id", level=LEVEL
) -> pd.DataFrame:
    """Class shares per prompt (``by``: prompt_id, or e.g. a template column) within each group.

    One row per group × prompt × class: group, prompt (the value of ``by``), text (the first prompt
    text of that prompt), n (non-abstained images of the prompt), abstained, class, count, share,
    ci_low, ci_high (Wilson at ``level``, no rule of three; NaN when n = 0). ``classes`` default: the
    labels seen, sorted (pass the attribute set's order to keep it).
    """
    label = f"attr_{attribute}"
    for col in (label, by):
        if col not in rows.columns:
            raise ValueError(f"template sensitivity: column {col!r} not in the rows {list(rows.columns)}")
    ok = _ok(rows)
    classes = _classes(ok, label, classes)
    codes = encode_labels(ok[label], classes)
    ok = ok.assign(_g=group_keys(ok, group_by).to_numpy(), _p=ok[by].astype(str).to_numpy(), _c=codes)
    text = ok["prompt"].astype(str) if "prompt" in ok.columns else ok["_p"]
    ok = ok.assign(_t=text.to_numpy())
    z = float(norm.ppf((1 + level) / 2))
    out = []
    for (g, p), sub in ok.groupby(["_g", "_p"], sort=True):
        c = sub["_c"].to_numpy()
        n, abst = int((c >= 0).sum()), int((c < 0).sum())
        for k, cls in enumerate(classes):
            cnt = int((c == k).sum())
            lo, hi, _ = wilson(cnt, n, z=z, rule_of_three=False)
            out.append(
                {
                    "group": g,
                    "prompt": p,
                    "text": sub["_t"].iloc[0],
                    "n": n,
                    "abstained": abst,
                    "class": cls,
                    "count": cnt,
                    "share": cnt / n if n else np.nan,
                    "ci_low": lo,
                    "ci_high": hi,
                }
            )
    cols = ["group", "prompt", "text", "n", "abstained", "class", "count", "share", "ci_low", "ci_high"]
    return pd.DataFrame(out, columns=cols)


def template_homogeneity(sens: pd.DataFrame) -> pd.DataFrame:
    """Per group, from template_sensitivity's rows: prompts (with n > 0), n, the largest range of a
    class share across those prompts (``range``, ``range_class``), and the χ² test of homogeneity
    of the prompt × class counts (scipy chi2_contingency; classes never seen dropped; NaN with fewer
    than 2 prompts or classes): chi2, dof, p_value, min_expected, q_value (BH across groups).

    Seeds of one prompt are independent draws, so under "the wording does not matter" the prompts
    share one class distribution: a small p says the shares depend on the wording.
    """
    from scipy.stats import chi2_contingency

    out = []
    for g, sub in sens.groupby("group", sort=True):
        tab = sub.pivot_table(index="prompt", columns="class", values="count", aggfunc="sum", sort=False)
        tab = tab[tab.sum(1) > 0]
        tab = tab.loc[:, tab.sum(0) > 0]
        shares = tab.div(tab.sum(1), axis=0)
        rng = (shares.max() - shares.min()) if len(tab) else pd.Series(dtype=float)
        r = {
            "group": g,
            "prompts": int(len(tab)),
            "n": int(tab.to_numpy().sum()),
            "range": float(rng.max()) if len(rng) else np.nan,
            "range_class": str(rng.idxmax()) if len(rng) else None,
            "chi2": np.nan,
            "dof": 0,
            "p_value": np.nan,
            "min_expected": np.nan,
        }
        if tab.shape[0] >= 2 and tab.shape[1] >= 2:
            res = chi2_contingency(tab.to_numpy(float), correction=False)
            r.update(
                chi2=float(res.statistic),
                dof=int(res.dof),
                p_value=float(res.pvalue),
                min_expected=float(res.expected_freq.min()),
            )
        out.append(r)
    df = pd.DataFrame(
        out,
        columns=["group", "prompts", "n", "range", "range_class", "chi2", "dof", "p_value", "min_expected"],
    )
    return df.assign(q_value=benjamini_hochberg(df["p_value"].to_numpy(float)) if len(df) else [])


# ---------------------------------------------------------------- CLIP-score distributions
def clip_distribution(rows, group_by, column="clip_score", quantiles=QUANTILES) -> pd.DataFrame:
    """Per group: n (non-missing scores of ok rows), mean, min, max and the ``quantiles`` (numpy's
    default linear interpolation) of ``column``, as columns q05, q25, q50, q75, q95."""
    if column not in rows.columns:
        raise ValueError(f"CLIP-score distribution: column {column!r} not in the rows")
    ok = _ok(rows)
    keys = group_keys(ok, group_by)
    qcols = [f"q{round(q * 100):02d}" for q in quantiles]
    out = []
    for g, sub in ok.groupby(keys.to_numpy(), sort=True):
        s = pd.to_numeric(sub[column], errors="raise").to_numpy(float)
        s = s[~np.isnan(s)]
        qs = np.quantile(s, quantiles) if s.size else [np.nan] * len(quantiles)
        out.append(
            {
                "group": str(g),
                "n": int(s.size),
                "mean": float(s.mean()) if s.size else np.nan,
                "min": float(s.min()) if s.size else np.nan,
                "max": float(s.max()) if s.size else np.nan,
                **dict(zip(qcols, map(float, qs))),
            }
        )
    return pd.DataFrame(out, columns=["group", "n", "mean", "min", "max", *qcols])
