"""Write the shipped weights: a diffusers StableDiffusionPipeline directory and an open_clip directory.

Weights are stored as fp16 safetensors (the 49,408 x 64 token embedding appears in both models;
fp32 would exceed the 25 MB budget) while every config keeps float32, so a plain
``from_pretrained(dir)`` builds fp32 modules and upcasts. The text encoder is written with the
canonical ``text_model.`` key prefix that every transformers version (4.x and 5.x) loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..shipped import DEFAULT_GUIDANCE, DEFAULT_STEPS  # noqa: F401 (written into the shipped scheduler)
from . import common as C


def sampler_config() -> dict:
    """Scheduler config shipped with the pipeline: the training schedule, DPM-Solver++(2M) sampling.

    "trailing" timesteps start sampling at t = 999, the pure-noise step the model was trained on.
    """
    cfg = {k: v for k, v in C.SCHEDULER_CFG.items() if k != "clip_sample"}
    # steps_offset=1 only silences StableDiffusionPipeline's legacy-config warning; "trailing" ignores it
    return {**cfg, "algorithm_type": "dpmsolver++", "solver_order": 2, "steps_offset": 1}


def _to_fp16_file(path: Path, prefix: str = "") -> None:
    """Rewrite a safetensors file in fp16 (optionally adding a key prefix), keeping its metadata."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    out = {
        (k if k.startswith(prefix) else prefix + k): (v.half() if v.is_floating_point() else v).contiguous()
        for k, v in tensors.items()
    }
    save_file(out, str(path), metadata={"format": "pt", **meta})


def pack_clip(clip_model, out_dir: Path = C.CLIP_DIR) -> Path:
    """open_clip ``local-dir:`` layout: open_clip_config.json + open_clip_model.safetensors (fp16)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"model_cfg": C.CLIP_MODEL_CFG, "preprocess_cfg": C.CLIP_PREPROCESS_CFG}
    (out_dir / "open_clip_config.json").write_text(json.dumps(cfg, indent=2))
    sd = {k: v.detach().half().contiguous() for k, v in clip_model.state_dict().items()}
    save_file(sd, str(out_dir / "open_clip_model.safetensors"), metadata={"format": "pt"})
    (out_dir / "open_clip_model.safetensors").chmod(0o644)
    return out_dir


def pack_sd(unet, text_encoder, vae, out_dir: Path = C.SD_DIR) -> Path:
    """StableDiffusionPipeline.save_pretrained layout, no safety checker, fp16 weights."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from pipeline.generate.tokenizer import write_clip_tokenizer_files

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    scheduler = DPMSolverMultistepScheduler(**sampler_config())
    # Keys DPM-Solver ignores but other samplers read when a user swaps it (``DDIMScheduler.from_config``):
    # DDIM's default clip_sample=True would clip latents to [-1, 1] and wreck the colours.
    scheduler.register_to_config(clip_sample=False, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(
        vae=vae.float(),
        text_encoder=text_encoder.float(),
        tokenizer=C.tokenizer(),
        unet=unet.float(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    for sub in ("unet", "vae", "text_encoder"):
        for f in (out_dir / sub).glob("*.safetensors"):
            _to_fp16_file(f, prefix="text_model." if sub == "text_encoder" else "")
    # Tokenizer as SD ships it (vocab.json + merges.txt, read by every transformers version) instead
    # of transformers 5's 3.6 MB tokenizer.json; the tests check both give identical ids.
    write_clip_tokenizer_files(out_dir / "tokenizer")
    (out_dir / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)
    for f in out_dir.rglob("*"):
        if f.is_file():
            f.chmod(0o644)  # safetensors writes 0600 files
    return out_dir


def total_size_mb(*dirs: Path) -> float:
    return sum(f.stat().st_size for d in dirs for f in Path(d).rglob("*") if f.is_file()) / 1e6
