"""Train the toy models from scratch and overwrite the shipped weights (``make toy-models``).

Stages, in order (each deterministic from its seed in common.SEEDS and the world seed):
  1. clip  - toy CLIP, contrastive on world images/captions            (train_clip.py)
  2. vae   - AutoencoderKL, foreground-weighted reconstruction           (train_vae.py)
  3. unet  - UNet2DConditionModel on latents, frozen toy-CLIP text tower (train_unet.py)
  4. pack  - write weights/sd (diffusers) and weights/clip (open_clip), fp16 safetensors
About 50 minutes on 2 CPU cores. ``--scale 0.05`` runs every stage at 5% of its steps (a smoke test;
use ``--out`` to keep the shipped weights untouched).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from . import common as C

STAGES = ("clip", "vae", "unet", "pack")


def _load_clip():
    from safetensors.torch import load_file

    from .train_clip import build_clip

    clip = build_clip()
    clip.load_state_dict(load_file(str(C.WORK_DIR / "clip.safetensors")))
    return clip.eval()


def run_pack(out: Path) -> dict:
    """Pack WORK_DIR's stage outputs into out/sd and out/clip; returns sizes."""
    from diffusers import UNet2DConditionModel

    from .pack import pack_clip, pack_sd, total_size_mb
    from .train_unet import fp16_round, load_stage_inputs

    text_encoder, vae = load_stage_inputs()
    unet = fp16_round(UNet2DConditionModel.from_pretrained(C.WORK_DIR / "unet"))
    pack_sd(unet, text_encoder, vae, out / "sd")
    pack_clip(_load_clip(), out / "clip")
    return {"sd_mb": round(total_size_mb(out / "sd"), 2), "clip_mb": round(total_size_mb(out / "clip"), 2)}


def run_stage(stage: str, scale: float) -> None:
    """Run one training stage at ``scale`` times its configured steps."""
    from . import train_clip, train_unet, train_vae

    module = {"clip": train_clip, "vae": train_vae, "unet": train_unet}[stage]
    steps = max(1, int(module.STEPS * scale))
    if stage == "vae":
        module.main(steps, strict=scale >= 1)  # a smoke-test autoencoder may not have colour yet
    else:
        module.main(steps)


def _record_run(log_path: Path, stages: list[str], scale: float, wall_s: float) -> None:
    """Append this invocation (stages, scale, wall time, software, threads) to the log's "runs" list."""
    import platform

    import torch

    data = json.loads(log_path.read_text()) if log_path.exists() else {}
    data.setdefault("runs", []).append(
        {
            "stages": stages,
            "scale": scale,
            "wall_s": round(wall_s, 1),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        }
    )
    log_path.write_text(json.dumps(data, indent=1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES)
    )
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of each stage's steps (smoke tests)")
    ap.add_argument("--out", type=Path, default=C.WEIGHTS_DIR, help="weights directory to write")
    args = ap.parse_args(argv)
    os.environ.setdefault("SDGEN_TOY_LOG", str(args.out / "train_log.json"))
    if (
        "SDGEN_TOY_WORK" not in os.environ
    ):  # stage outputs per --out, so a smoke test never mixes with a real run
        import hashlib

        C.WORK_DIR = C.WORK_DIR / hashlib.sha1(str(args.out.resolve()).encode()).hexdigest()[:8]
    print(f"stage outputs in {C.WORK_DIR}, weights to {args.out}", flush=True)
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stage(s) {sorted(unknown)}; choose from {STAGES}")
    t0 = time.time()
    for stage in STAGES:
        if stage not in stages:
            continue
        print(f"== stage {stage} ==", flush=True)
        if stage == "pack":
            sizes = run_pack(args.out)
            print("[pack]", sizes, flush=True)
            C.TrainLog("pack").finish(**sizes)
        else:
            run_stage(stage, args.scale)
    _record_run(Path(os.environ["SDGEN_TOY_LOG"]), stages, args.scale, time.time() - t0)
    print(f"done in {time.time() - t0:.0f} s; weights in {args.out}", flush=True)


if __name__ == "__main__":
    main()
