"""Diversity: Vendi and mean cosine by hand, and the toy world's known answers (guidance collapses
"a circle" onto red; "a square" is uniform over colours, "a triangle" 90% green)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_config, write_prompts

from pipeline.audit.diversity import diversity, per_group, per_prompt, weighted_mean_cos, weighted_vendi
from pipeline.audit.runner import run_audit
from pipeline.audit.spec import AuditSpec
from pipeline.core.config import from_dict
from pipeline.launch import run as run_job


def test_vendi_and_mean_cos_by_hand():
    assert diversity(np.eye(5)) == pytest.approx({"n": 5, "vendi": 5.0, "mean_cos": 0.0})
    assert diversity(np.ones((4, 3))) == pytest.approx({"n": 4, "vendi": 1.0, "mean_cos": 1.0})
    two = np.vstack([np.eye(3)] * 2)  # 3 distinct images twice: Vendi 3; each has 1 twin among 5 others
    assert diversity(two) == pytest.approx({"n": 6, "vendi": 3.0, "mean_cos": 0.2})
    assert weighted_vendi(np.eye(3), np.array([2, 2, 2])) == pytest.approx(3.0)
    assert weighted_mean_cos(np.eye(3), np.array([2, 2, 2])) == pytest.approx(0.2)  # weights = copies
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8))
    big = np.repeat(x, [1] * 20 + [2] * 20, axis=0)  # the d x d path (n > d) equals the n x n one
    w = np.array([1] * 20 + [2] * 20)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    bign = big / np.linalg.norm(big, axis=1, keepdims=True)
    assert weighted_vendi(xn, w) == pytest.approx(weighted_vendi(bign, np.ones(len(big))))
    r = per_prompt(x, rng, 50)
    assert r["vendi_ci"][0] <= r["vendi"] * 1.01 and r["mean_cos_ci"][0] <= r["mean_cos_ci"][1]
    g = per_group(x, np.repeat(np.arange(8), 5), rng, 50)
    assert g["prompts"] == 8 and g["vendi_ci"][0] < g["vendi_ci"][1]


@pytest.mark.slow
def test_toy_world_known_answers(tmp_path):
    prompts = ["a circle", "a circle", "a square", "a triangle"]
    path = write_prompts(
        tmp_path / "p.parquet",
        prompts,
        prompt_id=["circle_g1", "circle_g7", "square", "triangle"],
        guidance_scale=[1.0, 7.5, 1.0, 1.0],
        setting=["g1", "g7.5", "g1", "g1"],
    )
    cfg = tiny_config(
        path,
        tmp_path / "out",
        model="toy",
        generation={"images_per_prompt": 24, "steps": 10, "width": None, "height": None, "batch_size": 24},
        shards={"rows_per_shard": 4},
        write={"embeddings": True},
    )
    run_job(from_dict(cfg), progress=False)
    r = run_audit(str(tmp_path / "out"), AuditSpec(["colour"], ["setting"], bootstrap=200))
    div = {p["prompt_id"]: p for p in r["metrics"]["diversity"]["per_prompt"]}
    print(
        {
            k: (round(v["vendi"], 3), [round(c, 2) for c in v["vendi_ci"]], round(v["mean_cos"], 3))
            for k, v in div.items()
        }
    )
    assert div["circle_g7"]["vendi"] < div["circle_g1"]["vendi"]
    assert div["circle_g7"]["mean_cos"] > div["circle_g1"]["mean_cos"]
    assert div["square"]["vendi"] > div["triangle"]["vendi"]
    assert div["square"]["mean_cos"] < div["triangle"]["mean_cos"]
    groups = {g["group"]: g for g in r["metrics"]["diversity"]["per_group"]}
    assert set(groups) == {"g1", "g7.5"} and groups["g1"]["prompts"] == 3


def test_posthoc_embeddings_from_stored_pngs(tmp_path):
    """Without the column, the run's CLIP encodes the stored PNGs (kept beside the output, reused)."""
    import torch
    from synth_output import known_rows, make_output

    from pipeline.audit.data import decode_batch
    from pipeline.probes.scorer import ClipScorer

    rows = known_rows()
    url = make_output(tmp_path / "out", rows)
    r = run_audit(url, AuditSpec(["colour"], ["shape"], bootstrap=200))
    div = r["metrics"]["diversity"]
    assert div["embedding"] == "posthoc" and (tmp_path / "out" / "audit" / "embeddings.parquet").exists()
    by = {p["prompt_id"]: p for p in div["per_prompt"]}
    c0 = [x["image"]["bytes"] for x in rows if x["prompt_id"] == "c0"]
    ((_, u8),) = decode_batch(c0).values()
    emb = ClipScorer("tiny", None, "cpu", torch.float32).encode_images(torch.from_numpy(u8)).numpy()
    want = diversity(emb.astype(np.float16).astype(np.float32))
    assert by["c0"]["n"] == 8 and by["c0"]["vendi"] == pytest.approx(want["vendi"], rel=1e-4)
    assert {g["group"] for g in div["per_group"]} == {"circle", "square", "triangle"}
    again = run_audit(url, AuditSpec(["colour"], ["shape"], bootstrap=200))["metrics"][
        "diversity"
    ]  # reuses embeddings.parquet
    assert again["per_prompt"][0]["vendi"] == div["per_prompt"][0]["vendi"]
    from pipeline.pages.report import build_report

    html = open(build_report(url, str(tmp_path / "r.html"), AuditSpec(bootstrap=300))["path"]).read()
    section = html.split("<h2>Diversity</h2>")[1].split("<h2>")[0]
    assert section.count("<tr>") == 4 and "triangle" in section and "posthoc" in section


