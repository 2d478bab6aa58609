"""sdgen export: WebDataset shards read by `webdataset`, an image folder loaded by `datasets`, both
honouring filter/dedup/--where, idempotent (same bytes) and resumable part by part, with a card."""

from __future__ import annotations

import os

import numpy as np
import pytest
import yaml
from conftest import decode, tree_bytes
from synth_output import known_rows, make_output

from pipeline.cli import main
from pipeline.curate.export import sample_key


def cli(argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture
def output(tmp_path):
    rows = known_rows()  # 108 ok images: 44 circle (4 abstained), 24 square, 40 triangle; 5 without images
    url = make_output(tmp_path / "out", rows)
    pol = tmp_path / "pol.yaml"
    pol.write_text(
        "name: nox\nrules:\n  - {name: x, when: 'safety_x_mark > 0.25', action: drop}\n"
        '  - {name: c, when: "attr_colour == abstain", action: blur}\n'
    )
    assert cli(["filter", url, "--policy", pol]) == 0  # drops the 3 x-marked triangles, blurs 4 circles
    return url, rows


def test_webdataset_readable_and_filtered(output, tmp_path):
    import webdataset as wds

    url, rows = output
    dest = tmp_path / "wds"
    assert (
        cli(["export", url, "--format", "webdataset", "-o", dest, "--keep-only", "nox", "--shard-size", "16"])
        == 0
    )
    tars = sorted(p for p in os.listdir(dest) if p.endswith(".tar"))
    samples = list(wds.WebDataset([str(dest / t) for t in tars], shardshuffle=False).decode("rgb8"))
    assert len(samples) == 108 - 3 and len(tars) == 2 * 4  # 2 parts of 52-53 images -> 4 tars each
    by = {s["__key__"]: s for s in samples}
    s = by[sample_key("c0", 0)]
    assert s["json"]["prompt_id"] == "c0" and s["json"]["policy_decision"] == "keep"
    src = {(r["prompt_id"], r["sample_idx"]): r for r in rows}
    assert np.array_equal(s["png"], decode(src[("c0", 0)]["image"]["bytes"]))  # the stored pixels
    assert not np.array_equal(by[sample_key("c5", 0)]["png"], decode(src[("c5", 0)]["image"]["bytes"]))
    blurred = by[sample_key("c5", 0)]
    assert blurred["json"]["policy_decision"] == "blur"
    assert sample_key("t0", 3) not in by  # x-marked: dropped
    card = (dest / "README.md").read_text()
    head = yaml.safe_load(card.split("---")[1])
    assert head["dataset_info"]["splits"][0]["num_examples"] == 105 and head["license"] == "other"
    assert "Policy `nox`" in card and "No audit was run" in card


def test_imagefolder_loads_with_datasets_and_dedup_where(output, tmp_path):
    import datasets

    url, rows = output
    assert cli(["audit", url, "--attribute", "colour", "--group-by", "shape", "--bootstrap", "2000"]) == 0
    dest = tmp_path / "if"
    assert cli(["export", url, "--format", "imagefolder", "-o", dest, "--where", "shape=square"]) == 0
    ds = datasets.load_dataset("imagefolder", data_dir=str(dest), split="train")
    assert len(ds) == 24 and sorted(set(ds["prompt_id"])) == ["s0", "s1", "s2"]
    src = {(r["prompt_id"], r["sample_idx"]): r for r in rows}
    r = ds[5]
    assert np.array_equal(
        np.asarray(r["image"].convert("RGB")),
        decode(src[(r["prompt_id"], r["sample_idx"])]["image"]["bytes"]),
    )
    card = (dest / "README.md").read_text()
    assert "| square | colour |" in card and "Vendi" in card and "`shape=square`" in card
    # pHash sees luma structure only: the synthetic solid patches (one layout, any colour) all collide
    assert cli(["dedup", url, "--threshold", "0"]) == 0
    dest2 = tmp_path / "if2"
    assert cli(["export", url, "--format", "imagefolder", "-o", dest2, "--dedup", "phash"]) == 0
    ds2 = datasets.load_dataset("imagefolder", data_dir=str(dest2), split="train")
    assert [(x["prompt_id"], x["sample_idx"]) for x in ds2] == [
        ("c0", 0)
    ]  # the kept image of the one cluster
    assert "Near-duplicates left out" in (dest2 / "README.md").read_text()


def test_idempotent_and_resumable(output, tmp_path):
    url, _ = output
    dest = tmp_path / "wds"
    args = ["export", url, "--format", "webdataset", "-o", dest]
    assert cli(args) == 0
    first = tree_bytes(dest)
    tars = sorted(p for p in first if p.endswith(".tar"))
    os.remove(dest / tars[-1])  # as if the export had been killed before this part
    os.utime(dest / tars[0], (1, 1))
    assert cli(args) == 0
    assert tree_bytes(dest) == first  # the missing part redone, byte-identical; the rest reused


def test_export_to_s3_same_bytes_as_local(output, tmp_path, s3_server, monkeypatch):
    """An fsspec destination (moto's S3 on 127.0.0.1) gets the same files as a local one, the card
    included; the rerun reuses every part."""
    s3fs = pytest.importorskip("s3fs")
    url, _ = output
    fs = s3fs.S3FileSystem(endpoint_url=s3_server, key="testing", secret="testing", skip_instance_cache=True)
    fs.mkdir("sets")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    for fmt in ("webdataset", "imagefolder"):
        local = tmp_path / "local" / fmt  # same folder name: the card names it
        assert cli(["export", url, "--format", fmt, "-o", local, "--keep-only", "nox"]) == 0
        assert cli(["export", url, "--format", fmt, "-o", f"s3://sets/{fmt}", "--keep-only", "nox"]) == 0
        remote = {p[len(f"sets/{fmt}/") :]: fs.cat_file(p) for p in fs.find(f"sets/{fmt}")}
        want = tree_bytes(local)
        assert sorted(remote) == sorted(want) and len(want) > 3
        card = remote.pop("README.md"), want.pop("README.md")
        assert card[0].decode().replace(f"s3://sets/{fmt}", "X") == card[1].decode().replace(str(local), "X")
        assert {k: v for k, v in remote.items() if not k.startswith("_export")} == {
            k: v for k, v in want.items() if not k.startswith("_export")
        }
    from pipeline.curate.export import export

    r = export(url, "webdataset", "s3://sets/webdataset", keep_only="nox")
    assert r["files"] == 0 and r["reused"] > 0


def test_card_written_after_an_audit_with_null_metrics(output, tmp_path):
    """An audit of one-image groups has no mean cosine (null): the card prints "–" and is always written."""
    import json

    url, _ = output
    metrics = {
        "created": "2026-01-01",
        "source": {"rows": 113},
        "diversity": {
            "per_group": [
                {
                    "group": "circle",
                    "n": 1,
                    "vendi": 1.0,
                    "vendi_ci": [1.0, 1.0],
                    "mean_cos": None,
                    "mean_cos_ci": None,
                }
            ]
        },
    }
    os.makedirs(os.path.join(url, "audit"), exist_ok=True)
    with open(os.path.join(url, "audit", "metrics.json"), "w") as f:
        json.dump(metrics, f)
    assert cli(["export", url, "--format", "imagefolder", "-o", tmp_path / "f"]) == 0
    card = (tmp_path / "f" / "README.md").read_text()
    assert "| circle | 1 | 1.00 | [1.00, 1.00] | – | – |" in card


def test_card_names_an_audit_from_an_older_method(output, tmp_path):
    """The card copies the stored audit's intervals; one an older audit method wrote is named, in bold,
    so nobody publishes intervals this sdgen no longer computes."""
    import json

    url, _ = output
    assert cli(["audit", url, "--attribute", "colour", "--group-by", "shape", "--bootstrap", "200"]) == 0
    assert cli(["export", url, "--format", "imagefolder", "-o", tmp_path / "now"]) == 0
    assert "older audit method" not in (tmp_path / "now" / "README.md").read_text()
    path = f"{url}/audit/metrics.json"
    metrics = json.load(open(path))
    del metrics["attributes"]["colour"]["audit_method"]
    open(path, "w").write(json.dumps(metrics))
    assert cli(["export", url, "--format", "imagefolder", "-o", tmp_path / "old"]) == 0
    card = (tmp_path / "old" / "README.md").read_text()
    assert "**The audit of colour was written by an older audit method (1;" in card
    assert "| circle | colour |" in card  # the numbers are still shown, under the warning
