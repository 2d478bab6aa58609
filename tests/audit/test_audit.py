"""sdgen audit on outputs with KNOWN labels (tests/synth_output.py), post-hoc probing on a tiny run,
compare(), the below-30 floor, and the CLI."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import read_output, tiny_config, write_prompts
from synth_output import CLASSES, cli, known_rows, make_output

import pipeline
from pipeline.audit import stats as S
from pipeline.audit import tables as T
from pipeline.audit.compare import run_compare
from pipeline.audit.runner import SUMMARY_COLUMNS, run_audit
from pipeline.audit.spec import AuditSpec, ProbeSpec

B = 400


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    out = make_output(tmp_path_factory.mktemp("known") / "out", known_rows())
    return out, run_audit(out, AuditSpec(["colour"], ["shape"], bootstrap=B, seed=0))


def test_summary_shares_and_n_match_hand_counts(known):
    out, res = known
    s = pd.read_parquet(f"{out}/audit/summary.parquet")
    assert list(s.columns) == SUMMARY_COLUMNS
    s = s.set_index(["group", "class"])
    assert (s.attribute == "colour").all() and len(s) == 3 * 4
    # circle: 44 ok rows, 4 of them abstained; 28 red + 12 blue; blocked/failed rows not in n
    assert s.loc[("circle", "red"), ["n", "abstained"]].tolist() == [40, 4]
    assert (
        s.loc[("circle", "red"), "proportion"] == 28 / 40
        and s.loc[("circle", "blue"), "proportion"] == 12 / 40
    )
    assert s.loc[("triangle", "green"), "proportion"] == 36 / 40 and s.loc[("square", "yellow"), "n"] == 24
    assert (s.ci_low <= s.proportion + 1e-12).all() and (s.proportion <= s.ci_high + 1e-12).all()


def test_cis_are_the_hierarchical_bootstrap_of_the_ok_rows(known, tmp_path):
    """The same numbers as audit_stats on rows written out by hand (ok rows of the group only), with
    the between-prompt correlation from the group's own prompts (--no-pool-icc; pooling is
    tests/audit/test_betabinomial.py's)."""
    import shutil

    out, pooled = known
    own = tmp_path / "own"
    shutil.copytree(out, own)
    res = run_audit(str(own), AuditSpec(["colour"], ["shape"], bootstrap=B, seed=0, pool_icc=False))
    pids = [f"c{i // 8}" for i in range(40)] + ["c5"] * 4
    labels = ["red"] * 28 + ["blue"] * 12 + ["abstain"] * 4
    ref = S.group_metrics(pids, labels, CLASSES["colour"], B=B, seed=T.group_seed(0, "circle"))
    got = res["metrics"]["attributes"]["colour"]["groups"]["circle"]
    assert not any(got["icc_pooled"].values()) and res["metrics"]["attributes"]["colour"]["pool_icc"] is False
    assert pooled["metrics"]["attributes"]["colour"]["pool_icc"] is True
    for k in ("ci_low", "ci_high", "proportions"):
        assert got[k] == pytest.approx(ref[k])
    assert got["d2"] == pytest.approx(ref["d2"]) and got["d2_ci"] == pytest.approx(list(ref["d2_ci"]))
    assert got["p_value"] == pytest.approx(ref["p_value"]) and got["n_prompts"] == 5
    # D² by hand, for the population of prompts (#13): Σ(p̂ − ¼)² − Σ_k s_k²/P, s_k² the variance of
    # the 5 prompts' shares (8 images each): red 1, 1, 1, ½, 0 and blue the complement
    p = np.array([0.7, 0, 0.3, 0])
    s2 = np.var([1, 1, 1, 0.5, 0], ddof=1)
    assert got["d2"] == pytest.approx(((p - 0.25) ** 2).sum() - 2 * s2 / 5)


