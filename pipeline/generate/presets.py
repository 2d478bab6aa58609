"""The one preset registry: every built-in `model:` name, what it is and what goes with it.

A preset knows its native image size, its recommended guidance scale, the CLIP that scores it by
default (`scoring.clip_model: auto`), its default attribute sets and safety concept list
(`probes.attributes: auto`, `safety.concepts: auto`), and how to build its pipeline. Everything
else (models.py, driver.py) asks the registry instead of comparing strings.

    tiny         SD1.5-shaped, small widths, random weights (fixed seed): CPU tests, plumbing
    tiny-sdxl    SDXL-shaped (two text encoders, add_time_ids), small, random: CPU tests of SDXL paths
    tiny-sd2     SD2-shaped (v-prediction, linear projections), small, random: CPU tests of SD2 paths
    toy          the shipped toy-world pipeline, trained here (pipeline/toyworld/weights/sd)
    sd15-random  the SD1.5 architecture (859M UNet) with random weights: benchmarks, noise out
    sd2-random   the SD2.1-768 architecture (865M UNet, v-prediction) with random weights: benchmarks
    sdxl-random  the SDXL-base architecture (2.6B UNet, two text encoders) with random weights: benchmarks

The random architecture presets build their modules directly on the target device (no CPU copy of
billions of random numbers) from a fixed seed; their configs are the published ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

TINY_SEED = 20260101  # fixed: every process builds the same random tiny model
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}  # SD 1.x/2.x/XL


@dataclass(frozen=True)
class Preset:
    name: str
    build: Callable  # build(device, dtype) -> diffusers pipeline
    native_size: int  # pixels: UNet sample size x VAE scale factor
    guidance: float  # generation.guidance_scale when the config leaves it null
    clip_model: str  # scoring.clip_model when the config says auto
    attribute_sets: tuple[str, ...] = ()  # probes.attributes: auto (when scoring is on)
    concept_list: Optional[str] = None  # safety.concepts: auto (when scoring is on)
    check: Optional[Callable] = None  # cheap up-front check (weights present); raises ValueError
    description: str = ""
    # where its diffusers configs lie (scheduler/, unet/), read before loading; None = built in code
    # with diffusers' defaults (1000 training timesteps)
    config_dir: Optional[Callable[[], str]] = None


def _seeded(device="cpu"):
    """Context: the caller's RNG untouched, TINY_SEED drawn, modules created on `device`."""
    import contextlib

    import torch

    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(devices=[]))
    stack.enter_context(torch.device(device))
    torch.manual_seed(TINY_SEED)
    return stack


def _clip_text(with_projection=False, **cfg):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, **cfg
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _sd_pipeline(unet, vae, text, scheduler):
    from diffusers import StableDiffusionPipeline

    from pipeline.generate.tokenizer import clip_tokenizer

    return StableDiffusionPipeline(
        unet=unet.eval(),
        vae=vae.eval(),
        text_encoder=text.eval(),
        tokenizer=clip_tokenizer(77),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _sdxl_pipeline(unet, vae, text, text_2, scheduler):
    from diffusers import StableDiffusionXLPipeline

    from pipeline.generate.tokenizer import clip_tokenizer

    tok_2 = clip_tokenizer(77)
    tok_2.pad_token = "!"  # SDXL's second tokenizer pads with "!" (open_clip's convention), id 0
    return StableDiffusionXLPipeline(
        unet=unet.eval(),
        vae=vae.eval(),
        text_encoder=text.eval(),
        text_encoder_2=text_2.eval(),
        tokenizer=clip_tokenizer(77),
        tokenizer_2=tok_2,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )


def _as(pipe, dtype):
    return pipe if dtype is None or dtype == pipe.unet.dtype else pipe.to(dtype=dtype)


# ---- builders: tiny (CPU tests) -----------------------------------------------------------------
def build_tiny_pipeline(device="cpu", dtype=None):
    """SD1.5-shaped StableDiffusionPipeline with small widths and random weights (fixed seed).
    The VAE downsamples by 8 like SD's, so the same width/height rules apply."""
    from diffusers import PNDMScheduler, UNet2DConditionModel

    with _seeded():
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            sample_size=8,
            cross_attention_dim=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=8,
        )
        vae = _tiny_vae()
        text = _clip_text(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)
    scheduler = PNDMScheduler(**SD_BETAS, skip_prk_steps=True, steps_offset=1)
    return _as(_sd_pipeline(unet, vae, text, scheduler), dtype)


def _tiny_vae(**extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(16, 16, 32, 32),
        norm_num_groups=8,
        latent_channels=4,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        **extra,
    )


