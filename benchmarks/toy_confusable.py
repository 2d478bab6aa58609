"""Known answer for `sdgen audit --calibrate` on the toy world (issue 13 item 3b): a colour probe
whose class prompts are deliberately confusable (pipeline/data/attributes/toyworld_confusable.yaml)
errs by shape; labelling a stratified subset from pixels and calibrating recovers the shares that
pixel analysis measures on every image, where the raw shares miss them.

    python -m benchmarks.toy_confusable [--out runs/toy_confusable] [--ipp 30] [--steps 12] [-n 240]

Steps: generate "a {shape}" prompts (4 wordings x 3 shapes, --ipp images each, guidance 1, so the
colours follow the world's skews) with the shipped toy model, unless --out already holds a finished
output (then it is reused); `sdgen label --from-pixels` on -n images stratified by shape x predicted
colour; `sdgen audit --calibrate`; the pixel-measured share of every colour per shape over all ok
images (pipeline/toyworld/analysis.py). Prints raw vs corrected vs pixel truth per shape and colour
with 95% CIs and whether each CI covers the truth; saves benchmarks/results/toy_confusable.json.
"""

from __future__ import annotations

import argparse
import os

import pyarrow as pa
import pyarrow.parquet as pq

SET = "toyworld_confusable"  # the shipped confusable attribute set
WORDINGS = ["a {}", "a photo of a {}", "an image of a {}", "a picture of a {}"]
SHAPES = ["circle", "square", "triangle"]


def generate(out: str, ipp: int, steps: int) -> bool:
    """The toy output at ``out`` (made unless it already finished); True when it was generated now."""
    if os.path.exists(os.path.join(out, "_SUCCESS")):
        return False
    import pipeline

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    src = f"{out.rstrip('/')}.prompts.parquet"
    rows = [(w.format(s), s) for s in SHAPES for w in WORDINGS]
    pq.write_table(pa.table({"prompt": [r[0] for r in rows], "shape": [r[1] for r in rows]}), src)
    # guidance 1: the toy model follows the world's colour skews; steps 12 keeps a CPU run near 30 s
    pipeline.run(
        {
            "input": src,
            "output": out,
            "model": "toy",
            "generation": {"images_per_prompt": ipp, "steps": steps, "guidance_scale": 1.0, "batch_size": 60},
            "scoring": {"clip_model": "toy"},
            "ray": {"executor": "inline"},
        },
        progress=False,
    )
    return True


def pixel_truth(url, group_by: str, classes) -> dict:
    """{group: {"n": images with a pixel colour among ``classes``, class: share}} over all ok rows."""
    import numpy as np

    from pipeline.audit.data import iter_images, open_source, read_rows
    from pipeline.audit.labelling import pixel_labels

    src = open_source(url)
    df = read_rows(src)
    colours = [c for _, pngs in iter_images(src) for c in pixel_labels(pngs, classes)]
    df["pixel"] = colours
    ok = df[(df["status"] == "ok") & df["pixel"].notna()]
    out = {}
    for g, sub in ok.groupby(group_by):
        out[str(g)] = {"n": len(sub), **{c: float(np.mean(sub["pixel"] == c)) for c in classes}}
    return out


def compare(entry: dict, truth: dict) -> list[dict]:
    """One row per (group, class): pixel truth, raw and corrected shares with CIs, and coverage."""
    cal = entry["calibration"]["groups"]
    rows = []
    for g, m in entry["groups"].items():
        for c in entry["classes"]:
            t, cg = truth[g][c], cal[g]
            raw = (m["proportions"][c], m["ci_low"][c], m["ci_high"][c])
            cor = (cg["proportions_corrected"][c], cg["ci_low_corrected"][c], cg["ci_high_corrected"][c])
            rows.append(
                {
                    "group": g,
                    "class": c,
                    "truth": t,
                    "raw": raw,
                    "corrected": cor,
                    "raw_covers": raw[1] - 1e-9 <= t <= raw[2] + 1e-9,
                    "corrected_covers": cor[1] - 1e-9 <= t <= cor[2] + 1e-9,
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table of compare()'s rows."""
    fmt = lambda s: f"{s[0]:.2f} [{s[1]:.2f}, {s[2]:.2f}]"  # noqa: E731
    lines = [
        "| shape | colour | pixel truth | raw [95% CI] | covers | corrected [95% CI] | covers |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['group']} | {r['class']} | {r['truth']:.2f} | {fmt(r['raw'])} | "
            f"{'yes' if r['raw_covers'] else '**no**'} | {fmt(r['corrected'])} | "
            f"{'yes' if r['corrected_covers'] else '**no**'} |"
        )
    return "\n".join(lines)


def run(out: str, n: int, bootstrap: int = 400, seed: int = 0, clip_model=None) -> dict:
    """Label ``n`` images from pixels, audit with --calibrate, compare with the pixel truth."""
    from pipeline.audit.runner import run_audit
    from pipeline.audit.spec import AuditSpec, ProbeSpec
    from pipeline.pages.label_sheet import make_sheet

    probe = ProbeSpec(attribute_set=SET, clip_model=clip_model)
    sheet = os.path.join(out, "audit", "label_sheet")
    lab = make_sheet(out, "colour", n, sheet, ["shape"], seed, from_pixels=True, **probe.kwargs())
    spec = AuditSpec(
        ["colour"],
        "shape",
        bootstrap=bootstrap,
        seed=seed,
        calibration=lab["csv"],
        diversity=False,
        probe=probe,
    )
    res = run_audit(out, spec)
    entry = res["metrics"]["attributes"]["colour"]
    rows = compare(entry, pixel_truth(out, "shape", entry["classes"]))
    cal = entry["calibration"]
    return {
        "labels": cal["labels"],
        "strata": lab["strata"],
        "rows": rows,
        "warnings": cal["warnings"],
        "accuracy": {c: a["accuracy"] for c, a in cal["accuracy"].items()},
        "condition_number": cal["condition_number"],
        "confusion": {g: m["confusion"] for g, m in cal["groups"].items()},
        "own_confusion_rows": {g: m["own_confusion_rows"] for g, m in cal["groups"].items()},
    }


def main(argv=None):
    from benchmarks.common import report

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/toy_confusable", help="toy output (reused when finished)")
    ap.add_argument("--ipp", type=int, default=30, help="images per prompt (12 prompts)")
    ap.add_argument("--steps", type=int, default=12, help="denoising steps")
    ap.add_argument(
        "-n", type=int, default=240, help="images to label from pixels (240 of 360: 20 per stratum)"
    )
    ap.add_argument("--bootstrap", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0, help="label sample and bootstrap seed")
    a = ap.parse_args(argv)
    made = generate(a.out, a.ipp, a.steps)
    res = run(a.out, a.n, a.bootstrap, a.seed)
    print(table(res["rows"]))
    for w in res["warnings"]:
        print(f"warning: {w}")
    rows = res["rows"]
    print(
        f"raw CIs covering the pixel truth: {sum(r['raw_covers'] for r in rows)}/{len(rows)}; corrected: "
        f"{sum(r['corrected_covers'] for r in rows)}/{len(rows)}"
    )
    report(
        "toy_confusable",
        {
            "out": a.out,
            "generated": made,
            "ipp": a.ipp,
            "steps": a.steps,
            "n": a.n,
            "bootstrap": a.bootstrap,
            "seed": a.seed,
            **res,
        },
    )


if __name__ == "__main__":
    main()
