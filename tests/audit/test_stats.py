"""Tests of pipeline.audit.stats: docs/AUDIT.md "How to test without real weights", checks 1, 2 and 4.

Every test uses fixed seeds, so results are deterministic; replication counts are chosen so that a
correctly calibrated method passes with a wide margin while the file stays well under a minute on
one core (the counts and the margin are stated where they are chosen).
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.stats.contingency import association

from pipeline.audit import stats as A
from pipeline.audit import tables as T

P3 = np.array([0.5, 0.3, 0.2])
U3 = np.full(3, 1 / 3)


def clustered_sample(rng, n_prompts, seeds, p, conc=None):
    """(prompt codes, label codes): per prompt shares p (or Dirichlet(conc·p) around p), then seeds."""
    shares = np.tile(p, (n_prompts, 1)) if conc is None else rng.dirichlet(conc * np.asarray(p), n_prompts)
    counts = rng.multinomial(seeds, shares)  # n_prompts x K
    labels = np.concatenate([np.repeat(np.arange(len(p)), row) for row in counts])
    return np.repeat(np.arange(n_prompts), seeds), labels


def frame(groups, rng, prompts=10, seeds=20, classes=("a", "b", "c")):
    """A long table: group, prompt_id, sample_idx, label, drawn from {group: shares}."""
    rows = []
    for g, p in groups.items():
        pc, lc = clustered_sample(rng, prompts, seeds, p)
        rows += [(g, f"{g}-{j}", i % seeds, classes[c]) for i, (j, c) in enumerate(zip(pc, lc))]
    return pd.DataFrame(rows, columns=["group", "prompt_id", "sample_idx", "label"])


# ------------------------------------------------------------------ check 1: synthetic labels
@pytest.mark.parametrize("p,n", [(P3, 50), (U3, 30), (np.array([0.7, 0.1, 0.1, 0.1]), 200)])
def test_d2_unbiased_and_plugin_biased(p, n):
    # 40,000 replications: SE of the mean D² is ~1e-4, so 3 SE resolves the plug-in's bias Σp(1-p)/n.
    t = np.full(len(p), 1 / len(p))
    phat = np.random.default_rng(1).multinomial(n, p, size=40_000) / n
    d2 = A.debiased_d2(phat, t, n)
    truth = ((p - t) ** 2).sum()
    se = d2.std(ddof=1) / np.sqrt(d2.size)
    assert abs(d2.mean() - truth) < 3 * se
    plugin = ((phat - t) ** 2).sum(1)  # the naive estimator must fail the same check
    assert plugin.mean() - truth > 3 * se


@pytest.mark.parametrize("n,K", [(100, 2), (200, 3), (200, 4)])
def test_null_p_values_uniform_and_detect_skew(n, K):
    # 2,000 null groups, each with B=2000 null draws (~1.5 s). MAD is discrete (K=2: it is |c/n − ½|),
    # so the reported P(MAD ≥ obs) cannot be uniform; with ties broken at random (rng=) the p-value is
    # exactly uniform iff the simulated null is the true one, which is what this checks. The reported
    # p-value's validity is checked in test_null_p_values_valid_when_discrete.
    rng = np.random.default_rng(11)
    t = np.full(K, 1 / K)
    alt = t + np.r_[0.07, -0.07, np.zeros(K - 2)]
    p_null, p_alt = [], []
    for _ in range(2000):
        _, s = A.null_floor(n, t, 2000, rng)
        p_null.append(A.null_p_value(A.mad(rng.multinomial(n, t) / n, t), s, rng=rng))
        p_alt.append(A.null_p_value(A.mad(rng.multinomial(n, alt) / n, t), s, rng=rng))
    assert stats.kstest(p_null, "uniform").pvalue > 0.01
    assert stats.kstest(p_alt, "uniform").pvalue < 1e-6  # the KS check can fail


@pytest.mark.parametrize("n,K", [(100, 2), (200, 4)])
def test_null_p_values_valid_when_discrete(n, K):
    # The reported (conservative) p-value: super-uniform, and not grossly so (mean close to ½).
    rng = np.random.default_rng(12)
    t = np.full(K, 1 / K)
    ps = np.array(
        [
            A.null_p_value(A.mad(rng.multinomial(n, t) / n, t), A.null_floor(n, t, 2000, rng)[1])
            for _ in range(1500)
        ]
    )
    for alpha in (0.01, 0.05, 0.1, 0.5):  # P(p <= alpha) <= alpha, up to 3 binomial SE
        assert (ps <= alpha).mean() <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / ps.size)
    assert 0.5 < ps.mean() < 0.6


def test_metrics_monotone_in_injected_skew():
    # p(s) = (1-s)·uniform + s·one-hot; 20 groups of n=400 per s, metrics averaged.
    skews = [0.0, 0.1, 0.2, 0.4, 0.6, 0.8]
    rng = np.random.default_rng(3)
    keys = ["mad", "d2", "excess", "kl", "log_ratio_max"]
    means = {k: [] for k in keys + ["entropy_norm", "p_value"]}
    for s in skews:
        p = (1 - s) * U3 + s * np.array([1.0, 0, 0])
        ms = [
            A.group_metrics(np.repeat(np.arange(20), 20), np.array(list("abc"))[lc], "abc", B=500, seed=i)
            for i, lc in enumerate(rng.multinomial(1, p, size=(20, 400)).argmax(-1))
        ]
        for k in means:
            means[k].append(np.mean([m[k] for m in ms]))
    for k in keys:
        assert np.all(np.diff(means[k]) > 0), (k, means[k])
    assert np.all(np.diff(means["entropy_norm"]) < 0), means["entropy_norm"]
    assert np.all(np.diff(means["p_value"]) <= 0) and means["p_value"][-1] < 0.01, means["p_value"]


# ------------------------------------------------------------------ check 2: golden values
@pytest.mark.parametrize("K", [2, 3, 4, 6])
def test_mad_golden(K):
    t = np.full(K, 1 / K)
    assert A.mad(t, t) == 0
    assert A.mad(np.eye(K)[0], t) == pytest.approx(2 * (K - 1) / K**2)
    counts = np.full(K, 10)
    assert A.kl_smoothed(counts, t) == pytest.approx(0, abs=1e-15)
    assert A.normalized_entropy(counts) == pytest.approx(1)
    assert A.debiased_d2(t, t, 10 * K) == pytest.approx(-(1 - 1 / K) / (10 * K - 1))


def test_kl_entropy_logratio_golden():
    # counts (3, 1), add-½: q = (3.5, 1.5)/5 = (0.7, 0.3); t = (0.5, 0.5).
    q = np.array([0.7, 0.3])
    assert A.kl_smoothed([3, 1], [0.5, 0.5]) == pytest.approx((q * np.log(q / 0.5)).sum())
    assert A.normalized_entropy([3, 1]) == pytest.approx(-(q * np.log(q)).sum() / np.log(2))
    assert A.log_ratio_extremes([3, 1], [0.5, 0.5]) == pytest.approx((np.log(0.6), np.log(1.4)))
    assert A.log_ratio_extremes([4, 0], [0.5, 0.5])[0] == pytest.approx(np.log(0.5 / 5 / 0.5))  # finite


@pytest.mark.parametrize("n,table", [(8, 0.137), (32, 0.070), (100, 0.040), (400, 0.020)])
def test_noise_floor_table(n, table):
    c = np.arange(n + 1)
    exact = (stats.binom.pmf(c, n, 0.5) * np.abs(c / n - 0.5)).sum()  # K=2: MAD = |p̂ − 0.5|
    assert exact == pytest.approx(table, abs=0.0006)
    if n == 8:
        assert exact == 35 / 256  # (2·(0.5·1 + 0.375·8 + 0.25·28 + 0.125·56)) / 2^8
    floor, samples = A.null_floor(n, [0.5, 0.5], 20_000, np.random.default_rng(n))
    assert abs(floor - exact) < 4 * samples.std() / np.sqrt(samples.size)


def test_wilson_golden():
    # Newcombe (1998), Table I, method 3 (score interval without continuity correction).
    assert A.wilson(81, 263)[:2] == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert A.wilson(15, 148)[:2] == pytest.approx((0.0624, 0.1605), abs=5e-5)
    assert A.wilson(1, 29)[:2] == pytest.approx((0.0061, 0.1718), abs=5e-5)
    lo, hi, method = A.wilson(0, 20, rule_of_three=False)
    assert (lo, method) == (0.0, "wilson") and hi == pytest.approx(0.1611, abs=5e-5)
    assert A.wilson(0, 20) == (0.0, 0.15, "rule_of_three")
    assert A.wilson(0, 2) == (0.0, 1.0, "rule_of_three")
    assert A.wilson(5, 10)[2] == "wilson"
    with pytest.raises(ValueError, match="c=11, n=10"):
        A.wilson(11, 10)


def test_p_at_least_one_hand_computed():
    assert A.p_at_least_one(10, 2, 3) == pytest.approx(1 - 56 / 120)  # C(8,3)/C(10,3)
    assert A.p_at_least_one(4, 2, 2) == pytest.approx(5 / 6)  # 1 − C(2,2)/C(4,2)
    assert A.p_at_least_one(5, 1, 1) == pytest.approx(0.2)
    assert A.p_at_least_one(100_000, 3, 25) == pytest.approx(
        1 - np.prod([(99_997 - i) / (100_000 - i) for i in range(25)]), rel=1e-12
    )
    assert A.p_at_least_one(15, 0, 10) == 0.0
    assert A.p_at_least_one(10, 8, 3) == 1.0  # k > n − c: an unsafe image is certain
    assert np.isnan(A.p_at_least_one(5, 1, 6))


def test_expected_max_over_k_exact():
    assert A.expected_max_over_k([1, 2, 3], 2) == pytest.approx(8 / 3)  # max of (1,2),(1,3),(2,3)
    x = np.array([0.3, 0.9, 0.1, 0.9, 0.5, 0.7])
    for k in (1, 2, 4, 6):
        brute = np.mean([max(c) for c in itertools.combinations(x, k)])
        assert A.expected_max_over_k(x, k) == pytest.approx(brute)
        brute_r = np.mean([max(c) for c in itertools.product(x, repeat=k)])
        assert A.expected_max_over_k(x, k, replace=True) == pytest.approx(brute_r)
    assert np.isnan(A.expected_max_over_k(x, 7)) and A.expected_max_over_k([np.nan, 2.0], 1) == 2.0


def test_independence_test_matches_scipy():
    table = np.array([[30, 10, 5], [12, 25, 9], [8, 11, 20]])
    r = A.independence_test(table)
    chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
    g, p_g, _, _ = stats.chi2_contingency(table, correction=False, lambda_="log-likelihood")
    assert (r["chi2"], r["p"], r["dof"]) == pytest.approx((chi2, p, dof))
    assert (r["G"], r["p_G"]) == pytest.approx((g, p_g))
    assert r["cramers_v"] == pytest.approx(association(table, method="cramer"))
    two = np.array([[20, 5], [5, 20]])  # 2x2: no Yates correction, unlike scipy's default
    assert A.independence_test(two)["chi2"] == pytest.approx(stats.chi2_contingency(two, correction=False)[0])
    assert A.independence_test([[5, 5, 0], [3, 7, 0]])["dof"] == 1  # empty column dropped


def test_benjamini_hochberg_hand_example():
    # sorted p .01 .03 .04 .20 → m·p/rank .04 .06 .0533 .20 → running min from the top .04 .0533 .0533 .20
    q = A.benjamini_hochberg([0.01, 0.04, 0.03, 0.20])
    assert q == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])
    q = A.benjamini_hochberg([0.5, np.nan, 0.9])
    assert np.isnan(q[1]) and q[[0, 2]] == pytest.approx([0.9, 0.9])


# ------------------------------------------------------------------ group and table assembly
def test_group_metrics_abstain_and_small_n():
    labels = ["a"] * 15 + ["b"] * 5 + [None, "abstain", np.nan]
    m = A.group_metrics(["p"] * len(labels), labels, ["a", "b"], B=200, seed=0)
    assert (m["n"], m["abstained"], m["counts"]) == (20, 3, {"a": 15, "b": 5})
    assert m["proportions"]["a"] == 0.75 and m["abstain_rate"] == 3 / 23
    assert m["mad"] is None and m["d2"] is None and m["p_value"] is None
    assert m["null_mad"] > 0 and "20 < 30" in m["note"] and "floor" in m["note"]
    big = A.group_metrics(["p"] * 40, ["a"] * 30 + ["b"] * 10, ["a", "b"], B=200)
    assert big["mad"] == pytest.approx(0.25) and big["note"].startswith("only 1 prompt")  # #13: said plainly
    assert big["few_prompts"] == big["note"]
    with pytest.raises(ValueError, match="zebra"):
        A.group_metrics(["p"] * 2, ["a", "zebra"], ["a", "b"])


def test_targets():
    t = A.resolve_target({"a": 3, "b": 1}, ["a", "b"])
    assert t == pytest.approx([0.75, 0.25])
    m = A.group_metrics(["p"] * 40, ["a"] * 30 + ["b"] * 10, ["a", "b"], target={"a": 3, "b": 1}, B=200)
    assert m["mad"] == 0 and m["d2"] < 0
    with pytest.raises(ValueError, match="'c': 1"):
        A.resolve_target({"a": 1, "c": 1}, ["a", "b"])


def test_audit_table_columns_and_multikey():
    df = frame({"x": P3, "y": U3}, np.random.default_rng(4))
    df["style"] = np.where(df["sample_idx"] % 2 == 0, "photo", "sketch")
    summary, metrics = T.audit_table(df, ["group", "style"], "label", list("abc"), B=200)
    assert list(summary.columns) == [
        "group",
        "attribute",
        "class",
        "n",
        "abstained",
        "proportion",
        "ci_low",
        "ci_high",
    ]
    assert sorted(metrics["groups"]) == ["x|photo", "x|sketch", "y|photo", "y|sketch"]
    assert summary.groupby("group")["proportion"].sum().to_numpy() == pytest.approx(1)
    assert set(metrics["across"]) >= {"chi2", "G", "dof", "p", "cramers_v"} and metrics["across"]["dof"] == 6
    assert set(metrics["bh_q"]) == set(metrics["groups"])


def test_safety_rates():
    df = pd.DataFrame(
        {
            "g": ["a"] * 10 + ["b"] * 10,
            "flag": [True, True] + [False] * 7 + [None] + [False] * 10,
            "score": np.arange(20.0),
        }
    )
    r = T.safety_rates(df, ["flag"], "g", k=3, score_cols=["score"]).set_index(["group", "detector"])
    a = r.loc[("a", "flag")]
    assert (a["count"], a["n"]) == (2, 9) and a["rate"] == pytest.approx(2 / 9)
    assert (a["ci_low"], a["ci_high"]) == pytest.approx(A.wilson(2, 9)[:2])
    assert a["p_any_in_k"] == pytest.approx(1 - 35 / 84)  # 1 − C(7,3)/C(9,3)
    b = r.loc[("b", "flag")]
    assert (b["ci_high"], b["ci_method"], b["p_any_in_k"]) == (0.3, "rule_of_three", 0.0)
    assert r.loc[("a", "score"), "expected_max"] == pytest.approx(A.expected_max_over_k(np.arange(10.0), 3))
    with pytest.raises(ValueError, match="'maybe'"):
        T.safety_rates(df.assign(flag="maybe"), ["flag"], "g")


def test_compare_pairing_and_sign():
    rng = np.random.default_rng(9)
    a = frame({"x": U3}, rng, prompts=20, seeds=20)
    b = a.copy()
    b["label"] = np.where(rng.random(len(b)) < 0.3, "a", b["label"])  # B moves 30% of rows to "a"
    out = T.compare(a, b, "group", "label", list("abc"))
    row = out[(out["quantity"] == "proportion") & (out["class"] == "a")].iloc[0]
    assert row["paired"] and row["diff"] == pytest.approx(row["b"] - row["a"]) and row["ci_low"] > 0
    d2 = out[out["quantity"] == "d2"].iloc[0]
    assert d2["diff"] > 0 and d2["ci_low"] < d2["diff"] < d2["ci_high"]
    b2 = b.assign(prompt_id=b["prompt_id"] + "-mitigated")  # before/after with new prompt ids
    assert not T.compare(a, b2, "group", "label", list("abc"))["paired"].any()
    with pytest.raises(ValueError, match="paired=True"):
        T.compare(a, b2, "group", "label", list("abc"), paired=True)
    same = T.compare(a, a, "group", "label", list("abc"))
    assert ((same["ci_low"] <= 0) & (same["ci_high"] >= 0)).all()


# ------------------------------------------------------------------ check 4: invariance
def outputs(df):
    """Everything the module returns for ``df``, serialised (byte comparison)."""
    s, m = T.audit_table(df, "group", "label", list("abc"), B=300, seed=3)
    c = T.compare(df, df.iloc[::-1], "group", "label", list("abc"))
    r = T.safety_rates(df.assign(f=df["sample_idx"] % 7 == 0), ["f"], "group", k=5)
    return s.to_csv(), json.dumps(m, sort_keys=True), c.to_csv(), r.to_csv()


def test_shuffling_rows_changes_nothing():
    df = frame({"x": P3, "y": U3, "z": [0.1, 0.1, 0.8]}, np.random.default_rng(6), prompts=6, seeds=12)
    df.loc[df.index[::17], "label"] = None
    base = outputs(df)
    for seed in range(3):
        shuffled = df.sample(frac=1, random_state=seed).reset_index(drop=True)
        assert outputs(shuffled) == base


def test_permuting_group_labels_gives_null_level_disparity():
    # Four groups skewed in different directions, pooled exactly uniform-ish; permuting the group
    # column destroys the group-label link, so every group then looks like the pool (≈ the null).
    skews = {"g0": [0.7, 0.15, 0.15], "g1": [0.15, 0.7, 0.15], "g2": [0.15, 0.15, 0.7], "g3": U3}
    df = frame(skews, np.random.default_rng(8), prompts=10, seeds=20)
    _, before = T.audit_table(df, "group", "label", list("abc"), B=500)
    assert before["across"]["p"] < 1e-30
    assert all(before["groups"][g]["excess"] > 0.15 for g in ("g0", "g1", "g2"))
    rng = np.random.default_rng(0)
    excess, pvals, chi_p = [], [], []
    for _ in range(10):
        perm = df.assign(group=rng.permutation(df["group"].to_numpy()))
        _, m = T.audit_table(perm, "group", "label", list("abc"), B=500)
        excess += [g["excess"] for g in m["groups"].values()]
        pvals += [g["p_value"] for g in m["groups"].values()]
        chi_p.append(m["across"]["p"])
    assert abs(np.mean(excess)) < 0.01  # the null floor here is ~0.03; before: > 0.2
    assert np.median(pvals) > 0.2 and min(chi_p) > 0.001
