"""sdgen report: one self-contained HTML file; rendered in headless Chromium when it is installed."""
import re
import shutil
import subprocess

import numpy as np
import pytest
from synth_output import cli, known_rows, make_output, row

from pipeline.audit.report import build_report

CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=10000"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    rows = known_rows() + [row(f"x{i}", 0, "red", group="x mark", x_mark=0.4, flagged=True) for i in range(2)]
    out = make_output(tmp / "out", rows)
    r = build_report(out, str(tmp / "report.html"), thumbnails=6, B=300)
    return out, r, (tmp / "report.html").read_text()


def test_self_contained_no_urls(report):
    _, r, html = report
    assert r["bytes"] == len(html.encode())
    assert not re.search(r"https?:|ftp:|//[a-z0-9]", html, re.I), "no URL of any kind"
    assert "<link" not in html and "@import" not in html and "url(" not in html
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert len(srcs) == 4 * 6 - 4 and all(s.startswith("data:image/png;base64,") for s in srcs)  # x mark: 2 images
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


def test_no_probes_explained(tmp_path):
    out = make_output(tmp_path / "out", [row("p", k, group="circle", classes={}) for k in range(3)], classes={})
    r = build_report(out, str(tmp_path / "r.html"))
    assert "No attribute was probed" in r["notes"][0] and "No attribute was probed" in (tmp_path / "r.html").read_text()


def test_cli(report, tmp_path, capsys):
    out, _, _ = report
    assert cli(["report", out, "-o", tmp_path / "c.html", "--thumbnails", 2]) == 0
    assert "wrote " in capsys.readouterr().out and (tmp_path / "c.html").stat().st_size > 1000
    assert cli(["report", tmp_path / "missing"]) == 2
    assert "does not exist" in capsys.readouterr().err


def _chromium(args, tmp_path):
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_renders_in_headless_chromium(report, tmp_path):
    """Charts have their bars and every inline image decodes (naturalWidth > 0), as the page's own
    load script records on <body>; the screenshot is not blank."""
    from PIL import Image

    _, r, _ = report
    dom = _chromium(["--dump-dom", f"file://{r['path']}"], tmp_path).stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body))
    assert attrs.get("data-render") == "done", body
    assert int(attrs["data-images-ok"]) == 20 and int(attrs["data-images-broken"]) == 0
    assert int(attrs["data-bars"]) == 16
    shot = tmp_path / "shot.png"
    _chromium(["--window-size=1280,2000", f"--screenshot={shot}", f"file://{r['path']}"], tmp_path)
    pixels = np.asarray(Image.open(shot).convert("RGB"), float)
    assert pixels.shape[:2] == (2000, 1280) and pixels.std() > 10


def test_images_per_prompt_as_stored():
    import pandas as pd

    from pipeline.audit.report import _per_prompt

    df = pd.DataFrame({"prompt_id": ["a"] * 8 + ["b"] * 4})
    assert _per_prompt(df, {"images_per_prompt": 24}) == "4–8 (config 24; per-row values override it)"
    assert _per_prompt(df.iloc[:8], {"images_per_prompt": 8}) == "8"
    assert _per_prompt(df.iloc[:0], {"images_per_prompt": 2}) == "2"
