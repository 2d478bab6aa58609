"""Known answer for `--calibrate` on the toy world (issue 13 item 3b): the deliberately confusable
colour probe (pipeline/data/attributes/toyworld_confusable.yaml) misreads red circles as blue and
green triangles as yellow; labels from pixels on a stratified subset correct it. The fast test
renders the world directly (pipeline/toyworld/world.py, no diffusion); the slow one generates with
the toy model and runs the CLI loop (generate → label --from-pixels → audit --calibrate)."""

from __future__ import annotations

import io
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from synth_output import cli

from benchmarks import toy_confusable as T
from pipeline.toyworld import world

CONFUSED = [("circle", "red"), ("circle", "blue"), ("triangle", "green"), ("triangle", "yellow")]


def rendered_output(root, per_shape=120, prompts=10) -> str:
    """A folder of image Parquet: the world's "a {shape}" images (colours from its skews), 120 per
    shape over 10 prompt ids each, with a `shape` column."""
    b = world.sample_world(5, 2000)
    rows = {"prompt": [], "shape": [], "image": []}
    for s in ("circle", "square", "triangle"):
        idx = [i for i, (k, sh) in enumerate(zip(b.kinds, b.shapes)) if k == "shape" and sh == s][:per_shape]
        assert len(idx) == per_shape
        for j, i in enumerate(idx):
            buf = io.BytesIO()
            Image.fromarray(b.images[i]).save(buf, format="PNG")
            rows["prompt"].append(f"a {s} #{j % prompts}")
            rows["shape"].append(s)
            rows["image"].append({"bytes": buf.getvalue(), "path": None})
    root.mkdir()
    pq.write_table(pa.table(rows), root / "data.parquet")
    return str(root)


def test_confusable_probe_corrected_by_pixel_labels(tmp_path):
    out = rendered_output(tmp_path / "toy")
    res = T.run(out, n=240, bootstrap=200, clip_model="toy")
    rows = {(r["group"], r["class"]): r for r in res["rows"]}
    assert res["labels"] == 240 and len(rows) == 12
    for key in CONFUSED:  # the probe's errors: raw misses the pixel share by more than its CI
        r = rows[key]
        assert not r["raw_covers"], (key, r)
        assert abs(r["raw"][0] - r["truth"]) > 0.15, (key, r)
    assert all(r["corrected_covers"] for r in rows.values()), [
        r for r in rows.values() if not r["corrected_covers"]
    ]
    assert max(abs(r["corrected"][0] - r["truth"]) for r in rows.values()) < 0.1
    # the errors depend on the shape (confusion rows: truth x [red, green, blue, yellow, abstain]):
    # red circles read blue, red squares never; green triangles read yellow, green squares never
    conf = res["confusion"]
    assert conf["circle"][0][2] >= 5 and conf["square"][0][2] == 0
    assert conf["triangle"][1][3] >= 5 and conf["square"][1][3] == 0
    assert "red" in res["own_confusion_rows"]["circle"] and "green" in res["own_confusion_rows"]["triangle"]


@pytest.mark.slow
def test_toy_generate_label_calibrate_cli(tmp_path, capsys):
    t0 = time.time()
    out = str(tmp_path / "out")
    assert T.generate(out, ipp=30, steps=12)
    sheet = tmp_path / "sheet"
    probe = ["--attribute", "colour", "--attribute-set", T.SET, "--group-by", "shape"]
    assert cli(["label", out, *probe, "-n", 240, "-o", sheet, "--from-pixels"]) == 0
    assert cli(["audit", out, *probe, "--calibrate", sheet / "labels.csv", "--bootstrap", 200]) == 0
    assert "colour calibration: " in capsys.readouterr().out
    entry = __import__("json").load(open(f"{out}/audit/metrics.json"))["attributes"]["colour"]
    rows = {
        (r["group"], r["class"]): r for r in T.compare(entry, T.pixel_truth(out, "shape", entry["classes"]))
    }
    assert sum(not rows[k]["raw_covers"] for k in CONFUSED) >= 3, [rows[k] for k in CONFUSED]
    assert sum(r["corrected_covers"] for r in rows.values()) >= 11, rows  # 12 nominal-95% intervals
    assert time.time() - t0 < 120
