"""The beta-binomial share interval and the pooling of ρ across groups (pipeline/audit/betabinomial.py),
against hand-computed values; coverage is tests/audit/test_coverage.py's and the benchmarks' job."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from pipeline.audit import betabinomial as BB
from pipeline.audit import intervals as I
from pipeline.audit import tables as T


def test_rho_prior_is_log_uniform_and_normalised():
    rho, logw = BB.rho_grid()
    assert special.logsumexp(logw) == pytest.approx(0, abs=1e-12)
    w = np.exp(logw)
    decade = [w[(rho >= lo) & (rho < lo * 10)].sum() for lo in (1e-3, 1e-2)]
    # equal mass per decade of ρ (the grid is logit-spaced, so within a grid cell of each other)
    assert decade[0] == pytest.approx(decade[1], rel=0.2)


def test_calibrated_level():
    assert BB.calibrated(0.95) == pytest.approx(0.96) == BB.calibrated(0.95, 5)
    assert BB.calibrated(0.90, 30) == pytest.approx(0.92)  # α scaled by the same 0.8
    assert BB.calibrated(0.95, 3) == pytest.approx(0.97) and BB.calibrated(0.95, 2) == pytest.approx(0.975)


def test_identical_prompts_approach_the_binomial_interval():
    # 200 prompts with exactly 3 of 10 each: no spread, so ρ's posterior sits near 0 and the interval
    # is close to the image-level one on n = 2000 (Wilson at the calibrated level)
    c, m = np.full(200, 3), np.full(200, 10)
    lo, hi = BB.betabinomial_interval(c, m)
    ref = stats.binomtest(600, 2000).proportion_ci(BB.calibrated(0.95), method="wilson")
    assert lo < 0.3 < hi
    assert (hi - lo) == pytest.approx(ref.high - ref.low, rel=0.15)


def test_spread_prompts_widen_the_interval():
    same = BB.betabinomial_interval(np.full(10, 4), np.full(10, 8))
    spread = BB.betabinomial_interval(np.array([0, 8, 1, 7, 0, 8, 2, 6, 4, 4]), np.full(10, 8))
    assert (spread[1] - spread[0]) > 1.6 * (same[1] - same[0])  # 0.42 against 0.23


def test_one_prompt_rule():
    lo, hi = BB.betabinomial_interval([5, 0, 0, 0], [8] * 4)  # the class in one prompt only
    assert lo == 0.0 and hi < 1
    lo, hi = BB.betabinomial_interval([8, 8, 8, 3], [8] * 4)  # absent from one prompt only
    assert hi == 1.0 and lo > 0
    lo, hi = BB.betabinomial_interval([5, 1, 0, 0], [8] * 4)  # two prompts: the posterior's ends
    assert 0 < lo < hi < 1


def _loglik_groups(rng, G, P, m, p, rho):
    k = (1 - rho) / rho
    counts = rng.binomial(m, rng.beta(p * k, (1 - p) * k, (G, P)))
    return counts, {g: BB.rho_loglik(counts[g], np.full(P, m)) for g in range(G)}


def test_pooled_prior_narrows_small_groups_that_agree():
    rng = np.random.default_rng(0)
    counts, lls = _loglik_groups(rng, 20, 3, 16, 0.3, 0.01)
    priors = BB.pooled_log_priors(lls)
    widths = []
    for g in range(20):
        lp, bf = priors[g]
        assert lp is not None and bf >= BB.POOL_MIN_BF
        own = BB.betabinomial_interval(counts[g], np.full(3, 16))
        pooled = BB.betabinomial_interval(counts[g], np.full(3, 16), log_prior=lp)
        widths.append((pooled[1] - pooled[0]) / (own[1] - own[0]))
    assert np.mean(widths) < 0.85  # 57 other prompts pin ρ near 0; 3 prompts alone cannot


def test_pooled_prior_is_leave_one_out_and_falls_back_when_a_group_disagrees():
    rng = np.random.default_rng(1)
    _, lls = _loglik_groups(rng, 30, 6, 16, 0.4, 0.005)  # 30 groups whose prompts nearly agree
    before = BB.pooled_log_priors(lls)
    assert all(lp is not None for lp, _ in before.values())
    # group 0's pooled prior is built from the others only: other (agreeing) data of its own leave it
    same = BB.pooled_log_priors({**lls, 0: lls[1]})
    assert np.allclose(same[0][0], before[0][0]) and not np.allclose(same[1][0], before[1][0])

    def with_group0(counts):
        return BB.pooled_log_priors({**lls, 0: BB.rho_loglik(np.array(counts), np.full(6, 16))})

    # clearly spread prompts: the 30 groups still pass as one (the test has 29 df) but group 0's own
    # prompts reject the pooled ρ (Bayes factor 2e-4 < 1/3): it keeps the log-uniform prior
    spread = with_group0([13, 2, 12, 1, 12, 3])
    assert spread[0][0] is None and spread[0][1] < BB.POOL_MIN_BF
    assert spread[1][0] is not None  # the others still pool
    # all-or-none prompts: the homogeneity check fails and nobody pools
    lls_bad = {**lls, 0: BB.rho_loglik(np.array([16, 0, 16, 0, 16, 0]), np.full(6, 16))}
    assert BB.homogeneity_p(list(lls_bad.values())) < BB.HOMOGENEITY_ALPHA
    assert all(v == (None, None) for v in BB.pooled_log_priors(lls_bad).values())


def test_homogeneity_statistic_by_hand():
    a, b = np.log([0.2, 0.5, 0.3]), np.log([0.6, 0.3, 0.1])  # two groups' likelihoods on a 3-point grid
    stat = 2 * ((np.log(0.5) + np.log(0.6)) - max(a + b))
    assert BB.homogeneity_p([a, b]) == pytest.approx(stats.chi2.sf(stat, 1))


def test_too_few_groups_do_not_pool():
    rng = np.random.default_rng(2)
    _, lls = _loglik_groups(rng, 2, 5, 8, 0.5, 0.05)
    assert all(v == (None, None) for v in BB.pooled_log_priors(lls).values())


def _frame(rng, G=8, P=3, m=12):
    rows = []
    for g in range(G):
        for j in range(P):
            s = rng.beta(3, 7)
            rows += [(f"g{g}", f"g{g}-p{j}", "x" if rng.random() < s else "y") for _ in range(m)]
    return pd.DataFrame(rows, columns=["grp", "prompt_id", "lab"])


def test_audit_table_pools_unless_told_not_to():
    df = _frame(np.random.default_rng(3))
    _, pooled = T.audit_table(df, "grp", "lab", ["x", "y"], B=100)
    s_own, own = T.audit_table(df, "grp", "lab", ["x", "y"], B=100, pool=False)
    g = pooled["groups"]["g0"]
    assert g["ci_method"] == "beta-binomial, ρ pooled over groups" and g["icc_pooled"]["x"]
    assert own["groups"]["g0"]["ci_method"] == "beta-binomial" and not own["groups"]["g0"]["icc_pooled"]["x"]
    assert 0 < g["icc"]["x"] < 1
    w_p = np.mean([m["ci_high"]["x"] - m["ci_low"]["x"] for m in pooled["groups"].values()])
    w_o = np.mean([m["ci_high"]["x"] - m["ci_low"]["x"] for m in own["groups"].values()])
    assert w_p != w_o and set(s_own["group"]) == {f"g{i}" for i in range(8)}


def test_model_check_catches_two_kinds_of_prompt_and_falls_back():
    # 30 prompts × 32 seeds: a fifth of them never show the class, the rest at 0.625. The Beta must
    # put mass at 0 to fit the zeros and centres below the share (0.07 too low on average); the
    # two-kind fit wins by ~35 nats and the interval joins Korn & Graubard's
    m = np.full(30, 32)
    on = [20, 19, 21, 18, 22, 20, 20, 17, 23, 20, 19, 21, 20, 20, 18, 22, 20, 21, 19, 20, 20, 22, 21, 19]
    c = np.array([0] * 6 + on)
    assert BB.beta_misfits(c, m)
    lj = BB._log_joint(c, m)[2]
    assert BB._mixture_max_loglik(c.astype(float), m.astype(float)) - lj > 20
    lo, hi = BB.betabinomial_interval(c, m)
    klo, khi, _, _ = I.korn_graubard(np.stack([c, m - c], 1))
    assert lo <= klo[0] and hi >= khi[0]
    # a Beta spread of the same size, identical prompts, and 2 prompts never fail it
    rng = np.random.default_rng(4)
    assert not BB.beta_misfits(rng.binomial(32, rng.beta(4, 3, 30)), m)
    assert not BB.beta_misfits(np.full(30, 20), m) and not BB.beta_misfits(c[:2], m[:2])


def test_misfit_is_reported_in_metrics_and_text():
    from pipeline.audit.text import format_attribute

    rng = np.random.default_rng(6)
    rows = []
    for g, zero_inflated in (("g0", True), ("g1", False)):
        for j in range(30):
            s = (0.0 if j < 6 else 0.625) if zero_inflated else rng.beta(6, 4)
            rows += [(g, f"{g}-p{j}", "x" if rng.random() < s else "y") for _ in range(32)]
    df = pd.DataFrame(rows, columns=["grp", "prompt_id", "lab"])
    _, metrics = T.audit_table(df, "grp", "lab", ["x", "y"], B=100)
    assert metrics["groups"]["g0"]["beta_misfit"] == {"x": True, "y": True}
    assert not any(metrics["groups"]["g1"]["beta_misfit"].values())
    entry = {
        **metrics,
        "attribute": "colour",
        "classes": ["x", "y"],
        "group_by": ["grp"],
        "target": "uniform",
        "level": 0.95,
        "bootstrap": 100,
        "labels": "test",
        "min_n": 30,
    }
    text = format_attribute(entry)
    assert "g0: the prompts look like two kinds for x, y" in text and "g1: the prompts" not in text
