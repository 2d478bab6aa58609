"""Coverage study of the audit's 95% share intervals (issue #13, item 0).

Simulates datasets per cell: prompts per group × seeds per prompt × true shares × between-prompt
heterogeneity. Each prompt's shares are drawn around the truth (Beta / Dirichlet with the given SD of
the first class; none = every prompt has the true shares; `--hetero spike0.1,spike0.25` instead: a
zero-inflated, non-Beta spread, see spike_shares; `--hetero lnorm0.5,lnorm1.5`: logit-normal prompts,
see lnorm_shares), then its seeds are Mult(m, prompt shares).
For each dataset the interval of each method is computed and we count how often it holds the true
(population) share. Methods:
    bootstrap    the audit's interval before #13 (hierarchical bootstrap with shrinkage, percentile)
    wilson_deff  Wilson on the design-effect-adjusted n, z quantile (the issue's reference)
    oracle       Wilson on n / the TRUE design effect 1 + (m − 1)ρ (it knows the cell's ρ: no method can;
                 the width every other method is held to, issue 22)
    kg           Korn-Graubard: Clopper-Pearson on n_eff·(t_{n-1}/t_{P-1})²
    union        the audit's interval before issue 22: kg ∪ the beta-binomial interval with a uniform
                 prior on ρ and a fixed logit grid (union_ci below keeps it runnable)
    cluster      pipeline.audit.intervals.share_intervals: the beta-binomial interval of
                 pipeline/audit/betabinomial.py (log-uniform prior on ρ, calibrated; the audit's now)
    d2           not a share interval: the audit's D² interval (intervals.d2_interval: the range of D²
                 over the share intervals); its coverage of the population D² = Σ(p − t)² against the
                 uniform target is reported per cell as cov_d2 (same value on every counted class's row)
    d2_oracle    the same box over the oracle's share intervals (Bonferroni as d2): the D² width the
                 audit's D² is held to
    d2_boot      the D² interval before: hierarchical bootstrap of the debiased D², percentile, shifted
                 to the population debiasing
It also reports the mean width, zero-width intervals, and the bias of D² (binomial vs population
debiasing) against the population D².

    python benchmarks/audit_coverage.py                       # full grid, 500 datasets per cell
    python benchmarks/audit_coverage.py --reps 200 --methods cluster,wilson_deff --procs 2
    python benchmarks/audit_coverage.py --methods cluster,d2 --hetero spike0.1,spike0.25   # non-Beta check
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from multiprocessing import Pool

import numpy as np
from scipy import stats

from pipeline.audit import bootstrap as BS
from pipeline.audit import intervals as I
from pipeline.audit import stats as S

PROMPTS = (2, 3, 5, 10, 30)
SEEDS = (4, 8, 32)
# name -> (true shares, classes whose coverage is counted); "4cls" counts its 0.7 and one 0.1 share
SHARES = {
    "0.05": ([0.05, 0.95], [0]),
    "0.2": ([0.2, 0.8], [0]),
    "0.5": ([0.5, 0.5], [0]),
    "4cls": ([0.7, 0.1, 0.1, 0.1], [0, 1]),
}
HETERO = {
    "none": 0.0,
    "sd0.1": 0.1,
    "sd0.25": 0.25,
    "spike0.1": 0.1,
    "spike0.25": 0.25,
    "lnorm0.5": 0.5,  # logit-normal prompts: the value is the SD on the logit scale, not of the share
    "lnorm1.5": 1.5,
}
BETA_HETERO = ("none", "sd0.1", "sd0.25")  # the default grid; spike* are the non-Beta robustness check
D2_METHODS = ("d2", "d2_oracle", "d2_boot")
MIN_CONC = 0.5  # Dirichlet concentration floor: an SD the Beta cannot reach (0.25 at mean 0.05) is capped


def concentration(p, sd):
    """Dirichlet concentration a0 giving the first class's share SD ``sd``: Var = p(1−p)/(a0+1)."""
    return max(MIN_CONC, p[0] * (1 - p[0]) / sd**2 - 1)


