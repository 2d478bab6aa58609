"""The toy world and its shipped models: the offline default of sdgen (``model: toy``).

- ``SD_DIR``: a diffusers StableDiffusionPipeline directory (64x64 images, 16-token prompts);
  ``StableDiffusionPipeline.from_pretrained(SD_DIR)`` needs no sdgen code and gives float32 modules.
- ``CLIP_DIR``: the toy CLIP, loadable with ``open_clip.create_model("local-dir:" + str(CLIP_DIR))``.
- ``world`` (the procedural world, spec in pipeline/data/toyworld.yaml), ``analysis`` (pixel
  measurement of colour and shape), ``probes`` (zero-shot with the toy CLIP).

Importing this package does not import torch.
"""

from __future__ import annotations

from .shipped import CLIP_DIR, DEFAULT_GUIDANCE, DEFAULT_STEPS, SD_DIR, WEIGHTS_DIR

#: Recommended settings for the toy preset (DPM-Solver++ 2M, shipped as the pipeline's scheduler).
DEFAULTS = {"steps": DEFAULT_STEPS, "guidance_scale": DEFAULT_GUIDANCE, "width": 64, "height": 64}


def load_toy_clip(device="cpu", dtype=None):
    """The toy CLIP and its tokenizer: ``(model, tokenize)``; ``tokenize(list_of_str)`` -> LongTensor (n, 16).

    Images go in as (n, 3, 64, 64) in [-1, 1] (x / 127.5 - 1; open_clip's Normalize(0.5, 0.5)).
    """
    import open_clip
    import torch

    model = open_clip.create_model("local-dir:" + str(CLIP_DIR), device=device)
    model = model.to(dtype=dtype or torch.float32).eval()
    return model, open_clip.get_tokenizer("local-dir:" + str(CLIP_DIR))


def load_toy_pipeline(device="cpu", dtype=None):
    """``StableDiffusionPipeline.from_pretrained(SD_DIR)`` (float32; fp16 weights upcast) moved to
    ``device``/``dtype``.

    No dtype keyword goes to from_pretrained: diffusers renamed ``torch_dtype`` to ``dtype`` in 0.36+,
    and the shipped configs already say float32.
    """
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(SD_DIR)
    pipe.set_progress_bar_config(disable=True)
    if dtype is not None and dtype != torch.float32:
        pipe = pipe.to(dtype=dtype)
    return pipe.to(device)


__all__ = ["CLIP_DIR", "DEFAULTS", "SD_DIR", "WEIGHTS_DIR", "load_toy_clip", "load_toy_pipeline"]
