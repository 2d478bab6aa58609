"""sdgen filter: policy decisions over raw score columns, written beside the output, never into it."""

import io

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tree_bytes
from synth_output import cli, make_output, row

from pipeline.curate.materialize import materialize
from pipeline.curate.policy import PolicyError, apply_policy, decide, load_policy, parse_policy

POLICY = {
    "name": "t",
    "default": "keep",
    "blur_radius": 3,
    "rules": [
        {"name": "x_mark", "when": "safety_x_mark > 0.25", "action": "drop"},
        {"name": "concept_flag", "when": "safety_flagged", "action": "blur"},
        {"name": "unsure", "when": "attr_colour == abstain", "action": "flag"},
    ],
}


@pytest.fixture
def output(tmp_path):
    rows = [
        row("p0", 0, "red", group="circle", x_mark=0.30, flagged=True),  # drop beats blur
        row("p0", 1, "red", group="circle", x_mark=0.25, flagged=True),  # exactly at 0.25: not > : blur
        row("p0", 2, None, group="circle", x_mark=0.10),  # abstained: flag
        row("p0", 3, "blue", group="circle", x_mark=0.10),  # keep
        row("p1", 0, status="blocked", group="square"),  # stays blocked
        row("p1", 1, status="failed", group="square"),
    ]  # no image: drop
    return make_output(tmp_path / "out", rows, shards=2)


def test_decisions_most_severe_rule_wins(output):
    rec = apply_policy(output, parse_policy(POLICY))
    d = pd.read_parquet(f"{output}/policy/t/decisions.parquet").set_index(["prompt_id", "sample_idx"])
    assert list(d.columns) == ["decision", "rule", "threshold", "score"]
    assert list(d.decision) == ["drop", "blur", "flag", "keep", "blocked", "drop"]
    assert [None if pd.isna(r) else r for r in d.rule] == [
        "x_mark",
        "concept_flag",
        "unsure",
        None,
        "screening",
        "status:failed",
    ]
    assert d.loc[("p0", 0), "threshold"] == 0.25 and d.loc[("p0", 0), "score"] == pytest.approx(0.30)
    assert d.loc[("p0", 1), "score"] == 1.0 and np.isnan(d.loc[("p0", 1), "threshold"])  # bool rule
    assert d.loc[("p1", 0)].isna()[["threshold", "score"]].all()
    assert rec["counts"] == {"drop": 2, "blur": 1, "flag": 1, "keep": 1, "blocked": 1}


def test_parts_untouched_and_rerun_with_other_threshold(output, tmp_path):
    before = {k: v for k, v in tree_bytes(output).items() if k.startswith(("data", "_commits", "run.json"))}
    first = apply_policy(output, parse_policy(POLICY))
    strict = apply_policy(output, parse_policy(POLICY, overrides=["x_mark=0.2"]), name="strict")
    after = tree_bytes(output)
    assert all(after[k] == v for k, v in before.items()) and set(before) <= set(after)
    assert strict["counts"]["drop"] == 3 and first["counts"]["drop"] == 2  # 0.25 now dropped too
    assert strict["fingerprint"] != first["fingerprint"] and strict["overrides"] == {"x_mark": 0.2}
    copy = load_policy(f"{output}/policy/strict/policy.yaml")  # the applied policy, re-loadable
    assert copy.fingerprint() == strict["fingerprint"]
    assert pd.read_parquet(f"{output}/policy/t/decisions.parquet").decision.tolist().count("drop") == 2


def test_materialize_drops_and_blurs(output, tmp_path):
    from PIL import Image

    pol = parse_policy(POLICY)
    apply_policy(output, pol)
    materialize(output, "t", str(tmp_path / "clean"), pol.blur_radius)
    src = pd.read_parquet(f"{output}/data").set_index(["prompt_id", "sample_idx"])
    out = pd.read_parquet(tmp_path / "clean" / "data").set_index(["prompt_id", "sample_idx"])
    assert sorted(out.index) == [("p0", 1), ("p0", 2), ("p0", 3)]  # drop, blocked and failed rows are gone
    assert list(out.sort_index().policy_decision) == ["blur", "flag", "keep"]
    assert out.loc[("p0", 3), "image"]["bytes"] == src.loc[("p0", 3), "image"]["bytes"]
    blurred = np.asarray(Image.open(io.BytesIO(out.loc[("p0", 1), "image"]["bytes"])), float)
    orig = np.asarray(Image.open(io.BytesIO(src.loc[("p0", 1), "image"]["bytes"])), float)
    assert (
        blurred.shape == orig.shape and np.abs(blurred - orig).max() > 10
    )  # solid patch blurs into its border
    with pytest.raises(PolicyError, match="already holds a dataset"):
        materialize(output, "t", str(tmp_path / "clean"), 3)


@pytest.mark.parametrize(
    "rules, needle",
    [
        ([{"name": "a", "when": "safety_x_mark >", "action": "drop"}], "when must be 'COLUMN OP VALUE'"),
        ([{"name": "a", "when": "safety_x_mark > high", "action": "drop"}], "> needs a number, got 'high'"),
        (
            [{"name": "a", "when": "safety_flagged", "action": "delete"}],
            "action must be one of keep, flag, blur, drop, got 'delete'",
        ),
        (
            [{"name": "a", "when": "x", "action": "drop"}, {"name": "a", "when": "y", "action": "drop"}],
            "unique",
        ),
        ([{"when": "x", "action": "drop", "treshold": 1}], "rules[0] must be a mapping"),
    ],
)
def test_bad_policies(rules, needle):
    with pytest.raises(PolicyError) as e:
        parse_policy({"name": "p", "rules": rules})
    assert needle in str(e.value)


def test_rules_must_fit_the_output(output):
    with pytest.raises(PolicyError, match="rule 'nsfw' reads column 'sd_checker_nsfw'"):
        apply_policy(
            output, parse_policy({"rules": [{"name": "nsfw", "when": "sd_checker_nsfw", "action": "drop"}]})
        )
    with pytest.raises(PolicyError, match="'prompt' is not numeric"):
        df = pd.DataFrame({"prompt_id": ["a"], "sample_idx": [0], "status": ["ok"], "prompt": ["x"]})
        decide(df, parse_policy({"rules": [{"name": "n", "when": "prompt > 1", "action": "drop"}]}))
    with pytest.raises(PolicyError, match="--threshold expects RULE=VALUE"):
        parse_policy(POLICY, overrides=["nope=1"])


def test_shipped_policies_and_cli(output, capsys):
    rec = apply_policy(output, load_policy("configs/policies/default.yaml"))
    assert rec["skipped_rules"] == ["sd_checker"] and rec["counts"]["blur"] == 2
    assert (
        cli(["filter", output, "--policy", "configs/policies/toyworld.yaml", "--threshold", "x_mark=0.5"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "policy toyworld" in printed and "blur 2" in printed
    assert (
        yaml.safe_load(open(f"{output}/policy/toyworld/policy.yaml"))["rules"][0]["when"]
        == "safety_x_mark > 0.5"
    )
    assert cli(["filter", output, "--policy", "nope.yaml"]) == 2
    assert "sdgen: error: policy file not found: 'nope.yaml'" in capsys.readouterr().err
