"""`sdgen report --compare BEFORE AFTER`: one self-contained HTML page comparing two runs
(mitigation off/on, model A vs B, two guidance scales).

Per attribute and group: the share in A and in B, B − A with its CI, a BH-adjusted flag and
whether the difference was paired (docs/AUDIT.md §8). The numbers come from
`runner.compare_labelled`, the code behind `sdgen audit --compare`, so the page and the JSON agree
(the page embeds the same rows as JSON, `<script id="compare-data">`). Then side-by-side images of the
same (prompt_id, sample_idx) in both runs (same seeds when the job seeds match), template sensitivity
(shares per prompt wording, homogeneity test) and CLIP-score distributions per group, A and B overlaid.

Written to AFTER/audit/compare-<BEFORE name>.html unless -o FILE is given.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import pandas as pd

from pipeline.audit.compare import compare_labelled, stem
from pipeline.audit.data import (
    KEYS,
    AuditError,
    open_source,
    passthrough_columns,
    probed_attributes,
    read_images,
)
from pipeline.audit.runner import jsonable
from pipeline.audit.spec import AuditSpec
from pipeline.audit.tables import group_keys
from pipeline.core.fmt import ci, num
from pipeline.pages.breakdowns import clip_section, template_section
from pipeline.pages.charts import RUN_COLOURS, forest_svg
from pipeline.pages.render import flagged, render, thumbnail

THUMB = 128  # px: larger images are shrunk to this; smaller unflagged ones go in byte for byte


def _attributes(srcs, given) -> list[str]:
    """The attributes to compare: ``given`` (each must have labels in both runs), else every attribute
    with labels in both (probed in the run or stored by an earlier post-hoc audit)."""
    probed = [probed_attributes(s) for s in srcs]
    if given:
        for a in given:
            for s, p in zip(srcs, probed):
                if a not in p:
                    raise AuditError(
                        f"attribute {a!r} has no labels in {s.url!r} (labelled there: {sorted(p)}); "
                        f"probe it first: sdgen audit {s.url} --attribute {a} --attribute-set SET"
                    )
        return list(dict.fromkeys(given))
    both = [a for a in probed[0] if a in probed[1]]
    if not both:
        raise AuditError(
            f"no attribute has labels in both {srcs[0].url!r} ({sorted(probed[0])}) and "
            f"{srcs[1].url!r} ({sorted(probed[1])}): pass --attribute A after probing it in both"
        )
    return both


def _group_by(srcs, given) -> list[str]:
    group_by = list(given) if given else passthrough_columns(srcs[1].columns())[:1]
    if not group_by:
        raise AuditError(f"{srcs[1].url!r} has no passthrough column to group by; pass --group-by COLUMN")
    for s in srcs:
        missing = [c for c in group_by if c not in s.columns()]
        if missing:
            raise AuditError(f"--group-by {missing[0]!r} is not a column of {s.url!r}")
    return group_by


# ---------------------------------------------------------------- differences
def difference_rows(table: pd.DataFrame) -> list[list[str]]:
    """The page's difference table: group, quantity, class, A, B, B − A, CI, q, flag, pairing, note."""
    out = []
    for r in jsonable(table):
        out.append(
            [
                r["group"],
                "share" if r["quantity"] == "proportion" else "D²",
                r.get("class") or "",
                num(r.get("a")),
                num(r.get("b")),
                num(r.get("diff"), "+.3f"),
                ci([r.get("ci_low"), r.get("ci_high")], "+.3f"),
                num(r.get("q_value"), ".2g"),
                "yes" if r.get("flag") else "",
                {True: "paired", False: "independent"}.get(r.get("paired"), "–"),
                r.get("note") or "",
            ]
        )
    return out


def pairing_text(table: pd.DataFrame) -> str:
    per = table.dropna(subset=["paired"]).groupby("group")["paired"].first()
    paired, indep = [g for g, v in per.items() if v], [g for g, v in per.items() if not v]
    parts = []
    if paired:
        parts.append(
            f"paired (the same prompt ids in both runs: the prompts' correlation between the runs "
            f"narrows the difference) for {', '.join(map(str, paired))}"
        )
    if indep:
        parts.append(
            f"independent (the prompt ids differ: the runs' intervals combine as independent) for "
            f"{', '.join(map(str, indep))}"
        )
    return "Differences are " + "; ".join(parts) + "." if parts else ""


# ---------------------------------------------------------------- side-by-side images
def shared_keys(frames, group_by, per_group: int) -> dict[str, pd.DataFrame]:
    """Per group (A's grouping), up to ``per_group`` (prompt_id, sample_idx) present as ok rows in both
    runs: sample 0 of each prompt in sorted order first, then sample 1, ... (the same keys every time)."""
    a, b = frames
    groups = sorted(set(group_keys(a, group_by)) | set(group_keys(b, group_by)))
    both = a.merge(b[list(KEYS)], on=list(KEYS))
    both = both.assign(_g=group_keys(both, group_by).to_numpy()).sort_values(list(KEYS))
    both = both.assign(_r=both.groupby("prompt_id").cumcount().to_numpy())
    return {
        g: both[both["_g"] == g].sort_values(["_r", "prompt_id"]).head(per_group)[list(KEYS)] for g in groups
    }