def build_tiny_sd2(device="cpu", dtype=None):
    """SD2-shaped (linear projections, per-block head dims, upcast attention, v-prediction DDIM),
    small and random: the SD2 code paths on CPU in seconds."""
    from diffusers import DDIMScheduler, UNet2DConditionModel

    with _seeded():
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            sample_size=8,
            cross_attention_dim=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            upcast_attention=True,
        )
        vae = _tiny_vae()
        text = _clip_text(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            hidden_act="gelu",
        )
    scheduler = DDIMScheduler(
        **SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction"
    )
    return _as(_sd_pipeline(unet, vae, text, scheduler), dtype)


def build_tiny_sdxl(device="cpu", dtype=None):
    """SDXL-shaped StableDiffusionXLPipeline (two text encoders, pooled embeddings, add_time_ids),
    small and random: the SDXL code paths on CPU in seconds."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    with _seeded():
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            sample_size=8,
            cross_attention_dim=64,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=80,
        )  # 6*8 + 32
        vae = _tiny_vae(scaling_factor=0.13025)
        text = _clip_text(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)
        text_2 = _clip_text(
            True,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            projection_dim=32,
            hidden_act="gelu",
        )
    scheduler = EulerDiscreteScheduler(**SD_BETAS, steps_offset=1, timestep_spacing="leading")
    return _as(_sdxl_pipeline(unet, vae, text, text_2, scheduler), dtype)


# ---- builders: architecture-exact, random weights (benchmarks) -----------------------------------
def _sd_vae(sample_size: int, **extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=sample_size,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        **extra,
    )


def build_sd15_random(device="cpu", dtype=None):
    """The Stable Diffusion 1.5 architecture (859M-parameter UNet, 512x512) with random weights,
    initialised directly on `device`: same compute as the real model, for benchmarks only (its
    images are noise). Configs as in shared/gpu/sd_anchor.py."""
    from diffusers import PNDMScheduler, UNet2DConditionModel

    with _seeded(device):
        unet = UNet2DConditionModel(
            sample_size=64,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            cross_attention_dim=768,
            attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )
        vae = _sd_vae(512)
        text = _clip_text(
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            hidden_act="quick_gelu",
        )
    scheduler = PNDMScheduler(**SD_BETAS, skip_prk_steps=True, steps_offset=1)
    return _as(_sd_pipeline(unet, vae, text, scheduler), dtype)


def build_sd2_random(device="cpu", dtype=None):
    """stabilityai/stable-diffusion-2-1 (768x768, v-prediction) architecture with random weights:
    OpenCLIP ViT-H text tower (23 of its 24 layers, as SD2 uses the penultimate one)."""
    from diffusers import DDIMScheduler, UNet2DConditionModel

    with _seeded(device):
        unet = UNet2DConditionModel(
            sample_size=96,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20),
            use_linear_projection=True,
            upcast_attention=True,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )
        vae = _sd_vae(768)
        text = _clip_text(
            hidden_size=1024,
            intermediate_size=4096,
            num_attention_heads=16,
            num_hidden_layers=23,
            hidden_act="gelu",
            projection_dim=512,
        )
    scheduler = DDIMScheduler(
        **SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction"
    )
    return _as(_sd_pipeline(unet, vae, text, scheduler), dtype)


def build_sdxl_random(device="cpu", dtype=None):
    """stabilityai/stable-diffusion-xl-base-1.0 architecture (2.6B UNet, 1024x1024) with random
    weights: CLIP ViT-L and OpenCLIP ViT-bigG text towers, fp16-safe VAE config."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    with _seeded(device):
        unet = UNet2DConditionModel(
            sample_size=128,
            block_out_channels=(320, 640, 1280),
            layers_per_block=2,
            cross_attention_dim=2048,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(5, 10, 20),
            transformer_layers_per_block=(1, 2, 10),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )  # 6*256 + 1280
        vae = _sd_vae(1024, scaling_factor=0.13025, force_upcast=True)
        text = _clip_text(
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            hidden_act="quick_gelu",
        )
        text_2 = _clip_text(
            True,
            hidden_size=1280,
            intermediate_size=5120,
            num_attention_heads=20,
            num_hidden_layers=32,
            hidden_act="gelu",
            projection_dim=1280,
        )
    scheduler = EulerDiscreteScheduler(**SD_BETAS, steps_offset=1, timestep_spacing="leading")
    return _as(_sdxl_pipeline(unet, vae, text, text_2, scheduler), dtype)


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
        ),
        Preset(
            "tiny-sd2",
            build_tiny_sd2,
            64,
            DEFAULT_GUIDANCE,
            "tiny",
            description="SD2-shaped (v-prediction), small, random",
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