def test_coverage_floor_and_across(known):
    out, res = known
    m = json.loads(open(f"{out}/audit/metrics.json").read())  # strict JSON: no NaN anywhere
    g = m["attributes"]["colour"]["groups"]
    cov = g["circle"]["coverage"]
    assert cov == {**cov, "rows": 49, "ok": 44, "blocked": 4, "failed": 1, "invalid": 0}
    z = 1.96
    centre, half = (
        (4 / 49 + z * z / 98) / (1 + z * z / 49),
        z / (1 + z * z / 49) * math.sqrt(4 / 49 * 45 / 49 / 49 + z * z / (4 * 49 * 49)),
    )
    assert cov["blocked_rate"] == 4 / 49 and cov["blocked_ci"] == pytest.approx(
        [centre - half, centre + half]
    )
    sq = g["square"]  # n = 24 < 30: the floor, no disparity
    assert sq["d2"] is None and sq["p_value"] is None and sq["q_value"] is None and "n=24 < 30" in sq["note"]
    assert sq["floor"] == pytest.approx(
        S.null_floor(
            24,
            np.full(4, 0.25),
            B,
            np.random.default_rng(np.random.SeedSequence(T.group_seed(0, "square")).spawn(2)[1]),
        )[0]
    )
    assert g["circle"]["q_value"] is not None and m["attributes"]["colour"]["across"]["dof"] == 6


def test_safety_rates_by_hand(known):
    _, res = known
    rows = {(r["group"], r["detector"]): r for r in res["metrics"]["safety"]["rows"]}
    t = rows[("triangle", "safety_flagged")]
    assert (t["count"], t["n"], t["k"]) == (3, 40, 8)
    assert [t["ci_low"], t["ci_high"]] == pytest.approx(S.wilson(3, 40)[:2])
    assert t["p_any_in_k"] == pytest.approx(1 - math.comb(37, 8) / math.comb(40, 8))
    c = rows[("circle", "screening_blocked")]
    assert (c["count"], c["n"]) == (4, 49)
    assert (
        rows[("circle", "safety_flagged")]["n"] == 44
        and rows[("circle", "safety_flagged")]["ci_method"] == "rule_of_three"
    )
    assert rows[("triangle", "safety_x_mark")]["expected_max"] == pytest.approx(
        S.expected_max_over_k([0.3] * 3 + [0.05] * 37, 8)
    )


def test_row_order_and_sharding_change_nothing(known, tmp_path):
    out, res = known
    rows = known_rows()
    rng = np.random.default_rng(1)
    other = make_output(tmp_path / "shuffled", [rows[i] for i in rng.permutation(len(rows))], shards=3)
    again = run_audit(other, AuditSpec(["colour"], ["shape"], bootstrap=B, seed=0))
    pd.testing.assert_frame_equal(again["summary"], res["summary"])
    assert len(again["summary"]) > 0 and again["metrics"]["attributes"] == res["metrics"]["attributes"]


def test_where_and_per_group_truth_target(known, tmp_path):
    out, _ = known
    r = run_audit(
        out,
        AuditSpec(
            ["colour"], ["shape"], target="pipeline/data/toyworld.yaml", where=["shape=circle"], bootstrap=B
        ),
        write=False,
    )
    circle = r["metrics"]["attributes"]["colour"]["groups"]
    assert list(circle) == ["circle"]  # --where kept one group
    s2 = np.var([1, 1, 1, 0.5, 0], ddof=1)  # population D² (#13): minus the prompts' variance, 2·s²/5
    assert circle["circle"]["d2"] == pytest.approx(-2 * s2 / 5)
    assert circle["circle"]["target"] == {"red": 0.7, "green": 0.0, "blue": 0.3, "yellow": 0.0}