def spike_shares(rng, P, p, sd):
    """Zero-inflated prompts (not a Beta): the spiked class (the first of two classes, else the
    second, a rare one) has share s in a fraction π of the prompts and 0 in the rest, with π·s = p_c
    and SD sd, so its population share is exactly p_c; the other classes share the remaining mass in
    their proportions (their means stay p_j). Like "some professions never get this class"."""
    c = 0 if p.size == 2 else 1
    s = min(1.0, (sd**2 + p[c] ** 2) / p[c])
    on = rng.random(P) < p[c] / s
    rest = np.delete(p, c) / (1 - p[c])
    shares = np.empty((P, p.size))
    shares[:, c] = np.where(on, s, 0.0)
    shares[:, np.arange(p.size) != c] = (1 - shares[:, [c]]) * rest
    return shares


GH = np.polynomial.hermite_e.hermegauss(80)  # nodes/weights for E[f(Z)], Z ~ N(0, 1)


def _lnorm_shift(pc, sigma):
    """μ with E[expit(μ + σZ)] = pc (bisection on the Gauss-Hermite mean), so the share's mean is pc."""
    x, w = GH
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = (lo + hi) / 2
        mean = (w / w.sum() * (1 / (1 + np.exp(-(mid + sigma * x))))).sum()
        lo, hi = (mid, hi) if mean < pc else (lo, mid)
    return (lo + hi) / 2


def lnorm_shares(rng, P, p, sigma):
    """Logit-normal prompts (not a Beta, not zero-inflated): the designated class (the first of two,
    else the second, a rare one) has logit share ~ N(μ, σ²) with its mean share exactly p_c; the other
    classes share the rest in their proportions, as in spike_shares."""
    c = 0 if p.size == 2 else 1
    sc = 1 / (1 + np.exp(-(_lnorm_shift(p[c], sigma) + sigma * rng.standard_normal(P))))
    rest = np.delete(p, c) / (1 - p[c])
    shares = np.empty((P, p.size))
    shares[:, c] = sc
    shares[:, np.arange(p.size) != c] = (1 - sc[:, None]) * rest
    return shares


def _lnorm_var(pc, sigma):
    x, w = GH
    s = 1 / (1 + np.exp(-(_lnorm_shift(pc, sigma) + sigma * x)))
    return float((w / w.sum() * (s - pc) ** 2).sum())


def simulate(rng, P, m, p, het):
    """One dataset: a P × K prompt count table."""
    p, sd = np.asarray(p, float), HETERO[het]
    if het.startswith("spike"):
        shares = spike_shares(rng, P, p, sd)
    elif het.startswith("lnorm"):
        shares = lnorm_shares(rng, P, p, sd)
    else:
        shares = np.tile(p, (P, 1)) if sd == 0 else rng.dirichlet(concentration(p, sd) * p, P)
    return rng.multinomial(m, shares)


def bootstrap_ci(table, rng, B):
    c = BS.bootstrap_tables(rng, [table], B)[0]
    return BS.percentile_ci(c / c.sum(1, keepdims=True))


def wilson_deff_ci(table):
    p, v_clu, v_bin, n, _ = I.cluster_variance(table)
    deff = np.where(v_bin > 0, np.maximum(1, v_clu / np.where(v_bin > 0, v_bin, 1)), 1.0)
    ne, z2 = n / deff, stats.norm.ppf(0.975) ** 2
    centre = (p + z2 / (2 * ne)) / (1 + z2 / ne)
    half = np.sqrt(z2) / (1 + z2 / ne) * np.sqrt(p * (1 - p) / ne + z2 / (4 * ne * ne))
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def true_icc(p, het) -> np.ndarray:
    """Each class's true between-prompt correlation ρ_k = Var(prompt share_k) / (p_k (1 − p_k)) of a
    cell's spread: 1/(a0 + 1) for the Dirichlet, sd²/(p(1−p)) for the spiked class of spike*, and for
    the other classes of spike* (scaled with the spiked one) rest_k² sd² / (p_k (1 − p_k))."""
    p, sd = np.asarray(p, float), HETERO[het]
    if sd == 0:
        return np.zeros(p.size)
    if not het.startswith(("spike", "lnorm")):
        return np.full(p.size, 1 / (concentration(p, sd) + 1))
    c = 0 if p.size == 2 else 1
    s = min(1.0, (sd**2 + p[c] ** 2) / p[c])
    # spike: on with prob p_c/s at share s: Var = p_c s − p_c²; lnorm: by quadrature
    var_c = p[c] * s - p[c] ** 2 if het.startswith("spike") else _lnorm_var(p[c], sd)
    rest = np.delete(p, c) / (1 - p[c])
    var = np.empty(p.size)
    var[c] = var_c
    var[np.arange(p.size) != c] = rest**2 * var_c
    return var / (p * (1 - p))