def test_cli_no_diversity_skips_it(tmp_path):
    """`sdgen audit --no-diversity`: no diversity block and no post-hoc CLIP encode of the PNGs."""
    import json

    from synth_output import known_rows, make_output

    from pipeline.cli import main

    url = make_output(tmp_path / "out", known_rows())
    assert (
        main(
            [
                "audit",
                url,
                "--attribute",
                "colour",
                "--group-by",
                "shape",
                "--bootstrap",
                "2000",
                "--no-diversity",
            ]
        )
        == 0
    )
    metrics = json.load(open(tmp_path / "out" / "audit" / "metrics.json"))
    assert "colour" in metrics["attributes"] and "diversity" not in metrics
    assert not (tmp_path / "out" / "audit" / "embeddings.parquet").exists()


def test_a_list_valued_column_groups_and_filters_as_text(tmp_path):
    """An input column of lists (Parquet list<int64>) in --group-by or --where: diversity groups by the
    audit's own text keys, as the share tables do, and --where matches the text ("[2 3]"), instead of
    failing inside pandas (unhashable ndarray; == on arrays is elementwise)."""
    import pyarrow as pa
    from synth_output import known_rows, make_output

    rows = [{**r, "tags": [1] if r["prompt_id"].startswith("c") else [2, 3]} for r in known_rows()]
    url = make_output(
        tmp_path / "out", rows, passthrough={"shape": pa.string(), "tags": pa.list_(pa.int64())}
    )
    m = run_audit(url, AuditSpec(["colour"], ["tags"], bootstrap=100))["metrics"]
    assert set(m["attributes"]["colour"]["groups"]) == {"[1]", "[2 3]"}
    groups = {g["group"]: g for g in m["diversity"]["per_group"]}
    assert set(groups) == {"[1]", "[2 3]"} and groups["[1]"]["n"] == 44 and groups["[1]"]["tags"] == "[1]"
    some = run_audit(url, AuditSpec(["colour"], ["shape"], where=("tags=[2 3]",), bootstrap=100))["metrics"]
    assert set(some["attributes"]["colour"]["groups"]) == {"square", "triangle"}  # --where reads it as text
    assert run_audit(
        url, AuditSpec(["colour"], ["tags"], where=("tags=[1]",), bootstrap=100, diversity=False)
    )["metrics"]["attributes"]["colour"]["groups"].keys() == {"[1]"}
