"""The share interval of one class in one group: a beta-binomial posterior with the between-prompt
correlation ρ integrated out, and ρ pooled across the attribute's groups where they agree (issue 22).

Model: prompt j's share ~ Beta(μ(1−ρ)/ρ, (1−μ)(1−ρ)/ρ) (mean μ, intra-prompt correlation ρ), its m_j
images ~ Binomial(m_j, share). Priors: Beta(3/2, 3/2) on μ (see MU_PRIOR); log-uniform on ρ in
(RHO_MIN, RHO_MAX) (scale-free: the data say whether ρ is 0.001 or 0.01; the uniform prior used before
put 90% of its mass above 0.1 and made every interval of a few prompts wide). Both are integrated on
grids: μ on a logit grid that is dense around the data, ρ on a logit grid. The interval is
equal-tailed at ``calibrated(level, P)``, not at the nominal level: the posterior mixes over ρ, and at
the ρ a few prompts cannot rule out it undercovers, by about a point at 5+ prompts and by up to 6 at
2–3 prompts with strongly varying prompts (benchmarks/audit_coverage.py measured it;
docs/AUDIT_GUIDE.md §3).

One rule is frequentist, after Brown, Cai & DasGupta's (2001) modified Jeffreys interval: when the
class is present in only one prompt, the lower end is 0 (one prompt cannot tell a rare kind of prompt
from a rare class), and when it is absent from only one, the upper end is 1.

Pooling (``pooled_log_priors``): ρ is a property of how a prompt set varies, and an audit of 20
professions × 5 prompts has 100 prompts to learn it from, not 5. Each group's prior on ρ becomes the
posterior of ρ from the *other* groups' prompts (leave one out, so a group never sees its own data
twice), if the groups agree on ρ and the group's own prompts do too. Two checks: the groups' ρ are
homogeneous (a likelihood-ratio test of one ρ for all against one per group, χ² on G − 1 df, at
HOMOGENEITY_ALPHA; when it fails nobody pools), and the group's own prompts do not reject the pooled
prior (its Bayes factor against the log-uniform one is at least POOL_MIN_BF). Otherwise the group keeps
the log-uniform prior (per-group fallback), and says so.

The model check (``beta_misfits``): where two kinds of prompt fit a class's counts better than any
Beta by MISFIT_NATS (e.g. a fifth of the prompts never show the class), the Beta centres the share
wrongly (0.80 coverage at 30 prompts), and the interval joins Korn & Graubard's design-based one.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import special, stats

from pipeline.audit.design import korn_graubard
from pipeline.audit.spec import LEVEL

RHO_MIN, RHO_MAX = 5e-4, 0.98  # ρ below 5e-4 is no correlation at any m we run; 0.98: prompts all-or-none
RHO_GRID = 48  # logit-spaced ρ points: pooled posteriors are sharp, 48 keeps adjacent points ~17% apart
MU_COARSE = 160  # logit-spaced share points over (1e-5, 1 − 1e-5): the tails, wherever the data are
MU_FINE = 240  # more points within ±24 binomial SEs of the data: the quantiles are read off these
MU_SPAN = 24  # the fine grid's half-width in binomial SEs on the logit scale (deff up to ~64 inside it)
# α is scaled by these before the credible interval is read (nominal 95% → 96% at 5+ prompts, 97% at
# 3–4, 97.5% at 2): the ρ-mixture undercovers where few prompts cannot rule out a large ρ. Set on
# benchmarks/audit_coverage.py's Beta grid, checked off the model (zero-inflated, logit-normal spreads)
ALPHA_SCALE = {2: 0.5, 3: 0.6, 4: 0.6}  # by prompts that inform ρ; more than 4: ALPHA_SCALE_MANY
ALPHA_SCALE_MANY = 0.8
# the prior on μ is Beta(MU_PRIOR, MU_PRIOR). The interval before issue 22 documented Jeffreys (½) but
# computed 3/2; measured on the same 225 cells, ½ leaves 20 cells under the coverage bar where strongly
# varying prompts meet few prompts (it pulls mass to 0 and 1 when ρ is large), 3/2 leaves 3
MU_PRIOR = 1.5
# a group keeps the pooled prior unless its own prompts favour the vague one 3 to 1 ("substantial"
# on Jeffreys' scale): at 1 a fifth to a third of groups that share ρ fell back by chance
POOL_MIN_BF = 1 / 3
HOMOGENEITY_ALPHA = 0.05  # below this p-value the groups' ρ differ and no group pools
POOL_MIN_GROUPS = 2  # other groups with >= 2 prompts needed before a pooled prior means anything
# the model check (beta_misfits): two kinds of prompt must fit the counts better than every Beta on the
# grid by this many nats of log-likelihood. On benchmarks/audit_coverage.py's Beta grid 0.2% of
# datasets pass it (its 99.9th percentile is 2.6-6 nats by prompts); on 30 prompts of which a fifth
# never show the class, every one does (the Beta then centres 0.07 too low: coverage 0.72 → 0.98)
MISFIT_NATS = 4.0
MIXTURE_EM_STEPS = 30  # EM steps of the two-kind fit, from a split at the median prompt share


def calibrated(level: float, prompts: int | None = None) -> float:
    """The credible level used for a nominal ``level`` when ``prompts`` prompts inform ρ (None: many,
    as when ρ is pooled over groups): α scaled by ALPHA_SCALE, so 0.95 → 0.96 at 5+ prompts."""
    scale = ALPHA_SCALE.get(prompts, ALPHA_SCALE_MANY) if prompts is not None else ALPHA_SCALE_MANY
    return 1 - (1 - level) * scale


@lru_cache(maxsize=1)
def rho_grid():
    """(ρ (R,), log weight (R,)): the grid and log(dρ) + the log-uniform prior's log density, normalised."""
    z = np.linspace(np.log(RHO_MIN / (1 - RHO_MIN)), np.log(RHO_MAX / (1 - RHO_MAX)), RHO_GRID)
    rho = 1 / (1 + np.exp(-z))
    logw = np.log(rho * (1 - rho) * (z[1] - z[0])) - np.log(rho)  # dρ/ρ: log-uniform
    return rho, logw - special.logsumexp(logw)