def oracle_ci(table, rho, level=0.95):
    """The oracle of issue 22: Wilson on n / deff with the TRUE design effect 1 + (m − 1)ρ (equal m)."""
    p, _, _, n, P = I.cluster_variance(table)
    m = n / P
    ne, z2 = n / (1 + (m - 1) * np.asarray(rho)), stats.norm.ppf(1 - (1 - level) / 2) ** 2
    centre = (p + z2 / (2 * ne)) / (1 + z2 / ne)
    half = np.sqrt(z2) / (1 + z2 / ne) * np.sqrt(p * (1 - p) / ne + z2 / (4 * ne * ne))
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def kg_ci(table):
    lo, hi, _, _ = I.korn_graubard(table)
    return lo, hi


def old_betabinomial(c, m, level=0.95, mu_grid=160, rho_grid=24):
    """The beta-binomial half of the interval before issue 22, as it was: a uniform prior on ρ, a
    Beta(3/2, 3/2) density on μ (documented as Jeffreys), a fixed logit grid on μ."""
    from scipy import special

    def grid(k, lo, hi):
        z = np.linspace(np.log(lo / (1 - lo)), np.log(hi / (1 - hi)), k)
        x = 1 / (1 + np.exp(-z))
        return x, np.log(x * (1 - x) * (z[1] - z[0]))

    pairs, w = np.unique(
        np.stack([np.asarray(c, float), np.asarray(m, float)], 1), axis=0, return_counts=True
    )
    mu, log_dmu = grid(mu_grid, 1e-5, 1 - 1e-5)
    rho, log_drho = grid(rho_grid, 5e-4, 0.98)
    kappa = (1 - rho) / rho
    a, b = (mu[:, None] * kappa)[..., None], ((1 - mu)[:, None] * kappa)[..., None]
    ll = ((special.betaln(pairs[:, 0] + a, pairs[:, 1] - pairs[:, 0] + b) - special.betaln(a, b)) * w).sum(-1)
    log_post = ll + 0.5 * np.log(mu * (1 - mu))[:, None] + log_dmu[:, None] + log_drho[None, :]
    cdf = np.cumsum(post := np.exp(log_post - log_post.max()).sum(1)) / post.sum()
    return float(np.interp((1 - level) / 2, cdf, mu)), float(np.interp((1 + level) / 2, cdf, mu))


def union_ci(table):
    """The audit's interval before issue 22: Korn-Graubard ∪ the old beta-binomial interval."""
    lo, hi, _, _ = I.korn_graubard(table)
    m = table.sum(1)
    for k in range(table.shape[1]):
        blo, bhi = old_betabinomial(table[:, k], m)
        lo[k], hi[k] = min(lo[k], blo), max(hi[k], bhi)
    return lo, hi


def d2_box(lo, hi, t):
    """Range of D² = Σ(p − t)² over the box [lo, hi] (capped at the simplex's farthest vertex)."""
    near = np.where(t < lo, lo - t, np.where(t > hi, t - hi, 0.0))
    far = np.maximum(np.abs(lo - t), np.abs(hi - t))
    return float((near**2).sum()), min(float((far**2).sum()), float(((np.eye(t.size) - t) ** 2).sum(1).max()))


def d2_oracle_ci(table, t, rho):
    """The box over the oracle's share intervals, Bonferroni as intervals.d2_interval."""
    K = table.shape[1]
    lo, hi = oracle_ci(table, rho, 1 - 0.05 / K if K > 2 else 0.95)
    return d2_box(lo, hi, t)


def d2_boot_ci(table, t, rng, B):
    """The D² interval before: percentile bootstrap, shifted to the population debiasing."""
    c = BS.bootstrap_tables(rng, [table], B)[0]
    n = table.sum()
    lo, hi = BS.percentile_ci(S.debiased_d2(c / c.sum(1, keepdims=True), t, c.sum(1)))
    shift = I.population_d2(table, t) - float(S.debiased_d2(table.sum(0) / n, t, n))
    return lo + shift, hi + shift


def cluster_ci(table):
    r = I.share_intervals(table)
    return r["lo"], r["hi"]


