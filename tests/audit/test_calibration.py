"""Probe calibration (issue #13 items 1 and 3a): confusion matrices, EM-corrected shares, their
bootstrap intervals, and a known-answer study where the probe's errors differ by group."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.audit import calibration as C

CLASSES = ["a", "b"]
TRUTH = {"g1": np.array([0.6, 0.4]), "g2": np.array([0.3, 0.7])}
# P(pred | truth), columns a, b, abstain: the probe errs differently in each group
CONF = {"g1": np.array([[0.90, 0.05, 0.05], [0.20, 0.75, 0.05]]),
        "g2": np.array([[0.60, 0.30, 0.10], [0.05, 0.90, 0.05]])}


def synthetic(rng, prompts=20, seeds=10, labelled=120):
    """Rows (group, prompt_id, sample_idx, attr_x) drawn through CONF, and a labelled subset of them."""
    rows, labs = [], []
    for g, pi in TRUTH.items():
        true = rng.choice(2, size=prompts * seeds, p=pi)
        pred = np.array([rng.choice(3, p=CONF[g][t]) for t in true])
        names = np.array(CLASSES + ["abstain"], dtype=object)[pred]
        for i in range(prompts * seeds):
            rows.append((g, f"{g}-{i // seeds}", i % seeds, names[i]))
        pick = rng.choice(prompts * seeds, labelled, replace=False)
        labs += [(f"{g}-{i // seeds}", i % seeds, CLASSES[true[i]]) for i in pick]
    df = pd.DataFrame(rows, columns=["group", "prompt_id", "sample_idx", "attr_x"]).assign(status="ok")
    return df, pd.DataFrame(labs, columns=["prompt_id", "sample_idx", "label"])


def test_em_recovers_exact_mixture():
    A = CONF["g2"]
    pi = np.array([0.3, 0.7])
    q = 1000 * pi @ A  # expected predicted counts
    assert C.em_correct(q, A) == pytest.approx(pi, abs=1e-6)
    assert C.em_correct(np.array([0.0, 0, 5]), A).sum() == pytest.approx(1)  # only abstains: still a distribution


def test_confusion_counts_and_accuracy():
    counts = C.confusion_counts([0, 0, 0, 1, 1], [0, 0, -1, 0, 1], 2)[0]
    assert counts.tolist() == [[2, 0, 1], [1, 1, 0]]
    acc = C.accuracy_table(counts, CLASSES)
    assert acc["a"]["accuracy"] == pytest.approx(2 / 3) and acc["a"]["abstain_rate"] == pytest.approx(1 / 3)
    from scipy.stats import binomtest
    ref = binomtest(2, 3).proportion_ci(0.95, method="wilson")
    assert acc["a"]["ci"] == pytest.approx((ref.low, ref.high))


def test_warnings_small_and_singular():
    counts = np.array([[10, 10, 0], [9, 11, 0]])
    w, cond = C._warnings(counts, C.confusion_probs(counts), CLASSES)
    assert any("only 40 labelled" in x for x in w) and any("near-singular" in x for x in w) and cond > 10


def test_corrected_recovers_truth_raw_is_biased():
    # 200 synthetic datasets: 2 groups x 200 images, 120 labelled per group, B=300. The corrected
    # intervals must cover the true share 92-98% of the time (400 intervals, SE 1.1%); the raw share
    # is biased by the probe, in opposite directions (a of non-abstained: g1 0.6 -> 0.653; g2 0.3 -> 0.230).
    rng = np.random.default_rng(13)
    hits, raw_err, cor_err = [], [], []
    for r in range(200):
        df, labs = synthetic(rng)
        add, entry = C.calibrate_groups(df, "attr_x", CLASSES, labs, df["group"], B=300, seed=r)
        for g, pi in TRUTH.items():
            row = add[(add.group == g) & (add["class"] == "a")].iloc[0]
            hits.append(row.ci_low_corrected <= pi[0] <= row.ci_high_corrected)
            cor_err.append(row.proportion_corrected - pi[0])
            sub = df[(df.group == g) & (df.attr_x != "abstain")]
            raw_err.append((sub.attr_x == "a").mean() - pi[0])
    cov = np.mean(hits)
    assert 0.92 <= cov <= 0.98, cov
    assert abs(np.mean(cor_err)) < 0.01
    assert np.mean(raw_err[0::2]) == pytest.approx(0.62 / 0.95 - 0.6, abs=0.01)
    assert np.mean(raw_err[1::2]) == pytest.approx(0.215 / 0.935 - 0.3, abs=0.01)


def test_cli_calibrate_writes_corrected_columns(tmp_path, capsys):
    # The known output (tests/synth_output.py): circle c0-c2 red, c3 half red half blue, c4 blue.
    # Labels say the probe calls every c4 image blue but half of them are red, and the 4 abstained c5
    # images are red: 36 of the 44 circles are red, so P(red | truth red) = 28/36 and EM gives
    # π_red = 36/44 = 0.818 (up to the confusion smoothing) where the raw share is 0.70.
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1]))
    from synth_output import cli, known_rows, make_output

    out = make_output(tmp_path / "out", known_rows())
    labs = [(f"c{j}", k, "red") for j in range(3) for k in range(8)]
    labs += [("c3", k, "red" if k < 4 else "blue") for k in range(8)]
    labs += [("c4", k, "red" if k % 2 else "blue") for k in range(8)]
    labs += [("c5", k, "red") for k in range(4)]
    labs += [(f"t{j}", k, "green") for j in range(2) for k in range(5)]
    path = tmp_path / "labels.parquet"
    pd.DataFrame(labs, columns=["prompt_id", "sample_idx", "label"]).to_parquet(path)
    assert cli(["audit", out, "--attribute", "colour", "--group-by", "shape", "--calibrate", path,
                "--bootstrap", 200]) == 0
    text = capsys.readouterr().out
    assert "colour calibration: 54 labelled images" in text and "warning: only 54 labelled" in text
    s = pd.read_parquet(f"{out}/audit/summary.parquet").set_index(["group", "class"])
    assert {"proportion_corrected", "ci_low_corrected", "ci_high_corrected"} <= set(s.columns)
    red = s.loc[("circle", "red")]
    assert red.proportion == 0.7 and red.proportion_corrected == pytest.approx(36 / 44, abs=0.01)
    assert red.ci_low_corrected <= red.proportion_corrected <= red.ci_high_corrected
    cal = __import__("json").load(open(f"{out}/audit/metrics.json"))["attributes"]["colour"]["calibration"]
    assert cal["accuracy"]["red"]["n"] == 36 and cal["accuracy"]["red"]["correct"] == 28
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"prompt_id": ["c0"], "sample_idx": [0], "label": ["purple"]}).to_csv(bad, index=False)
    assert cli(["audit", out, "--attribute", "colour", "--group-by", "shape", "--calibrate", bad]) == 2
    assert "row 0, column 'label': 'purple'" in capsys.readouterr().err