def _mu_grid(x: float, n: float):
    """(μ, log dμ): a coarse logit grid over the whole range plus a fine one around the data's share."""
    ph = (x + 0.5) / (n + 1)
    zc, se = np.log(ph / (1 - ph)), 1 / np.sqrt(max(n, 1) * ph * (1 - ph))
    lim = np.log((1 - 1e-5) / 1e-5)
    fine = np.clip(np.linspace(zc - MU_SPAN * se, zc + MU_SPAN * se, MU_FINE), -lim, lim)
    z = np.unique(np.concatenate([np.linspace(-lim, lim, MU_COARSE), fine]))
    mu = 1 / (1 + np.exp(-z))
    return mu, np.log(mu * (1 - mu) * np.gradient(z))


def _log_joint(c, m):
    """(μ, log p(c, μ | ρ) on the μ × ρ grid incl. the prior on μ and dμ, the grid's largest log
    likelihood log p(c | μ, ρ) without the binomial coefficients). Prompts with the same
    (count, size) are evaluated once, and the result depends only on that multiset: an audit asks
    for the same one four times per class (pooling, interval, D² box, ρ summary), so it is cached."""
    c, m = np.asarray(c, float), np.asarray(m, float)
    pairs, w = np.unique(np.stack([c, m], 1), axis=0, return_counts=True)
    return _log_joint_cached(pairs.tobytes(), w.tobytes(), float(c.sum()), float(m.sum()))


@lru_cache(maxsize=128)  # ~150 KB each: at most ~20 MB
def _log_joint_cached(pairs_b, w_b, x, n):
    pairs, w = np.frombuffer(pairs_b).reshape(-1, 2), np.frombuffer(w_b, dtype=np.int64)
    mu, log_dmu = _mu_grid(x, n)
    rho, _ = rho_grid()
    kappa = (1 - rho) / rho
    a = (mu[:, None] * kappa)[..., None]  # (μ, ρ, 1)
    b = ((1 - mu)[:, None] * kappa)[..., None]
    cj, mj = pairs[:, 0], pairs[:, 1]
    # log B(c + a, m − c + b) − log B(a, b) with a + b = κ: the terms in κ alone are per ρ, so only two
    # log-gammas run over the whole μ × ρ × prompt grid (betaln would run three, twice)
    per_mu = special.gammaln(cj + a) + special.gammaln(mj - cj + b)
    per_rho = special.gammaln(kappa[:, None]) - special.gammaln(mj + kappa[:, None])  # (ρ, prompts)
    ll = ((per_mu + per_rho[None]) * w).sum(-1) - (special.gammaln(a) + special.gammaln(b))[..., 0] * w.sum()
    log_pmu = (MU_PRIOR - 1) * np.log(mu * (1 - mu)) - special.betaln(MU_PRIOR, MU_PRIOR)
    joint = ll + (log_pmu + log_dmu)[:, None]
    mu.flags.writeable = joint.flags.writeable = False  # shared through the cache: nobody may write
    return mu, joint, float(ll.max())


