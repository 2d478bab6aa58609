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


# ---------------------------------------------------------------- per-prompt count tables
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
