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
