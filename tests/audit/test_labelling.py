"""`sdgen label`: stratified seeded sample, HTML sheet and CSV template, --from-pixels, and the loop
into `sdgen audit --calibrate` (issue #13 item 2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from synth_output import cli, known_rows, make_output

from pipeline.audit.labelling import allocate, stratified_sample


def test_allocate_even_and_capped():
    take = allocate([100, 5, 40], 30)
    assert take.sum() == 30 and take[1] == 5 and abs(int(take[0]) - int(take[2])) <= 1
    assert allocate([3, 2], 10).tolist() == [3, 2]  # never more than a stratum holds


def test_stratified_sample_seeded_and_order_free():
    df = pd.DataFrame(
        {
            "prompt_id": [f"p{i // 4}" for i in range(80)],
            "sample_idx": [i % 4 for i in range(80)],
            "group": ["a"] * 60 + ["b"] * 20,
            "predicted": ["x", "y"] * 40,
        }
    )
    s = stratified_sample(df, ["group", "predicted"], 20, seed=3)
    assert len(s) == 20 and s.groupby(["group", "predicted"]).size().tolist() == [5, 5, 5, 5]
    again = stratified_sample(df.sample(frac=1, random_state=1), ["group", "predicted"], 20, seed=3)
    assert s[["prompt_id", "sample_idx"]].equals(again[["prompt_id", "sample_idx"]])
    other = stratified_sample(df, ["group", "predicted"], 20, seed=4)
    assert not s[["prompt_id", "sample_idx"]].equals(other[["prompt_id", "sample_idx"]])


def test_label_from_pixels_then_calibrate(tmp_path, capsys):
    out = make_output(tmp_path / "out", known_rows())
    sheet = tmp_path / "sheet"
    assert (
        cli(
            [
                "label",
                out,
                "--attribute",
                "colour",
                "--group-by",
                "shape",
                "-n",
                40,
                "-o",
                sheet,
                "--from-pixels",
            ]
        )
        == 0
    )
    assert "labels filled from pixels" in capsys.readouterr().out
    labs = pd.read_csv(sheet / "labels.csv")
    assert len(labs) == 40 and list(labs.columns) == [
        "prompt_id",
        "sample_idx",
        "group",
        "predicted",
        "label",
    ]
    html = (sheet / "index.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == 40
    ok = labs[labs.predicted != "abstain"]  # synthetic images are patches of the probe's colour
    assert (ok.label == ok.predicted).all() and ok.label.notna().all()
    assert set(labs.groupby(["group", "predicted"]).size().index.get_level_values(0)) == {
        "circle",
        "square",
        "triangle",
    }
    assert (
        cli(
            [
                "audit",
                out,
                "--attribute",
                "colour",
                "--group-by",
                "shape",
                "--calibrate",
                sheet / "labels.csv",
                "--bootstrap",
                200,
            ]
        )
        == 0
    )
    s = pd.read_parquet(f"{out}/audit/summary.parquet").set_index(["group", "class"])
    # a perfect probe: the corrected triangle green share stays at the raw 0.9
    assert np.isclose(s.loc[("triangle", "green"), "proportion_corrected"], 0.9, atol=0.02)


def test_group_by_comma_list_is_the_intersection(tmp_path, capsys):
    from pipeline.cli.common import split_group_by

    assert split_group_by(["shape,style", "style", " tone "]) == ["shape", "style", "tone"]
    assert split_group_by(None) is None
    rows = known_rows()
    for r in rows:
        r["style"] = "photo" if r["sample_idx"] % 2 else "sketch"
    out = make_output(tmp_path / "out", rows, passthrough=("shape", "style"))
    assert cli(["audit", out, "--attribute", "colour", "--group-by", "shape,style", "--bootstrap", 200]) == 0
    m = __import__("json").load(open(f"{out}/audit/metrics.json"))["attributes"]["colour"]
    assert m["group_by"] == ["shape", "style"]
    assert sorted(m["groups"]) == [
        f"{s}|{t}" for s in ("circle", "square", "triangle") for t in ("photo", "sketch")
    ]
    # min-n per cell: circle (n=40) shows a disparity alone, but its cells (20 + 20) show floors only
    assert m["groups"]["circle|photo"]["n"] + m["groups"]["circle|sketch"]["n"] == 40
    assert all(g.get("mad") is None and g.get("q_value") is None for g in m["groups"].values())
