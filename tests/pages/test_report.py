"""sdgen report: one self-contained HTML file; rendered in headless Chromium when it is installed."""

import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from synth_output import cli, known_rows, make_output, row

from pipeline.audit.spec import AuditSpec
from pipeline.pages.report import MAX_COLUMNS, build_report, metric_tables

CHROMIUM = next(
    (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    rows = known_rows() + [row(f"x{i}", 0, "red", group="x mark", x_mark=0.4, flagged=True) for i in range(2)]
    out = make_output(tmp / "out", rows)
    r = build_report(out, str(tmp / "report.html"), AuditSpec(bootstrap=300), thumbnails=6)
    return out, r, (tmp / "report.html").read_text()


def test_self_contained_no_urls(report):
    _, r, html = report
    assert r["bytes"] == len(html.encode())
    assert not re.search(r"https?:|ftp:|//[a-z0-9]", html, re.I), "no URL of any kind"
    assert "<link" not in html and "@import" not in html and "url(" not in html
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert len(srcs) == 4 * 6 - 4 and all(
        s.startswith("data:image/png;base64,") for s in srcs
    )  # x mark: 2 images
    assert len(re.findall(r'<rect class="bar"', html)) == 4 * 4  # every group's share of every class
    assert 'class="target"' in html and 'class="ci"' in html


def test_content(report):
    out, r, html = report
    assert "No audit existed; audited colour by shape" in r["notes"][0]
    assert "Synthetic labels for tests." in html  # the attribute set's caveats
    assert "f" * 64 in html and "PNDMScheduler" in html and "2026-01-01" in html  # provenance
    assert "n&lt;30: floor only" in html  # square (24) and x mark (2) show floors only
    assert "screening_blocked" in html and "rule of 3" in html
    assert html.count("flagged, blurred") == 2 + 0  # only the x-mark patches are flagged among the thumbnails
    assert 'data-share="0.7000"' in html  # circle red


def test_template_and_clip_sections(report):
    html = report[2]
    assert html.count('class="template-sensitivity" data-attribute="colour"') == 1
    prompts = re.findall(r'<tr data-prompt="([^"]*)">', html)
    assert sorted(prompts) == sorted(
        ["c0", "c1", "c2", "c3", "c4", "c5", "s0", "s1", "s2", "t0", "t1", "t2", "t3", "x0", "x1"]
    )  # every prompt with an ok row; blocked c6, failed c7 have none
    assert html.count('class="clip-distribution"') == 1 and "CLIP score per group" in html


def test_no_probes_explained(tmp_path):
    out = make_output(
        tmp_path / "out", [row("p", k, group="circle", classes={}) for k in range(3)], classes={}
    )
    r = build_report(out, str(tmp_path / "r.html"))
    assert (
        "No attribute was probed" in r["notes"][0]
        and "No attribute was probed" in (tmp_path / "r.html").read_text()
    )


def test_cli(report, tmp_path, capsys):
    out, _, _ = report
    assert cli(["report", out, "-o", tmp_path / "c.html", "--thumbnails", 2]) == 0
    assert "wrote " in capsys.readouterr().out and (tmp_path / "c.html").stat().st_size > 1000
    assert cli(["report", tmp_path / "missing"]) == 2
    assert "does not exist" in capsys.readouterr().err


def _chromium(args, tmp_path):
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_renders_in_headless_chromium(report, tmp_path):
    """Charts have their bars and every inline image decodes (naturalWidth > 0), as the page's own
    load script records on <body>; the screenshot is not blank."""
    from PIL import Image

    _, r, _ = report
    dom = _chromium(["--window-size=1400,2000", "--dump-dom", f"file://{r['path']}"], tmp_path).stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body))
    assert attrs.get("data-render") == "done", body
    assert int(attrs["data-images-ok"]) == 20 and int(attrs["data-images-broken"]) == 0
    assert int(attrs["data-bars"]) == 16
    assert 0 < int(attrs["data-table-right"]) <= 1400, attrs  # every table fits a 1400 px page
    assert int(attrs["data-scroll-width"]) <= 1400, attrs
    shot = tmp_path / "shot.png"
    _chromium(["--window-size=1280,2000", f"--screenshot={shot}", f"file://{r['path']}"], tmp_path)
    pixels = np.asarray(Image.open(shot).convert("RGB"), float)
    assert pixels.shape[:2] == (2000, 1280) and pixels.std() > 10


