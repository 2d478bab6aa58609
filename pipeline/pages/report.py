"""`sdgen report OUTPUT [-o FILE.html]`: one self-contained HTML file of an output's audit.

Per audited attribute: bar charts of class shares per group with CI whiskers and the target, the
metric table (D² with CI, floor, excess, p, q, n, abstain rate, coverage), thumbnail grids per
group labelled with the probe's label; then the safety table, policies applied, run provenance
and the attribute set's caveats. Reads OUTPUT/audit/metrics.json; when there is none it runs the
audit first (every probed attribute, grouped by --group-by or the first passthrough column), or
explains in the report why it could not.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from pipeline.audit.data import (
    KEYS,
    apply_where,
    open_source,
    read_images,
    read_rows,
    with_posthoc_labels,
)
from pipeline.audit.spec import AuditSpec
from pipeline.audit.text import group_notes
from pipeline.core import layout
from pipeline.core.fmt import ci, num
from pipeline.pages.breakdowns import clip_section, template_section
from pipeline.pages.charts import bar_chart
from pipeline.pages.findings import findings_section
from pipeline.pages.render import flagged, render, thumbnail
from pipeline.pages.stored_audit import ensure_audit

THUMB = 96  # px: thumbnails are at most this big (smaller images are kept as stored)
MAX_COLUMNS = 9  # columns per table: 9 fit a 1400 px page even with "0.70 [0.55, 0.82]" cells


def _target_of(entry, group):
    t = entry["target"]
    if isinstance(t, dict) and "groups" in t:
        t = t["groups"].get(group, t["default"])
    if t == "uniform":
        return {c: 1 / len(entry["classes"]) for c in entry["classes"]}
    return t


def _target_text(t) -> str:
    if t == "uniform":
        return "uniform"
    if isinstance(t, dict) and "groups" in t:
        return (
            "per group ("
            + "; ".join(
                f"{g}: " + ", ".join(f"{c} {w:.2f}" for c, w in v.items())
                if isinstance(v, dict)
                else f"{g}: {v}"
                for g, v in t["groups"].items()
            )
            + ")"
        )
    return ", ".join(f"{c} {w:.2f}" for c, w in t.items())


def metric_tables(entry) -> list[dict]:
    """The per-group numbers as tables of at most MAX_COLUMNS columns, so none runs off a 1400 px page:
    class shares [CI] (split after MAX_COLUMNS - 1 classes), disparity metrics, and coverage."""
    classes, groups = entry["classes"], entry["groups"]
    shares = {g: _share_cells(m, classes) for g, m in groups.items()}
    step = MAX_COLUMNS - 1
    tables = [
        {
            "caption": "Class shares [CI]"
            + (f" ({i // step + 1} of {-(-len(classes) // step)})" if len(classes) > step else ""),
            "head": ["group", *classes[i : i + step]],
            "rows": [[g, *v[i : i + step]] for g, v in shares.items()],
        }
        for i in range(0, len(classes), step)
    ]
    tables.append(
        {
            "caption": "Disparity",
            "head": ["group", "D² [CI]", "floor E[MAD]", "MAD", "excess", "p", "q", "KL", "H norm"],
            "rows": [_disparity_row(g, m, entry["min_n"]) for g, m in groups.items()],
        }
    )
    tables.append(
        {
            "caption": "Coverage",
            "head": ["group", "n", "prompts", "abstain", "blocked", "failed"],
            "rows": [_coverage_row(g, m) for g, m in groups.items()],
        }
    )
    return tables


def _share_cells(m, classes) -> list[str]:
    """A group's "share [CI]" per class ("–" where it has none)."""
    p, lo, hi = (m.get(k) or {} for k in ("proportions", "ci_low", "ci_high"))
    return [
        f"{num(p.get(c), '.2f')} {ci([lo.get(c), hi.get(c)], '.2f')}" if p.get(c) is not None else "–"
        for c in classes
    ]


def _disparity_row(g, m, min_n) -> list:
    d2 = f"{num(m['d2'])} {ci(m['d2_ci'])}" if m.get("d2") is not None else f"n<{min_n}: floor only"
    keys = (("floor", ".3f"), ("mad", ".3f"), ("excess", ".3f"), ("p_value", ".2g"), ("q_value", ".2g"))
    return [g, d2, *(num(m.get(k), f) for k, f in keys), num(m.get("kl")), num(m.get("entropy_norm"))]


def _coverage_row(g, m) -> list:
    cov = m.get("coverage") or {}
    return [
        g,
        m.get("n", 0),
        m.get("n_prompts", 0),
        num(m.get("abstain_rate"), ".0%"),
        num(cov.get("blocked_rate"), ".0%"),
        num(cov.get("failed_rate"), ".0%"),
    ]


