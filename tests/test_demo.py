"""What a newcomer does first: `make run` (configs/demo.yaml), then `sdgen report runs/demo` with no flags.
The report's first section must tell the toy world's story: for neutral prompts ("a circle"), circles
come out mostly red and triangles green (pipeline/toyworld: circle red ≈ 0.7, triangle green ≈ 0.9),
grouped by the input's own `shape` column (never by a column sdgen derives, such as phash)."""

import re

import pytest

from pipeline.cli import main

pytestmark = pytest.mark.slow


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
    out = tmp_path / "demo"
    assert main(["run", "configs/demo.yaml", "--set", f"output={out}", "--no-progress"]) == 0  # = make run
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "by shape, rows where template=shape_only" in printed  # the job's audit defaults, said so
    title, shares = _first_section_shares((out / "audit" / "report.html").read_text())
    assert title == "colour by shape"
    assert set(shares) == {"circle", "square", "triangle"}
    assert max(shares["circle"], key=shares["circle"].get) == "red" and shares["circle"]["red"] >= 0.6
    assert (
        max(shares["triangle"], key=shares["triangle"].get) == "green" and shares["triangle"]["green"] >= 0.8
    )
    assert (out / "audit" / "metrics.json").exists()  # the default audit is stored, as `sdgen audit` would


def test_no_default_grouping_by_a_derived_column(tmp_path):
    """Without audit defaults, the grouping is the input's first own column, not phash (issue 20)."""
    from pipeline.audit.runner import passthrough_columns

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
