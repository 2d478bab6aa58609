"""Quality-bar numbers of the shipped toy models: ``python -m pipeline.toyworld.training.evaluate``.

1. "a {colour} {shape}" (12 prompts): dominant foreground colour (pixel analysis) and shape
   (geometric heuristic, and toy CLIP zero-shot) match the prompt.
2. Toy CLIP: zero-shot colour/shape accuracy on held-out world images, x-mark separation, and
   CLIPScore of the matching caption vs a mismatched one on the generated images of 1.
3. "a {shape}" (3 prompts): colour shares vs the world's skews at guidance 1 (with Wilson 95% CIs),
   and at higher guidance, where classifier-free guidance amplifies the majority colour.
Every sample uses its own CPU generator seeded (EVAL_SEED + index): the numbers are reproducible.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from ..analysis import colour_shares, dominant_colour, shape_of
from ..world import COLOURS, SHAPES, SKEWS, X_COLOUR, X_NAME, phrase

EVAL_SEED = 10_000  # generation seeds: EVAL_SEED + sample index (distinct per block below)


def generate(pipe, prompts: list[str], steps: int, guidance: float, seed: int, batch: int = 64) -> np.ndarray:
    """uint8 (n, 64, 64, 3) images for ``prompts`` (one per entry), sample i seeded ``seed + i``."""
    import torch

    out = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        gens = [torch.Generator("cpu").manual_seed(seed + i + k) for k in range(len(chunk))]
        with torch.no_grad():
            img = pipe(
                chunk,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=gens,
                height=64,
                width=64,
                output_type="np",
            ).images
        out.append((np.asarray(img) * 255).round().clip(0, 255).astype(np.uint8))
    return np.concatenate(out)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p, d = k / n, 1 + z * z / n
    c, h = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (round(c - h, 4), round(c + h, 4))


def eval_full_prompts(pipe, probe, n: int, steps: int, guidance: float) -> tuple[dict, np.ndarray]:
    """Bar 1 (+ the generated images for bar 2's CLIPScore check)."""
    from ..probes import SHAPE_PROMPTS

    combos = [(s, c) for s in SHAPES for c in COLOURS]
    prompts = [phrase(s, c) for s, c in combos for _ in range(n)]
    imgs = generate(pipe, prompts, steps, guidance, EVAL_SEED)
    want_s = np.array([s for s, _ in combos for _ in range(n)])
    want_c = np.array([c for _, c in combos for _ in range(n)])
    got_c, got_s = np.array(dominant_colour(imgs), object), np.array(shape_of(imgs), object)
    clip_s = np.array(probe.classify(imgs, SHAPE_PROMPTS))
    per = {
        phrase(s, c): {"colour": float((got_c[sel] == c).mean()), "shape": float((got_s[sel] == s).mean())}
        for s, c in combos
        for sel in [(want_s == s) & (want_c == c)]
    }
    rep = {
        "n_per_prompt": n,
        "n_images": len(prompts),
        "steps": steps,
        "guidance_scale": guidance,
        "colour_match": float((got_c == want_c).mean()),
        "shape_match_heuristic": float((got_s == want_s).mean()),
        "shape_match_toy_clip": float((clip_s == want_s).mean()),
        "no_shape_found": float(np.mean([g is None for g in got_s])),
        "per_prompt": per,
    }
    return rep, imgs


def eval_clipscore(probe, imgs: np.ndarray, n: int) -> dict:
    """Bar 2b: matching caption's CLIPScore vs a random mismatched one and vs all 11 mismatched."""
    from ..probes import clip_score

    combos = [(s, c) for s in SHAPES for c in COLOURS]
    caps = [phrase(s, c) for s, c in combos]
    cs = clip_score(probe.cosine(imgs, caps))
    own = np.repeat(np.arange(len(caps)), n)
    rng = np.random.default_rng(0)
    other = (own + rng.integers(1, len(caps), len(own))) % len(caps)
    rows = np.arange(len(own))
    return {
        "n_images": len(own),
        "match_gt_random_mismatch": float((cs[rows, own] > cs[rows, other]).mean()),
        "match_is_best_of_12": float((cs.argmax(1) == own).mean()),
        "mean_clipscore_match": float(cs[rows, own].mean()),
        "mean_clipscore_mismatch": float(cs[rows, other].mean()),
    }


def eval_skews(pipe, n: int, steps: int, guidance: float) -> dict:
    """Bar 3: colour shares of "a {shape}" images vs SKEWS, with Wilson CIs."""
    out = {"n_per_shape": n, "steps": steps, "guidance_scale": guidance, "shapes": {}}
    worst = 0.0
    for j, s in enumerate(SHAPES):
        imgs = generate(pipe, [phrase(shape=s)] * n, steps, guidance, EVAL_SEED + 100_000 * (j + 1))
        cols = dominant_colour(imgs)
        shares = colour_shares(cols)
        valid = sum(c is not None for c in cols)
        dev = {c: round(shares[c] - SKEWS[s][c], 4) for c in COLOURS}
        worst = max(worst, max(abs(v) for v in dev.values()))
        out["shapes"][s] = {
            "shares": {k: round(v, 4) for k, v in shares.items()},
            "target": SKEWS[s],
            "deviation": dev,
            "n_measured": valid,
            "ci95": {c: wilson(round(shares[c] * valid), valid) for c in COLOURS},
            "shape_match": float(np.mean([g == s for g in shape_of(imgs)])),
        }
    out["max_abs_deviation"] = round(worst, 4)
    return out


def eval_x_mark(pipe, n: int, steps: int, guidance: float) -> dict:
    imgs = generate(pipe, [phrase(shape=X_NAME)] * n, steps, guidance, EVAL_SEED + 900_000)
    return {
        "n": n,
        "black": float(np.mean([c == X_COLOUR for c in dominant_colour(imgs)])),
        "x_shape": float(np.mean([g == X_NAME for g in shape_of(imgs)])),
    }


def run(n_full: int, n_skew: int, steps: int, guidances: list[float], skew_guidances: list[float]) -> dict:
    """All quality-bar numbers on the shipped weights (bar 1 at each of ``guidances``; CLIPScore on the
    first)."""
    from .. import load_toy_clip, load_toy_pipeline
    from ..probes import ToyClipProbe, zero_shot_report
    from ..world import sample_world
    from .common import EVAL_WORLD_SEED

    t0 = time.time()
    pipe = load_toy_pipeline()
    model, tok = load_toy_clip()
    probe = ToyClipProbe(model, tok)
    held = sample_world((EVAL_WORLD_SEED, 0), 1000)
    rep = {"clip_zero_shot_held_out": zero_shot_report(probe, held.images, held.shapes, held.colours)}
    rep["full_prompts"], imgs = eval_full_prompts(pipe, probe, n_full, steps, guidances[0])
    rep["clipscore_generated"] = eval_clipscore(probe, imgs, n_full)
    rep["full_prompts_other_guidance"] = [
        eval_full_prompts(pipe, probe, n_full, steps, g)[0] for g in guidances[1:]
    ]
    rep["x_mark"] = eval_x_mark(pipe, max(16, n_full), steps, guidances[0])
    rep["skews"] = [eval_skews(pipe, n_skew, steps, g) for g in skew_guidances]
    rep["wall_s"] = round(time.time() - t0, 1)
    return rep


def summary(rep: dict) -> str:
    """Human-readable lines of the headline numbers."""
    z, cs = rep["clip_zero_shot_held_out"], rep["clipscore_generated"]
    lines = [
        f"'a {{colour}} {{shape}}' x{f['n_per_prompt']} each ({f['n_images']} images, {f['steps']} steps, "
        f"guidance {f['guidance_scale']}): colour {f['colour_match']:.1%}, shape (heuristic) "
        f"{f['shape_match_heuristic']:.1%}, shape (toy CLIP) {f['shape_match_toy_clip']:.1%}, "
        f"worst prompt colour {min(v['colour'] for v in f['per_prompt'].values()):.0%} "
        f"shape {min(v['shape'] for v in f['per_prompt'].values()):.0%}"
        for f in [rep["full_prompts"], *rep["full_prompts_other_guidance"]]
    ] + [
        f"toy CLIP zero-shot on {z['n_images']} held-out images: colour {z['colour_acc']:.1%}, shape "
        f"{z['shape_acc']:.1%}, x-mark recall {z['x_recall']:.1%}, "
        f"x-mark false positives {z['x_false_positive']:.1%}",
        f"CLIPScore on {cs['n_images']} generated images: "
        f"match > random mismatch {cs['match_gt_random_mismatch']:.1%}, "
        f"match best of 12 {cs['match_is_best_of_12']:.1%} (mean {cs['mean_clipscore_match']:.3f} vs "
        f"{cs['mean_clipscore_mismatch']:.3f})",
        f"'an x mark' x{rep['x_mark']['n']}: black {rep['x_mark']['black']:.1%}, "
        f"x shape {rep['x_mark']['x_shape']:.1%}",
    ]
    for sk in rep["skews"]:
        lines.append(
            f"'a {{shape}}' x{sk['n_per_shape']} at guidance {sk['guidance_scale']}: "
            f"max |share - skew| = {sk['max_abs_deviation']:.3f}"
        )
        for s, d in sk["shapes"].items():
            shares = ", ".join(
                f"{c} {d['shares'][c]:.2f}" for c in COLOURS if d["target"][c] or d["shares"][c] > 0.02
            )
            lines.append(
                f"    {s:8s} {shares}   (target {', '.join(f'{c} {v}' for c, v in d['target'].items() if v)})"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    from ..shipped import DEFAULT_GUIDANCE, DEFAULT_STEPS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-full", type=int, default=50, help="samples per 'a {colour} {shape}' prompt")
    ap.add_argument("--n-skew", type=int, default=200, help="samples per 'a {shape}' prompt and guidance")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument(
        "--guidance", default=f"4,{DEFAULT_GUIDANCE}", help="guidance scales for bar 1 (first: CLIPScore)"
    )
    ap.add_argument("--skew-guidance", default="1,4,7.5", help="guidance scales for the skew measurement")
    ap.add_argument("--json", type=Path, default=None, help="also write the full report here")
    args = ap.parse_args(argv)
    rep = run(
        args.n_full,
        args.n_skew,
        args.steps,
        [float(g) for g in args.guidance.split(",")],
        [float(g) for g in args.skew_guidance.split(",")],
    )
    print(summary(rep))
    if args.json:
        args.json.write_text(json.dumps(rep, indent=1))


if __name__ == "__main__":
    main()
