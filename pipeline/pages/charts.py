"""Inline SVG charts of the pages: the geometry is computed here, the markup is in templates/
(bar_chart.svg, forest.svg, clip_box.svg); each returns Markup to embed in a page."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from markupsafe import Markup

from pipeline.pages.render import render

BAR_W, ROW_H, LABEL_W, PAD = 220, 18, 70, 6  # bar charts: bar length, row height, label column, padding (px)
RUN_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2")  # run 1, 2, ... in every chart of a page


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def bar_chart(title: str, classes, shares, lows, highs, target=None) -> Markup:
    """One group's class shares as horizontal bars with CI whiskers and (optionally) target ticks."""
    rows = []
    for i, c in enumerate(classes):
        y = PAD + 16 + i * ROW_H
        p, lo, hi, t = shares.get(c), lows.get(c), highs.get(c), (target or {}).get(c)
        rows.append(
            {
                "label": str(c),
                "y": y,
                "share": p if _num(p) else None,
                "bar": p * BAR_W if _num(p) else None,
                "ci": (LABEL_W + lo * BAR_W, LABEL_W + hi * BAR_W, y + ROW_H / 2)
                if _num(lo) and _num(hi)
                else None,
                "target": LABEL_W + t * BAR_W if _num(t) else None,
            }
        )
    return render(
        "bar_chart.svg",
        title=title,
        rows=rows,
        w=LABEL_W + BAR_W + 52,
        h=PAD * 2 + 16 + ROW_H * len(classes),
        label_w=LABEL_W,
        bar_w=BAR_W,
        bar_h=ROW_H - 5,
        row_h=ROW_H,
    )


def chart_strip(charts) -> Markup:
    """Charts in a row with the pages' styles: a notebook cell's HTML."""
    return render("chart_strip.html", charts=charts)


def forest_svg(table: pd.DataFrame, width=520) -> Markup:
    """B − A share per group × class as a dot with its CI, around a zero line; flagged rows in red."""
    rows = table[(table["quantity"] == "proportion") & table["diff"].notna()]
    if rows.empty:
        return Markup("")
    span = float(np.nanmax(np.abs(rows[["ci_low", "ci_high", "diff"]].to_numpy(float))))
    span = min(1.0, max(0.1, np.ceil(span * 10) / 10))
    left, plot, row = 150, width - 170, 16
    x = lambda v: left + (v + span) / (2 * span) * plot  # noqa: E731
    out = []
    for i, r in enumerate(rows.to_dict("records")):
        finite = np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"])
        out.append(
            {
                "group": r["group"],
                "cls": r["class"],
                "y": 10 + i * row + row / 2,
                "x": x(r["diff"]),
                "diff": r["diff"],
                "colour": "#d62728" if r["flag"] else "#1d2329",
                "ci": (x(r["ci_low"]), x(r["ci_high"])) if finite else None,
            }
        )
    return render(
        "forest.svg", rows=out, w=width, h=10 + row * len(rows) + 24, x0=x(0), left=left, plot=plot, span=span
    )


def clip_box_svg(dists: dict, width=520) -> Markup:
    """Horizontal box plots, one row per group × run (runs overlaid per group in RUN_COLOURS): whiskers
    q05–q95, box q25–q75, a tick at the median, a dot at the mean; one shared axis."""
    frames = [d for d in dists.values() if len(d)]
    if not frames:
        return Markup("")
    lo = min(float(d["q05"].min()) for d in frames)
    hi = max(float(d["q95"].max()) for d in frames)
    lo, hi = (lo - 0.5, hi + 0.5) if not hi > lo else (lo, hi)
    names = sorted(set().union(*(set(d["group"]) for d in frames)))
    left, plot, row, k = 110, width - 130, 14, len(dists)
    x = lambda v: left + (v - lo) / (hi - lo) * plot  # noqa: E731
    groups, y = [], 24
    for g in names:
        boxes, label_y = [], y + k * row / 2 + 4
        for (name, d), colour in zip(dists.items(), RUN_COLOURS):
            r = d[d["group"] == g]
            if len(r) and r["n"].iloc[0] > 0:
                r = r.iloc[0]
                boxes.append(
                    {
                        "run": str(name),
                        "colour": colour,
                        "y": y,
                        "ym": y + row / 2,
                        "median": r["q50"],
                        **{q: x(r[q]) for q in ("q05", "q25", "q50", "q95", "mean")},
                        "width": max(1.0, x(r["q75"]) - x(r["q25"])),
                    }
                )
            y += row
        groups.append({"name": g, "label_y": label_y, "boxes": boxes})
        y += 8
    legend = [
        {"name": str(n), "colour": c, "x": left + i * 120} for i, (n, c) in enumerate(zip(dists, RUN_COLOURS))
    ]
    return render(
        "clip_box.svg",
        legend=legend,
        groups=groups,
        w=width,
        h=24 + len(names) * (k * row + 8) + 22,
        left=left,
        plot=plot,
        row=row,
        axis_y=y,
        lo=lo,
        hi=hi,
    )
