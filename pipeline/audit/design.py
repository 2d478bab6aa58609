"""Design-based quantities of one group's P × K prompt count table (prompts are the clusters): the
cluster variance, Kish's design effect and Korn & Graubard's interval. They need no model of how
prompts vary, which is why the share interval falls back on them where its model fails
(pipeline/audit/betabinomial.py)."""

from __future__ import annotations

import numpy as np
from scipy import stats

from pipeline.audit.spec import LEVEL


def cluster_variance(table):
    """(p̂ (K,), v_clu (K,), v_bin (K,), n, P) of a P × K prompt count table; v_clu = v_bin when P < 2."""
    table = np.asarray(table, float)
    m, n, P = table.sum(1), float(table.sum()), table.shape[0]
    p = table.sum(0) / n
    v_bin = p * (1 - p) / n
    if P < 2:
        return p, v_bin.copy(), v_bin, n, P
    dev = table - m[:, None] * p  # c_jk − m_j p̂_k = m_j (p̂_jk − p̂_k)
    v_clu = P / (P - 1) * (dev**2).sum(0) / n**2
    return p, v_clu, v_bin, n, P


def korn_graubard(table, level=LEVEL):
    """Korn & Graubard (1998) interval per class: Clopper-Pearson on the effective sample size
    n_eff·(t_{n−1}/t_{P−1})², n_eff = n/deff (deff ≥ 1), so few prompts widen it (R survey's
    svyciprop(method="beta")). Returns (low, high, deff, n_eff) arrays over classes."""
    p, v_clu, v_bin, n, P = cluster_variance(table)
    with np.errstate(divide="ignore", invalid="ignore"):
        deff = np.where(v_bin > 0, np.maximum(1.0, v_clu / np.where(v_bin > 0, v_bin, 1)), 1.0)
    a = (1 - level) / 2
    ratio = 1.0
    if P > 1:  # at level → 0 both quantiles → 0: their ratio tends to the densities' ratio at 0
        lo_df, hi_df = max(P - 1, 1), max(n - 1, 1)
        q = stats.t.ppf(1 - a, lo_df)
        ratio = stats.t.ppf(1 - a, hi_df) / q if q > 0 else stats.t.pdf(0, lo_df) / stats.t.pdf(0, hi_df)
    ne = n / deff * ratio**2
    x = p * ne
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(x > 0, stats.beta.ppf(a, x, ne - x + 1), 0.0)
        hi = np.where(ne - x > 0, stats.beta.ppf(1 - a, x + 1, ne - x), 1.0)
    return np.nan_to_num(lo), np.nan_to_num(hi, nan=1.0), deff, n / deff
