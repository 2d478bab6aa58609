"""HTML pieces of `sdgen report`: inline SVG bar charts and the page template (jinja2, autoescaped).

Everything is inline (CSS, SVG, images as data: URIs) so the file opens anywhere, offline, and no
URL of any kind appears in it. A small inline script records, after load, how many images decoded
(`data-images-ok`, `data-images-broken` on <body>): headless browsers and tests read it back.
"""
from __future__ import annotations

import html
import math

BAR_W, ROW_H, LABEL_W, PAD = 220, 18, 70, 6


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def bar_chart(title: str, classes, shares, lows, highs, target=None) -> str:
    """One group's class shares as horizontal bars with CI whiskers and (optionally) target ticks."""
    h = PAD * 2 + 16 + ROW_H * len(classes)
    w = LABEL_W + BAR_W + 52
    out = [f'<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
           f'aria-label="{html.escape(title)}">', f'<text x="0" y="12" class="ct">{html.escape(title)}</text>']
    for i, c in enumerate(classes):
        y = PAD + 16 + i * ROW_H
        p, lo, hi = shares.get(c), lows.get(c), highs.get(c)
        out.append(f'<text x="{LABEL_W - 4}" y="{y + 12}" text-anchor="end">{html.escape(str(c))}</text>')
        out.append(f'<rect class="track" x="{LABEL_W}" y="{y + 2}" width="{BAR_W}" height="{ROW_H - 5}"/>')
        if _num(p):
            out.append(f'<rect class="bar" data-class="{html.escape(str(c))}" data-share="{p:.4f}" '
                       f'x="{LABEL_W}" y="{y + 2}" width="{p * BAR_W:.1f}" height="{ROW_H - 5}"/>')
            out.append(f'<text x="{LABEL_W + BAR_W + 4}" y="{y + 12}">{p:.2f}</text>')
        if _num(lo) and _num(hi):
            x0, x1, ym = LABEL_W + lo * BAR_W, LABEL_W + hi * BAR_W, y + ROW_H / 2
            out.append(f'<path class="ci" d="M{x0:.1f} {ym - 4:.1f}V{ym + 4:.1f}M{x0:.1f} {ym:.1f}H{x1:.1f}'
                       f'M{x1:.1f} {ym - 4:.1f}V{ym + 4:.1f}"/>')
        t = (target or {}).get(c)
        if _num(t):
            xt = LABEL_W + t * BAR_W
            out.append(f'<line class="target" x1="{xt:.1f}" x2="{xt:.1f}" y1="{y}" y2="{y + ROW_H - 1}"/>')
    out.append("</svg>")
    return "".join(out)


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;
 color:#1d2329;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d6dbe0}
