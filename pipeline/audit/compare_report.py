"""`sdgen report --compare BEFORE AFTER`: one self-contained HTML page comparing two runs
(mitigation off/on, model A vs B, two guidance scales).

Per attribute and group: the share in A and in B, B − A with its bootstrap CI, a BH-adjusted flag and
whether the difference was paired (docs/AUDIT.md §8). The numbers come from
`runner.compare_labelled`, the code behind `sdgen audit --compare`, so the page and the JSON agree
(the page embeds the same rows as JSON, `<script id="compare-data">`). Then side-by-side images of the
same (prompt_id, sample_idx) in both runs (same seeds when the job seeds match), template sensitivity
(shares per prompt wording, homogeneity test) and CLIP-score distributions per group, A and B overlaid.

Written to AFTER/audit/compare-<BEFORE name>.html unless -o FILE is given.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json

import numpy as np
import pandas as pd

from pipeline.audit.breakdowns import RUN_COLOURS, clip_section, template_section
from pipeline.audit.data import KEYS, AuditError, open_source, probed_attributes
from pipeline.audit.runner import _dumps, _stem, compare_labelled, jsonable, passthrough_columns
from pipeline.audit.tables import group_keys

THUMB = 128  # px: larger images are shrunk to this; smaller unflagged ones go in byte for byte
FLAGS = ("safety_flagged", "sd_checker_nsfw")  # a row flagged by either is blurred in the grids


def _attributes(srcs, given) -> list[str]:
    """The attributes to compare: ``given`` (each must have labels in both runs), else every attribute
    with labels in both (probed in the run or stored by an earlier post-hoc audit)."""
    probed = [probed_attributes(s) for s in srcs]
    if given:
        for a in given:
            for s, p in zip(srcs, probed):
                if a not in p:
                    raise AuditError(f"attribute {a!r} has no labels in {s.url!r} (labelled there: {sorted(p)}); "
                                     f"probe it first: sdgen audit {s.url} --attribute {a} --attribute-set SET")
        return list(dict.fromkeys(given))
    both = [a for a in probed[0] if a in probed[1]]
    if not both:
        raise AuditError(f"no attribute has labels in both {srcs[0].url!r} ({sorted(probed[0])}) and "
                         f"{srcs[1].url!r} ({sorted(probed[1])}): pass --attribute A after probing it in both")
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
def forest_svg(table: pd.DataFrame, width=520) -> str:
    """B − A share per group × class as a dot with its CI, around a zero line; flagged rows in red."""
    rows = table[(table["quantity"] == "proportion") & table["diff"].notna()]
    if rows.empty:
        return ""
    span = float(np.nanmax(np.abs(rows[["ci_low", "ci_high", "diff"]].to_numpy(float))))
    span = min(1.0, max(0.1, np.ceil(span * 10) / 10))
    left, plot, row = 150, width - 170, 16
    h = 10 + row * len(rows) + 24
    x = lambda v: left + (v + span) / (2 * span) * plot  # noqa: E731
    e = html.escape
    out = [f'<svg class="chart forest" width="{width}" height="{h}" viewBox="0 0 {width} {h}" role="img" '
           f'aria-label="B minus A per group and class">',
           f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="4" y2="{h - 20}" stroke="#5b6670" stroke-dasharray="3 2"/>']
    for i, r in enumerate(rows.to_dict("records")):
        y = 10 + i * row + row / 2
        colour = "#d62728" if r["flag"] else "#1d2329"
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{e(str(r["group"]))} · '
                   f'{e(str(r["class"]))}</text>')
        if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]):
            out.append(f'<line x1="{x(r["ci_low"]):.1f}" x2="{x(r["ci_high"]):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                       f'stroke="{colour}" stroke-width="1.5"/>')
        out.append(f'<circle class="diff" cx="{x(r["diff"]):.1f}" cy="{y:.1f}" r="3" fill="{colour}" '
                   f'data-diff="{r["diff"]:.4f}"/>')
    out.append(f'<text x="{left}" y="{h - 6}">{-span:+.1f}</text><text x="{x(0):.1f}" y="{h - 6}" '
               f'text-anchor="middle">0</text><text x="{left + plot}" y="{h - 6}" text-anchor="end">{span:+.1f}</text>')
    return "".join(out) + "</svg>"


def _f(x, fmt="{:.3f}"):
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt.format(x)


def difference_rows(table: pd.DataFrame) -> list[list[str]]:
    """The page's difference table: group, quantity, class, A, B, B − A, CI, q, flag, pairing, note."""
    out = []
    for r in jsonable(table):
        out.append([r["group"], "share" if r["quantity"] == "proportion" else "D²", r.get("class") or "",
                    _f(r.get("a")), _f(r.get("b")), _f(r.get("diff"), "{:+.3f}"),
                    f"[{_f(r.get('ci_low'), '{:+.3f}')}, {_f(r.get('ci_high'), '{:+.3f}')}]",
                    _f(r.get("q_value"), "{:.2g}"), "yes" if r.get("flag") else "",
                    {True: "paired", False: "independent"}.get(r.get("paired"), "–"), r.get("note") or ""])
    return out