def share_posterior(c, m, log_prior=None):
    """(μ grid, posterior CDF on it) of the population share from per-prompt counts ``c`` of ``m``,
    ρ integrated out under ``log_prior`` (log weights on ``rho_grid()``; None: the log-uniform one)."""
    mu, lj, _ = _log_joint(c, m)
    lp = rho_grid()[1] if log_prior is None else log_prior
    log_post = lj + lp[None, :]
    post = np.exp(log_post - log_post.max()).sum(1)  # the marginal over ρ, on the μ grid
    return mu, np.cumsum(post) / post.sum()


def interval_at(posterior, c, m, level=LEVEL, pooled=False):
    """Equal-tailed interval of a ``share_posterior`` at ``calibrated(level, P)``, joined with Korn &
    Graubard's at ``level`` where ``beta_misfits``, with the one-prompt rule of the module docstring
    (``c``, ``m``: the counts it came from; ``pooled``: ρ came from many groups' prompts, so the
    few-prompt widening does not apply). Returns (low, high)."""
    mu, cdf = posterior
    a = (1 - calibrated(level, None if pooled else len(c))) / 2
    lo, hi = float(np.interp(a, cdf, mu)), float(np.interp(1 - a, cdf, mu))
    c, m = np.asarray(c, float), np.asarray(m, float)
    if beta_misfits(c, m):  # the model's interval cannot be trusted: widen it by the design-based one
        klo, khi, _, _ = korn_graubard(np.stack([c, m - c], 1), level)
        lo, hi = min(lo, float(klo[0])), max(hi, float(khi[0]))
    if (c > 0).sum() <= 1:
        lo = 0.0
    if (c < m).sum() <= 1:
        hi = 1.0
    return lo, hi


def betabinomial_interval(c, m, level=LEVEL, log_prior=None):
    """Interval for the population share μ of one class from per-prompt counts ``c`` of ``m``.

    ``log_prior``: the log prior weights on ``rho_grid()`` (default the log-uniform one; a pooled one
    from ``pooled_log_priors``). Equal-tailed at ``calibrated(level, P)``, with the one-prompt rule of
    the module docstring. Returns (low, high).
    """
    return interval_at(share_posterior(c, m, log_prior), c, m, level, log_prior is not None)


def rho_loglik(c, m):
    """log p(c | ρ) on ``rho_grid()``, μ integrated out under its prior: what one group's
    prompts say about ρ (the pooling's building block)."""
    _, lj, _ = _log_joint(c, m)
    return special.logsumexp(lj, axis=0)


def _mixture_max_loglik(c, m) -> float:
    """Log-likelihood (without binomial coefficients) of the best two-kind fit: each prompt is of
    kind 1 (share p₁) with probability w, else of kind 2 (p₂); EM from a split at the median share."""
    s = c / m
    low = s <= np.median(s)
    if low.all():
        low = s < np.median(s)
    w = low.mean()
    p = np.array([(c[low].sum() + 0.5) / (m[low].sum() + 1), (c[~low].sum() + 0.5) / (m[~low].sum() + 1)])

    def parts(w, p):  # (prompts, 2): log w_k + log p(c_j | p_k)
        logp = c[:, None] * np.log(p) + (m - c)[:, None] * np.log1p(-p)
        return logp + np.log([w, 1 - w])

    for _ in range(MIXTURE_EM_STEPS):
        lp = parts(w, p)
        r = np.exp(lp - np.logaddexp(lp[:, :1], lp[:, 1:]))  # responsibilities
        w = float(np.clip(r[:, 0].mean(), 1e-6, 1 - 1e-6))
        p = np.clip((r * c[:, None]).sum(0) / np.maximum((r * m[:, None]).sum(0), 1e-12), 1e-9, 1 - 1e-9)
    lp = parts(w, p)
    return float(np.logaddexp(lp[:, 0], lp[:, 1]).sum())


def beta_misfits(c, m) -> bool:
    """The model check: True when the prompts' counts ``c`` of ``m`` look like two kinds of prompt
    (e.g. some never produce the class) rather than any Beta spread, by more than MISFIT_NATS. The
    interval then joins the design-based one, which assumes nothing about the spread. Prompts that
    all show the same share cannot fail it (there is nothing to split)."""
    c, m = np.asarray(c, float), np.asarray(m, float)
    keep = m > 0
    return _misfits(tuple(c[keep]), tuple(m[keep]))


