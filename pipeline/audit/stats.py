"""Bias and safety statistics of the audit: pure numpy/scipy/pandas functions of the output table.

Every definition follows docs/AUDIT.md ("Per-group metrics", "Uncertainty"); section
numbers in docstrings (§1 ... §7) refer to that list. All randomness comes from
``np.random.default_rng(seed)``; rows are reduced to per-prompt count tables keyed by sorted prompt id
before any draw, so shuffling rows changes no output bit.

Conventions: K classes, target t (uniform or a reference distribution), n = non-abstained images of
a group. Abstained rows (label None / NaN / "abstain") count in ``abstained``, never in n.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special, stats

from pipeline.audit.spec import BOOTSTRAP, LEVEL, MIN_N

ABSTAIN = "abstain"


# ---------------------------------------------------------------- point metrics (§1-§4)
def mad(p, t):
    """§1 MAD = (1/K) Σ_k |p_k − t_k|; vectorised over leading axes of ``p``."""
    return np.abs(np.asarray(p, float) - np.asarray(t, float)).mean(axis=-1)


def debiased_d2(p_hat, t, n):
    """§2 D² = Σ_k [(p̂_k − t_k)² − p̂_k(1 − p̂_k)/(n − 1)]; unbiased for Σ(p_k − t_k)² under Mult(n, p).

    Can be negative. Vectorised: ``p_hat`` (..., K), ``n`` broadcast against (...). NaN where n < 2.
    """
    p_hat, n = np.asarray(p_hat, float), np.asarray(n, float)
    sq = ((p_hat - np.asarray(t, float)) ** 2).sum(-1)
    var = (p_hat * (1 - p_hat)).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n >= 2, sq - var / (n - 1), np.nan)


def _smoothed(counts):
    """Add-½ (Jeffreys) smoothing: q_k = (c_k + ½)/(n + K/2), so no log of zero."""
    c = np.asarray(counts, float)
    return (c + 0.5) / (c.sum() + 0.5 * c.size)


def kl_smoothed(counts, t):
    """§4 KL(q ‖ t) = Σ q_k ln(q_k/t_k) in nats, q add-½ smoothed; +inf when some t_k = 0."""
    q, t = _smoothed(counts), np.asarray(t, float)
    with np.errstate(divide="ignore"):
        return float(np.sum(q * (np.log(q) - np.log(t))))


def normalized_entropy(counts):
    """§4 H(q)/ln K with q add-½ smoothed: 1 = all classes equally frequent, → 0 = one class."""
    q = _smoothed(counts)
    return float(-(q * np.log(q)).sum() / np.log(q.size))


def log_ratio_extremes(counts, t):
    """§4 (min_k, max_k) of ln(q_k/t_k), q add-½ smoothed (so an unseen class gives a finite min)."""
    with np.errstate(divide="ignore"):
        r = np.log(_smoothed(counts)) - np.log(np.asarray(t, float))
    return float(r.min()), float(r.max())


# ---------------------------------------------------------------- null floor (§3)
def null_floor(n, t, B, rng):
    """§3 Null MAD samples of Mult(n, t)/n (B of them) and their mean E_null[MAD] (the floor).

    Returns ``(expected_mad, samples)``; ``rng`` is a ``np.random.Generator`` or a seed.
    """
    if int(n) < 1:
        raise ValueError(f"null_floor needs n >= 1, got n={n!r}")
    t = np.asarray(t, float)
    samples = mad(np.random.default_rng(rng).multinomial(int(n), t, size=int(B)) / int(n), t)
    return float(samples.mean()), samples


def null_p_value(observed_mad, null_samples, rng=None):
    """§3 P_null(MAD ≥ observed) = (1 + #{null ≥ obs}) / (B + 1); the +1 counts the observation as one
    null draw (Davison & Hinkley 1997, §4.2), so p > 0. Ties use a 1e-12 tolerance (float sums).

    MAD is discrete, so this p is conservative (P(p ≤ α) ≤ α, not uniform). With ``rng`` (a Generator
    or seed) ties are broken at random instead: p = (#{null > obs} + U·(#{null = obs} + 1)) / (B + 1),
    which is exactly uniform under the null; that variant checks the null machinery, the audit reports
    the conservative one.
    """
    s = np.asarray(null_samples, float)
    above = np.count_nonzero(s > observed_mad + 1e-12)
    ties = np.count_nonzero(np.abs(s - observed_mad) <= 1e-12)
    u = 1.0 if rng is None else np.random.default_rng(rng).random()
    return float((above + u * (ties + 1)) / (s.size + 1))


# ---------------------------------------------------------------- hierarchical bootstrap
def prompt_table(prompt_codes, label_codes, K):
    """Per-prompt class counts (P × K), prompts in sorted order; label codes < 0 (abstained) dropped."""
    prompts, labels = np.asarray(prompt_codes), np.asarray(label_codes, np.int64)
    if prompts.shape != labels.shape:
        raise ValueError(f"prompt_codes {prompts.shape} and label_codes {labels.shape} differ in shape")
    if labels.size and labels.max() >= K:
        raise ValueError(f"label code {labels.max()} out of range for K={K}")
    keep = labels >= 0
    _, inv = np.unique(prompts[keep], return_inverse=True)
    table = np.zeros((inv.max() + 1 if inv.size else 0, K), np.int64)
    np.add.at(table, (inv.ravel(), labels[keep]), 1)
    return table


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


# ---------------------------------------------------------------- single proportions (§6)
from pipeline.audit.proportions import expected_max_over_k, p_at_least_one, wilson  # noqa: E402,F401


# ---------------------------------------------------------------- across groups (§5)
def independence_test(table):
    """§5 χ² and G tests of independence (groups × classes), no continuity correction, and Cramér's V.

    E = row·col/N; χ² = Σ(O−E)²/E; G = 2 Σ O ln(O/E); dof = (r−1)(c−1); V = √(χ²/(N·min(r−1, c−1))).
    All-zero rows and columns are dropped first (they carry no information and make E zero).
    """
    o = np.asarray(table, float)
    if o.ndim != 2 or (o < 0).any():
        raise ValueError(f"independence_test needs a 2-D table of counts, got {o!r}")
    o = o[o.sum(1) > 0][:, o.sum(0) > 0]
    r, c = o.shape
    nan = float("nan")
    if r < 2 or c < 2:
        return {"chi2": nan, "G": nan, "dof": 0, "p": nan, "p_G": nan, "cramers_v": nan, "min_expected": nan}
    N = o.sum()
    e = o.sum(1, keepdims=True) * o.sum(0, keepdims=True) / N
    chi2 = float(((o - e) ** 2 / e).sum())
    g = float(2 * special.xlogy(o, o / e).sum())
    dof = (r - 1) * (c - 1)
    return {
        "chi2": chi2,
        "G": g,
        "dof": dof,
        "p": float(stats.chi2.sf(chi2, dof)),
        "p_G": float(stats.chi2.sf(g, dof)),
        "cramers_v": float(np.sqrt(chi2 / (N * min(r - 1, c - 1)))),
        "min_expected": float(e.min()),
    }


def benjamini_hochberg(pvals):
    """§5 BH q-values (scipy's false_discovery_control); NaN p-values stay NaN and are not in m."""
    p = np.asarray(pvals, float)
    q = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(p[ok], method="bh")
    return q


# ---------------------------------------------------------------- per-group assembly
def resolve_target(target, classes):
    """The target vector t over ``classes``: "uniform" or a {class: weight} dict (normalised to 1)."""
    K = len(classes)
    if isinstance(target, str) and target == "uniform":
        return np.full(K, 1.0 / K)
    if not isinstance(target, dict) or set(target) != set(classes):
        raise ValueError(f"target must be 'uniform' or a dict over exactly {list(classes)}, got {target!r}")
    t = np.array([float(target[c]) for c in classes])
    if (t < 0).any() or t.sum() <= 0:
        raise ValueError(f"target weights must be >= 0 with a positive sum, got {target!r}")
    return t / t.sum()


def encode_labels(labels, classes):
    """Class index per label, −1 for abstain (None, NaN, "abstain"); unknown labels raise."""
    index = {c: i for i, c in enumerate(classes)}
    s = pd.Series(list(labels), dtype=object)
    absent = s.isna() | (s == ABSTAIN)
    codes = s[~absent].map(index)
    if codes.isna().any():
        bad = sorted(set(map(str, s[~absent][codes.isna()])))[:5]
        raise ValueError(f"labels not in classes {list(classes)} nor abstain: {bad}")
    out = np.full(len(s), -1, np.int64)
    out[~absent.to_numpy()] = codes.to_numpy(np.int64)
    return out


def _disparity(counts, t, null_samples, level, table, priors=None):
    """MAD, D² (+ CI), excess, p-value, KL, entropy, log-ratios of one group's prompt ``table``.

    D² is the population-of-prompts estimate (``intervals.population_d2``), its interval the range of
    D² over the share intervals (``intervals.d2_interval``). The debiased point can fall below the
    interval's lower end: it is unbiased, so it can even be negative when the shares sit on target."""
    from pipeline.audit.intervals import d2_interval, population_d2

    m = float(mad(counts / counts.sum(), t))
    d2, (lo, hi) = population_d2(table, t), d2_interval(table, t, level, priors)
    lr_min, lr_max = log_ratio_extremes(counts, t)
    return {
        "mad": m,
        "d2": d2,
        "d2_ci": (float(lo), float(hi)),
        "excess": m - float(null_samples.mean()),
        "p_value": null_p_value(m, null_samples),
        "kl": kl_smoothed(counts, t),
        "entropy_norm": normalized_entropy(counts),
        "log_ratio_min": lr_min,
        "log_ratio_max": lr_max,
    }


DISPARITY_KEYS = (
    "mad",
    "d2",
    "d2_ci",
    "excess",
    "p_value",
    "kl",
    "entropy_norm",
    "log_ratio_min",
    "log_ratio_max",
)


def _prompt_strings(prompt_ids):
    return np.asarray(pd.Series(list(prompt_ids), dtype=object).astype(str), dtype=str)


def _share_fields(table, classes, level, priors):
    """group_metrics' share fields of a prompt ``table`` with n > 0: proportions, intervals, deff,
    n_eff, the ρ each interval used (``icc``), whether it was pooled, whether the model check failed
    (``beta_misfit``: the interval then joins Korn & Graubard's), and the method's name."""
    from pipeline.audit.betabinomial import beta_misfits, rho_summary
    from pipeline.audit.intervals import share_intervals

    ci, m_j = share_intervals(table, level, priors), table.sum(1)
    per_class = lambda v: dict(zip(classes, np.asarray(v).tolist()))  # noqa: E731
    return {
        "proportions": per_class(ci["p"]),
        "ci_low": per_class(ci["lo"]),
        "ci_high": per_class(ci["hi"]),
        "deff": per_class(ci["deff"]),
        "n_eff": per_class(ci["n_eff"]),
        "icc": {c: rho_summary(lp, table[:, k], m_j) for k, (c, lp) in enumerate(zip(classes, priors))},
        "icc_pooled": {c: lp is not None for c, lp in zip(classes, priors)},
        "beta_misfit": {c: beta_misfits(table[:, k], m_j) for k, c in enumerate(classes)},
        "ci_method": "beta-binomial, ρ pooled over groups"
        if any(x is not None for x in priors)
        else "beta-binomial",
    }


def _no_share_fields(classes):
    """``_share_fields`` of a group without images: NaN shares and intervals, nothing pooled or misfit."""
    nan = dict.fromkeys(classes, float("nan"))
    keys = ("proportions", "ci_low", "ci_high", "deff", "n_eff", "icc")
    return {
        **dict.fromkeys(keys, nan),
        "ci_method": "beta-binomial",
        "icc_pooled": dict.fromkeys(classes, False),
        "beta_misfit": dict.fromkeys(classes, False),
    }


def group_metrics(
    prompt_ids,
    labels,
    classes,
    target="uniform",
    B=BOOTSTRAP,
    seed=0,
    min_n=MIN_N,
    level=LEVEL,
    pooled=None,
):
    """All per-group metrics of §1-§4 and §7 for one group's rows (one prompt id and label per row).

    Share intervals are for the population of prompts of this kind (``intervals.share_intervals``:
    beta-binomial, ρ integrated out); ``pooled``: per class (log prior on ρ or None, Bayes factor)
    from the attribute's other groups (tables.pooled_priors), None: this group's prompts alone.
    ``icc`` per class is the between-prompt correlation the interval used (posterior mean),
    ``icc_pooled`` whether it was pooled; ``deff`` and ``n_eff`` per class say how much the prompts cost.
    The D² interval is the range of D² over the share intervals (``intervals.d2_interval``); the
    null draws use a stream spawned from ``seed`` (int or list of ints). The disparity fields
    (``DISPARITY_KEYS``) are None when
    n < min_n and ``note`` says so, while ``null_mad`` (the floor E_null[MAD] at this n) is shown;
    ``note`` also says when the group has too few prompts for its intervals to mean much.
    """
    from pipeline.audit.intervals import few_prompts_note

    classes = list(classes)
    t = resolve_target(target, classes)
    codes = encode_labels(labels, classes)
    table = prompt_table(_prompt_strings(prompt_ids), codes, len(classes))
    counts = table.sum(0)
    n, abstained = int(counts.sum()), int((codes < 0).sum())
    a_lo, a_hi, _ = wilson(abstained, n + abstained)
    out = {
        "n": n,
        "abstained": abstained,
        "abstain_rate": abstained / max(1, n + abstained),
        "abstain_ci": (a_lo, a_hi),
        "n_prompts": int(table.shape[0]),
        "counts": dict(zip(classes, counts.tolist())),
        **_no_share_fields(classes),
        "null_mad": None,
        **dict.fromkeys(DISPARITY_KEYS),
        "note": None,
        "few_prompts": None,
    }
    if n == 0:
        out["note"] = "no non-abstained images"
        return out
    _, null_ss = np.random.SeedSequence(seed).spawn(2)  # two streams as before: the null draws keep theirs
    priors = [None] * len(classes) if pooled is None else [lp for lp, _ in pooled]
    null_mad, null_samples = null_floor(n, t, B, np.random.default_rng(null_ss))
    out.update(
        _share_fields(table, classes, level, priors),
        null_mad=null_mad,
        few_prompts=few_prompts_note(table.shape[0]),
    )
    notes = [out["few_prompts"]] if out["few_prompts"] else []
    if n < min_n:
        notes.insert(0, f"n={n} < {min_n}: disparity not shown; null floor E[MAD]={null_mad:.3f}")
    else:
        out.update(_disparity(counts, t, null_samples, level, table, priors))
    out["note"] = "; ".join(notes) or None
    return out