def test_images_per_prompt_as_stored():
    import pandas as pd

    from pipeline.pages.report import _per_prompt

    df = pd.DataFrame({"prompt_id": ["a"] * 8 + ["b"] * 4})
    assert _per_prompt(df, {"images_per_prompt": 24}) == "4–8 (config 24; per-row values override it)"
    assert _per_prompt(df.iloc[:8], {"images_per_prompt": 8}) == "8"
    assert _per_prompt(df.iloc[:0], {"images_per_prompt": 2}) == "2"


class _Tables(HTMLParser):
    """Columns per row of every <table> of a page, from the parsed HTML."""

    def __init__(self):
        super().__init__()
        self.tables = []

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append(0)
        elif tag in ("td", "th"):
            self.tables[-1][-1] += 1


def _columns(html) -> list[int]:
    p = _Tables()
    p.feed(html)
    return [max(rows) for rows in p.tables]


def test_tables_at_most_nine_columns(report):
    html = report[2]
    findings, rest = html.split('<h2 id="findings">')[1].split(
        "<h2>", 1
    )  # the opening section, then the rest
    cols = _columns("<h2>" + rest)
    assert cols[:3] == [1 + 4, 9, 6]  # shares (group + 4 classes), disparity, coverage
    assert max(cols + _columns(findings)) <= MAX_COLUMNS == 9


def test_many_classes_split_over_tables():
    classes = [f"c{i}" for i in range(11)]
    entry = {
        "classes": classes,
        "min_n": 30,
        "groups": {"g": {"n": 3, "proportions": {c: 1 / 11 for c in classes}}},
    }
    tables = metric_tables(entry)
    assert [len(t["head"]) for t in tables] == [9, 1 + 3, 9, 6]  # 8 classes, then the other 3
    assert tables[1]["caption"] == "Class shares [CI] (2 of 2)" and tables[1]["head"][1:] == [
        "c8",
        "c9",
        "c10",
    ]


def test_empty_group_has_no_chart(tmp_path):
    rows = [row(f"r{i}", k, "red", group="circle") for i in range(3) for k in range(4)]
    rows += [row(f"b{i}", k, None, group="blank") for i in range(2) for k in range(4)]  # all abstained: n=0
    out = make_output(tmp_path / "out", rows)
    html = open(build_report(out, str(tmp_path / "r.html"), AuditSpec(bootstrap=100))["path"]).read()
    assert html.count('<svg class="chart"') == 1 and "circle (n=12)" in html
    assert "(n=0)" not in html and "Not charted (no labelled image): blank." in html


def test_where_filters_the_single_run_report(report, tmp_path):
    out, _, _ = report
    stored = open(f"{out}/audit/metrics.json", "rb").read()
    assert cli(["report", out, "-o", tmp_path / "w.html", "--where", "shape=circle", "--bootstrap", 100]) == 0
    html = (tmp_path / "w.html").read_text()
    assert "circle (n=40)" in html and "square (n=" not in html and "triangle (n=" not in html
    assert "Rows where shape=circle: audited colour" in html
    assert set(re.findall(r'<tr data-prompt="([^"]*)">', html)) == {f"c{i}" for i in range(6)}
    assert open(f"{out}/audit/metrics.json", "rb").read() == stored  # the stored audit is left as it was
    assert cli(["report", out, "-o", tmp_path / "x.html", "--where", "nosuch=1"]) == 2


def test_two_column_group_by_facets(tmp_path):
    rows = [
        row(f"{s}{z}{i}", k, lab, group=s, size=z)
        for s, lab in (("circle", "red"), ("square", "blue"))
        for z in ("big", "small")
        for i in range(3)
        for k in range(2)
    ]
    out = make_output(tmp_path / "out", rows, passthrough=("shape", "size"))
    assert (
        cli(["report", out, "-o", tmp_path / "r.html", "--group-by", "shape,size", "--bootstrap", 100]) == 0
    )
    html = (tmp_path / "r.html").read_text()
    facets = re.findall(
        r'<div class="facet"><h4>([^<]*)</h4>\s*<div class="charts">(.*?)</div></div>', html, re.S
    )
    assert [t for t, _ in facets] == ["shape = circle", "shape = square"]
    for _, charts in facets:  # one chart per value of the second column, titled by it
        assert re.findall(r'class="ct">([^<]*)<', charts) == ["big (n=6)", "small (n=6)"]


