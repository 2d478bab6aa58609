"""Coverage of `sdgen audit --compare`'s share-difference intervals (issue 22, item 3).

Two runs over the same P prompts × m seeds (two models, or before/after an intervention): prompt j has
share s_Aj in run A and s_Bj in run B, each Beta around the run's population share with the given SD,
tied by a Gaussian copula with correlation COPULA (a prompt that draws many of the class in A tends to
in B too). Seeds ~ Binomial. The estimand is the population difference μ_B − μ_A. Methods:
    bootstrap    the compare interval before issue 22: paired two-stage bootstrap (prompts, then seeds
                 with shrinkage), percentile, B draws (bootstrap.bootstrap_tables, as tables.compare did)
    linearised   a design-based alternative (linearised_interval below): the paired difference of
                 ratio estimators, its variance from per-prompt linearised residuals, t on P − 1 df
    mover        the compare interval now (pipeline/audit/differences.py): MOVER over the two runs'
                 beta-binomial share intervals, paired through a lower bound on the prompts' correlation
    oracle       Wald with the true SD of the estimate (measured over the cell's own datasets): the
                 width no method that estimates its variance can reach
and for the difference of D² (against the uniform target; the population D² is 2(μ − ½)² per run):
    d2_bootstrap the D² compare interval before: paired bootstrap of the binomially debiased D²,
                 percentile (as tables.compare did)
    d2_mover     the D² compare interval now (differences.d2_diff_interval): MOVER over the runs' D²
                 boxes around their population D², paired through the leave-one-prompt-out correlation
    d2_oracle    Wald around the difference of population D² with its true SD (over the cell's datasets)

    python benchmarks/compare_coverage.py                 # the grid, 400 datasets per cell
    python benchmarks/compare_coverage.py --reps 100 --bootstrap 500
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
from pipeline.audit import stats as S
from pipeline.audit.differences import d2_diff_interval, diff_interval
from pipeline.audit.intervals import population_d2

PROMPTS = (3, 5, 10, 30)
SEEDS = (8, 32)
SHARES = {"0.3→0.3": (0.3, 0.3), "0.3→0.45": (0.3, 0.45), "0.05→0.1": (0.05, 0.1)}
HETERO = {"none": 0.0, "sd0.1": 0.1, "sd0.25": 0.25}
METHODS = ("bootstrap", "linearised", "mover", "oracle", "d2_bootstrap", "d2_mover", "d2_oracle")
T = np.array([0.5, 0.5])  # the D² target
COPULA = 0.8  # correlation of a prompt's latent share between the two runs
MIN_CONC = 0.5  # as benchmarks/audit_coverage.py: an SD the Beta cannot reach is capped


def prompt_shares(rng, P, pa, pb, sd):
    if sd == 0:
        return np.full(P, pa), np.full(P, pb)
    z = rng.multivariate_normal([0, 0], [[1, COPULA], [COPULA, 1]], P)
    u = stats.norm.cdf(z)
    out = []
    for p, col in ((pa, 0), (pb, 1)):
        a0 = max(MIN_CONC, p * (1 - p) / sd**2 - 1)
        out.append(stats.beta.ppf(u[:, col], p * a0, (1 - p) * a0))
    return out[0], out[1]


def linearised_interval(ta, tb, paired, level=0.95):
    """Interval for B − A of every class share (population of prompts), by linearisation.

    Each run's share is a ratio estimator p̂ = Σ_j c_j / n; prompt j's linearised residual is
    e_j = (c_j − p̂ m_j) / n, and Var(p̂) ≈ P/(P−1) Σ_j e_j² (the cluster variance). Paired runs (the
    same prompts, rows aligned): Var(p̂_B − p̂_A) ≈ P/(P−1) Σ_j (e_Bj − e_Aj)², t on P − 1 df, so the
    prompt-to-prompt variation both runs share cancels. Unpaired: v_A + v_B, Welch–Satterthwaite df.
    Floor: the two runs' seeds are independent, so the variance is at least the binomial one of each
    run (at (x + ½)/(n + 1), never zero: the interval is never zero-width). Returns (low, high, p-value)
    arrays over classes (the p-value of "no difference" from the same t).
    """
    ta, tb = np.asarray(ta, float), np.asarray(tb, float)
    na, nb = ta.sum(), tb.sum()
    pa, pb = ta.sum(0) / na, tb.sum(0) / nb
    ea = (ta - ta.sum(1, keepdims=True) * pa) / na
    eb = (tb - tb.sum(1, keepdims=True) * pb) / nb

    def clu(e):
        P = e.shape[0]
        return P / (P - 1) * (e**2).sum(0) if P > 1 else np.zeros(e.shape[1])

    if paired:
        P = ta.shape[0]
        var, df = clu(eb - ea), max(P - 1, 1)
    else:
        va, vb = clu(ea), clu(eb)
        var = va + vb
        den = va**2 / max(ta.shape[0] - 1, 1) + vb**2 / max(tb.shape[0] - 1, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            df = np.where(den > 0, var**2 / np.where(den > 0, den, 1), max(ta.shape[0] + tb.shape[0] - 2, 1))
    sa, sb = (ta.sum(0) + 0.5) / (na + 1), (tb.sum(0) + 0.5) / (nb + 1)
    var = np.maximum(var, sa * (1 - sa) / na + sb * (1 - sb) / nb)
    d, se = pb - pa, np.sqrt(var)
    tq = stats.t.ppf(1 - (1 - level) / 2, df)
    return d - tq * se, d + tq * se, 2 * stats.t.sf(np.abs(d) / se, df)


def run_cell(args):
    (P, m, share, het), reps, B = args
    pa, pb = SHARES[share]
    rng = np.random.default_rng([P, m, list(SHARES).index(share), list(HETERO).index(het)])
    truth = pb - pa
    d2_truth = 2 * (pb - 0.5) ** 2 - 2 * (pa - 0.5) ** 2
    est, d2_est = [], []
    res = {k: [] for k in METHODS if "oracle" not in k}
    for _ in range(reps):
        sa, sb = prompt_shares(rng, P, pa, pb, HETERO[het])
        ca, cb = rng.binomial(m, sa), rng.binomial(m, sb)
        ta, tb = np.stack([ca, m - ca], 1), np.stack([cb, m - cb], 1)
        est.append(cb.sum() / (P * m) - ca.sum() / (P * m))
        d2_est.append(population_d2(tb, T) - population_d2(ta, T))
        ba, bb = BS.bootstrap_tables(rng, [ta, tb], B, paired=True)
        d = bb[:, 0] / bb.sum(1) - ba[:, 0] / ba.sum(1)
        res["bootstrap"].append(tuple(float(x) for x in BS.percentile_ci(d)))
        dd = S.debiased_d2(bb / bb.sum(1, keepdims=True), T, bb.sum(1)) - S.debiased_d2(
            ba / ba.sum(1, keepdims=True), T, ba.sum(1)
        )
        res["d2_bootstrap"].append(tuple(float(x) for x in BS.percentile_ci(dd)))
        lo, hi, _ = linearised_interval(ta, tb, paired=True)
        res["linearised"].append((lo[0], hi[0]))
        lo, hi, _ = diff_interval(ta, tb, paired=True)
        res["mover"].append((lo[0], hi[0]))
        res["d2_mover"].append(d2_diff_interval(ta, tb, T, paired=True)[1:3])
    z = stats.norm.ppf(0.975)
    for k, e in (("oracle", est), ("d2_oracle", d2_est)):
        sd = float(np.std(e, ddof=1))
        res[k] = [(x - z * sd, x + z * sd) for x in e]
    row = {"prompts": P, "seeds": m, "share": share, "hetero": het, "truth": truth, "d2_truth": d2_truth}
    for k, v in res.items():
        v, tr = np.asarray(v, float), d2_truth if k.startswith("d2") else truth
        row[f"cov_{k}"] = float(np.mean((v[:, 0] <= tr + 1e-12) & (tr - 1e-12 <= v[:, 1])))
        row[f"width_{k}"] = float(np.mean(v[:, 1] - v[:, 0]))
    return row


def summarise(rows):
    out = {}
    for k in METHODS:
        big = [r for r in rows if r["prompts"] >= 5]
        cov = np.array([r[f"cov_{k}"] for r in big])
        out[k] = {
            "cells_5plus": len(big),
            "below_93_5plus": int((cov < 0.93).sum()),
            "min_5plus": float(cov.min()),
            "min_3": float(min(r[f"cov_{k}"] for r in rows if r["prompts"] == 3)),
            "mean_width": float(np.mean([r[f"width_{k}"] for r in rows])),
        }
        oracle = "d2_oracle" if k.startswith("d2") else "oracle"
        if k != oracle:
            out[k]["width_vs_oracle_5plus"] = float(
                np.exp(np.mean([np.log(r[f"width_{k}"] / r[f"width_{oracle}"]) for r in big]))
            )
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    jobs = [(c, a.reps, a.bootstrap) for c in itertools.product(PROMPTS, SEEDS, SHARES, HETERO)]
    with Pool(min(a.procs, 2)) as pool:
        rows = pool.map(run_cell, jobs, chunksize=1)
    print("| P | m | shares | hetero | cov " + " / ".join(METHODS) + " | width " + " / ".join(METHODS) + " |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['prompts']} | {r['seeds']} | {r['share']} | {r['hetero']} | "
            + " / ".join(f"{r[f'cov_{k}']:.3f}" for k in METHODS)
            + " | "
            + " / ".join(f"{r[f'width_{k}']:.3f}" for k in METHODS)
            + " |"
        )
    summary = summarise(rows)
    print(json.dumps(summary, indent=1))
    print(f"{len(rows)} cells x {a.reps} datasets in {time.perf_counter() - t0:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {"reps": a.reps, "bootstrap": a.bootstrap, "rows": rows, "summary": summary}, f, indent=1
            )


if __name__ == "__main__":
    main()
