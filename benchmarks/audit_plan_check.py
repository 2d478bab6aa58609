"""Does `sdgen audit-plan` keep its promise? (issue 22, item 4)

For a grid of assumptions, plan a design (pipeline/audit/planning.py: closed form, then simulated audits
with seed 0), then simulate 500 NEW audits of that design (another seed) and count how often the
audit's own interval meets the target: a half-width plan must reach its half-width in >= 90% of them,
a disparity plan must detect the stated difference in >= 80% (interval at level 1 - q/G excludes the
reference share). Prints one row per cell and writes benchmarks/results/audit_plan_check.json.

    python benchmarks/audit_plan_check.py            # the grid below, ~5 min on 2 cores
"""

from __future__ import annotations

import itertools
import json
import os
import time

import numpy as np

from pipeline.audit import planning as PL

CHECK_REPS, CHECK_SEED = 500, 1001  # a stream the plan never saw (it uses seeds 0 and 1)
HALF = list(itertools.product((0.1, 0.3, 0.5), (0.02, 0.1), (0.05, 0.1), (8, 32)))  # p, rho, target, m
DISP = list(itertools.product((0.1, 0.2), (0.02, 0.1), (1, 10), (8, 32)))  # delta, rho, groups, m
P_REF, Q = 0.5, 0.05


def half_rows():
    for p, rho, target, m in HALF:
        (d,) = PL.plan_half_width(p, rho, target, ms=(m,))
        ci = PL._class0_intervals(p, rho, d.prompts, m, 0.95, CHECK_REPS, CHECK_SEED)
        reach = float(np.mean((ci[:, 1] - ci[:, 0]) / 2 <= target))
        yield {
            "kind": "half-width",
            "p": p,
            "rho": rho,
            "target": target,
            "m": m,
            "prompts": d.prompts,
            "images": d.images,
            "planned": d.simulated,
            "check": reach,
            "ok": reach >= PL.REACH,
        }


def disparity_rows():
    for delta, rho, groups, m in DISP:
        (d,) = PL.plan_disparity(P_REF, delta, rho, groups, Q, ms=(m,))
        power = PL.detect_rate(P_REF, delta, rho, d.prompts, m, 1 - Q / groups, CHECK_REPS, CHECK_SEED)
        yield {
            "kind": "disparity",
            "p": P_REF,
            "delta": delta,
            "rho": rho,
            "groups": groups,
            "m": m,
            "prompts": d.prompts,
            "images": d.images,
            "planned": d.simulated,
            "check": power,
            "ok": power >= PL.POWER,
        }


def main() -> None:
    t0, rows = time.time(), []
    for r in itertools.chain(half_rows(), disparity_rows()):
        rows.append(r)
        what = f"target {r['target']}" if r["kind"] == "half-width" else f"delta {r['delta']} G={r['groups']}"
        print(
            f"{r['kind']:10} p={r['p']} rho={r['rho']} {what:14} m={r['m']:2}: P={r['prompts']:3} "
            f"images/group={r['images']:5}  planned {r['planned']:.3f}  new audits {r['check']:.3f}"
            f"{'' if r['ok'] else '  BELOW'}",
            flush=True,
        )
    bad = [r for r in rows if not r["ok"]]
    print(
        f"{len(rows) - len(bad)}/{len(rows)} planned designs keep their promise in {CHECK_REPS} new audits "
        f"({time.time() - t0:.0f} s)"
    )
    out = os.path.join(os.path.dirname(__file__), "results", "audit_plan_check.json")
    with open(out, "w") as f:
        json.dump({"check_reps": CHECK_REPS, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
