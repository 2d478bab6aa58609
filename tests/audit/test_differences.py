"""Run-vs-run differences (pipeline/audit/differences.py): MOVER assembled by hand from the share
intervals and from the D² intervals, the pairing correlations, and p-values that agree with the
intervals. Coverage is benchmarks/compare_coverage.py's job."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.audit.betabinomial import betabinomial_interval
from pipeline.audit.differences import d2_diff_interval, diff_interval, pairing_correlation
from pipeline.audit.intervals import d2_interval, population_d2

A = np.array([[3, 5], [4, 4], [2, 6], [5, 3], [3, 5]])
B = np.array([[6, 2], [7, 1], [4, 4], [8, 0], [6, 2]])


def test_unpaired_mover_by_hand():
    lo, hi, _ = diff_interval(A, B, paired=False)
    la, ua = betabinomial_interval(A[:, 0], A.sum(1))
    lb, ub = betabinomial_interval(B[:, 0], B.sum(1))
    pa, pb = A[:, 0].sum() / 40, B[:, 0].sum() / 40
    assert lo[0] == pytest.approx(pb - pa - np.hypot(pb - lb, ua - pa))
    assert hi[0] == pytest.approx(pb - pa + np.hypot(ub - pb, pa - la))


def test_pairing_correlation_lower_bound_by_hand():
    sa, sb = A[:, 0] / 8, B[:, 0] / 8
    r = np.corrcoef(sa, sb)[0, 1]
    want = np.tanh(np.arctanh(r) - 0.8416 / np.sqrt(5 - 3))
    assert pairing_correlation(A[:, 0], A.sum(1), B[:, 0], B.sum(1)) == pytest.approx(max(want, 0))
    assert pairing_correlation(A[:3, 0], A[:3].sum(1), B[:3, 0], B[:3].sum(1)) == 0.0  # 3 prompts


def test_pairing_narrows_when_prompts_move_together():
    paired = diff_interval(A, B, paired=True)
    unpaired = diff_interval(A, B, paired=False)
    assert (paired[1] - paired[0])[0] < (unpaired[1] - unpaired[0])[0]


def test_p_value_agrees_with_the_interval():
    rng = np.random.default_rng(5)
    for _ in range(6):
        ta = rng.multinomial(16, [0.4, 0.6], 6)
        q = rng.uniform(0.3, 0.8)
        tb = rng.multinomial(16, [q, 1 - q], 6)
        lo, hi, p = diff_interval(ta, tb, paired=False)
        for k in range(2):
            assert (p[k] < 0.05) == (not (lo[k] <= 0 <= hi[k])), (lo[k], hi[k], p[k])
    same = diff_interval(A, A, paired=True)
    assert np.allclose(same[2], 1.0) and (same[1] - same[0] > 0).all()  # never zero-width


T3 = np.full(3, 1 / 3)
A3 = np.array([[5, 2, 1], [4, 3, 1], [6, 1, 1], [3, 3, 2], [5, 2, 1], [4, 2, 2]])
B3 = np.array([[3, 3, 2], [2, 3, 3], [3, 2, 3], [2, 4, 2], [3, 3, 2], [2, 3, 3]])


def test_d2_unpaired_mover_by_hand():
    d, lo, hi, _ = d2_diff_interval(A3, B3, T3, paired=False)
    (la, ua), (lb, ub) = d2_interval(A3, T3), d2_interval(B3, T3)
    da, db = (float(np.clip(population_d2(t, T3), lo_, hi_)) for t, lo_, hi_ in ((A3, la, ua), (B3, lb, ub)))
    assert d == pytest.approx(population_d2(B3, T3) - population_d2(A3, T3))
    assert lo == pytest.approx(db - da - np.hypot(db - lb, ua - da))
    assert hi == pytest.approx(db - da + np.hypot(ub - db, da - la))
    assert lo < 0 < hi or hi < 0  # B is nearer the uniform target than A


def test_d2_p_value_agrees_and_pairing_narrows():
    # 8 prompts whose skew (toward the first class) B keeps, one image moved per prompt: the
    # leave-one-out D² move together, so the paired difference is narrower
    a4 = np.array([[7, 1, 0], [2, 3, 3], [6, 1, 1], [1, 4, 3], [8, 0, 0], [2, 3, 3], [5, 2, 1], [3, 3, 2]])
    b4 = np.array([[6, 1, 1], [1, 4, 3], [5, 2, 1], [1, 3, 4], [7, 1, 0], [2, 2, 4], [4, 2, 2], [2, 3, 3]])
    paired, unpaired = d2_diff_interval(a4, b4, T3, True), d2_diff_interval(a4, b4, T3, False)
    assert paired[2] - paired[1] < 0.95 * (unpaired[2] - unpaired[1])  # 0.38 vs 0.42
    paired, unpaired = d2_diff_interval(A3, B3, T3, True), d2_diff_interval(A3, B3, T3, False)
    for _, lo, hi, p in (paired, unpaired):
        assert (p < 0.05) == (not (lo <= 0 <= hi)), (lo, hi, p)
    same = d2_diff_interval(A3, A3, T3, True)
    assert same[0] == 0 and same[1] < 0 < same[2] and same[3] == pytest.approx(1.0)
