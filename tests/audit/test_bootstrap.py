"""pipeline/audit/bootstrap.py: the two-stage bootstrap's coverage, why it shrinks prompt shares,
determinism, and its degenerate hierarchies (one prompt, one image per prompt)."""

from __future__ import annotations

import numpy as np
import pytest
from test_stats import P3, U3, clustered_sample  # tests/audit is on sys.path (no __init__.py)

from pipeline.audit import bootstrap as BS
from pipeline.audit import stats as A


def coverage(rng, n_prompts, seeds, conc, reps, **kw):
    """Share and D² coverage of the 95% percentile intervals over ``reps`` synthetic groups."""
    truth_d2 = ((P3 - U3) ** 2).sum()
    hit_share, hit_d2 = 0, 0
    for r in range(reps):
        pc, lc = clustered_sample(rng, n_prompts, seeds, P3, conc)
        c = BS.hierarchical_bootstrap_counts(pc, lc, 3, B=2000, seed=r, **kw)
        lo, hi = BS.percentile_ci(c / c.sum(1, keepdims=True))
        hit_share += ((lo <= P3) & (P3 <= hi)).sum()
        dlo, dhi = BS.percentile_ci(A.debiased_d2(c / c.sum(1, keepdims=True), U3, c.sum(1)))
        hit_d2 += dlo <= truth_d2 <= dhi
    return hit_share / (3 * reps), hit_d2 / reps


@pytest.mark.parametrize("n_prompts,seeds,conc", [(1, 200, None), (25, 8, 20.0)])
def test_bootstrap_coverage_93_to_97(n_prompts, seeds, conc):
    # (1, 200): plain Mult(200, p). (25, 8, 20): 25 prompts x 8 seeds whose shares vary between prompts
    # (Dirichlet(20 p), intra-prompt correlation 1/21), the clustered case the hierarchy is for.
    # 800 groups: one share's coverage has SE 0.0077, so 93-97% is ±2.6 SE around 95%; the three shares
    # are pooled (2,400 intervals, correlated) and D² is checked on its own. About 1 s + 8 s.
    share, d2 = coverage(np.random.default_rng(2024), n_prompts, seeds, conc, reps=800)
    assert 0.93 <= share <= 0.97, share
    assert 0.93 <= d2 <= 0.97, d2


def test_naive_two_stage_overcovers():
    # Why hierarchical_bootstrap shrinks prompt shares: resampling prompts and then seeds from the raw
    # prompt shares counts seed noise twice. With 25 prompts x 8 seeds and no prompt effect the naive
    # scheme covers ~99% (the shrunk one ~96%). 300 groups, ~3 s.
    share, _ = coverage(np.random.default_rng(5), 25, 8, None, reps=300, shrink=False)
    assert share > 0.975, share


def test_bootstrap_determinism_and_degenerate_hierarchies():
    pc, lc = clustered_sample(np.random.default_rng(0), 25, 8, P3)
    a = BS.hierarchical_bootstrap(pc, lc, 3, B=2000, seed=7)  # vectorised, ~10 ms (no timing asserted)
    assert a.shape == (2000, 3) and np.allclose(a.sum(1), 1)
    assert np.array_equal(a, BS.hierarchical_bootstrap(pc, lc, 3, B=2000, seed=7))
    assert not np.array_equal(a, BS.hierarchical_bootstrap(pc, lc, 3, B=2000, seed=8))
    # degenerate hierarchies are the ordinary bootstrap: SD ≈ √(p̂(1−p̂)/n)
    phat = np.bincount(lc, minlength=3) / lc.size
    for prompts in (np.zeros(200), np.arange(200)):  # one prompt; one image per prompt
        sd = BS.hierarchical_bootstrap(prompts, lc, 3, B=4000, seed=1).std(0)
        assert sd == pytest.approx(np.sqrt(phat * (1 - phat) / 200), rel=0.1)


def test_shrinkage_factor():
    rng = np.random.default_rng(0)
    no_effect = [A.prompt_table(*clustered_sample(rng, 25, 8, P3), 3) for _ in range(50)]
    strong = [A.prompt_table(*clustered_sample(rng, 25, 8, P3, conc=2.0), 3) for _ in range(50)]
    assert np.mean([BS.shrinkage_factor(t) for t in no_effect]) < 0.4
    assert np.mean([BS.shrinkage_factor(t) for t in strong]) > 0.85
    assert BS.shrinkage_factor(np.eye(3, dtype=int)[[0, 1, 2, 0]]) == 1.0  # one image per prompt
    assert BS.shrinkage_factor([[3, 4, 5]]) == 1.0  # one prompt
