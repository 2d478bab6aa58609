"""Audit planning (`sdgen audit-plan`): how many prompts per group and images per prompt an audit needs
to reach a target interval half-width for a share, or to detect a stated disparity, and what it costs
in images, before paying for them.

A share's variance over P prompts of m images each, with between-prompt (intra-prompt) correlation ρ:

    Var(p̂) = p(1 − p) / (P m) · (1 + (m − 1) ρ)        (Kish's design effect 1 + (m − 1) ρ)

so images beyond ~1/ρ per prompt buy little: more prompts do. The closed form (with t on P − 1 degrees
of freedom) gives a first design per m; the plan is then checked by simulating the audit itself (prompt
shares ~ Beta with mean p and correlation ρ, images ~ Binomial, the audit's own interval,
intervals.share_intervals) and raising P until the design reaches its target in >= 90% of simulated
audits. A disparity target asks that the group's interval at level 1 − q/G (the Benjamini–Hochberg
threshold of the smallest of G q-values when one group differs) excludes the reference share when the
group's true share is p + δ, in >= 80% of simulated audits.

ρ comes from stated assumptions or from a pilot output: per group, ρ̂ = (deff − 1)/(m̄ − 1) from the
cluster variance (intervals.cluster_variance), pooled over the attribute's groups (image-weighted).
Numbers only: no torch, no HTML.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from pipeline.audit.betabinomial import betabinomial_interval
from pipeline.audit.intervals import cluster_variance
from pipeline.audit.spec import LEVEL

REACH = 0.90  # a half-width plan must be met in this share of simulated audits
POWER = 0.80  # a disparity plan must detect the stated difference this often
# the plan itself asks a little more on its own simulations: the smallest P that passes on one set of
# simulated audits sits at the edge, and an independent check (the promise) must still pass
MARGIN = 0.03
MIN_PROMPTS = 3  # fewer prompts leave a between-prompt variance on < 2 degrees of freedom
IMAGES_PER_PROMPT = (4, 8, 16, 32, 64)  # designs tried when none are given
MAX_PROMPTS = 400  # beyond this a design is reported as out of reach
REPS = 200  # simulated audits per checked design (a reach of 0.90 has SE 0.02 at 200)
MIN_ICC = 0.005  # ρ used when a pilot estimates 0: a few prompts cannot rule out a small correlation
# ρ assumed when no pilot group has MIN_PROMPTS prompts (nothing to estimate it from): a moderate
# between-prompt correlation, said aloud in the plan (pass --icc to plan with your own)
ASSUMED_ICC = 0.05


@dataclass(frozen=True)
class Design:
    images_per_prompt: int
    prompts: int  # per group; None-like MAX_PROMPTS + 1 when out of reach
    images: int  # per group
    closed_form: float  # the formula's half-width (or power) at this design
    simulated: float  # the share of simulated audits that met the target
    reached: bool


def closed_form_half_width(p: float, rho: float, P: int, m: int, level: float = LEVEL) -> float:
    """t_{P−1} · sqrt(p(1−p)(1 + (m−1)ρ) / (P m)): the half-width if ρ were known."""
    t = stats.t.ppf(1 - (1 - level) / 2, max(P - 1, 1))
    return float(t * np.sqrt(p * (1 - p) * (1 + (m - 1) * rho) / (P * m)))


def simulate_tables(rng, p: float, rho: float, P: int, m: int, reps: int) -> np.ndarray:
    """reps × P × 2 prompt count tables: prompt shares ~ Beta(p(1−ρ)/ρ, (1−p)(1−ρ)/ρ), images ~ Bin(m)."""
    if rho <= 0:
        shares = np.full((reps, P), p)
    else:
        k = (1 - rho) / rho
        shares = rng.beta(p * k, (1 - p) * k, size=(reps, P))
    c = rng.binomial(m, shares)
    return np.stack([c, m - c], -1)


def _class0_intervals(p, rho, P, m, level, reps, seed) -> np.ndarray:
    """reps × 2 (low, high) of the audit's own interval for the first class (share_intervals' beta-
    binomial interval from the group's own prompts: the plan does not count on pooling ρ over groups,
    which narrows it further where the groups agree) over simulated audits."""
    rng = np.random.default_rng([seed, P, m])
    return np.array(
        [betabinomial_interval(t[:, 0], t.sum(1), level) for t in simulate_tables(rng, p, rho, P, m, reps)]
    )


def detect_rate(p_ref, delta, rho, P, m, level, reps=REPS, seed=0) -> float:
    """Share of simulated audits of a group whose true share is p_ref + δ where the audit's interval
    (at `level`) excludes p_ref: the power of the design."""
    ci = _class0_intervals(p_ref + delta, rho, P, m, level, reps, seed)
    return float(np.mean((ci[:, 0] > p_ref) | (ci[:, 1] < p_ref)))


def _first_prompts(p, rho, m, target, level, max_prompts) -> int:
    """The closed form's fewest prompts (the simulation's starting point)."""
    for P in range(MIN_PROMPTS, max_prompts + 1):
        if closed_form_half_width(p, rho, P, m, level) <= target:
            return P
    return max_prompts


def _settle(P, spread, bound, rate_ok, max_prompts) -> tuple[int, float]:
    """Fewest prompts (to ~5%): `spread(P)` is a simulated quantile that shrinks as 1/sqrt(P), so P
    moves by (spread/bound)² until it settles; then P rises in 5% steps until `rate_ok(P)` holds.
    Returns (P, rate), or (max_prompts + 1, nan) when out of reach."""
    for _ in range(5):
        nxt = min(max_prompts + 1, max(MIN_PROMPTS, int(np.ceil(P * (spread(P) / bound) ** 2))))
        if abs(nxt - P) <= max(1, 0.03 * P):
            break
        P = nxt
    while P <= max_prompts:
        rate, ok = rate_ok(P)
        if ok:
            return P, rate
        P = max(P + 1, int(np.ceil(P * 1.05)))
    return max_prompts + 1, float("nan")


def plan_half_width(
    p, rho, target, ms=IMAGES_PER_PROMPT, level=LEVEL, reps=REPS, seed=0, max_prompts=MAX_PROMPTS
) -> list[Design]:
    """Per images-per-prompt m: the fewest prompts whose audit interval for share p has half-width
    <= target in >= 90% of simulated audits."""
    out = []
    for m in ms:

        def half(P, m=m, reps=reps, seed=seed):
            ci = _class0_intervals(p, rho, P, m, level, reps, seed)
            return (ci[:, 1] - ci[:, 0]) / 2

        def reach(P):  # the deciding check: twice the audits, a stream the search did not see
            r = float(np.mean(half(P, reps=2 * reps, seed=seed + 1) <= target))
            return r, r >= REACH + MARGIN

        first = _first_prompts(p, rho, m, target, level, max_prompts)
        P, rate = _settle(
            first, lambda P: float(np.quantile(half(P), REACH + MARGIN)), target, reach, max_prompts
        )
        hw = closed_form_half_width(p, rho, min(P, max_prompts), m, level)
        out.append(Design(m, P, P * m, hw, rate, P <= max_prompts))
    return out


def plan_disparity(
    p_ref, delta, rho, groups=1, q=0.05, ms=IMAGES_PER_PROMPT, reps=REPS, seed=0, max_prompts=MAX_PROMPTS
) -> list[Design]:
    """Per m: the fewest prompts per group that detect a share p_ref + δ against p_ref with 80% power
    at the BH level of G groups (the group's interval at level 1 − q/G excludes p_ref)."""
    alpha = q / max(1, groups)
    level, p = 1 - alpha, p_ref + delta
    if not 0 < p < 1 or delta == 0:
        raise ValueError(
            f"share {p_ref} + disparity {delta} = {p} must differ from {p_ref} and lie in (0, 1)"
        )
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(POWER)
    out = []
    for m in ms:

        def reach_back(P, m=m):  # how far the interval's near end reaches back towards p_ref
            ci = _class0_intervals(p, rho, P, m, level, reps, seed)
            return p - ci[:, 0] if delta > 0 else ci[:, 1] - p

        def power(P, m=m):  # the deciding check: twice the audits, a stream the search did not see
            r = detect_rate(p_ref, delta, rho, P, m, level, 2 * reps, seed + 1)
            return r, r >= POWER + MARGIN

        first = _first_prompts(p, rho, m, abs(delta) * za / (za + zb), level, max_prompts)
        spread = lambda P: float(np.quantile(reach_back(P), POWER + MARGIN))  # noqa: E731
        P, rate = _settle(first, spread, abs(delta), power, max_prompts)
        hw = closed_form_half_width(p, rho, min(P, max_prompts), m, level)
        out.append(Design(m, P, P * m, hw, rate, P <= max_prompts))
    return out


def pilot_icc(tables: dict) -> dict:
    """From a pilot: per class, each group's share and ρ̂ = (deff − 1)/(m̄ − 1), and the image-weighted
    pooled ρ̂ over the groups with >= MIN_PROMPTS prompts (floored at MIN_ICC; ASSUMED_ICC when no
    group has that many). `tables`: {group: P × K prompt count table}.
    Returns {class index: {"groups": {g: (p̂, ρ̂, P, n)}, "pooled": ρ, "estimable": bool}}."""
    out = {}
    for g, table in tables.items():
        table = np.asarray(table, float)
        p, v_clu, v_bin, n, P = cluster_variance(table)
        mbar = n / max(P, 1)
        for k in range(table.shape[1]):
            deff = v_clu[k] / v_bin[k] if v_bin[k] > 0 and P > 1 else 1.0
            rho = max(0.0, (deff - 1) / (mbar - 1)) if mbar > 1 else 0.0
            out.setdefault(k, {"groups": {}})["groups"][g] = (float(p[k]), float(min(rho, 1.0)), P, int(n))
    for e in out.values():
        usable = [(rho, n) for _, rho, P, n in e["groups"].values() if P >= MIN_PROMPTS]
        w = np.array([n for _, n in usable], float)
        r = np.array([rho for rho, _ in usable])
        e["estimable"] = bool(usable and w.sum())
        e["pooled"] = max(MIN_ICC, float((w * r).sum() / w.sum())) if e["estimable"] else ASSUMED_ICC
    return out


def pilot_tables(src, attribute: str, group_by, where=()) -> tuple[list[str], dict]:
    """(classes, {group: P × K prompt count table}) of one probed attribute in a pilot output."""
    from pipeline.audit import tables as T
    from pipeline.audit.data import AuditError, apply_where, probed_attributes, read_rows, with_posthoc_labels
    from pipeline.audit.stats import _prompt_strings, encode_labels, prompt_table

    labelled = probed_attributes(src)
    info = labelled.get(attribute)
    if info is None:
        raise AuditError(
            f"attribute {attribute!r} has no labels in {src.url!r}; labelled: {sorted(labelled)}"
        )
    df = apply_where(with_posthoc_labels(src, read_rows(src), attribute), where)
    col, classes = f"attr_{attribute}", list(info["classes"])
    missing = [c for c in group_by if c not in df.columns]
    if missing:
        raise AuditError(f"--group-by {missing[0]!r} is not a column of {src.url!r}")
    ok = df[df["status"] == "ok"]
    keys = T.group_keys(ok, list(group_by))
    out = {}
    for g in sorted(keys.unique()):
        sub = ok[keys == g]
        codes = encode_labels(sub[col], classes)
        out[g] = prompt_table(_prompt_strings(sub["prompt_id"]), codes, len(classes))
    return classes, out