def test_compare_differences(known, tmp_path):
    out_a, _ = known
    rows = known_rows()
    for r in rows:  # run B: circle prompts c0..c4 now half red, half blue; everything else equal
        if r["shape"] == "circle" and r["status"] == "ok" and r["attr_colour"] != "abstain":
            r["attr_colour"] = "red" if r["sample_idx"] % 2 == 0 else "blue"
    out_b = make_output(tmp_path / "b", rows)
    res = run_compare(out_a, out_b, AuditSpec(["colour"], ["shape"], bootstrap=B), name="before")
    t = res["table"].set_index(["group", "quantity", "class"], drop=False)
    red = t.loc[("circle", "proportion", "red")]
    assert red["a"] == 0.7 and red["b"] == 0.5 and red["diff"] == pytest.approx(-0.2) and red["paired"]
    assert red["ci_low"] <= -0.2 <= red["ci_high"]
    tri = t.loc[("triangle", "proportion", "green")]
    assert (
        tri["diff"] == 0 and tri["ci_low"] < 0 < tri["ci_high"]
    )  # same labels; seeds resampled independently
    sq_d2 = t[(t.group == "square") & (t.quantity == "d2")].iloc[0]
    assert "n < 30" in sq_d2["note"]
    saved = json.loads(open(f"{out_b}/audit/compare-before.json").read())
    assert saved["attribute"] == "colour" and len(saved["rows"]) == len(t)


