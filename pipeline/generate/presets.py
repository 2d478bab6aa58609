"""The one preset registry: every built-in `model:` name, what it is and what goes with it.

A preset knows its native image size, its recommended guidance scale, the CLIP that scores it by
default (`scoring.clip_model: auto`), its default attribute sets and safety concept list
(`probes.attributes: auto`, `safety.concepts: auto`), and how to build its pipeline. Everything
else (models.py, driver.py) asks the registry instead of comparing strings.

    tiny         SD1.5-shaped, small widths, random weights (fixed seed): CPU tests, plumbing
    tiny-sdxl    SDXL-shaped (two text encoders, add_time_ids), small, random: CPU tests of SDXL paths
    tiny-sd2     SD2-shaped (v-prediction, linear projections), small, random: CPU tests of SD2 paths
    tiny-flux    FLUX.1-dev-shaped (packed latents, guidance embedding, CLIP + T5), small, random
    tiny-sd3     SD3-shaped (MMDiT, two CLIPs + T5, 16-channel latents), small, random
    tiny-pixart  PixArt-Σ-shaped (adaLN-single DiT, T5), small, random
    tiny-sana    Sana-shaped (linear attention, Gemma-2, 32x DC-AE), small, random
    toy          the shipped toy-world pipeline, trained here (pipeline/toyworld/weights/sd)
    sd15-random  the SD1.5 architecture (859M UNet) with random weights: benchmarks, noise out
    sd2-random   the SD2.1-768 architecture (865M UNet, v-prediction) with random weights: benchmarks
    sdxl-random  the SDXL-base architecture (2.6B UNet, two text encoders) with random weights: benchmarks
    flux-dev-random, flux-schnell-random, sd35-random, pixart-random, sana-random
                 FLUX.1-dev/-schnell (11.9B), SD3.5-large (8.1B), PixArt-Σ-1024 (0.6B), Sana-1600M-1024
                 with random weights (dit_random.py): GPU benchmarks; built on the meta device they
                 allocate nothing (tests count their parameters so)

The random architecture presets build their modules directly on the target device (no CPU copy of
billions of random numbers) from a fixed seed; their configs are the published ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from pipeline.generate.architectures import (  # noqa: F401 - TINY_SEED re-exported
    TINY_SEED,
    build_sd2_random,
    build_sd15_random,
    build_sdxl_random,
    build_tiny_pipeline,
    build_tiny_sd2,
    build_tiny_sdxl,
)
from pipeline.generate.dit_random import (
    build_flux_dev_random,
    build_flux_schnell_random,
    build_pixart_random,
    build_sana_random,
    build_sd35_random,
)
from pipeline.generate.dit_tiny import build_tiny_flux, build_tiny_pixart, build_tiny_sana, build_tiny_sd3


@dataclass(frozen=True)
class Preset:
    name: str
    build: Callable  # build(device, dtype) -> diffusers pipeline
    # pixels: generation.width/height when null; the denoiser's sample size x VAE scale factor, except
    # tiny-pixart and tiny-sana (64: they render at their nearest aspect-ratio bin and resize, as the
    # real ones do at sizes off their bins)
    native_size: int
    guidance: float  # generation.guidance_scale when the config leaves it null
    clip_model: str  # scoring.clip_model when the config says auto
    attribute_sets: tuple[str, ...] = ()  # probes.attributes: auto (when scoring is on)
    concept_list: Optional[str] = None  # safety.concepts: auto (when scoring is on)
    check: Optional[Callable] = None  # cheap up-front check (weights present); raises ValueError
    description: str = ""
    # where its diffusers configs lie (scheduler/, unet/), read before loading; None = built in code
    # with diffusers' defaults (1000 training timesteps)
    config_dir: Optional[Callable[[], str]] = None
    family: str = "sd"  # generate/families.py: what its pipeline is


# ---- the toy world ---------------------------------------------------------------------------------
def _load_toy(device="cpu", dtype=None):
    from pipeline.generate.load import from_pretrained
    from pipeline.toyworld import SD_DIR

    return from_pretrained(str(SD_DIR), dtype)


def _toy_dir() -> str:
    from pipeline.toyworld import SD_DIR

    return str(SD_DIR)


def _check_toy() -> None:
    from pathlib import Path

    from pipeline.toyworld import SD_DIR

    if not (Path(SD_DIR) / "model_index.json").exists():
        raise ValueError(f"model 'toy': shipped weights missing at {SD_DIR}; run `make toy-models`")


def _toy_guidance() -> float:
    from pipeline.toyworld.shipped import DEFAULT_GUIDANCE

    return float(DEFAULT_GUIDANCE)


DEFAULT_GUIDANCE = 7.5  # diffusers' StableDiffusionPipeline default
RANDOM_CLIP = "random:ViT-L-14"  # real scoring compute for benchmarks of the random architectures

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "tiny",
            build_tiny_pipeline,
            64,
            DEFAULT_GUIDANCE,
            "tiny",
            description="SD1.5-shaped, small, random",
        ),
        Preset(
            "tiny-sdxl",
            build_tiny_sdxl,
            64,
            DEFAULT_GUIDANCE,
            "tiny",
            description="SDXL-shaped, small, random",
            family="sdxl",
        ),
        Preset(
            "tiny-sd2",
            build_tiny_sd2,
            64,
            DEFAULT_GUIDANCE,
            "tiny",
            description="SD2-shaped (v-prediction), small, random",
        ),
        Preset(
            "tiny-flux",
            build_tiny_flux,
            64,
            3.5,
            "tiny",
            description="FLUX.1-dev-shaped, small, random",
            family="flux-dev",
        ),
        Preset(
            "tiny-sd3", build_tiny_sd3, 64, 7.0, "tiny", description="SD3-shaped, small, random", family="sd3"
        ),
        Preset(
            "tiny-pixart",
            build_tiny_pixart,
            64,
            4.5,
            "tiny",
            description="PixArt-Σ-shaped, small, random",
            family="pixart-sigma",
        ),
        Preset(
            "tiny-sana",
            build_tiny_sana,
            64,
            4.5,
            "tiny",
            description="Sana-shaped, small, random",
            family="sana",
        ),
        # guidance 1.0 (CFG off) for toy: follows colour/shape words and reproduces its world's skews
        Preset(
            "toy",
            _load_toy,
            64,
            _toy_guidance(),
            "toy",
            ("toyworld",),
            "toyworld",
            _check_toy,
            "the shipped toy-world model",
            _toy_dir,
        ),
        Preset(
            "sd15-random",
            build_sd15_random,
            512,
            DEFAULT_GUIDANCE,
            RANDOM_CLIP,
            description="SD1.5 architecture, random weights",
        ),
        Preset(
            "sd2-random",
            build_sd2_random,
            768,
            DEFAULT_GUIDANCE,
            RANDOM_CLIP,
            description="SD2.1-768 architecture (v-prediction), random weights",
        ),
        Preset(
            "sdxl-random",
            build_sdxl_random,
            1024,
            DEFAULT_GUIDANCE,
            RANDOM_CLIP,
            description="SDXL-base architecture, random weights",
            family="sdxl",
        ),
        Preset(
            "flux-dev-random",
            build_flux_dev_random,
            1024,
            3.5,
            RANDOM_CLIP,
            family="flux-dev",
            description="FLUX.1-dev architecture, random weights",
        ),
        Preset(
            "flux-schnell-random",
            build_flux_schnell_random,
            1024,
            0.0,
            RANDOM_CLIP,
            family="flux-schnell",
            description="FLUX.1-schnell architecture, random weights",
        ),
        Preset(
            "sd35-random",
            build_sd35_random,
            1024,
            7.0,
            RANDOM_CLIP,
            family="sd3",
            description="SD3.5-large architecture, random weights",
        ),
        Preset(
            "pixart-random",
            build_pixart_random,
            1024,
            4.5,
            RANDOM_CLIP,
            family="pixart-sigma",
            description="PixArt-Σ-XL-2-1024 architecture, random weights",
        ),
        Preset(
            "sana-random",
            build_sana_random,
            1024,
            4.5,
            RANDOM_CLIP,
            family="sana",
            description="Sana-1600M-1024 architecture, random weights",
        ),
    )
}


def get(spec: str) -> Optional[Preset]:
    """The preset called `spec`, or None when `spec` is not a preset name (a path, URL, hub id)."""
    return PRESETS.get(spec)


def default_clip_model(spec: str) -> str:
    """scoring.clip_model auto: the preset's CLIP; `tiny` for other models (no real CLIP offline)."""
    p = get(spec)
    return p.clip_model if p else "tiny"


def default_attribute_sets(spec: str) -> tuple[str, ...]:
    """probes.attributes auto for this model (before the scoring.enabled check)."""
    p = get(spec)
    return p.attribute_sets if p else ()


def default_concept_list(spec: str) -> Optional[str]:
    """safety.concepts auto for this model (before the scoring.enabled check)."""
    p = get(spec)
    return p.concept_list if p else None