def run_cell(args):
    (P, m, share, het), methods, reps, B = args
    p, counted = SHARES[share]
    p = np.asarray(p)
    t = np.full(p.size, 1 / p.size)
    rng = np.random.default_rng([P, m, list(SHARES).index(share), list(HETERO).index(het)])
    hits = {k: np.zeros(len(counted)) for k in methods}
    width = {k: np.zeros(len(counted)) for k in methods}
    zero = {k: 0 for k in methods}
    d2_bin, d2_pop = [], []
    truth = float(((p - t) ** 2).sum())
    for _ in range(reps):
        table = simulate(rng, P, m, p, het)
        for k in methods:
            if k in D2_METHODS:  # one interval per dataset, counted on every row of the cell
                lo, hi = (
                    I.d2_interval(table, t)
                    if k == "d2"
                    else d2_oracle_ci(table, t, true_icc(p, het))
                    if k == "d2_oracle"
                    else d2_boot_ci(table, t, rng, B)
                )
                hits[k] += lo - 1e-12 <= truth <= hi + 1e-12
                width[k] += hi - lo
                zero[k] += int(hi - lo <= 1e-12)
                continue
            lo, hi = (
                oracle_ci(table, true_icc(p, het))
                if k == "oracle"
                else bootstrap_ci(table, rng, B)
                if k == "bootstrap"
                else wilson_deff_ci(table)
                if k == "wilson_deff"
                else kg_ci(table)
                if k == "kg"
                else union_ci(table)
                if k == "union"
                else cluster_ci(table)
            )
            lo, hi = np.asarray(lo)[counted], np.asarray(hi)[counted]
            hits[k] += (lo <= p[counted] + 1e-12) & (p[counted] - 1e-12 <= hi)
            width[k] += hi - lo
            zero[k] += int((hi - lo <= 1e-12).any())
        n = table.sum()
        d2_bin.append(float(S.debiased_d2(table.sum(0) / n, t, n)))
        d2_pop.append(I.population_d2(table, t))
    rows = []
    for i, c in enumerate(counted):
        label = share if share != "4cls" else f"4cls:{p[c]:g}"
        rows.append(
            {
                "prompts": P,
                "seeds": m,
                "share": label,
                "true": float(p[c]),
                "hetero": het,
                "expected_events": P * m * float(p[c]),
                **{f"cov_{k}": hits[k][i] / reps for k in methods},
                **{f"width_{k}": width[k][i] / reps for k in methods},
                **{f"zero_{k}": zero[k] / reps for k in methods},
                "d2_bias_binomial": float(np.mean(d2_bin)) - truth,
                "d2_bias_population": float(np.mean(d2_pop)) - truth,
            }
        )
    return rows


def grid(prompts=PROMPTS, seeds=SEEDS, shares=tuple(SHARES), hetero=BETA_HETERO):
    return list(itertools.product(prompts, seeds, shares, hetero))


def study(cells, methods, reps, B=1000, procs=1):
    jobs = [(c, methods, reps, B) for c in cells]
    if procs > 1:
        with Pool(min(procs, 2)) as pool:  # the machine is shared: 2 processes at most
            parts = pool.map(run_cell, jobs, chunksize=1)
    else:
        parts = [run_cell(j) for j in jobs]
    return [r for part in parts for r in part]


def required(row):
    """The issue's bar: >= 93% with >= 3 prompts and >= 10 expected events, >= 90% elsewhere."""
    return 0.93 if row["prompts"] >= 3 and row["expected_events"] >= 10 else 0.90


