"""Share intervals and D² for the population of prompts: a cluster-level method (prompts are the clusters).

Estimand: the share p_k of class k among images of prompts *of this kind* (the population the group's
prompts were drawn from), not only the fixed prompts that were run. A group of P prompts with m_j
non-abstained images each and shares p̂_jk gives the pooled share p̂_k = Σ_j c_jk / n (n = Σ m_j) and

    v_clu = P/(P−1) · Σ_j m_j² (p̂_jk − p̂_k)² / n²      the cluster (between-prompt) variance, P−1 df
    v_bin = p̂_k (1 − p̂_k) / n                           the variance if prompts did not matter
    deff  = max(1, v_clu / v_bin),  n_eff = n / deff     Kish's design effect and effective size

The interval is the beta-binomial one of pipeline/audit/betabinomial.py: the intra-prompt correlation
integrated out under a log-uniform prior (or the prior pooled over the attribute's groups), calibrated
to 95% on benchmarks/audit_coverage.py's grid and within 1.12× the width of an oracle that knows ρ at
5+ prompts (docs/AUDIT_GUIDE.md §3 has the tables). Before issue 22 it was the union of that interval
(with a uniform prior on ρ) and Korn & Graubard's (1998) Clopper-Pearson interval on
n_eff·(t_{n−1}/t_{P−1})²: it held coverage but was 1.46× the oracle's width and above 98% coverage
in 187 of 225 cells. Korn-Graubard (pipeline/audit/design.py) stays for its design effect and n_eff,
which the tables show, and as the fallback where the Beta model misfits (``betabinomial.beta_misfits``).

D² for the same estimand subtracts v_clu instead of the binomial variance: E[(p̂_k − t_k)²] =
(p_k − t_k)² + Var(p̂_k), and v_clu is unbiased for Var(p̂_k) under prompt-to-prompt variation (exactly
so with equal m_j), where p̂(1−p̂)/(n−1) counts seed noise only and leaves D² biased upward.
"""

from __future__ import annotations

import numpy as np

from pipeline.audit.betabinomial import betabinomial_interval
from pipeline.audit.design import cluster_variance, korn_graubard
from pipeline.audit.spec import LEVEL

D2_FLOOR = 1e-9  # D² lower ends below this are rounding in the share-interval ends (≈1e-6 each)
# the D² box reads its share intervals at α scaled by this (then Bonferroni): at the share intervals'
# own level 8 of the 108 cells with >= 5 prompts fell under 93% (min 0.906; benchmarks/audit_coverage.py)
D2_ALPHA_SCALE = 0.8
FEW_PROMPTS = 3  # below this many prompts the between-prompt variance rests on < 2 degrees of freedom


def share_intervals(table, level=LEVEL, log_priors=None):
    """Per-class share and interval of one group's P × K prompt count table (the audit's intervals).

    Each class's interval is ``betabinomial.betabinomial_interval`` of its per-prompt counts (class k
    against the rest), with ``log_priors[k]`` as its prior on ρ when given (a pooled prior from
    ``betabinomial.pooled_log_priors``; None entries keep the log-uniform one). deff and n_eff are
    Kish's, from the cluster variance (descriptive: how much the prompts cost).
    Returns a dict of arrays over classes: p, lo, hi, deff, n_eff; and n, n_prompts.
    """
    table = np.asarray(table, float)
    p, _, _, n, P = cluster_variance(table)
    if n == 0:
        raise ValueError("share_intervals: the table has no images")
    _, _, deff, n_eff = korn_graubard(table, level)
    m = table.sum(1)
    lo, hi = np.empty(table.shape[1]), np.empty(table.shape[1])
    for k in range(table.shape[1]):
        prior = None if log_priors is None else log_priors[k]
        lo[k], hi[k] = betabinomial_interval(table[:, k], m, level, prior)
    return {"p": p, "lo": lo, "hi": hi, "deff": deff, "n_eff": n_eff, "n": int(n), "n_prompts": P}


def population_d2(table, t):
    """D² = Σ_k (p̂_k − t_k)² − Σ_k v_clu,k: unbiased for Σ(p_k − t_k)² over the population of prompts.

    One prompt: v_clu is the binomial p̂(1−p̂)/n … the fixed-prompt correction p̂(1−p̂)/(n−1) is used.
    """
    p, v_clu, v_bin, n, P = cluster_variance(table)
    sq = float(((p - np.asarray(t, float)) ** 2).sum())
    if P < 2:
        return sq - float((p * (1 - p)).sum()) / (n - 1) if n >= 2 else float("nan")
    return sq - float(v_clu.sum())


def d2_interval(table, t, level=LEVEL, log_priors=None):
    """Interval for the population D² = Σ_k (p_k − t_k)²: the range of D² over the box of the share
    intervals (each at level 1 − α'/K, Bonferroni, for K > 2 classes, α' = D2_ALPHA_SCALE·α; with 2
    classes one share fixes the other, so no Bonferroni). Whenever every share interval holds its
    p_k, D² lies in the range, so it inherits the share intervals' coverage; ignoring the simplex
    makes it conservative. The earlier bootstrap interval (percentile, shifted to the population
    debiasing) covered the population D² in only 84 of 180 cells of benchmarks/audit_coverage.py
    (min 0.09). Returns (low, high)."""
    table, t = np.asarray(table, float), np.asarray(t, float)
    r = share_intervals(table, d2_share_level(level, table.shape[1]), log_priors)
    return d2_range(r["lo"], r["hi"], t)


def d2_share_level(level, K):
    """The level the D² box reads each of K share intervals at: α scaled by D2_ALPHA_SCALE, then
    Bonferroni over the classes when K > 2 (with 2 classes one share fixes the other)."""
    alpha = (1 - level) * D2_ALPHA_SCALE
    return 1 - alpha / K if K > 2 else 1 - alpha


def d2_range(lo, hi, t):
    """(low, high) of D² = Σ_k (p_k − t_k)² over the box of share intervals [lo, hi]."""
    near = np.where(t < lo, lo - t, np.where(t > hi, t - hi, 0.0))  # t inside [lo, hi]: 0
    far = np.maximum(np.abs(lo - t), np.abs(hi - t))
    low = float((near**2).sum())
    # interval ends are computed to ~1e-6 (the grid and beta quantiles), so a gap of 1e-12 between a
    # target of 0 and a lower end of 3e-12 is numerical noise, not a detected deviation: report 0
    # no share vector on the simplex is farther from t than its farthest vertex: cap the box's corner there
    top = min(float((far**2).sum()), float(((np.eye(len(t)) - t) ** 2).sum(1).max()))
    return (0.0 if low < D2_FLOOR else low), top


def few_prompts_note(P):
    """A plain warning for groups whose prompt count makes any population interval wide, else None."""
    if P >= FEW_PROMPTS:
        return None
    return (
        f"only {P} prompt{'s' if P != 1 else ''}: the interval for prompts of this kind rests on "
        f"{max(P - 1, 0)} degree{'s' if P != 2 else ''} of freedom and is wide; use 5+ prompts per group "
        f"(`sdgen audit-plan` says how many)"
    )
