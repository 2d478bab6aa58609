"""Single proportions for the audit's safety rates (docs/AUDIT.md §6): Wilson intervals (scipy) with
the rule of three at zero events, P(>=1 unsafe in k) and the expected maximum score over k images.
Re-exported by pipeline.audit.stats."""

from __future__ import annotations

import numpy as np
from scipy import special, stats


def wilson(c, n, z=1.96, rule_of_three=True):
    """Wilson score interval for c events in n trials → ``(low, high, method)``.

    centre = (p̂ + z²/2n)/(1 + z²/n), half = z/(1 + z²/n)·√(p̂(1−p̂)/n + z²/4n²) (Newcombe 1998, method 3).
    When c = 0 and ``rule_of_three``, the reported interval is [0, min(1, 3/n)] (one-sided 95%,
    whatever z) and method = "rule_of_three"; otherwise method = "wilson". n = 0 → (nan, nan, "empty").
    """
    c, n = int(c), int(n)
    if n < 0 or c < 0 or c > n:
        raise ValueError(f"wilson needs 0 <= c <= n, got c={c!r}, n={n!r}")
    if n == 0:
        return float("nan"), float("nan"), "empty"
    if c == 0 and rule_of_three:
        return 0.0, min(1.0, 3.0 / n), "rule_of_three"
    level = 2 * stats.norm.cdf(z) - 1  # scipy takes a confidence level; z = 1.96 is 95%
    ci = stats.binomtest(c, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high), "wilson"


def p_at_least_one(n, c, k):
    """§6 P(≥1 unsafe among k drawn without replacement from n with c unsafe) = 1 − C(n−c,k)/C(n,k).

    Exact up to rounding: C(n−c,k)/C(n,k) = Π_{i<k} (1 − c/(n−i)), summed in log1p and inverted with
    expm1, so tiny probabilities keep their digits and c = 0 gives exactly 0. 1 when k > n − c; NaN
    when k > n (k images cannot be drawn).
    """
    n, c, k = int(n), int(c), int(k)
    if not 0 <= c <= n or k < 0:
        raise ValueError(f"p_at_least_one needs 0 <= c <= n and k >= 0, got n={n}, c={c}, k={k}")
    if k > n:
        return float("nan")
    if k > n - c:
        return 1.0
    return 0.0 - float(np.expm1(np.log1p(-c / (n - np.arange(k, dtype=float))).sum()))  # 0.0 - : no -0.0


def expected_max_over_k(scores, k, replace=False):
    """§6 E[max of k scores drawn from ``scores``], exact from order statistics (x_(1) ≤ … ≤ x_(n)).

    Without replacement: P(max = x_(i)) = C(i−1, k−1)/C(n, k). With replacement (I2P's bootstrap):
    P(max = x_(i)) = (i/n)^k − ((i−1)/n)^k. NaN scores are dropped; NaN if k exceeds what can be drawn.
    """
    x = np.sort(np.asarray(scores, float)[~np.isnan(np.asarray(scores, float))])
    n, k = x.size, int(k)
    if k < 1:
        raise ValueError(f"expected_max_over_k needs k >= 1, got k={k!r}")
    if n == 0 or (k > n and not replace):
        return float("nan")
    i = np.arange(1, n + 1, dtype=float)
    if replace:
        w = (i / n) ** k - ((i - 1) / n) ** k
    else:
        with np.errstate(invalid="ignore"):
            logw = (
                special.gammaln(i)
                - special.gammaln(k)
                - special.gammaln(i - k + 1)
                - (special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1))
            )
        w = np.where(i >= k, np.exp(np.where(i >= k, logw, 0.0)), 0.0)
    return float(np.dot(w, x))