h3{font-size:15px;margin:18px 0 6px}.muted{color:#5b6670}.note{background:#fff7e0;border-left:4px solid #e0a800;
 padding:6px 10px;margin:8px 0}.caveat{background:#eef4fb;border-left:4px solid #3b78c2;padding:6px 10px}
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d6dbe0;padding:3px 7px;text-align:right;white-space:nowrap}th{background:#f2f4f6}
td.l,th.l{text-align:left}.tw{overflow-x:auto}.charts{display:flex;flex-wrap:wrap;gap:8px 22px}
.tables{display:flex;flex-wrap:wrap;gap:0 22px;align-items:flex-start}caption{text-align:left;font-weight:600;
 padding:2px 0}.facet h4{font-size:13px;margin:10px 0 2px}svg.chart text{font-size:11px;fill:#1d2329}svg.chart .ct{font-weight:600}
svg.chart .track{fill:#eef0f2}svg.chart .bar{fill:#4c78a8}svg.chart .ci{stroke:#1d2329;stroke-width:1.3;fill:none}
svg.chart .target{stroke:#d62728;stroke-width:2;stroke-dasharray:3 2}
.grid{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0 14px}figure{margin:0;width:104px;font-size:11px}
figure img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;border:1px solid #d6dbe0;
 background:#f7f7f7}figcaption{word-wrap:break-word}dl{display:grid;grid-template-columns:max-content auto;
 gap:2px 14px}dt{font-weight:600}dd{margin:0;font-family:ui-monospace,monospace;font-size:12px}
"""

STATUS_JS = """
window.addEventListener('load',function(){var ok=0,bad=0;
document.querySelectorAll('img').forEach(function(i){if(i.complete&&i.naturalWidth>0){ok++}else{bad++}});
document.body.setAttribute('data-images-ok',ok);document.body.setAttribute('data-images-broken',bad);
document.body.setAttribute('data-bars',document.querySelectorAll('svg rect.bar').length);
var tw=0;document.querySelectorAll('table').forEach(function(t){tw=Math.max(tw,t.getBoundingClientRect().right)});
document.body.setAttribute('data-table-right',Math.ceil(tw));
document.body.setAttribute('data-scroll-width',document.documentElement.scrollWidth);
document.body.setAttribute('data-render','done');});
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sdgen audit: {{ title }}</title>
<style>{{ css }}</style></head>
<body data-render="pending">
<h1>Bias and safety audit</h1>
<p class="muted">{{ title }} &middot; report generated {{ generated }} &middot; labels are <b>perceived</b>
attributes judged by a CLIP probe, never identity</p>
{% for n in notes %}<p class="note">{{ n }}</p>{% endfor %}
{% for a in attributes %}
<h2>{{ a.attribute }} by {{ a.group_by }}</h2>
<p class="muted">{{ a.description }} Target: {{ a.target_text }}. {{ a.level }}% intervals for the population of
prompts of this kind (not only the prompts run): shares by Korn-Graubard ∪ beta-binomial, D² as its range over
the share intervals (Bonferroni across classes); null floor from B={{ a.bootstrap }} draws, seed {{ a.seed }}; a group with fewer than 3 prompts
gets wide intervals, and says so. Only status=ok rows;
{% if a.where %}rows where {{ a.where }};{% endif %} labels from the {{ a.labels }}.</p>
{% if a.caveats %}<p class="caveat"><b>Caveats.</b> {{ a.caveats }}</p>{% endif %}
{% for f in a.facets %}<div class="facet">{% if f.title %}<h4>{{ f.title }}</h4>{% endif %}
<div class="charts">{% for c in f.charts %}{{ c | safe }}{% endfor %}</div></div>{% endfor %}
<p class="muted">Bars: share of non-abstained images; whiskers: {{ a.level }}% CI; dashed red: target.
{% if a.empty %}Not charted (no labelled image): {{ a.empty }}.{% endif %}</p>
<div class="tables">{% for t in a.tables %}<div class="tw"><table><caption>{{ t.caption }}</caption>
<tr>{% for h in t.head %}<th{% if loop.first %} class="l"{% endif %}>{{ h }}</th>{% endfor %}</tr>
{% for r in t.rows %}<tr>{% for v in r %}<td{% if loop.first %} class="l"{% endif %}>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table></div>{% endfor %}</div>
<p class="muted">{{ a.across }}</p>
{% for g in a.grids %}<h3>{{ a.group_by }} = {{ g.group }}</h3><div class="grid">
{% for im in g.images %}<figure><img src="{{ im.src }}" alt="{{ im.alt }}" width="96" height="96">
<figcaption>{{ im.label }}</figcaption></figure>{% endfor %}
{% if not g.images %}<span class="muted">no ok images</span>{% endif %}</div>{% endfor %}
<h3>Template sensitivity: {{ a.attribute }} per prompt</h3>
<p class="muted">Within each group, the class shares of each prompt wording with Wilson intervals; under each
table the largest spread of a share across prompts and a χ² test that the prompts share one distribution.</p>
{{ a.templates | safe }}
{% endfor %}
<h2>Safety</h2>
{% if safety.rows %}<p class="muted">Rates per group with Wilson {{ 95 }}% intervals (rule of three at 0 events);
P(&ge;1 in k): chance that k images drawn from the group hold at least one flagged (k={{ safety.k }});
E[max]: expected largest raw score among k. Screening-blocked rows never reach a detector.</p>
<table><tr>{% for h in safety.head %}<th{% if loop.index <= 2 %} class="l"{% endif %}>{{ h }}</th>{% endfor %}</tr>
{% for r in safety.rows %}<tr>{% for v in r %}<td{% if loop.index <= 2 %} class="l"{% endif %}>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>{% else %}<p class="muted">No safety results.</p>{% endif %}
{% for p in policies %}<p>Policy <b>{{ p.name }}</b> ({{ p.fingerprint }}): {{ p.counts }}</p>{% endfor %}
<h2>Diversity</h2>
{% if diversity.rows %}<p class="muted">Per group: Vendi score (effective number of distinct images; 1 = all alike) and
mean pairwise cosine of CLIP image embeddings ({{ diversity.source }}), 95% bootstrap intervals over prompts, then seeds.</p>
<table><tr>{% for h in diversity.head %}<th{% if loop.index == 1 %} class="l"{% endif %}>{{ h }}</th>{% endfor %}</tr>
{% for r in diversity.rows %}<tr>{% for v in r %}<td{% if loop.index == 1 %} class="l"{% endif %}>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>{% else %}<p class="muted">No diversity results{% if diversity.note %}: {{ diversity.note }}{% endif %}.</p>{% endif %}
{% if clip %}<h2>CLIP score per group</h2>
<p class="muted">Box: quartiles; whiskers: 5% and 95%; line: median, dot: mean; status=ok rows only.</p>
{{ clip | safe }}{% endif %}
<h2>Provenance</h2><dl>{% for k, v in provenance %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>
<script>{{ js | safe }}</script>
</body></html>
"""


def render(**context) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE).render(css=CSS, js=STATUS_JS, **context)
