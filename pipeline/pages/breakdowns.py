"""The page sections of the breakdowns (numbers: pipeline/audit/breakdowns.py) for `sdgen report` and
`sdgen report --compare`: template sensitivity and CLIP-score distributions. Each takes ``{run name:
rows}`` (one run for the single-run report, two for a comparison) and returns Markup."""

from __future__ import annotations

from markupsafe import Markup

from pipeline.audit.breakdowns import clip_distribution, template_homogeneity, template_sensitivity
from pipeline.pages.charts import clip_box_svg
from pipeline.pages.render import render


def template_section(runs: dict, attribute, group_by, classes=None, by="prompt_id") -> Markup:
    """Template sensitivity: per group one table, a row per prompt and, per run, n and each class share
    [Wilson CI]; under it per run the range and the χ² homogeneity test."""
    sens = {name: template_sensitivity(r, attribute, group_by, classes, by) for name, r in runs.items()}
    homo = {name: template_homogeneity(s).set_index("group") for name, s in sens.items()}
    classes = classes or sorted(set().union(*(set(s["class"]) for s in sens.values())))
    groups = []
    for g in sorted(set().union(*(set(s["group"]) for s in sens.values()))):
        per = {n: s[s["group"] == g] for n, s in sens.items()}
        prompts = sorted(set().union(*(set(p["prompt"]) for p in per.values())))
        tests = [{"run": n, **h.loc[g].to_dict()} for n, h in homo.items() if g in h.index]
        groups.append({"name": g, "prompts": [_prompt_row(per, p, classes) for p in prompts], "tests": tests})
    return render(
        "template_sensitivity.html",
        attribute=attribute,
        runs=list(sens),
        classes=classes,
        groups=groups,
        group_by=" × ".join([group_by] if isinstance(group_by, str) else group_by),
    )


def _prompt_row(per: dict, prompt, classes) -> dict:
    """One prompt's row: its text and per run None (no such prompt) or {n, shares: [None or a class's
    row]}."""
    texts = [d.loc[d["prompt"] == prompt, "text"] for d in per.values()]
    cells = []
    for d in per.values():
        d = d[d["prompt"] == prompt].set_index("class")
        cells.append(
            None
            if d.empty
            else {
                "n": int(d["n"].iloc[0]),
                "shares": [d.loc[c].to_dict() if c in d.index else None for c in classes],
            }
        )
    return {"prompt": prompt, "text": str(next((t.iloc[0] for t in texts if len(t)), prompt)), "cells": cells}


def clip_section(runs: dict, group_by, column="clip_score") -> Markup:
    """The CLIP-score section: the overlaid box plots and a table of n, mean and quantiles per group and
    run; empty when no run has the column."""
    dists = {n: clip_distribution(r, group_by, column) for n, r in runs.items() if column in r.columns}
    if not dists:
        return Markup("")
    quantiles = [c for c in next(iter(dists.values())).columns if c.startswith("q")]
    rows = [
        {**r, "run": str(n)}
        for g in sorted(set().union(*(set(d["group"]) for d in dists.values())))
        for n, d in dists.items()
        for r in d[d["group"] == g].to_dict("records")
    ]
    return render("clip_distribution.html", chart=clip_box_svg(dists), quantiles=quantiles, rows=rows)
