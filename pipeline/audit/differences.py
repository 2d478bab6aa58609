"""Run-vs-run differences (`sdgen audit --compare`): B − A of each class share and of D², with an
interval and a p-value built from the two runs' own intervals (issue 22, item 3).

MOVER (Zou & Donner 2008; Newcombe 1998 for proportions): with each run's share interval [l, u]
around p̂ (pipeline/audit/betabinomial.py: the population of prompts, ρ integrated out),

    low  = d − sqrt((p̂_B − l_B)² + (u_A − p̂_A)² − 2 r (p̂_B − l_B)(u_A − p̂_A))
    high = d + sqrt((u_B − p̂_B)² + (p̂_A − l_A)² − 2 r (u_B − p̂_B)(p̂_A − l_A)),   d = p̂_B − p̂_A

so the difference inherits the share intervals' skewness near 0 and 1 (a class that sits in one or two
prompts), where a symmetric t or bootstrap interval does not: benchmarks/compare_coverage.py measured
the paired bootstrap used before at 50% and a linearised t interval at 63% in such a cell. r is the
correlation of the prompts' shares between the runs (paired runs only: the same prompts, rows
aligned): its one-sided 80% lower bound (Fisher's z, 5+ prompts, floored at 0), because r̂ from 5 prompts
overstates the pairing often enough to cost coverage (0.82 with r̂ itself in the measured cell).
Unpaired runs use r = 0. The p-value of "no difference" inverts the same interval: the largest level
whose interval still holds 0.

D² the same way (``d2_diff_interval``): MOVER over the runs' D² intervals (intervals.d2_interval's
boxes) around their population D², r from the runs' leave-one-prompt-out D². The paired bootstrap
used before covered 50% where a rare class sits in a few prompts (benchmarks/compare_coverage.py).
"""

from __future__ import annotations

import numpy as np

from pipeline.audit.betabinomial import interval_at, share_posterior
from pipeline.audit.intervals import d2_range, d2_share_level, population_d2
from pipeline.audit.spec import LEVEL

R_CONFIDENCE_Z = 0.8416  # z of the one-sided 80% lower bound on the pairing correlation
# fewer paired prompts than this: r = 0. At 4 the bound rests on one degree of freedom (SE 1 on
# Fisher's z) and the D² difference fell to 0.91 in a rare-class cell (1.0 unpaired, 8% wider)
PAIR_MIN_PROMPTS = 5
P_VALUE_STEPS = 40  # bisection steps of the p-value (to ~1e-12 in α)
# the smallest p-value reported: beyond 99.99% the intervals are read off the posterior's far tails and
# the box's cap, and MOVER with a pairing correlation can keep 0 out at any level (the toy world's
# circles gave p = 3e-12 from 4 prompts). Below this the p-value says only "< 1e-4"
P_VALUE_FLOOR = 1e-4


def _lower_r(x, y) -> float:
    """One-sided lower confidence bound (R_CONFIDENCE_Z, Fisher's z) on the correlation of paired
    values ``x``, ``y``, floored at 0 (0 when it cannot be trusted: < PAIR_MIN_PROMPTS pairs, or a
    constant side)."""
    P = len(x)
    if P < PAIR_MIN_PROMPTS or np.std(x) == 0 or np.std(y) == 0:
        return 0.0
    r = float(np.clip(np.corrcoef(x, y)[0, 1], -0.999, 0.999))
    if not np.isfinite(r):
        return 0.0
    return float(np.clip(np.tanh(np.arctanh(r) - R_CONFIDENCE_Z / np.sqrt(P - 3)), 0.0, 0.99))


def pairing_correlation(ca, ma, cb, mb) -> float:
    """Lower confidence bound on the correlation of the prompts' shares between paired runs (0 when
    it cannot be trusted: < PAIR_MIN_PROMPTS prompts, or a run whose prompts all have the same share)."""
    return _lower_r(ca / np.maximum(ma, 1), cb / np.maximum(mb, 1))


def _mover(pa, la, ua, pb, lb, ub, r):
    d = pb - pa
    lo = d - np.sqrt(max((pb - lb) ** 2 + (ua - pa) ** 2 - 2 * r * (pb - lb) * (ua - pa), 0.0))
    hi = d + np.sqrt(max((ub - pb) ** 2 + (pa - la) ** 2 - 2 * r * (ub - pb) * (pa - la), 0.0))
    return lo, hi


