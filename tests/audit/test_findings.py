"""Findings first (issue 22, item 5): `sdgen audit` prints, and the report opens with, the groups whose
disparity is significant after BH (with effect and intervals) and the groups too small to tell."""

import numpy as np
from synth_output import cli, make_output, row

from pipeline.audit.findings import attribute_findings

COLOURS = ["red", "green", "blue", "yellow"]


def _output(tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for j in range(6):  # circle: 6 prompts x 8 images, all red (a disparity nobody can miss)
        rows += [row(f"c{j}", k, "red", group="circle") for k in range(8)]
    for j in range(6):  # square: uniform over the four colours (no disparity)
        rows += [row(f"s{j}", k, COLOURS[int(rng.integers(4))], group="square") for k in range(8)]
    rows += [row("t0", k, "green", group="triangle") for k in range(8)]  # triangle: 8 images, 1 prompt
    return make_output(tmp_path / "out", rows)


def test_audit_prints_findings_first_and_the_report_opens_with_them(tmp_path, capsys):
    out = _output(tmp_path)
    assert (
        cli(
            [
                "audit",
                out,
                "--attribute",
                "colour",
                "--group-by",
                "shape",
                "--bootstrap",
                300,
                "--no-diversity",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert text.startswith("Findings (disparity from the target, Benjamini-Hochberg q < 0.05):")
    head = text.split("\n\n")[0]
    assert "colour: 1 group differs" in head and "circle: red 1.00" in head and "(+0.75)" in head
    assert "too small to tell" in head and "triangle (8 images (< 30))" in head
    assert "no significant disparity in 1 group" in head  # square
    assert head.index("circle") < head.index("too small")
    assert cli(["report", out, "--group-by", "shape", "--bootstrap", 300]) == 0
    page = (tmp_path / "out" / "audit" / "report.html").read_text()
    assert page.index('<h2 id="findings">') < page.index("<h2>colour by")
    assert "colour: 1 group with a significant disparity" in page and "triangle (8 images (&lt; 30))" in page


def test_findings_by_hand():
    entry = {
        "attribute": "a",
        "classes": ["x", "y"],
        "target": "uniform",
        "min_n": 30,
        "groups": {
            "g1": {
                "n": 100,
                "n_prompts": 5,
                "q_value": 0.01,
                "proportions": {"x": 0.8, "y": 0.2},
                "ci_low": {"x": 0.7, "y": 0.1},
                "ci_high": {"x": 0.9, "y": 0.3},
                "d2": 0.18,
                "d2_ci": (0.1, 0.3),
            },
            "g2": {"n": 100, "n_prompts": 2, "q_value": 0.001, "proportions": {"x": 0.9, "y": 0.1}},
            "g3": {"n": 100, "n_prompts": 5, "q_value": 0.2, "proportions": {"x": 0.55, "y": 0.45}},
        },
    }
    f = attribute_findings(entry)
    (s,) = f["significant"]
    assert (s["group"], s["class"], s["effect"], s["ci"]) == ("g1", "x", 0.8 - 0.5, (0.7, 0.9))
    assert f["too_small"] == [("g2", "2 prompts (< 3): no estimate of the between-prompt spread")]
    assert f["clear"] == 1