def pairing_text(table: pd.DataFrame) -> str:
    per = table.dropna(subset=["paired"]).groupby("group")["paired"].first()
    paired, indep = [g for g, v in per.items() if v], [g for g, v in per.items() if not v]
    parts = []
    if paired:
        parts.append(f"paired (the same prompt ids in both runs: each bootstrap draw resamples the prompts "
                     f"once for A and B) for {', '.join(map(str, paired))}")
    if indep:
        parts.append(f"independent (the prompt ids differ: A and B resampled separately) for "
                     f"{', '.join(map(str, indep))}")
    return "Differences are " + "; ".join(parts) + "." if parts else ""


# ---------------------------------------------------------------- side-by-side images
def _uri(png: bytes, blur: bool) -> str:
    from PIL import Image, ImageFilter

    im = Image.open(io.BytesIO(png))
    if blur or max(im.size) > THUMB:
        im = im.convert("RGB")
        if blur:  # flagged images are never shown in the clear, not even as thumbnails
            im = im.filter(ImageFilter.GaussianBlur(max(2, max(im.size) // 12)))
        im.thumbnail((THUMB, THUMB))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        png = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(png).decode()


def shared_keys(frames, group_by, per_group: int) -> dict[str, pd.DataFrame]:
    """Per group (A's grouping), up to ``per_group`` (prompt_id, sample_idx) present as ok rows in both
    runs: sample 0 of each prompt in sorted order first, then sample 1, ... (the same keys every time)."""
    a, b = frames
    groups = sorted(set(group_keys(a, group_by)) | set(group_keys(b, group_by)))
    both = a.merge(b[list(KEYS)], on=list(KEYS))
    both = both.assign(_g=group_keys(both, group_by).to_numpy()).sort_values(list(KEYS))
    both = both.assign(_r=both.groupby("prompt_id").cumcount().to_numpy())
    return {g: both[both["_g"] == g].sort_values(["_r", "prompt_id"]).head(per_group)[list(KEYS)] for g in groups}


def _seeds(a, b) -> str:
    return f"seed {a} in both" if a == b else f"seeds {a} / {b}"


def _flagged(row) -> bool:
    return any(v is not None and not (isinstance(v, float) and np.isnan(v)) and bool(v)
               for v in (row.get(c) for c in FLAGS))


def image_pairs(srcs, frames, labels, group_by, per_group: int) -> list[dict]:
    """[{group, pairs: [{key, prompt, seeds, a, b (data URIs), label}]}] for the shared keys; ``labels``
    is [(attribute, A's labels by key, B's labels by key)]."""
    from pipeline.audit.report import read_images

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
            blur = [_flagged(ra), _flagged(rb)]
            pairs.append({"key": f"{k[0]}#{k[1]}", "prompt": str(ra.get("prompt", "")),
                          "prompt_b": str(rb.get("prompt", "")), "seeds": _seeds(ra.get("seed"), rb.get("seed")),
                          "a": _uri(images[0][k], blur[0]), "b": _uri(images[1][k], blur[1]),
                          "label": lab + (" · flagged, blurred" if any(blur) else "")})
        out.append({"group": g, "pairs": pairs})
    return out


# ---------------------------------------------------------------- the page
def _seed_text(frames) -> str:
    both = frames[0][[*KEYS, "seed"]].merge(frames[1][[*KEYS, "seed"]], on=list(KEYS), suffixes=("_a", "_b")) \
        if all("seed" in f.columns for f in frames) else pd.DataFrame()
    if both.empty:
        return "No (prompt_id, sample_idx) is in both runs: the image grids are empty."
    same = int((both["seed_a"] == both["seed_b"]).sum())
    return f"{len(both)} (prompt_id, sample_idx) keys are in both runs; {same} of them have the same seed."


def build_compare_report(url_a, url_b, attributes=None, group_by=None, out_file=None, B=2000, seed=0, where=(),
                         target="uniform", min_n=30, pairs=4, name=None, storage=None) -> dict:
    """Write the comparison page; returns {"path", "bytes", "tables": {attribute: compare table}}."""
    srcs = [open_source(u, storage) for u in (url_a, url_b)]
    attrs = _attributes(srcs, attributes)
    group_by = _group_by(srcs, group_by)
    sections, tables, labels, frames = [], {}, [], None
    for a in attrs:
        c = compare_labelled(srcs[0], srcs[1], a, group_by, target, B, seed, where, min_n)
        tables[a], frames = c["table"], frames or c["frames"]
        col = f"attr_{a}"
        labels.append((a, *(dict(zip(zip(f["prompt_id"], f["sample_idx"]), f[col])) for f in c["frames"])))
        runs = {"A": c["frames"][0], "B": c["frames"][1]}
        sections.append({"attribute": a, "classes": c["classes"], "forest": forest_svg(c["table"]),
                         "rows": difference_rows(c["table"]), "pairing": pairing_text(c["table"]),
                         "templates": template_section(runs, a, group_by, c["classes"]),
                         "caveats": c["info"].get("caveats", "")})
    data = {"a": srcs[0].url, "b": srcs[1].url, "group_by": group_by, "bootstrap": B, "seed": seed,
            "where": list(where), "attributes": {a: jsonable(t) for a, t in tables.items()}}
    page = render(a=srcs[0].url, b=srcs[1].url, group_by=" × ".join(group_by), bootstrap=B, seed=seed,
                  where=", ".join(where), generated=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  sections=sections, seeds=_seed_text(frames),
                  grids=image_pairs(srcs, frames, labels, group_by, pairs),
                  clip=clip_section({"A": frames[0], "B": frames[1]}, group_by),
                  data=_dumps(data).replace("</", "<\\/"), colours=RUN_COLOURS)
    path = out_file or f"{srcs[1].audit_dir}/compare-{name or _stem(srcs[0].url)}.html"
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
    return json.loads(page[start:page.index("</script>", start)])


EXTRA_CSS = """
.pair{display:flex;flex-direction:column;width:auto;margin:0 8px 8px 0}.pair .ims{display:flex;gap:3px}
.pair figcaption{max-width:200px}svg.forest text,svg.clip-box text{font-size:11px;fill:#1d2329}
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sdgen comparison: {{ a }} vs {{ b }}</title>
<style>{{ css }}{{ extra_css }}</style></head>
<body data-render="pending">
<h1>Comparison of two runs</h1>
<p class="muted"><span style="color:{{ colours[0] }}">A = {{ a }}</span> &middot;
<span style="color:{{ colours[1] }}">B = {{ b }}</span> &middot; grouped by {{ group_by }}
{% if where %}&middot; rows where {{ where }}{% endif %} &middot; generated {{ generated }} &middot; labels are
<b>perceived</b> attributes judged by a CLIP probe, never identity</p>
<p class="muted">{{ seeds }}</p>
{% for s in sections %}
<h2>{{ s.attribute }}: B − A by {{ group_by }}</h2>
<p class="muted">Shares of non-abstained ok images; B − A with a 95% percentile interval from the hierarchical
bootstrap (prompts, then seeds; B={{ bootstrap }}, seed {{ seed }}); q: Benjamini–Hochberg over all groups and
classes (D² rows: over groups) of a two-sided bootstrap p-value; flagged when q &lt; 0.05. {{ s.pairing }}</p>
{% if s.caveats %}<p class="caveat"><b>Caveats.</b> {{ s.caveats }}</p>{% endif %}
{{ s.forest | safe }}
<div class="tw"><table class="diff"><tr><th class="l">group</th><th class="l">quantity</th><th class="l">class</th>
<th>A</th><th>B</th><th>B − A</th><th>95% CI</th><th>q</th><th>flag</th><th class="l">pairing</th><th class="l">note</th></tr>
{% for r in s.rows %}<tr>{% for v in r %}<td{% if loop.index <= 3 or loop.index >= 10 %} class="l"{% endif %}>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table></div>
<h3>Template sensitivity: {{ s.attribute }} per prompt wording</h3>
<p class="muted">Per prompt: n non-abstained images and each share with a 95% Wilson interval, for A and B;
under each group the largest spread of a share across prompts and a χ² test that all prompts share one
distribution (small p: the wording moves the shares).</p>
{{ s.templates | safe }}
{% endfor %}
<h2>The same seeds side by side</h2>
<p class="muted">Per group up to a few (prompt_id, sample_idx) keys present in both runs, the first sample of
each prompt first: A on the left, B on the right; labels as A → B.</p>
{% for g in grids %}<h3>{{ group_by }} = {{ g.group }}</h3><div class="grid">
{% for p in g.pairs %}<figure class="pair" data-key="{{ p.key }}"><div class="ims">
<img data-run="A" src="{{ p.a }}" alt="A: {{ p.prompt }}" width="96" height="96">
<img data-run="B" src="{{ p.b }}" alt="B: {{ p.prompt_b }}" width="96" height="96"></div>
<figcaption>{{ p.prompt }}{% if p.prompt_b != p.prompt %} / {{ p.prompt_b }}{% endif %} · sample {{ p.key.rsplit('#', 1)[1] }}
· {{ p.seeds }} · {{ p.label }}</figcaption></figure>{% endfor %}
{% if not g.pairs %}<span class="muted">no key in both runs</span>{% endif %}</div>{% endfor %}
{% if clip %}<h2>CLIP score per group</h2>
<p class="muted">clip_score (2.5 · max(cos, 0)) of ok images: whiskers 5–95%, box 25–75%, black tick the
median, dot the mean; A and B overlaid.</p>{{ clip | safe }}{% endif %}
<script type="application/json" id="compare-data">{{ data | safe }}</script>
<script>{{ js | safe }}</script>
</body></html>
"""


def render(**context) -> str:
    import jinja2

    from pipeline.audit.html import CSS, STATUS_JS

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE).render(css=CSS, extra_css=EXTRA_CSS, js=STATUS_JS, **context)