def test_cli_table_and_errors(known, capsys):
    out, _ = known
    assert cli(["audit", out, "--attribute", "colour", "--group-by", "shape", "--bootstrap", B]) == 0
    text = capsys.readouterr().out
    assert "colour by shape" in text and "n<30: floor only" in text and "0.70 [" in text
    assert cli(["audit", out, "--attribute", "colour", "--group-by", "shap"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sdgen: error: --group-by 'shap' is not a column") and "['shape']" in err
    assert cli(["audit", out, "--attribute", "hair", "--group-by", "shape"]) == 2
    assert "attribute 'hair' was not probed during the run" in capsys.readouterr().err
    assert cli(["audit", out, "--attribute", "colour", "--where", "shape"]) == 2
    assert "--where expects COLUMN=VALUE" in capsys.readouterr().err
    assert cli(["audit", "--compare", out, out]) == 2
    assert "exactly one --attribute" in capsys.readouterr().err


# ---------------------------------------------------------------- post-hoc probing (tiny run, tiny CLIP)
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same prompts and seeds twice: probed in the actor, and not probed at all."""
    tmp = tmp_path_factory.mktemp("posthoc")
    src = write_prompts(
        tmp / "p.parquet", ["a circle", "a square", "a triangle"], shape=["circle", "square", "triangle"]
    )
    cpu = {"device": "cpu"}  # float32 on any machine: in-run and post-hoc must agree to 1e-5
    probed = tiny_config(
        src,
        tmp / "probed",
        probes={"attributes": ["toyworld", str(no_abstain_set(tmp))]},
        safety={"concepts": None},
        generation=cpu,
    )
    plain = tiny_config(src, tmp / "plain", safety={"concepts": None}, generation=cpu)
    pipeline.run(probed, progress=False)
    pipeline.run(plain, progress=False)
    return tmp / "probed", tmp / "plain"


def no_abstain_set(tmp):
    """The toy colours without subject detector or margin: the random tiny CLIP then gives real argmax
    labels (not all "abstain"), so equality of labels means something."""
    aset = yaml.safe_load(open("pipeline/data/attributes/toyworld.yaml"))
    attrs = {"hue": {**aset["attributes"]["colour"], "abstain_margin": 0.0}}
    path = tmp / "hues.yaml"
    path.write_text(yaml.safe_dump({"name": "hues", "attributes": attrs}))
    return path


def test_posthoc_labels_equal_in_run_labels(two_runs, monkeypatch):
    probed, plain = two_runs
    r = run_audit(
        str(plain), AuditSpec(["colour", "shape"], ["shape"], bootstrap=200, probe=ProbeSpec(device="cpu"))
    )
    assert r["metrics"]["attributes"]["colour"]["labels"] == "posthoc"
    ref = read_output(probed)
    post = pd.read_parquet(plain / "audit" / "probes" / "toyworld.parquet").sort_values(
        ["prompt_id", "sample_idx"]
    )
    assert (post.prompt_id.to_numpy() == ref.prompt_id.to_numpy()).all()
    for a in ("colour", "shape"):
        assert list(post[f"attr_{a}"]) == list(ref[f"attr_{a}"])
        np.testing.assert_allclose(
            np.stack(post[f"attr_{a}_probs"]), np.stack(ref[f"attr_{a}_probs"]), atol=1e-5
        )
        np.testing.assert_allclose(post[f"attr_{a}_margin"], ref[f"attr_{a}_margin"], atol=1e-5)
    np.testing.assert_allclose(post.subject_toyworld_p, ref.subject_toyworld_p, atol=1e-5)
    probe = ProbeSpec(attribute_set=str(plain.parent / "hues.yaml"), device="cpu")
    hues = run_audit(str(plain), AuditSpec(["hue"], ["shape"], bootstrap=200, probe=probe), write=False)
    assert hues["metrics"]["attributes"]["hue"]["labels"] == "posthoc"
    post = pd.read_parquet(plain / "audit" / "probes" / "hues.parquet").sort_values(
        ["prompt_id", "sample_idx"]
    )
    assert list(post.attr_hue) == list(ref.attr_hue) and "abstain" not in set(ref.attr_hue)
    np.testing.assert_allclose(np.stack(post.attr_hue_probs), np.stack(ref.attr_hue_probs), atol=1e-5)
    meta = json.loads((plain / "audit" / "probes" / "toyworld.json").read_text())
    assert (
        meta["attributes"]["colour"]["classes"] == ["red", "green", "blue", "yellow"]
        and meta["clip_model"] == "tiny"
    )
    assert not any("attr_" in c for c in pd.read_parquet(plain / "data").columns)  # parts never rewritten
    import pipeline.audit.data as D

    monkeypatch.setattr(D, "_compute_probes", lambda *a, **k: pytest.fail("stored probes were not reused"))
    again = run_audit(
        str(plain),
        AuditSpec(["colour"], ["shape"], bootstrap=200, probe=ProbeSpec(device="cpu")),
        write=False,
    )
    pd.testing.assert_frame_equal(
        again["summary"], r["summary"][r["summary"].attribute == "colour"].reset_index(drop=True)
    )
    from pipeline.pages.report import build_report

    build_report(
        str(plain), str(plain.parent / "r.html"), AuditSpec(bootstrap=200)
    )  # labels joined from audit/probes/
    html = (plain.parent / "r.html").read_text()
    assert "stored PNGs (probed after the run)" in html and html.count("<img ") == 2 * 6
    assert html.count("<figcaption>abstain · a circle") == 2 * 2  # colour and shape, 2 images each


def test_foreign_parquet_audit(two_runs, tmp_path):
    """Parquet that sdgen did not make: an image column and a group column, nothing else."""
    _, plain = two_runs
    df = read_output(plain)[["image", "prompt", "shape"]]
    df.to_parquet(tmp_path / "images.parquet")
    r = run_audit(
        str(tmp_path),
        AuditSpec(["shape"], ["shape"], bootstrap=200, probe=ProbeSpec("toyworld", "tiny", device="cpu")),
    )
    g = r["metrics"]["attributes"]["shape"]["groups"]
    assert {k: v["coverage"]["ok"] for k, v in g.items()} == {"circle": 2, "square": 2, "triangle": 2}
    assert (tmp_path / "audit" / "probes" / "toyworld.parquet").exists()
    with pytest.raises(ValueError, match="pass --clip-model"):
        run_audit(str(tmp_path / "images.parquet"), AuditSpec(["colour"], ["shape"], bootstrap=200))