@lru_cache(maxsize=1024)  # the p-value of a difference asks for the same check ~40 times
def _misfits(c: tuple, m: tuple) -> bool:
    c, m = np.array(c), np.array(m)
    if len(c) < 3 or np.ptp(c / m) == 0:
        return False
    bb = _log_joint(c, m)[2]
    s = c / m  # every prompt its own share fits at least as well as any mixture: a cheap bound first
    with np.errstate(divide="ignore", invalid="ignore"):
        own = np.nansum(c * np.log(s)) + np.nansum((m - c) * np.log1p(-s))
    if own - bb <= MISFIT_NATS:
        return False
    return _mixture_max_loglik(c, m) - bb > MISFIT_NATS


def _normalised(logw):
    return logw - special.logsumexp(logw)


def homogeneity_p(logliks) -> float:
    """p-value of "one ρ for all these groups": 2·(Σ_g max ℓ_g − max Σ_g ℓ_g) against χ² on G − 1 df
    (ℓ_g: a group's ``rho_loglik``, maxima over the ρ grid). 1.0 for fewer than 2 groups."""
    if len(logliks) < 2:
        return 1.0
    L = np.stack(list(logliks))
    stat = 2 * (L.max(1).sum() - L.sum(0).max())
    return float(stats.chi2.sf(max(stat, 0.0), len(L) - 1))


def pooled_log_priors(logliks):
    """Per group, the log prior on ρ its interval uses, or None for the log-uniform one.

    ``logliks``: {group: rho_loglik of its prompts, or None for a group with < 2 prompts (it says
    nothing about ρ)}. Group g gets the posterior of ρ from the other groups' prompts when at least
    POOL_MIN_GROUPS others have ≥ 2 prompts, the groups pass the homogeneity check, and g's own
    prompts do not reject the pooled prior: Bayes factor Σ L_g π_{−g} / Σ L_g π_0 ≥ POOL_MIN_BF (a
    group with < 2 prompts cannot reject, and pools). Returns {group: (log prior or None, Bayes
    factor or None)}.
    """
    _, log_u = rho_grid()
    informative = {g: ll for g, ll in logliks.items() if ll is not None}
    total = sum(informative.values(), np.zeros_like(log_u))
    homogeneous = homogeneity_p(informative.values()) >= HOMOGENEITY_ALPHA
    out = {}
    for g, ll in logliks.items():
        others = len(informative) - (ll is not None)
        if others < POOL_MIN_GROUPS or not homogeneous:
            out[g] = (None, None)
            continue
        loo = _normalised(log_u + total - (ll if ll is not None else 0.0))
        if ll is None:
            out[g] = (loo, None)
            continue
        bf = float(np.exp(special.logsumexp(ll + loo) - special.logsumexp(ll + log_u)))
        out[g] = (loo, bf) if bf >= POOL_MIN_BF else (None, bf)
    return out


def rho_summary(log_prior, c=None, m=None):
    """Posterior mean of ρ under ``log_prior`` (None: log-uniform), updated by the group's own prompts
    when given: the between-prompt correlation the interval used, for the report."""
    rho, log_u = rho_grid()
    lp = log_u if log_prior is None else log_prior
    if c is not None and len(c) >= 2:
        lp = lp + rho_loglik(c, m)
    w = np.exp(lp - lp.max())
    return float((w * rho).sum() / w.sum())


def pooled_class_priors(tables: dict) -> dict:
    """Pooling over an attribute's groups, class by class: {group: [(log prior or None, Bayes factor
    or None) per class]} for ``tables`` {group: P × K prompt count table}. A group with < 2 prompts
    or no images says nothing about ρ (its own entry still gets the others' pooled prior)."""
    tables = {g: np.asarray(t, float) for g, t in tables.items()}
    K = next(iter(tables.values())).shape[1] if tables else 0
    out = {g: [(None, None)] * K for g in tables}
    for k in range(K):
        logliks = {
            g: rho_loglik(t[:, k], t.sum(1)) if t.shape[0] >= 2 and t.sum() > 0 else None
            for g, t in tables.items()
        }
        for g, v in pooled_log_priors(logliks).items():
            out[g] = out[g][:k] + [v] + out[g][k + 1 :]
    return out
