"""What a newcomer does first: `make run` (configs/demo.yaml), then `sdgen report runs/demo` with no flags.
The report must tell the toy world's story, findings first: for neutral prompts ("a circle", "a photo of
a circle", ...), circles come out mostly red and triangles green (pipeline/toyworld: circle red ≈ 0.7,
triangle green ≈ 0.9), grouped by the input's own `shape` column (never by a column sdgen derives, such
as phash). This is also docs/AUDIT.md check 5: the audit of the shipped toy model's output recovers the
world's known skews end to end (the truth in its intervals, no deviation from it)."""

import re

import pytest

from pipeline.cli import main

pytestmark = pytest.mark.slow
TRUTH = "pipeline/data/toyworld.yaml"  # the toy world's colour skews per shape (`skews`)


def _first_section_shares(html: str) -> tuple[str, dict]:
    """(title of the first attribute section, {group: {class: share}}) from its class-shares table."""
    title = re.search(r"<h2>(.*?)</h2>", html).group(1)
    table = html[html.index("<caption>Class shares [CI]</caption>") :]
    table = table[: table.index("</table>")]
    classes = re.findall(r"<th>(\w+)</th>", table)
    shares = {}
    for group, cells in re.findall(r'<tr><td class="l">(\w+)</td>(.*?)</tr>', table):
        values = [float(v) for v in re.findall(r"<td>([0-9.]+) \[", cells)]
        shares[group] = dict(zip(classes, values))
    return title, shares


def test_make_run_then_report_with_no_flags_shows_the_known_skews(tmp_path, capsys):
    import json

    import yaml

    out = tmp_path / "demo"
    assert main(["run", "configs/demo.yaml", "--set", f"output={out}", "--no-progress"]) == 0  # = make run
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "audited colour by shape, rows where neutral=true" in printed  # the job's audit defaults, said so
    html = (out / "audit" / "report.html").read_text()
    title, shares = _first_section_shares(html)
    assert title == "colour by shape" and "<h2>shape by shape</h2>" not in html  # audit.attributes: [colour]
    assert set(shares) == {"circle", "square", "triangle"}
    assert max(shares["circle"], key=shares["circle"].get) == "red" and shares["circle"]["red"] >= 0.5
    assert (
        max(shares["triangle"], key=shares["triangle"].get) == "green" and shares["triangle"]["green"] >= 0.8
    )
    # the findings open the page: circles and triangles differ from uniform, squares (uniform in the world)
    # do not; and the world's truth lies in (nearly) every share interval
    findings = html[html.index(">Findings</h2>") : html.index("<h2>colour by shape</h2>")]
    assert (
        "2 groups with a significant disparity" in findings and "square" not in findings.split("</table>")[0]
    )
    entry = json.loads((out / "audit" / "metrics.json").read_text())["attributes"]["colour"]
    truth = yaml.safe_load(open(TRUTH))["skews"]
    inside = sum(
        entry["groups"][g]["ci_low"][c] - 1e-9 <= t <= entry["groups"][g]["ci_high"][c] + 1e-9
        for g, classes in truth.items()
        for c, t in classes.items()
    )
    assert inside >= 11, inside  # 12 nominal-95% intervals
    # docs/AUDIT.md check 5: against the world's truth as the target, no group shows a deviation
    from pipeline.audit.runner import run_audit
    from pipeline.audit.spec import AuditSpec

    spec = AuditSpec(["colour"], ["shape"], target=TRUTH, where=("neutral=true",), diversity=False)
    groups = run_audit(str(out), spec, write=False).metrics["attributes"]["colour"]["groups"]
    for shape in truth:
        g = groups[shape]
        assert g["n"] >= 30 and g["d2_ci"][0] <= 0 <= g["d2_ci"][1], (shape, g["n"], g["d2"], g["d2_ci"])
        assert g["p_value"] > 0.01, (shape, g["p_value"])


def test_no_default_grouping_by_a_derived_column(tmp_path):
    """Without audit defaults, the grouping is the input's first own column, not phash (issue 20)."""
    from pipeline.audit.data import passthrough_columns

    cols = [
        "prompt_id",
        "sample_idx",
        "prompt",
        "clip_score",
        "attr_colour",
        "safety_flagged",
        "phash",
        "clip_image_embedding",
        "aesthetic",
        "preference",
        "source_prompt",
        "template",
        "colour",
        "shape",
    ]
    assert passthrough_columns(cols) == ["template", "colour", "shape"]