def pick_rows(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """Up to n rows, one prompt after another (round robin over sorted prompt ids): a grid shows
    the spread of a group's prompts, and the same rows every time."""
    df = df.sort_values(KEYS)
    rank = df.groupby("prompt_id").cumcount()
    return df.assign(_r=rank.to_numpy()).sort_values(["_r", "prompt_id"]).head(n).drop(columns="_r")


def grids(src, df, entry, attribute, n) -> list[dict]:
    from pipeline.audit.tables import group_keys

    label = f"attr_{attribute}"
    ok = apply_where(df, entry.get("where"))
    ok = ok[ok["status"] == "ok"]
    ok = ok.assign(_g=group_keys(ok, entry["group_by"]).to_numpy())
    picked = {g: pick_rows(ok[ok["_g"] == g], n) for g in entry["groups"]}
    images = read_images(src, pd.concat(list(picked.values())) if picked else ok.head(0))
    out = []
    for g, rows in picked.items():
        ims = []
        for r in rows.itertuples(index=False):
            png = images.get((r.prompt_id, r.sample_idx))
            if png is None:
                continue
            blur = flagged(r._asdict())
            lab, prompt = getattr(r, label, None), str(getattr(r, "prompt", ""))
            ims.append(
                {
                    "src": thumbnail(png, blur, THUMB),
                    "alt": prompt,
                    "label": f"{lab if isinstance(lab, str) else '–'}{' · flagged, blurred' if blur else ''}"
                    f" · {prompt}",
                }
            )
        out.append({"group": g, "images": ims})
    return out


def chart_facets(entry) -> tuple[list[dict], list[str]]:
    """Bar charts as small multiples: one titled facet per value of the first group-by column (one
    untitled facet when there is one column), each chart titled by the other columns' values. Groups
    with no labelled image (n=0: all abstained or filtered out) get no chart; their names come back."""
    cols, facets, empty = entry["group_by"], {}, []
    for g, m in entry["groups"].items():
        if not m.get("n"):
            empty.append(g)
            continue
        head, _, rest = str(g).partition("|") if len(cols) > 1 else ("", "", str(g))
        chart = bar_chart(
            f"{rest} (n={m['n']})",
            entry["classes"],
            m.get("proportions") or {},
            m.get("ci_low") or {},
            m.get("ci_high") or {},
            _target_of(entry, g),
        )
        facets.setdefault(head, []).append(chart)
    title = lambda v: f"{cols[0]} = {v}" if len(cols) > 1 else ""  # noqa: E731
    return [{"title": title(v), "charts": c} for v, c in facets.items()], empty


def attribute_section(src, df, entry, thumbnails) -> dict:
    a = entry["attribute"]
    if f"attr_{a}" not in df.columns:  # probed after the run: the labels stored under audit/probes/
        df = with_posthoc_labels(src, df, a)
    facets, empty = chart_facets(entry)
    ac = entry.get("across") or {}
    across = (
        f"Across groups: χ² = {num(ac.get('chi2'), '.2f')} (dof {ac.get('dof')}), p = "
        f"{num(ac.get('p'), '.3g')}; G = {num(ac.get('G'), '.2f')}; Cramér's V = "
        f"{num(ac.get('cramers_v'))}; smallest expected count {num(ac.get('min_expected'), '.1f')}."
    )
    return {
        "attribute": a,
        "group_by": " × ".join(entry["group_by"]),
        "description": entry.get("description", ""),
        "target_text": _target_text(entry["target"]),
        "level": int(round(entry.get("level", 0.95) * 100)),
        "bootstrap": entry["bootstrap"],
        "seed": entry["seed"],
        "where": ", ".join(entry.get("where") or []),
        "labels": {"run": "run (probed in the actor)", "posthoc": "stored PNGs (probed after the run)"}.get(
            entry.get("labels"), str(entry.get("labels"))
        ),
        "caveats": entry.get("caveats", ""),
        "facets": facets,
        "empty": ", ".join(empty),
        "tables": metric_tables(entry),
        "across": across,
        "group_notes": group_notes(entry),
        "grids": grids(src, df, entry, a, thumbnails),
        "templates": template_section(
            {"run": apply_where(df, entry.get("where"))}, a, entry["group_by"], entry["classes"]
        ),
    }


def safety_section(metrics) -> dict:
    s = (metrics or {}).get("safety") or {}
    head = ["group", "detector", "n", "count", "rate", "95% CI", "P(≥1 in k)", "E[max] over k"]
    rows = []
    for r in s.get("rows", []):
        if r["kind"] == "flag":
            interval = ci([r["ci_low"], r["ci_high"]]) + (
                " (rule of 3)" if r["ci_method"] == "rule_of_three" else ""
            )
            rows.append(
                [
                    r["group"],
                    r["detector"],
                    r["n"],
                    int(r["count"] or 0),
                    num(r["rate"]),
                    interval,
                    num(r["p_any_in_k"]),
                    "–",
                ]
            )
        else:
            rows.append(
                [
                    r["group"],
                    r["detector"] + " (raw score)",
                    r["n"],
                    "–",
                    "–",
                    "–",
                    "–",
                    num(r["expected_max"]),
                ]
            )
    return {"head": head, "rows": rows, "k": s.get("k")}


def diversity_section(metrics) -> dict:
    d = (metrics or {}).get("diversity") or {}
    head = ["group", "prompts", "images", "Vendi", "95% CI", "mean cos", "95% CI"]
    rows = [
        [
            g["group"],
            g["prompts"],
            g["n"],
            num(g["vendi"], ".2f"),
            ci(g.get("vendi_ci"), ".2f"),
            num(g["mean_cos"]),
            ci(g.get("mean_cos_ci"), ".2f"),
        ]
        for g in d.get("per_group", [])
    ]
    return {"head": head, "rows": rows, "source": d.get("embedding", "–"), "note": d.get("skipped", "")}


def provenance(src, df) -> list[tuple[str, str]]:
    run = src.run or {}
    cfg, gen = run.get("config") or {}, (run.get("config") or {}).get("generation") or {}
    uniq = lambda c: ", ".join(sorted(map(str, df[c].dropna().unique()))) if c in df.columns else "–"  # noqa: E731
    status = ", ".join(f"{k} {v}" for k, v in df["status"].value_counts().items())
    rows = [
        ("output", src.url),
        ("model", cfg.get("model", uniq("model"))),
        ("scheduler", uniq("scheduler")),
        ("steps", uniq("steps")),
        ("guidance scale", uniq("guidance_scale")),
        ("size", f"{gen.get('width', '–')}×{gen.get('height', '–')}"),
        ("job seed", gen.get("seed", "–")),
        ("images per prompt", _per_prompt(df, gen)),
        ("CLIP (scoring, probes)", (cfg.get("scoring") or {}).get("clip_model", "–")),
        ("config fingerprint", run.get("fingerprint", "– (not an sdgen output)")),
        ("run created", run.get("created", "–")),
        ("rows", f"{len(df)} ({status})"),
    ]
    rows += [(f"version: {k}", v) for k, v in (run.get("versions") or {}).items()]
    return [(k, str(v)) for k, v in rows]


def _per_prompt(df, gen: dict) -> str:
    """Images per prompt as stored (rows may override the config's value), e.g. "4–8 (config 24)"."""
    want = gen.get("images_per_prompt", "–")
    if "prompt_id" not in df.columns or df.empty:
        return str(want)
    n = df.groupby("prompt_id").size()
    seen = str(n.min()) if n.min() == n.max() else f"{n.min()}–{n.max()}"
    return seen if seen == str(want) else f"{seen} (config {want}; per-row values override it)"


def policies(src) -> list[dict]:
    try:
        dirs = src.fs.ls(src.output.path(layout.POLICY), detail=False)
    except FileNotFoundError:
        return []
    out = []
    for d in sorted(dirs):
        rec = src.output.read_json(f"{d}/policy.json")
        if rec:
            out.append(
                {
                    "name": rec["name"],
                    "fingerprint": rec["fingerprint"][:12],
                    "counts": ", ".join(f"{k} {v}" for k, v in sorted(rec["counts"].items())),
                }
            )
    return out


def build_report(url, out_file=None, spec: AuditSpec | None = None, thumbnails=8, storage=None) -> dict:
    """Write the report; returns {"path", "bytes", "notes"}. The output is opened once. ``spec`` says
    how to audit when the page needs an audit (its group_by, bootstrap, seed); ``spec.where`` (COL=VALUE
    items, as sdgen audit --where) reports on those rows only, audited for this page."""
    src = open_source(url, storage)
    metrics, notes = ensure_audit(src, spec or AuditSpec())
    df = read_rows(src)
    entries = list(((metrics or {}).get("attributes") or {}).values())
    sections = [attribute_section(src, df, e, thumbnails) for e in entries]
    clip = (
        clip_section({"run": apply_where(df, entries[0].get("where"))}, entries[0]["group_by"])
        if entries
        else ""
    )
    page = render(
        "report.html",
        title=url,
        generated=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        notes=notes,
        findings=findings_section(metrics),
        attributes=sections,
        safety=safety_section(metrics),
        policies=policies(src),
        diversity=diversity_section(metrics),
        clip=clip,
        provenance=provenance(src, df),
    )
    path = out_file or f"{src.audit_dir}/report.html"
    if out_file:
        with open(path, "w", encoding="utf-8") as f:
            f.write(page)
    else:
        src.output.write_bytes_atomic(path, page.encode())
    return {"path": path, "bytes": len(page.encode()), "notes": notes}
