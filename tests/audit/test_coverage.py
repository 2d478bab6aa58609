"""Coverage of the audit's share intervals (issue #13): a reduced grid of benchmarks/audit_coverage.py
as a standing test, plus known values of pipeline.audit.intervals.

The full grid (225 cells x 500 datasets) is the benchmark; here 14 cells chosen where the old
percentile bootstrap failed (rare classes, 2-5 prompts with heterogeneity, skewed prompt shares at 30
prompts) and where it held, 150 datasets each. With 150 datasets a cell's coverage has SE <= 0.018 at
95%, so the bar is the issue's minus 2 SE (0.93 -> 0.895, 0.90 -> 0.865); the old interval must fail
the same bar in the cells that motivated the change (so the test can fail). About 15-30 s.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from benchmarks import audit_coverage as C
from pipeline.audit import intervals as I
from pipeline.audit import stats as S

CELLS = [
    (2, 32, "0.5", "sd0.25"),
    (2, 4, "0.05", "none"),
    (3, 32, "0.05", "sd0.1"),
    (3, 8, "0.5", "sd0.25"),
    (5, 32, "0.05", "sd0.25"),
    (5, 8, "4cls", "sd0.25"),
    (10, 32, "0.05", "sd0.1"),
    (10, 8, "0.5", "none"),
    (30, 32, "0.05", "sd0.25"),
    (30, 8, "0.2", "sd0.1"),
    (30, 32, "0.5", "none"),
    (3, 32, "4cls", "none"),
    (10, 32, "0.2", "sd0.25"),
    (30, 4, "0.05", "sd0.25"),
]
REPS = 150
RATIO_5PLUS, RATIO_3_4 = 1.3, 1.6  # on these hard cells (set from the measured values, see the test)
SLACK = 2 * np.sqrt(0.95 * 0.05 / REPS)


@pytest.fixture(scope="module")
def rows():
    return C.study(CELLS, ["cluster", "union", "wilson_deff", "oracle"], REPS, procs=1)


def test_new_intervals_keep_their_coverage(rows):
    bad = [
        (r["prompts"], r["seeds"], r["share"], r["hetero"], r["cov_cluster"])
        for r in rows
        if r["cov_cluster"] < C.required(r) - SLACK
    ]
    assert not bad, bad
    assert all(r["zero_cluster"] == 0 for r in rows)  # never zero-width


def test_true_icc_of_the_spreads_by_hand():
    # Dirichlet: rho = 1 / (a0 + 1) with a0 = p(1-p)/sd^2 - 1 -> rho = sd^2 / (p(1-p)) for the first class
    assert C.true_icc([0.5, 0.5], "sd0.1") == pytest.approx([0.04, 0.04])
    assert C.true_icc([0.2, 0.8], "none") == pytest.approx([0, 0])
    # spike: the spiked class has share s = (sd^2 + p^2)/p with prob p/s: Var = p s - p^2 = sd^2
    assert C.true_icc([0.2, 0.8], "spike0.1")[0] == pytest.approx(0.01 / 0.16)


def test_width_against_the_oracle_is_measured_and_bounded(rows):
    """The oracle (Wilson on n / the TRUE design effect) is what no method can reach; the audit's
    interval is held to a ratio of it (issue 22: <= 1.2 at 5+ prompts, <= 1.6 at 3-4 on the full grid,
    where it is 1.12 and 1.22), and must stay well inside the union interval it replaced."""
    now, before = C.oracle_ratios(rows, "cluster"), C.oracle_ratios(rows, "union")
    assert 1.0 < now["width_vs_oracle_5plus"] < RATIO_5PLUS, now
    assert 1.0 < now["width_vs_oracle_3_4"] < RATIO_3_4, now
    assert now["width_vs_oracle_5plus"] < 0.85 * before["width_vs_oracle_5plus"], (now, before)
    assert now["width_vs_oracle_3_4"] < 0.8 * before["width_vs_oracle_3_4"], (now, before)


def test_reference_interval_fails_where_the_issue_says(rows):
    # Wilson on the design-effect-adjusted n (the issue's reference) misses the bar in the rare and
    # few-prompt cells: the grid is hard enough to tell a calibrated interval from a plausible one.
    worst = {(r["prompts"], r["seeds"], r["share"], r["hetero"]): r["cov_wilson_deff"] for r in rows}
    assert worst[(3, 32, "0.05", "sd0.1")] < 0.85 and worst[(30, 32, "0.05", "sd0.25")] < 0.89
    assert worst[(2, 32, "0.5", "sd0.25")] < 0.87


def test_population_d2_unbiased_under_heterogeneity(rows):
    # 2-3 prompts with SD 0.25 between prompts: the binomial debiasing leaves D² biased by +0.04..0.07.
    strong = [r for r in rows if r["hetero"] == "sd0.25" and r["prompts"] <= 3]
    assert all(r["d2_bias_binomial"] > 0.03 for r in strong)
    assert all(abs(r["d2_bias_population"]) < 0.02 for r in strong)


def test_one_prompt_kg_is_clopper_pearson():
    table = np.array([[7, 25]])
    lo, hi, deff, n_eff = I.korn_graubard(table)
    ref = stats.binomtest(7, 32).proportion_ci(0.95, method="exact")
    assert (lo[0], hi[0]) == pytest.approx((ref.low, ref.high)) and deff[0] == 1 and n_eff[0] == 32


def test_cluster_variance_and_population_d2_by_hand():
    table = np.array([[6, 2], [2, 6], [4, 4]])  # equal m = 8: p̂ = 1/2, prompt shares .75 .25 .5
    p, v_clu, v_bin, n, P = I.cluster_variance(table)
    s2 = np.var([0.75, 0.25, 0.5], ddof=1)
    assert v_clu[0] == pytest.approx(s2 / 3) and v_bin[0] == pytest.approx(0.25 / 24)
    assert I.population_d2(table, [0.5, 0.5]) == pytest.approx(0 - 2 * s2 / 3)
    assert I.population_d2([[3, 1]], [0.5, 0.5]) == pytest.approx(S.debiased_d2([0.75, 0.25], [0.5, 0.5], 4))


def test_zero_events_interval_not_zero_width_and_above_rule_of_three():
    r = I.share_intervals(np.array([[0, 32]] * 30))  # 0 of 960 in 30 prompts
    assert r["lo"][0] == 0 or r["lo"][0] < 1e-3
    assert r["hi"][0] > 3 / 960  # the image-level bound would ignore that prompts may differ
    assert r["hi"][1] == pytest.approx(1, abs=1e-3) and r["lo"][1] < 1


def test_few_prompts_note():
    assert "only 2 prompts" in I.few_prompts_note(2) and I.few_prompts_note(3) is None
    m = S.group_metrics(["a"] * 20 + ["b"] * 20, ["x"] * 25 + ["y"] * 15, ["x", "y"], B=200)
    assert m["n_prompts"] == 2 and "only 2 prompts" in m["note"] and m["mad"] is not None
