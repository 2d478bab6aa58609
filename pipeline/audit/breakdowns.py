"""Per-prompt and per-image breakdowns of one or more runs, for `sdgen report` and `sdgen report --compare`
(docs/AUDIT.md §8-§9):

- template sensitivity: an attribute's class shares per prompt wording within each group, Wilson
  intervals per prompt, the spread across prompts (largest range of a class share) and a χ² test of
  homogeneity of the prompt × class table (`template_sensitivity`, `template_homogeneity`);
- CLIP-score distributions per group: quantiles and mean (`clip_distribution`), drawn as box plots
  with several runs overlaid (`clip_box_svg`).

Each has an HTML section renderer taking ``{run name: rows}`` (one run for the single-run report, two
for a comparison). ``rows`` are an output's rows as `audit.data.read_rows` gives them (labels joined
for attributes probed after the run); only status == "ok" rows count.
"""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
from scipy.stats import norm

from pipeline.audit.proportions import wilson
from pipeline.audit.stats import ABSTAIN, LEVEL, benjamini_hochberg, encode_labels
from pipeline.audit.tables import group_keys

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)  # box plot: whiskers at 5/95%, box at the quartiles
RUN_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2")  # run 1, 2, ... in every chart of a page


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] == "ok"] if "status" in rows.columns else rows


def _classes(rows, label, classes):
    if classes is not None:
        return list(classes)
    seen = rows[label].dropna().astype(str)
    return sorted(set(seen[seen != ABSTAIN]))


# ---------------------------------------------------------------- template sensitivity
def template_sensitivity(rows, attribute, group_by, classes=None, by="prompt_id", level=LEVEL) -> pd.DataFrame:
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
            out.append({"group": g, "prompt": p, "text": sub["_t"].iloc[0], "n": n, "abstained": abst,
                        "class": cls, "count": cnt, "share": cnt / n if n else np.nan, "ci_low": lo, "ci_high": hi})
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
        r = {"group": g, "prompts": int(len(tab)), "n": int(tab.to_numpy().sum()),
             "range": float(rng.max()) if len(rng) else np.nan,
             "range_class": str(rng.idxmax()) if len(rng) else None,
             "chi2": np.nan, "dof": 0, "p_value": np.nan, "min_expected": np.nan}
        if tab.shape[0] >= 2 and tab.shape[1] >= 2:
            res = chi2_contingency(tab.to_numpy(float), correction=False)
            r.update(chi2=float(res.statistic), dof=int(res.dof), p_value=float(res.pvalue),
                     min_expected=float(res.expected_freq.min()))
        out.append(r)
    df = pd.DataFrame(out, columns=["group", "prompts", "n", "range", "range_class", "chi2", "dof", "p_value",
                                    "min_expected"])
    return df.assign(q_value=benjamini_hochberg(df["p_value"].to_numpy(float)) if len(df) else [])


def _fmt(x, fmt="{:.2f}"):
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt.format(x)


def template_section(runs: dict, attribute, group_by, classes=None, by="prompt_id") -> str:
    """HTML of the template-sensitivity section: per group one table, a row per prompt and, per run,
    n and each class share [Wilson CI]; under it per run the range and the χ² homogeneity test."""
    sens = {name: template_sensitivity(r, attribute, group_by, classes, by) for name, r in runs.items()}
    homo = {name: template_homogeneity(s).set_index("group") for name, s in sens.items()}
    classes = classes or sorted(set().union(*(set(s["class"]) for s in sens.values())))
    groups = sorted(set().union(*(set(s["group"]) for s in sens.values())))
    e = html.escape
    out = [f'<div class="template-sensitivity" data-attribute="{e(attribute)}">']
    for g in groups:
        head = "".join(f"<th>{e(n)}: n</th>" + "".join(f"<th>{e(n)}: {e(c)}</th>" for c in classes) for n in sens)
        out.append(f"<h3>{e(' × '.join([group_by] if isinstance(group_by, str) else group_by))} = {e(g)}</h3>"
                   f'<div class="tw"><table><tr><th class="l">prompt</th>{head}</tr>')
        per = {n: s[s["group"] == g] for n, s in sens.items()}
        prompts = sorted(set().union(*(set(p["prompt"]) for p in per.values())))
        for p in prompts:
            texts = [d.loc[d["prompt"] == p, "text"] for d in per.values()]
            text = next((t.iloc[0] for t in texts if len(t)), p)
            cells = []
            for d in per.values():
                d = d[d["prompt"] == p].set_index("class")
                if d.empty:
                    cells += ["<td>–</td>"] * (len(classes) + 1)
                    continue
                cells.append(f"<td>{int(d['n'].iloc[0])}</td>")
                cells += [f"<td>{_fmt(d.at[c, 'share'])} [{_fmt(d.at[c, 'ci_low'])}, {_fmt(d.at[c, 'ci_high'])}]</td>"
                          if c in d.index else "<td>–</td>" for c in classes]
            out.append(f'<tr data-prompt="{e(p)}"><td class="l">{e(str(text))}</td>{"".join(cells)}</tr>')
        out.append("</table></div>")
        for n, h in homo.items():
            if g in h.index:
                r = h.loc[g]
                out.append(f'<p class="muted">{e(n)}: {r["prompts"]} prompts; largest spread of a share across '
                           f'prompts {_fmt(r["range"])} ({e(str(r["range_class"]))}); homogeneity χ² = '
                           f'{_fmt(r["chi2"])} (dof {r["dof"]}), p = {_fmt(r["p_value"], "{:.3g}")}, '
                           f'q (BH over groups) = {_fmt(r["q_value"], "{:.3g}")}, smallest expected count '
                           f'{_fmt(r["min_expected"], "{:.1f}")}.</p>')
    return "".join(out) + "</div>"


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
        out.append({"group": str(g), "n": int(s.size), "mean": float(s.mean()) if s.size else np.nan,
                    "min": float(s.min()) if s.size else np.nan, "max": float(s.max()) if s.size else np.nan,
                    **dict(zip(qcols, map(float, qs)))})
    return pd.DataFrame(out, columns=["group", "n", "mean", "min", "max", *qcols])


