"""Audit experiments on the toy world, whose colour skews are known (pipeline/data/toyworld.yaml):

1. guidance amplification: colour by shape of neutral prompts ("a {shape}" and its paraphrases) at
   guidance 1, 2, 4 and 7.5, audited against the true skews (`--target pipeline/data/toyworld.yaml`);
2. mitigation: the same neutral prompts split over four colour variants (equal weights) on the same
   seeds, compared with the unmitigated run (`sdgen audit --compare`).

    python -m benchmarks.toy_audit [--ipp 25] [--out runs/toy_audit]

Prints markdown tables (the ones in docs/AUDIT_GUIDE.md) and saves benchmarks/results/toy_audit.json.
"""

from __future__ import annotations

import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import report

IPP = int(sys.argv[sys.argv.index("--ipp") + 1]) if "--ipp" in sys.argv else 25
OUT = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else "runs/toy_audit"
WORDINGS = ["a {}", "a photo of a {}", "an image of a {}", "a picture of a {}"]
SHAPES = ["circle", "square", "triangle"]
TRUTH = "pipeline/data/toyworld.yaml"
VARIANTS = [
    {"name": c, "template": f"a {c} {{prompt}}", "weight": 1} for c in ("red", "green", "blue", "yellow")
]


def prompts_file() -> str:
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "neutral.parquet")
    rows = [(w.format(s), s) for s in SHAPES for w in WORDINGS]
    pq.write_table(pa.table({"prompt": [r[0] for r in rows], "shape": [r[1] for r in rows]}), path)
    return path


def job(src: str, name: str, guidance: float, mitigate: bool = False) -> str:
    import pipeline

    out = os.path.join(OUT, name)
    cfg = {
        "input": src,
        "output": out,
        "model": "toy",
        "generation": {"images_per_prompt": IPP, "steps": 20, "guidance_scale": guidance, "batch_size": 50},
        "scoring": {"clip_model": "toy"},
        "ray": {"executor": "inline", "num_cpus_per_worker": 2},
    }
    if mitigate:
        cfg["mitigation"] = {"enabled": True, "variants": VARIANTS}
    pipeline.run(cfg, progress=False)
    return out


def shares(metrics: dict) -> dict:
    groups = metrics["attributes"]["colour"]["groups"]
    return {
        g: {
            "n": m["n"],
            "shares": m["proportions"],
            "ci_low": m["ci_low"],
            "ci_high": m["ci_high"],
            "d2": m["d2"],
            "d2_ci": m["d2_ci"],
            "p": m["p_value"],
            "target": m.get("target"),
        }
        for g, m in groups.items()
    }


def main():
    from pipeline.audit.compare import run_compare
    from pipeline.audit.runner import run_audit
    from pipeline.audit.spec import AuditSpec

    src, res = prompts_file(), {"images_per_shape": IPP * len(WORDINGS), "guidance": {}}
    for g in (1.0, 2.0, 4.0, 7.5):
        out = job(src, f"g{g}", g)
        res["guidance"][g] = shares(run_audit(out, AuditSpec(["colour"], "shape", target=TRUTH))["metrics"])
    after = job(src, "mitigated_g1.0", 1.0, mitigate=True)
    res["mitigated"] = shares(run_audit(after, AuditSpec(["colour"], "shape"))["metrics"])
    before = shares(run_audit(os.path.join(OUT, "g1.0"), AuditSpec(["colour"], "shape"))["metrics"])
    res["before_uniform_target"] = before
    cmp = run_compare(os.path.join(OUT, "g1.0"), after, AuditSpec(["colour"], "shape"))["table"]
    res["compare_d2"] = cmp[cmp["quantity"] == "d2"].drop(columns=["note"]).to_dict("records")
    # paired (same prompts, same seeds): what guidance 7.5 changes against guidance 1, with its CI
    amp = run_compare(os.path.join(OUT, "g1.0"), os.path.join(OUT, "g7.5"), AuditSpec(["colour"], "shape"))[
        "table"
    ]
    res["compare_guidance"] = amp.drop(columns=["note"]).to_dict("records")
    print_tables(res)
    report("toy_audit", res)


def _ci(v, ci):
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if v is not None else "n/a"


def _share(m, cls):
    return _ci(m["shares"][cls], (m["ci_low"][cls], m["ci_high"][cls]))


def print_tables(res: dict) -> None:
    print(
        "| guidance | circle red share [CI] | circle D² vs truth [CI] | square D² vs truth [CI] | "
        "triangle green share [CI] | triangle D² vs truth [CI] |"
    )
    print("|---|---|---|---|---|---|")
    for g, m in res["guidance"].items():
        c, s, t = m["circle"], m["square"], m["triangle"]
        print(
            f"| {g} | {_share(c, 'red')} | {_ci(c['d2'], c['d2_ci'])} | {_ci(s['d2'], s['d2_ci'])} | "
            f"{_share(t, 'green')} | {_ci(t['d2'], t['d2_ci'])} |"
        )
    print("\n| group | D² vs uniform, before [CI] | after (mitigated) [CI] | diff [CI] |")
    print("|---|---|---|---|")
    for row in res["compare_d2"]:
        b, a = res["before_uniform_target"][row["group"]], res["mitigated"][row["group"]]
        print(
            f"| {row['group']} | {_ci(b['d2'], b['d2_ci'])} | {_ci(a['d2'], a['d2_ci'])} | "
            f"{_ci(row['diff'], (row['ci_low'], row['ci_high']))} |"
        )
    print("\n| group | quantity | guidance 1 | guidance 7.5 | diff [CI] | q |")
    print("|---|---|---|---|---|---|")
    majority = {("circle", "red"), ("triangle", "green")}  # the trained skews (JSON holds every class)
    for row in res.get("compare_guidance", []):
        if row["quantity"] != "d2" and (row["group"], row["class"]) not in majority:
            continue
        what = row["quantity"] if row["quantity"] == "d2" else f"{row['class']} share"
        print(
            f"| {row['group']} | {what} | {row['a']:.3f} | {row['b']:.3f} | "
            f"{_ci(row['diff'], (row['ci_low'], row['ci_high']))} | {row['q_value']:.3g} |"
        )


if __name__ == "__main__":
    main()
