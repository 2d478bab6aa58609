"""Run-vs-run share differences (pipeline/audit/differences.py): MOVER assembled by hand from the share
intervals, the pairing correlation, and a p-value that agrees with the interval. Coverage is
benchmarks/compare_coverage.py's job."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.audit.betabinomial import betabinomial_interval
from pipeline.audit.differences import diff_interval, pairing_correlation

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