def clip_box_svg(dists: dict, width=520) -> str:
    """Horizontal box plots, one row per group × run (runs overlaid per group in RUN_COLOURS): whiskers
    q05–q95, box q25–q75, a tick at the median, a dot at the mean; one shared axis."""
    e = html.escape
    frames = [d for d in dists.values() if len(d)]
    if not frames:
        return ""
    lo = min(float(d["q05"].min()) for d in frames)
    hi = max(float(d["q95"].max()) for d in frames)
    lo, hi = (lo - 0.5, hi + 0.5) if not hi > lo else (lo, hi)
    groups = sorted(set().union(*(set(d["group"]) for d in frames)))
    left, plot, row, k = 110, width - 130, 14, len(dists)
    h = 24 + len(groups) * (k * row + 8) + 22
    x = lambda v: left + (v - lo) / (hi - lo) * plot  # noqa: E731
    out = [f'<svg class="chart clip-box" width="{width}" height="{h}" viewBox="0 0 {width} {h}" role="img" '
           f'aria-label="CLIP score per group">']
    for i, (name, colour) in enumerate(zip(dists, RUN_COLOURS)):
        out.append(f'<rect x="{left + i * 120}" y="4" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{left + i * 120 + 14}" y="13">{e(str(name))}</text>')
    y = 24
    for g in groups:
        out.append(f'<text x="{left - 6}" y="{y + k * row / 2 + 4:.1f}" text-anchor="end">{e(g)}</text>')
        for (name, d), colour in zip(dists.items(), RUN_COLOURS):
            r = d[d["group"] == g]
            if len(r) and r["n"].iloc[0] > 0:
                r = r.iloc[0]
                ym = y + row / 2
                out.append(f'<g class="box" data-run="{e(str(name))}" data-group="{e(g)}" data-median="{r["q50"]:.4f}">'
                           f'<line x1="{x(r["q05"]):.1f}" x2="{x(r["q95"]):.1f}" y1="{ym}" y2="{ym}" stroke="{colour}"/>'
                           f'<rect x="{x(r["q25"]):.1f}" y="{y + 2}" width="{max(1.0, x(r["q75"]) - x(r["q25"])):.1f}" '
                           f'height="{row - 4}" fill="{colour}" fill-opacity="0.45" stroke="{colour}"/>'
                           f'<line x1="{x(r["q50"]):.1f}" x2="{x(r["q50"]):.1f}" y1="{y + 1}" y2="{y + row - 1}" '
                           f'stroke="#1d2329" stroke-width="2"/><circle cx="{x(r["mean"]):.1f}" cy="{ym}" r="2.5" '
                           f'fill="#1d2329"/></g>')
            y += row
        y += 8
    out.append(f'<line x1="{left}" x2="{left + plot}" y1="{y}" y2="{y}" stroke="#5b6670"/>'
               f'<text x="{left}" y="{y + 14}">{lo:.3f}</text>'
               f'<text x="{left + plot}" y="{y + 14}" text-anchor="end">{hi:.3f}</text></svg>')
    return "".join(out)


def clip_section(runs: dict, group_by, column="clip_score") -> str:
    """HTML of the CLIP-score section: the overlaid box plots and a table of n, mean and quantiles per
    group and run; empty when no run has the column."""
    dists = {n: clip_distribution(r, group_by, column) for n, r in runs.items() if column in r.columns}
    if not dists:
        return ""
    e = html.escape
    qcols = [c for c in next(iter(dists.values())).columns if c.startswith("q")]
    head = "".join(f"<th>{c}</th>" for c in ["n", "mean", *qcols])
    out = ['<div class="clip-distribution">', clip_box_svg(dists),
           f'<div class="tw"><table><tr><th class="l">group</th><th class="l">run</th>{head}</tr>']
    for g in sorted(set().union(*(set(d["group"]) for d in dists.values()))):
        for n, d in dists.items():
            for r in d[d["group"] == g].to_dict("records"):
                cells = "".join(f"<td>{_fmt(r[c], '{:.3f}')}</td>" for c in ["mean", *qcols])
                out.append(f'<tr><td class="l">{e(g)}</td><td class="l">{e(str(n))}</td><td>{r["n"]}</td>{cells}</tr>')
    return "".join(out) + "</table></div></div>"