def _inverted(ends, level):
    """(low, high, p-value): ``ends(level)`` → (low, high) of an interval for B − A that shrinks as
    the level falls; the p-value of "no difference" is the α at which it stops holding 0 (bisection)."""

    def holds0(alpha):
        low, high = ends(1 - alpha)
        return low <= 0 <= high

    lo, hi = ends(level)
    a_in, a_out = P_VALUE_FLOOR, 1 - 1e-12
    if not holds0(a_in):
        return lo, hi, a_in
    if holds0(a_out):
        return lo, hi, 1.0
    for _ in range(P_VALUE_STEPS):
        mid = (a_in + a_out) / 2
        a_in, a_out = (mid, a_out) if holds0(mid) else (a_in, mid)
    return lo, hi, a_out


def _class_diff(ca, ma, cb, mb, paired, level):
    """(low, high, p-value) of B − A for one class."""
    post_a, post_b = share_posterior(ca, ma), share_posterior(cb, mb)
    pa, pb = ca.sum() / ma.sum(), cb.sum() / mb.sum()
    r = pairing_correlation(ca, ma, cb, mb) if paired else 0.0

    def ends(lev):
        la, ua = interval_at(post_a, ca, ma, lev)
        lb, ub = interval_at(post_b, cb, mb, lev)
        return _mover(pa, la, ua, pb, lb, ub, r)

    return _inverted(ends, level)


def diff_interval(ta, tb, paired, level=LEVEL):
    """B − A of every class share of two P × K prompt count tables: (low, high, p-value) arrays over
    classes. ``paired``: the same prompts in both tables, rows aligned (tables.compare checks)."""
    ta, tb = np.asarray(ta, float), np.asarray(tb, float)
    ma, mb = ta.sum(1), tb.sum(1)
    out = np.array([_class_diff(ta[:, k], ma, tb[:, k], mb, paired, level) for k in range(ta.shape[1])])
    return out[:, 0], out[:, 1], out[:, 2]


def _d2_run(table, t):
    """One run's D²: (its point, ``at(level)`` → (low, high) of its box interval). The point is the
    population D² (intervals.population_d2, as the audit's tables show it) clipped into the box, as
    MOVER needs; the class posteriors are computed once and read at any level."""
    m = table.sum(1)
    posts = [share_posterior(table[:, k], m) for k in range(table.shape[1])]
    point = population_d2(table, t)

    def at(level):
        lev = d2_share_level(level, table.shape[1])
        ends = np.array([interval_at(posts[k], table[:, k], m, lev) for k in range(table.shape[1])])
        return d2_range(ends[:, 0], ends[:, 1], t)

    return point, at


def _leave_one_out_d2(table, t):
    """Population D² of ``table`` without each prompt in turn (the jackknife values)."""
    keep = ~np.eye(len(table), dtype=bool)
    return np.array([population_d2(table[k], t) for k in keep])


def d2_diff_interval(ta, tb, t, paired, level=LEVEL):
    """B − A of the population D² of two P × K prompt count tables against target ``t``: (point,
    low, high, p-value). MOVER over the two runs' D² intervals (the boxes of intervals.d2_interval)
    around their population D², as for the shares; paired runs use the one-sided lower bound of the
    correlation of the runs' leave-one-prompt-out D² (the prompts' shared pull on both runs' D²)."""
    ta, tb, t = np.asarray(ta, float), np.asarray(tb, float), np.asarray(t, float)
    (da, at_a), (db, at_b) = _d2_run(ta, t), _d2_run(tb, t)
    r = 0.0
    if paired and len(ta) >= PAIR_MIN_PROMPTS:
        r = _lower_r(_leave_one_out_d2(ta, t), _leave_one_out_d2(tb, t))

    def ends(lev):
        (la, ua), (lb, ub) = at_a(lev), at_b(lev)
        return _mover(float(np.clip(da, la, ua)), la, ua, float(np.clip(db, lb, ub)), lb, ub, r)

    return (db - da, *_inverted(ends, level))
