"""Multi-group audits (issue 22, item 2): does pooling the between-prompt correlation ρ across groups
keep each group's coverage, and how much narrower does it make small groups' intervals?

Each simulated audit has G groups of P prompts × m images; group g's true share p_g is spread evenly
over SHARE_RANGE; prompt shares ~ Beta(mean p_g, correlation ρ_g), images ~ Binomial. ρ is common to
all groups (the case pooling is for) or "mixed": half the groups at MIXED[0], half at MIXED[1] (the
case the homogeneity check must catch). For every group the share interval is computed twice: with ρ
estimated from its own prompts (per-group, the log-uniform prior) and with the pooled prior
(betabinomial.pooled_log_priors), and coverage of p_g and width are averaged over groups and audits.

    python benchmarks/audit_pooling.py                  # the grid, 200 audits per cell
    python benchmarks/audit_pooling.py --reps 50 --groups 10
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from multiprocessing import Pool

import numpy as np

from pipeline.audit import betabinomial as BB

PROMPTS = (3, 5)
SEEDS = (8, 32)
RHOS = ("0.01", "0.05", "0.2", "mixed")
MIXED = (0.01, 0.3)  # half the groups nearly agree across prompts, half differ strongly
SHARE_RANGE = (0.1, 0.5)


def group_rhos(rho: str, G: int) -> np.ndarray:
    if rho == "mixed":
        return np.where(np.arange(G) % 2 == 0, MIXED[0], MIXED[1])
    return np.full(G, float(rho))


def simulate(rng, G, P, m, shares, rhos):
    """G tables of P prompts: counts of the class per prompt (all prompts have m images)."""
    kappa = (1 - rhos) / rhos
    s = rng.beta(shares[:, None] * kappa[:, None], (1 - shares[:, None]) * kappa[:, None], (G, P))
    return rng.binomial(m, s)


def run_cell(args):
    (P, m, rho), G, reps = args
    rng = np.random.default_rng([P, m, RHOS.index(rho), G])
    shares = np.linspace(*SHARE_RANGE, G)
    rhos = group_rhos(rho, G)
    mm = np.full(P, m)
    hit = {"own": np.zeros(G), "pooled": np.zeros(G)}
    width = {"own": np.zeros(G), "pooled": np.zeros(G)}
    fallback = np.zeros(G)
    for _ in range(reps):
        counts = simulate(rng, G, P, m, shares, rhos)
        priors = BB.pooled_log_priors({g: BB.rho_loglik(counts[g], mm) for g in range(G)})
        for g in range(G):
            lp, _ = priors[g]
            fallback[g] += lp is None
            for k, prior in (("own", None), ("pooled", lp)):
                lo, hi = BB.betabinomial_interval(counts[g], mm, log_prior=prior)
                hit[k][g] += lo <= shares[g] <= hi
                width[k][g] += hi - lo
    row = {"prompts": P, "seeds": m, "rho": rho, "groups": G, "reps": reps}
    for k in hit:
        cov = hit[k] / reps
        row[f"cov_{k}"] = float(cov.mean())
        row[f"min_group_cov_{k}"] = float(cov.min())
        row[f"width_{k}"] = float((width[k] / reps).mean())
    if rho == "mixed":  # coverage of the strongly varying half, where a wrong pooled ρ would hurt
        hi_rho = rhos == MIXED[1]
        for k in hit:
            row[f"cov_high_rho_{k}"] = float((hit[k][hi_rho] / reps).mean())
    row["width_ratio"] = row["width_pooled"] / row["width_own"]
    row["fallback_rate"] = float(fallback.mean() / reps)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=200, help="simulated audits per cell")
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    jobs = [(c, a.groups, a.reps) for c in itertools.product(PROMPTS, SEEDS, RHOS)]
    with Pool(min(a.procs, 2)) as pool:  # the machine is shared: 2 processes at most
        rows = pool.map(run_cell, jobs, chunksize=1)
    print(
        "| P | m | ρ | coverage own / pooled | min group own / pooled | width own / pooled | ratio "
        "| fallback |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['prompts']} | {r['seeds']} | {r['rho']} | {r['cov_own']:.3f} / {r['cov_pooled']:.3f} | "
            f"{r['min_group_cov_own']:.3f} / {r['min_group_cov_pooled']:.3f} | "
            f"{r['width_own']:.3f} / {r['width_pooled']:.3f} | {r['width_ratio']:.2f} | "
            f"{r['fallback_rate']:.2f} |"
        )
    print(f"{len(rows)} cells x {a.reps} audits x {a.groups} groups in {time.perf_counter() - t0:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"reps": a.reps, "groups": a.groups, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
