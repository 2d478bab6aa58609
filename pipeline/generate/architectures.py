"""The pipelines sdgen builds in code, with random weights from a fixed seed: small SD1.5-, SD2- and
SDXL-shaped ones for CPU tests, and the published SD1.5, SD2.1-768 and SDXL-base architectures for GPU
benchmarks (built on the target device: no CPU copy of billions of random numbers). The registry that
names them is presets.py."""

from __future__ import annotations

TINY_SEED = 20260101  # fixed: every process builds the same random tiny model
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}  # SD 1.x/2.x/XL


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