def test_stale_stored_audit_is_refreshed(tmp_path, capsys):
    """An audit written by an older audit method (no "audit_method" stored) is re-audited with its own
    settings and stored, not rendered as it was; one made with --calibration is kept and named on the page."""
    import json

    from pipeline.audit.runner import run_audit
    from pipeline.audit.spec import AUDIT_METHOD

    out = make_output(tmp_path / "out", known_rows())
    spec = AuditSpec(attributes=("colour",), group_by=("shape",), bootstrap=120, seed=3, level=0.9)
    run_audit(out, spec)
    path = f"{out}/audit/metrics.json"
    fresh = json.load(open(path))
    stale = json.loads(json.dumps(fresh))
    entry = stale["attributes"]["colour"]
    assert entry.pop("audit_method") == AUDIT_METHOD
    for g in entry["groups"].values():  # numbers no current method computes
        g["ci_low"], g["ci_high"] = dict.fromkeys(g["ci_low"], 0.0), dict.fromkeys(g["ci_high"], 1.0)
    open(path, "w").write(json.dumps(stale))
    r = build_report(out, str(tmp_path / "r.html"), AuditSpec(bootstrap=50))
    assert any("older audit method (1" in n and "re-audited by shape" in n for n in r["notes"])
    again = json.load(open(path))["attributes"]["colour"]
    assert again["audit_method"] == AUDIT_METHOD and (again["bootstrap"], again["seed"], again["level"]) == (
        120,
        3,
        0.9,
    )
    assert again["groups"] == fresh["attributes"]["colour"]["groups"]  # the same numbers as the first audit
    assert "older audit method" in (tmp_path / "r.html").read_text()

    stored = json.load(open(path))
    stored["attributes"]["colour"].pop("audit_method")
    stored["attributes"]["colour"]["calibration"] = {"file": "labels.csv"}
    open(path, "w").write(json.dumps(stored))
    notes = build_report(out, str(tmp_path / "c.html"), AuditSpec(bootstrap=50))["notes"]
    assert any("--calibration LABELS" in n for n in notes)
    assert "audit_method" not in json.load(open(path))["attributes"]["colour"]  # kept as it was

    # `sdgen audit` of one attribute says which others in metrics.json an older method wrote
    stored = json.load(open(path))
    stored["attributes"]["tone"] = {**stored["attributes"].pop("colour"), "attribute": "tone"}
    open(path, "w").write(json.dumps(stored))
    capsys.readouterr()
    assert cli(["audit", out, "--attribute", "colour", "--group-by", "shape", "--bootstrap", 100]) == 0
    printed = capsys.readouterr().out
    assert "note: metrics.json also holds tone from an older audit method (1;" in printed
    assert "holds colour" not in printed


def test_group_notes_on_the_page(tmp_path):
    """The page lists what the text output says of a group's intervals: prompts that look like two kinds
    (the model check) and too few prompts."""
    rows = [  # circle: 6 prompts with no red image, 24 with 20 of 32: two kinds, not a Beta spread
        row(f"c{j}", k, "red" if j >= 6 and k < 20 else "blue", group="circle")
        for j in range(30)
        for k in range(32)
    ]
    rows += [
        row(f"s{j}", k, ["red", "blue"][(j + k) % 2], group="square") for j in range(2) for k in range(16)
    ]
    out = make_output(tmp_path / "out", rows)
    html = open(build_report(out, str(tmp_path / "r.html"), AuditSpec(bootstrap=50))["path"]).read()
    assert "circle: the prompts look like two kinds for red, blue" in html
    assert "square: the prompts look like two kinds" not in html
    assert re.search(r"<li>square: [^<]*prompts", html) and not re.search(r"<li>circle: [^<]*2 prompts", html)
    assert "<code>sdgen audit-plan</code> says how many)</li>" in html and "`" not in html.split("<li>")[1]


def test_code_filter_escapes_and_marks_commands():
    from pipeline.pages.render import code

    assert code("a <b> `x<y>` and `z`") == "a &lt;b&gt; <code>x&lt;y&gt;</code> and <code>z</code>"
    assert code("one ` only <") == "one ` only &lt;"
