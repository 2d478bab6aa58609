"""sdgen report --compare: paired differences on a known case, side-by-side images of the same keys,
template sensitivity and CLIP-score distributions against hand-computed values, and the CLI's errors.
Synthetic outputs from tests/synth_output.py (16x16 PNGs, labels known); seconds each."""

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from synth_output import CLASSES, cli, known_rows, make_output, row

from pipeline.audit import tables as T
from pipeline.audit.breakdowns import clip_distribution, template_homogeneity, template_sensitivity
from pipeline.audit.compare import run_compare
from pipeline.audit.data import open_source, read_rows
from pipeline.audit.differences import P_VALUE_FLOOR, diff_interval
from pipeline.audit.spec import AuditSpec
from pipeline.core.dataset import Dataset
from pipeline.pages.breakdowns import clip_section, template_section
from pipeline.pages.compare import build_compare_report, page_data

B = 2000


def pure_rows(flip=()):
    """10 circle prompts x 8 seeds, each prompt all red (c0-c4) or all blue (c5-c9): a strong prompt
    effect. Prompts in ``flip`` turn from red to blue."""
    return [
        row(f"c{j}", k, "blue" if j >= 5 or j in flip else "red", group="circle")
        for j in range(10)
        for k in range(8)
    ]


@pytest.fixture(scope="module")
def pure(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pure")
    a, b = make_output(tmp / "a", pure_rows()), make_output(tmp / "b", pure_rows(flip=(0,)))
    r = build_compare_report(a, b, AuditSpec(["colour"], ["shape"], bootstrap=B))
    return a, b, r, open(r["path"]).read()


def test_paired_difference_on_a_known_case(pure):
    """One of 10 pure prompts flips red -> blue: diff = -1/10. The interval is MOVER over the two runs'
    share intervals (pipeline/audit/differences.py) on the hand-written prompt tables, paired through
    the prompts' correlation; independent runs give a far wider interval."""
    a, b, r, page = pure
    t = r["tables"]["colour"].set_index(["quantity", "class"])
    red = t.loc[("proportion", "red")]
    assert (red["a"], red["b"], red["diff"]) == (0.5, 0.4, pytest.approx(-0.1)) and red["paired"]
    ta = np.array([[8, 0]] * 5 + [[0, 8]] * 5)  # red, not red per prompt c0..c9
    tb = ta.copy()
    tb[0] = [0, 8]
    lo, hi, p = diff_interval(ta, tb, paired=True)
    assert (red["ci_low"], red["ci_high"], red["p_value"]) == pytest.approx((lo[0], hi[0], p[0]))
    assert red["ci_low"] < -0.1 < red["ci_high"] and not red["flag"]  # one prompt of 10: not enough
    frames = [read_rows(open_source(u)) for u in (a, b)]
    ind = (
        T.compare(*frames, ["shape"], "attr_colour", CLASSES["colour"], paired=False)
        .set_index(["quantity", "class"])
        .loc[("proportion", "red")]
    )
    assert not ind["paired"] and ind["diff"] == pytest.approx(-0.1)
    assert (ind["ci_high"] - ind["ci_low"]) > 1.5 * (red["ci_high"] - red["ci_low"])  # 0.75 vs 0.43
    assert "paired (the same prompt ids in both runs" in page and "independent" not in page


def test_page_and_audit_json_agree(pure, tmp_path):
    a, b, r, page = pure
    j = run_compare(a, b, AuditSpec(["colour"], ["shape"], bootstrap=B), out_file=str(tmp_path / "c.json"))[
        "result"
    ]
    assert page_data(page)["attributes"]["colour"] == json.loads(json.dumps(j["rows"]))
    assert r["path"] == f"{b}/audit/compare-a.html"
    assert not re.search(r"https?:|ftp:|//[a-z0-9]", page, re.I), "self-contained: no URL of any kind"


def test_identical_runs_paired_zero_and_no_flags(tmp_path):
    a, b = make_output(tmp_path / "a", pure_rows()), make_output(tmp_path / "b", pure_rows())
    t = build_compare_report(a, b, AuditSpec(group_by=["shape"], bootstrap=500))["tables"]["colour"]
    p = t[t["quantity"] == "proportion"]
    assert (p["diff"] == 0).all() and (p["p_value"] == 1).all() and not t["flag"].any()
    # never zero-width: identical samples of 10 prompts do not prove identical populations
    assert (p["ci_low"] < 0).all() and (p["ci_high"] > 0).all()


def test_fallback_to_independent_when_prompts_differ(tmp_path):
    a = make_output(tmp_path / "a", pure_rows())
    rows = [{**r, "prompt_id": r["prompt_id"] + "-v2"} for r in pure_rows(flip=(0,))]
    b = make_output(tmp_path / "b", rows)
    r = build_compare_report(a, b, AuditSpec(["colour"], ["shape"], bootstrap=500), pairs=3)
    page = open(r["path"]).read()
    assert not r["tables"]["colour"]["paired"].any()
    assert "independent (the prompt ids differ" in page and "no key in both runs" in page


def test_flag_on_a_large_shift(tmp_path):
    """All 10 prompts flip: a certain change, flagged after BH (red and blue: the MOVER interval
    excludes 0 at every level the p-value reads: p is its floor, 1e-4; the unchanged classes p = 1:
    BH q = p · 4/2)."""
    a = make_output(
        tmp_path / "a", [row(f"c{j}", k, "red", group="circle") for j in range(10) for k in range(8)]
    )
    b = make_output(
        tmp_path / "b", [row(f"c{j}", k, "blue", group="circle") for j in range(10) for k in range(8)]
    )
    t = build_compare_report(a, b, AuditSpec(bootstrap=500))["tables"]["colour"].set_index(
        ["quantity", "class"]
    )
    assert t.loc[("proportion", "red"), "flag"] and t.loc[("proportion", "red"), "diff"] == -1
    lo, hi, p = diff_interval(np.array([[8, 0]] * 10), np.array([[0, 8]] * 10), paired=True)
    assert t.loc[("proportion", "red"), "q_value"] == pytest.approx(p[0] * 4 / 2) and p[0] == P_VALUE_FLOOR
    assert t.loc[("proportion", "red"), "ci_high"] == pytest.approx(hi[0]) and hi[0] < -0.5
    assert not t.loc[("proportion", "green"), "flag"]


# ---------------------------------------------------------------- side-by-side images
def test_grids_show_both_images_of_the_same_keys(tmp_path):
    rows_a = known_rows()
    rows_b = [
        row(r["prompt_id"], r["sample_idx"], "yellow", group=r["shape"]) if r["status"] == "ok" else r
        for r in known_rows()
    ]  # B: every ok image yellow, same keys
    a, b = make_output(tmp_path / "a", rows_a), make_output(tmp_path / "b", rows_b)
    page = open(
        build_compare_report(a, b, AuditSpec(["colour"], ["shape"], bootstrap=200), pairs=3)["path"]
    ).read()
    figs = re.findall(
        r'<figure class="pair" data-key="([^"]+)"><div class="ims">\s*<img data-run="A" '
        r'src="data:image/png;base64,([^"]+)"[^>]*>\s*<img data-run="B" src="data:image/png;base64,'
        r'([^"]+)"',
        page,
    )
    keys = [k for k, _, _ in figs]
    # per group, sample 0 of the first prompts in sorted order (circle c0-c2, square s0-s2, triangle t0-t2)
    assert keys == [f"{p}{j}#0" for p in "cst" for j in range(3)]
    want = [(k.split("#")[0], int(k.split("#")[1])) for k in keys]
    stored = [Dataset(u).images(want) for u in (a, b)]
    for (_, ia, ib), key in zip(figs, want):
        assert base64.b64decode(ia) == stored[0][key] and base64.b64decode(ib) == stored[1][key]
        assert stored[0][key] != stored[1][key]  # the colours differ, so a swap would be caught
    assert "colour: red → yellow" in page and "seed 1000 in both" in page


# ---------------------------------------------------------------- template sensitivity
def test_template_sensitivity_against_hand_counts():
    """known_rows circle: c0-c2 all red, c3 4 red + 4 blue, c4 all blue, c5 four abstained."""
    rows = pd.DataFrame(known_rows())
    s = template_sensitivity(rows, "colour", "shape", CLASSES["colour"])
    c = s[s["group"] == "circle"].set_index(["prompt", "class"])
    assert c.loc[("c0", "red"), ["n", "count", "share"]].tolist() == [8, 8, 1.0]
    assert c.loc[("c3", "red"), "share"] == 0.5 and c.loc[("c4", "blue"), "share"] == 1.0
    ci = stats.binomtest(4, 8).proportion_ci(method="wilson")
    assert (c.loc[("c3", "red"), "ci_low"], c.loc[("c3", "red"), "ci_high"]) == pytest.approx(
        (ci.low, ci.high)
    )
    assert c.loc[("c5", "red"), "n"] == 0 and c.loc[("c5", "red"), "abstained"] == 4
    assert np.isnan(c.loc[("c5", "red"), "share"]) and "c6" not in c.index.get_level_values(
        0
    )  # blocked: not ok
    h = template_homogeneity(s).set_index("group")
    obs = np.array([[8, 0], [8, 0], [8, 0], [4, 4], [0, 8]], float)  # red, blue (green, yellow never seen)
    exp = obs.sum(1, keepdims=True) * obs.sum(0) / obs.sum()
    chi2 = ((obs - exp) ** 2 / exp).sum()
    assert h.loc["circle", "chi2"] == pytest.approx(chi2) and h.loc["circle", "dof"] == 4
    assert h.loc["circle", "p_value"] == pytest.approx(stats.chi2.sf(chi2, 4))
    assert (h.loc["circle", "prompts"], h.loc["circle", "range"], h.loc["circle", "n"]) == (5, 1.0, 40)
    assert (h.loc["square", "range"], h.loc["square", "chi2"], h.loc["square", "p_value"]) == (
        0,
        0,
        1,
    )  # 2 of each
    html = template_section({"run": rows}, "colour", "shape", CLASSES["colour"])  # the single-run section
    assert 'data-prompt="c3"' in html and "0.50 [0.22, 0.78]" in html and "5 prompts" in html


# ---------------------------------------------------------------- CLIP-score distributions
def test_clip_quantiles_against_numpy(tmp_path):
    rng = np.random.default_rng(3)
    rows_a, rows_b = known_rows(), known_rows()
    for rows, shift in ((rows_a, 0.0), (rows_b, 0.3)):
        for r in rows:
            if r["status"] == "ok":
                r["clip_score"] = float(rng.uniform(0, 1) + shift)
    df = pd.DataFrame(rows_b)
    d = clip_distribution(df, "shape").set_index("group")
    tri = np.array([r["clip_score"] for r in rows_b if r["shape"] == "triangle" and r["status"] == "ok"])
    assert d.loc["triangle", "n"] == 40 and d.loc["triangle", "mean"] == pytest.approx(tri.mean())
    assert d.loc["triangle", ["q05", "q25", "q50", "q75", "q95"]].tolist() == pytest.approx(
        np.quantile(tri, [0.05, 0.25, 0.5, 0.75, 0.95]).tolist()
    )
    a, b = make_output(tmp_path / "a", rows_a), make_output(tmp_path / "b", rows_b)
    page = open(build_compare_report(a, b, AuditSpec(bootstrap=200))["path"]).read()
    boxes = re.findall(r'<g class="box" data-run="([AB])" data-group="(\w+)" data-median="([\d.]+)"', page)
    assert len(boxes) == 6 and ("B", "triangle", f"{d.loc['triangle', 'q50']:.4f}") in boxes
    assert "CLIP score per group" in page
    assert "clip-box" in clip_section({"run": df}, "shape")  # the single-run section


# ---------------------------------------------------------------- CLI
def test_cli_writes_the_page_and_rejects_bad_input(pure, tmp_path, capsys):
    a, b, _, _ = pure
    assert (
        cli(
            [
                "report",
                "--compare",
                a,
                b,
                "--attribute",
                "colour",
                "--group-by",
                "shape",
                "--bootstrap",
                300,
                "-o",
                tmp_path / "c.html",
            ]
        )
        == 0
    )
    assert "wrote " in capsys.readouterr().out and "B − A" in (tmp_path / "c.html").read_text()
    other = make_output(
        tmp_path / "three",
        [row("c0", k, "red", group="circle", classes={"colour": ["red", "blue", "green"]}) for k in range(8)],
        classes={"colour": ["red", "blue", "green"]},
    )
    cases = [
        (["report", "--compare", a, tmp_path / "missing"], "does not exist"),
        (["report", "--compare", a, b, "--attribute", "gender"], "attribute 'gender' has no labels in"),
        (["report", "--compare", a, other], "cannot be compared"),
        (["report", "--compare", a, b, "--group-by", "colour_of_sky"], "'colour_of_sky' is not a column"),
        (["report", a, "--compare", a, b], "takes no positional OUTPUT"),
        (["report"], "give an OUTPUT"),
    ]
    for argv, msg in cases:
        assert cli(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("sdgen: error: ") and msg in err and err.count("\n") == 1, err


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="chromium is not installed (apt-get install -y chromium)"
)
def test_renders_in_headless_chromium(pure, tmp_path):
    """Every inline image of the page decodes (the page's load script records it on <body>)."""
    _, _, r, page = pure
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=10000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        ["chromium", *flags, "--dump-dom", f"file://{r['path']}"], capture_output=True, text=True, timeout=90
    ).stdout
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', re.search(r"<body([^>]*)>", dom).group(1)))
    assert attrs.get("data-render") == "done" and attrs["data-images-broken"] == "0"
    assert int(attrs["data-images-ok"]) == page.count("<img ") == 2 * 4  # 4 pairs of the one group


def test_flagged_images_are_blurred_in_the_pairs(tmp_path):
    """known_rows' three x-marked triangles (t0 #3, t1 #7, t3 #3) are never shown as stored."""
    a, b = make_output(tmp_path / "a", known_rows()), make_output(tmp_path / "b", known_rows())
    page = open(
        build_compare_report(a, b, AuditSpec(where=["shape=triangle"], bootstrap=200), pairs=40)["path"]
    ).read()
    figs = dict(
        re.findall(
            r'<figure class="pair" data-key="([^"]+)"><div class="ims">\s*<img data-run="A" '
            r'src="data:image/png;base64,([^"]+)"',
            page,
        )
    )
    assert len(figs) == 40 and page.count("flagged, blurred") == 3
    stored = Dataset(a).images([("t0", 3), ("t0", 4)])
    assert (
        base64.b64decode(figs["t0#3"]) != stored[("t0", 3)]
        and base64.b64decode(figs["t0#4"]) == stored[("t0", 4)]
    )
