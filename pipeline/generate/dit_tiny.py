"""Tiny diffusion-transformer pipelines with random weights from a fixed seed, for CPU tests of the
FLUX.1, SD3, PixArt-Σ and Sana code paths in seconds (shapes after diffusers' own fast tests,
`get_dummy_components`). Their T5 and Gemma tokenizers are built here (tokenizer.py): nothing downloads.
The published architectures with random weights (GPU benchmarks) are in dit_random.py; the registry
that names both is presets.py."""

from __future__ import annotations

from pipeline.generate.architectures import _clip_text, _seeded

TINY_TEXT = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)


def _t5(d_model: int = 32):
    """A two-layer T5 encoder, T5 v1.1's gated GELU, over the built T5 vocabulary."""
    from transformers import T5Config, T5EncoderModel

    from pipeline.generate.tokenizer import T5_VOCAB

    config = T5Config(
        vocab_size=T5_VOCAB,
        d_model=d_model,
        d_ff=37,
        d_kv=8,
        num_heads=4,
        num_layers=2,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


def _kl_vae(latent_channels: int, **extra):
    """An 8x AutoencoderKL (four levels), as FLUX's, SD3's and PixArt's, with small widths."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        norm_num_groups=8,
        latent_channels=latent_channels,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        **extra,
    ).eval()


def build_tiny_flux(device="cpu", dtype=None):
    """FLUX.1-dev-shaped FluxPipeline: double- and single-stream blocks, guidance embedding, CLIP pooled
    + T5 sequence text, 2x2-packed 16-channel latents (4 VAE channels), dynamic timestep shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from pipeline.generate.tokenizer import clip_tokenizer, t5_tokenizer

    with _seeded():
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,  # 4 latent channels x a 2x2 patch
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=True,
            axes_dims_rope=(4, 4, 8),
        ).eval()
        text = _clip_text(**TINY_TEXT).eval()
        text_2 = _t5()
        vae = _kl_vae(
            4, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611
        )
    # FLUX.1-dev's scheduler config: the shift grows with the image's token count
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text,
        tokenizer=clip_tokenizer(77),
        text_encoder_2=text_2,
        tokenizer_2=t5_tokenizer(512),
        transformer=transformer,
    )
    return _as(pipe, dtype)


def build_tiny_sd3(device="cpu", dtype=None):
    """SD3-shaped StableDiffusion3Pipeline: joint-attention MMDiT, two CLIPs (pooled) + T5, 16-channel
    latents, flow matching with SD3's shift 3."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    from pipeline.generate.tokenizer import clip_tokenizer, t5_tokenizer

    with _seeded():
        transformer = SD3Transformer2DModel(
            sample_size=8,
            patch_size=2,
            in_channels=16,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=32,
            pooled_projection_dim=64,  # the two CLIPs' projections side by side
            out_channels=16,
            qk_norm="rms_norm",
        ).eval()
        text = _clip_text(True, projection_dim=32, **TINY_TEXT).eval()
        text_2 = _clip_text(True, projection_dim=32, hidden_act="gelu", **TINY_TEXT).eval()
        text_3 = _t5()
        vae = _kl_vae(
            16, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5305
        )
    tok_2 = clip_tokenizer(77)
    tok_2.pad_token = "!"  # OpenCLIP bigG's convention, as SDXL's second tokenizer
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text,
        tokenizer=clip_tokenizer(77),
        text_encoder_2=text_2,
        tokenizer_2=tok_2,
        text_encoder_3=text_3,
        tokenizer_3=t5_tokenizer(256),
    )
    return _as(pipe, dtype)


def build_tiny_pixart(device="cpu", dtype=None):
    """PixArt-Σ-shaped PixArtSigmaPipeline: adaLN-single DiT with cross-attention to T5, 4-channel
    latents, DPM-Solver. Its sample size 32 puts it in the 256-px aspect-ratio bins (a call renders at
    the nearest bin and resizes to the asked size, as the real 1024-px model does with its bins)."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    from pipeline.generate.tokenizer import t5_tokenizer

    with _seeded():
        transformer = PixArtTransformer2DModel(
            sample_size=32,
            num_layers=2,
            patch_size=2,
            attention_head_dim=8,
            num_attention_heads=3,
            caption_channels=32,
            in_channels=4,
            cross_attention_dim=24,
            out_channels=8,  # learned sigma: noise and variance
            attention_bias=True,
            activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000,
            norm_type="ada_norm_single",
            norm_elementwise_affine=False,
            norm_eps=1e-6,
        ).eval()
        text = _t5()
        vae = _kl_vae(4, scaling_factor=0.13025)
    pipe = PixArtSigmaPipeline(
        tokenizer=t5_tokenizer(300),
        text_encoder=text,
        vae=vae,
        transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(),
    )
    return _as(pipe, dtype)


def build_tiny_sana(device="cpu", dtype=None):
    """Sana-shaped SanaPipeline: linear-attention DiT, Gemma-2 text encoder, a 32x deep-compression
    autoencoder (DC-AE, six levels) and flow DPM-Solver with shift 3."""
    from diffusers import DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    from pipeline.generate.tokenizer import GEMMA_VOCAB, gemma_tokenizer

    with _seeded():
        transformer = SanaTransformer2DModel(
            patch_size=1,
            in_channels=4,
            out_channels=4,
            num_layers=1,
            num_attention_heads=2,
            attention_head_dim=4,
            num_cross_attention_heads=2,
            cross_attention_head_dim=4,
            cross_attention_dim=8,
            caption_channels=8,
            sample_size=16,
        ).eval()
        vae = _tiny_dc_ae()
        text = Gemma2Model(
            Gemma2Config(
                head_dim=16,
                hidden_size=8,
                intermediate_size=64,
                num_attention_heads=2,
                num_hidden_layers=1,
                num_key_value_heads=2,
                vocab_size=GEMMA_VOCAB,
                pad_token_id=0,
                eos_token_id=1,
                bos_token_id=2,
                attn_implementation="eager",
            )
        ).eval()
    # Sana's published scheduler: DPM-Solver++ on flow sigmas, shift 3
    scheduler = DPMSolverMultistepScheduler(
        flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction"
    )
    pipe = SanaPipeline(
        tokenizer=gemma_tokenizer(300),
        text_encoder=text,
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )
    return _as(pipe, dtype)


def _tiny_dc_ae():
    """A six-level deep-compression autoencoder (32x, as the real DC-AE f32c32) with 8 channels."""
    from diffusers import AutoencoderDC

    levels = 6  # 2**5 = 32x
    return AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock",) * (levels - 1) + ("EfficientViTBlock",),
        decoder_block_types=("ResBlock",) * (levels - 1) + ("EfficientViTBlock",),
        encoder_block_out_channels=(8,) * levels,
        decoder_block_out_channels=(8,) * levels,
        encoder_qkv_multiscales=((),) * (levels - 1) + ((5,),),
        decoder_qkv_multiscales=((),) * (levels - 1) + ((5,),),
        encoder_layers_per_block=(1,) * levels,
        decoder_layers_per_block=(1,) * levels,
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    ).eval()


def _as(pipe, dtype):
    return pipe if dtype is None or dtype == pipe.transformer.dtype else pipe.to(dtype=dtype)