def _seeds(a, b) -> str:
    return f"seed {a} in both" if a == b else f"seeds {a} / {b}"


def image_pairs(srcs, frames, labels, group_by, per_group: int) -> list[dict]:
    """[{group, pairs: [{key, prompt, seeds, a, b (data URIs), label}]}] for the shared keys; ``labels``
    is [(attribute, A's labels by key, B's labels by key)]."""
    picked = shared_keys(frames, group_by, per_group)
    wanted = pd.concat(list(picked.values())) if picked else pd.DataFrame(columns=list(KEYS))
    images = [read_images(s, wanted) for s in srcs]
    rows = [f.set_index(list(KEYS)) for f in frames]
    out = []
    for g, keys in picked.items():
        pairs = []
        for k in map(tuple, keys.to_numpy().tolist()):
            if k not in images[0] or k not in images[1]:
                continue
            ra, rb = (r.loc[k].to_dict() for r in rows)
            lab = "; ".join(f"{a}: {la.get(k, '–')} → {lb.get(k, '–')}" for a, la, lb in labels)
            blur = [flagged(ra), flagged(rb)]
            pairs.append(
                {
                    "key": f"{k[0]}#{k[1]}",
                    "prompt": str(ra.get("prompt", "")),
                    "prompt_b": str(rb.get("prompt", "")),
                    "seeds": _seeds(ra.get("seed"), rb.get("seed")),
                    "a": thumbnail(images[0][k], blur[0], THUMB),
                    "b": thumbnail(images[1][k], blur[1], THUMB),
                    "label": lab + (" · flagged, blurred" if any(blur) else ""),
                }
            )
        out.append({"group": g, "pairs": pairs})
    return out


# ---------------------------------------------------------------- the page
def _seed_text(frames) -> str:
    both = (
        frames[0][[*KEYS, "seed"]].merge(frames[1][[*KEYS, "seed"]], on=list(KEYS), suffixes=("_a", "_b"))
        if all("seed" in f.columns for f in frames)
        else pd.DataFrame()
    )
    if both.empty:
        return "No (prompt_id, sample_idx) is in both runs: the image grids are empty."
    same = int((both["seed_a"] == both["seed_b"]).sum())
    return f"{len(both)} (prompt_id, sample_idx) keys are in both runs; {same} of them have the same seed."


def build_compare_report(
    a, b, spec: AuditSpec | None = None, out_file=None, pairs=4, name=None, storage=None
) -> dict:
    """Write the comparison page of outputs ``a`` and ``b``; returns {"path", "bytes", "tables":
    {attribute: compare table}}. ``spec.attributes`` empty: every attribute labelled in both;
    ``spec.group_by`` empty: B's first passthrough column. ``pairs``: image pairs per group."""
    spec = spec or AuditSpec()
    srcs = [open_source(u, storage) for u in (a, b)]
    spec = replace(
        spec, attributes=_attributes(srcs, spec.attributes), group_by=_group_by(srcs, spec.group_by)
    )
    group_by = list(spec.group_by)
    sections, tables, labels, frames = [], {}, [], None
    for attr in spec.attributes:
        c = compare_labelled(srcs[0], srcs[1], attr, spec)
        tables[attr], frames = c["table"], frames or c["frames"]
        col = f"attr_{attr}"
        labels.append((attr, *(dict(zip(zip(f["prompt_id"], f["sample_idx"]), f[col])) for f in c["frames"])))
        runs = {"A": c["frames"][0], "B": c["frames"][1]}
        sections.append(
            {
                "attribute": attr,
                "classes": c["classes"],
                "forest": forest_svg(c["table"]),
                "rows": difference_rows(c["table"]),
                "pairing": pairing_text(c["table"]),
                "templates": template_section(runs, attr, group_by, c["classes"]),
                "caveats": c["info"].get("caveats", ""),
            }
        )
    data = {
        "a": srcs[0].url,
        "b": srcs[1].url,
        "group_by": group_by,
        "where": list(spec.where),
        "attributes": {k: jsonable(t) for k, t in tables.items()},
    }
    page = render(
        "compare.html",
        a=srcs[0].url,
        b=srcs[1].url,
        group_by=" × ".join(group_by),
        where=", ".join(spec.where),
        generated=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        sections=sections,
        seeds=_seed_text(frames),
        grids=image_pairs(srcs, frames, labels, group_by, pairs),
        clip=clip_section({"A": frames[0], "B": frames[1]}, group_by),
        data=data,
        colours=RUN_COLOURS,
    )
    path = out_file or f"{srcs[1].audit_dir}/compare-{name or stem(srcs[0].url)}.html"
    if out_file:
        with open(path, "w", encoding="utf-8") as f:
            f.write(page)
    else:
        srcs[1].output.write_bytes_atomic(path, page.encode())
    return {"path": path, "bytes": len(page.encode()), "tables": tables}


def page_data(page: str) -> dict:
    """The difference rows embedded in a comparison page (tests, scripts)."""
    marker = '<script type="application/json" id="compare-data">'
    start = page.index(marker) + len(marker)
    return json.loads(page[start : page.index("</script>", start)])