def summarise(rows, methods):
    out = {}
    for k in methods:
        if k in D2_METHODS:  # one row per cell (the counted classes share it)
            cells = [r for r in rows if not r["share"].endswith(":0.1")]
            cov = np.array([r[f"cov_{k}"] for r in cells])
            big = np.array([r["prompts"] >= 5 for r in cells])
            out[k] = {
                "cells": len(cov),
                "below_90": int((cov < 0.90).sum()),
                "below_93": int((cov < 0.93).sum()),
                "below_93_5plus": int((cov[big] < 0.93).sum()),  # issue 22's bar for D²
                "in_93_97": int(((cov >= 0.93) & (cov <= 0.97)).sum()),
                "above_98": int((cov > 0.98).sum()),
                "min": float(cov.min()),
                "mean_width": float(np.mean([r[f"width_{k}"] for r in cells])),
                **oracle_ratios(cells, k, "d2_oracle"),
            }
            continue
        cov = np.array([r[f"cov_{k}"] for r in rows])
        need = np.array([required(r) for r in rows])
        out[k] = {
            "cells": len(rows),
            "below_90": int((cov < 0.90).sum()),
            "in_93_97": int(((cov >= 0.93) & (cov <= 0.97)).sum()),
            "above_98": int((cov > 0.98).sum()),
            "below_required": int((cov < need).sum()),
            "min": float(cov.min()),
            "mean_width": float(np.mean([r[f"width_{k}"] for r in rows])),
            "zero_width_rate": float(np.mean([r[f"zero_{k}"] for r in rows])),
            **oracle_ratios(rows, k),
        }
    return out


def oracle_ratios(rows, k, oracle="oracle") -> dict:
    """Geometric mean of width / the oracle's width over cells with >= 5 prompts and with 3-4 (issue
    22's bars: <= 1.2 and <= 1.6); empty when the oracle was not run."""
    if f"width_{oracle}" not in rows[0] or k == oracle:
        return {}

    def gm(sub):
        r = [x[f"width_{k}"] / x[f"width_{oracle}"] for x in sub if x[f"width_{oracle}"] > 0]
        return float(np.exp(np.mean(np.log(r)))) if r else float("nan")

    return {
        "width_vs_oracle_5plus": gm([r for r in rows if r["prompts"] >= 5]),
        "width_vs_oracle_3_4": gm([r for r in rows if 3 <= r["prompts"] <= 4]),
    }


def table_text(rows, methods):
    head = (
        ["P", "m", "share", "hetero", "E[events]"]
        + [f"cov {k}" for k in methods]
        + [f"width {k}" for k in methods]
        + ["D2 bias bin", "D2 bias pop"]
    )
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        mark = {k: "" if r[f"cov_{k}"] >= required(r) else " !" for k in methods}
        lines.append(
            " | ".join(
                [str(r["prompts"]), str(r["seeds"]), r["share"], r["hetero"], f"{r['expected_events']:.1f}"]
                + [f"{r[f'cov_{k}']:.3f}{mark[k]}" for k in methods]
                + [f"{r[f'width_{k}']:.3f}" for k in methods]
                + [f"{r['d2_bias_binomial']:+.4f}", f"{r['d2_bias_population']:+.4f}"]
            )
        )
    return "\n".join(lines)


def by_prompts(rows, methods):
    """Markdown: per prompts-per-group, for each method, min coverage, cells under the bar, mean width."""
    lines = [
        "| prompts | " + " | ".join(f"{k}: min cov / under bar / width" for k in methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for P in sorted({r["prompts"] for r in rows}):
        sub = [r for r in rows if r["prompts"] == P]
        cells = [
            f"{min(r[f'cov_{k}'] for r in sub):.3f} / {sum(r[f'cov_{k}'] < required(r) for r in sub)}"
            f" of {len(sub)} / {np.mean([r[f'width_{k}'] for r in sub]):.3f}"
            for k in methods
        ]
        lines.append(f"| {P} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=500, help="datasets per cell")
    ap.add_argument("--methods", default="bootstrap,wilson_deff,cluster")
    ap.add_argument("--bootstrap", type=int, default=1000, help="B of the bootstrap method")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument(
        "--hetero",
        default=",".join(BETA_HETERO),
        help="comma list of: "
        + ", ".join(HETERO)
        + " (spike*: zero-inflated prompts, lnorm*: logit-normal prompts; neither is a Beta)",
    )
    ap.add_argument("--json", help="write the rows and the summary here")
    a = ap.parse_args(argv)
    methods = a.methods.split(",")
    t0 = time.perf_counter()
    rows = study(grid(hetero=tuple(a.hetero.split(","))), methods, a.reps, a.bootstrap, a.procs)
    print(table_text(rows, methods))
    summary = summarise(rows, methods)
    print(json.dumps(summary, indent=1))
    print(by_prompts(rows, methods))
    print(f"{len(rows)} cells x {a.reps} datasets in {time.perf_counter() - t0:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {"reps": a.reps, "bootstrap": a.bootstrap, "rows": rows, "summary": summary}, f, indent=1
            )


if __name__ == "__main__":
    main()
