"""The two-stage (hierarchical) bootstrap of per-prompt count tables: prompts within a group, then
seeds within each chosen prompt, from shrunk prompt shares (docs/AUDIT.md "Uncertainty").

The audit's own share and D² intervals no longer use it (pipeline/audit/betabinomial.py, intervals.py);
error-corrected shares (calibration.py) do, and the coverage benchmarks keep it as the old method to
compare against. Tables come from ``stats.prompt_table``; all randomness from the ``rng`` passed in.
"""

from __future__ import annotations

import numpy as np

from pipeline.audit.spec import BOOTSTRAP, LEVEL
from pipeline.audit.stats import prompt_table


def prompt_occurrences(rng, B, P):
    """Stage 1: B resamples of P prompts with replacement, as a B × P matrix of times chosen."""
    draws = rng.integers(0, P, size=(B, P))
    rows = np.repeat(np.arange(B), P)
    return np.bincount(rows * P + draws.ravel(), minlength=B * P).reshape(B, P)


def shrinkage_factor(table, unbiased=True):
    """λ ∈ [0, 1] that shrinks prompt shares p̂_j toward the pooled p̄ before stage 2 of the bootstrap.

    Why: resampling prompts and then seeds with replacement counts seed noise twice (once inside
    the spread of the prompt means, once in stage 2), so intervals over-cover (~99% for 25 prompts × 8
    seeds; cf. Davison & Hinkley 1997, §3.8; Field & Welsh 2007). With p̃_j = p̄ + λ(p̂_j − p̄), still a
    distribution, the bootstrap variance of the pooled share is ≈ [λ²·Σm_j(m_j−1)d_j² + n·p̄(1−p̄)]/n²
    (summed over classes, d_j = p̂_j − p̄); λ is the moment match of that to the cluster-level estimate
    c·Σm_j²d_j²/n², c = P/(P−1) (``unbiased``) or 1, clipped to [0, 1]. λ = 1 when every prompt has one
    image (ordinary bootstrap); the value is irrelevant with one prompt (seed bootstrap).
    """
    table = np.asarray(table, float)
    m, n, P = table.sum(1), table.sum(), table.shape[0]
    pbar = table.sum(0) / n
    d2 = ((table / m[:, None] - pbar) ** 2).sum(1)
    den = float((m * (m - 1) * d2).sum())
    if P < 2 or den <= 0:
        return 1.0
    c = P / (P - 1) if unbiased else 1.0
    num = c * float((m * m * d2).sum()) - n * float((pbar * (1 - pbar)).sum())
    return float(np.sqrt(np.clip(num / den, 0.0, 1.0)))


def resample_counts(rng, table, occ, resample_seeds=True, shrink=True):
    """Stage 2: class counts (B × K) of each replicate given stage-1 occurrences ``occ`` (B × P).

    Prompt j chosen c times contributes Σ of c independent Mult(m_j, p̃_j) = Mult(c·m_j, p̃_j): its seeds
    resampled with replacement, from the shrunk shares p̃_j (see ``shrinkage_factor``; p̃ = p̂ when
    ``shrink`` is False). Prompts whose p̃_j has one class need no draw. ``resample_seeds=False`` gives
    the cluster bootstrap: each chosen prompt contributes its observed counts.
    """
    table = np.asarray(table, np.int64)
    if not resample_seeds:
        return occ @ table
    m = table.sum(1)
    pbar = table.sum(0) / m.sum()
    lam = shrinkage_factor(table) if shrink else 1.0
    probs = pbar + lam * (table / m[:, None] - pbar) if lam < 1 else table / m[:, None]
    mixed = (probs > 0).sum(1) > 1
    counts = occ[:, ~mixed] @ table[~mixed]  # one-class prompts: c · (observed counts)
    b, j = np.nonzero(occ[:, mixed])
    if b.size:
        draws = rng.multinomial(occ[:, mixed][b, j] * m[mixed][j], probs[mixed][j])
        for k in range(table.shape[1]):  # scatter-add per class; bincount is vectorised, add.at is slow
            counts[:, k] += np.bincount(b, weights=draws[:, k], minlength=occ.shape[0]).astype(np.int64)
    return counts


def bootstrap_tables(rng, tables, B, paired=False, resample_seeds=True, shrink=True):
    """B × K replicate counts for each prompt table in ``tables``, drawn in chunks of B.

    ``paired``: all tables share the same prompts (same order) and one stage-1 draw (the run-vs-run
    interval before issue 22, kept in benchmarks/compare_coverage.py).
    Chunks keep the B × P occurrence matrix near 2 M entries, so a group of 10⁴ prompts fits in memory.
    """
    P = [t.shape[0] for t in tables]
    if paired and len(set(P)) != 1:
        raise ValueError(f"paired bootstrap needs equal prompt counts, got {P}")
    chunk = max(1, 2_000_000 // max(P))
    out = [[] for _ in tables]
    for start in range(0, int(B), chunk):
        size = min(chunk, int(B) - start)
        occ = prompt_occurrences(rng, size, P[0]) if paired else None
        for i, t in enumerate(tables):
            o = occ if paired else prompt_occurrences(rng, size, P[i])
            out[i].append(resample_counts(rng, t, o, resample_seeds, shrink))
    return [np.concatenate(parts) for parts in out]


def hierarchical_bootstrap_counts(
    prompt_codes, label_codes, K, B=BOOTSTRAP, seed=0, resample_seeds=True, shrink=True
):
    """B × K class counts of the two-stage bootstrap (prompts within group, then seeds within prompt).

    Stage 1 resamples the group's prompts with replacement, stage 2 each chosen prompt's seeds with
    replacement, from shrunk prompt shares (``shrink``, see ``shrinkage_factor``), which keeps 95%
    intervals at 93-97% coverage with or without prompt effects. ``shrink=False`` is the literal
    scheme (over-covers); ``resample_seeds=False`` the cluster bootstrap (under-covers with few prompts).
    One prompt: the ordinary bootstrap of its seeds; one image per prompt: the ordinary bootstrap of
    images. Vectorised (no loop over B): about 10 ms for n = 200 in 25 prompts, B = 2000.
    """
    table = prompt_table(prompt_codes, label_codes, K)
    if table.shape[0] == 0:
        raise ValueError("hierarchical_bootstrap: no non-abstained rows to resample")
    return bootstrap_tables(np.random.default_rng(seed), [table], B, False, resample_seeds, shrink)[0]


def hierarchical_bootstrap(
    prompt_codes, label_codes, K, B=BOOTSTRAP, seed=0, resample_seeds=True, shrink=True
):
    """B × K replicate class proportions of the hierarchical bootstrap (see the ``_counts`` variant)."""
    c = hierarchical_bootstrap_counts(prompt_codes, label_codes, K, B, seed, resample_seeds, shrink)
    return c / c.sum(1, keepdims=True)


def percentile_ci(samples, level=LEVEL, axis=0):
    """Percentile interval: the (1−level)/2 and (1+level)/2 quantiles, NaN replicates ignored."""
    a = (1 - level) / 2
    lo, hi = np.nanquantile(np.asarray(samples, float), [a, 1 - a], axis=axis)
    return lo, hi
