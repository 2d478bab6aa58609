"""Today's diffusion-transformer pipelines (FLUX.1-dev and -schnell, Stable Diffusion 3.5 Large,
PixArt-Σ, Sana 1600M): their published architectures with random weights from a fixed seed, for GPU
benchmarks (same compute as the real models; the images are noise). Modules are created directly on
`device` (architectures._seeded), so "meta" allocates nothing, and each is cast to `dtype` as soon as it
exists: the peak is one fp32 module, not a whole fp32 pipeline (FLUX: 67 GB). Configs: the published
diffusers repos' */config.json and diffusers' scripts/convert_*_to_diffusers.py."""

from __future__ import annotations

from pipeline.generate.architectures import _clip_text, _sd_vae, _seeded


def _cast(module, dtype):
    """`module` in eval mode, cast to `dtype` (None: as built, fp32), keeping in fp32 what
    `from_pretrained(torch_dtype=dtype)` keeps there: transformers' `_keep_in_fp32_modules` in fp16 (T5's
    `wo` projections, which overflow in fp16) and `_keep_in_fp32_modules_strict` in fp16 and bf16."""
    import torch

    module = module.eval()
    if dtype is None:
        return module
    torch.nn.Module.to(module, dtype=dtype)  # diffusers' ModelMixin.to warns of fp32 modules it lacks
    keep = set(getattr(module, "_keep_in_fp32_modules", None) or ()) if dtype == torch.float16 else set()
    if dtype in (torch.float16, torch.bfloat16):
        keep |= set(getattr(module, "_keep_in_fp32_modules_strict", None) or ())
    for name, sub in module.named_modules():
        if name.rpartition(".")[2] in keep:
            sub.float()
    return module


def parameter_counts(pipe) -> dict[str, int]:
    """Parameters of each torch module of `pipe` ({"transformer": 11901408320, ...}); works on meta."""
    import torch

    return {
        name: sum(p.numel() for p in module.parameters())
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }


# ---- shared components ----------------------------------------------------------------------------
def _t5_xxl():
    """google/t5-v1_1-xxl's encoder (4.76B), the text_encoder_2/_3 of FLUX and SD3, PixArt-Σ's one."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=32128,
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",  # T5 v1.1: GEGLU feed-forward (dense_act_fn gelu_new)
    )
    return T5EncoderModel(config)


def _clip_l(with_projection=False):
    """OpenAI CLIP ViT-L/14 text tower (123M): FLUX's text_encoder, SD3's (with its 768 projection)."""
    return _clip_text(
        with_projection,
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        hidden_act="quick_gelu",
        projection_dim=768,
    )


def _vae16(scaling_factor: float, shift_factor: float):
    """The 16-channel AutoencoderKL of FLUX.1 and SD3 (84M): SD's layout, no quant convs."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=16,
        sample_size=1024,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
        force_upcast=True,
    )


# ---- FLUX.1 ---------------------------------------------------------------------------------------
def _flux(device, dtype, guidance: bool, t5_length: int, scheduler):
    from diffusers import FluxPipeline, FluxTransformer2DModel

    from pipeline.generate.tokenizer import clip_tokenizer, t5_tokenizer

    with _seeded(device):
        transformer = _cast(
            FluxTransformer2DModel(
                patch_size=1,
                in_channels=64,  # 16 latent channels packed 2x2
                num_layers=19,  # double-stream (MM-DiT) blocks
                num_single_layers=38,
                attention_head_dim=128,
                num_attention_heads=24,
                joint_attention_dim=4096,  # T5-XXL width
                pooled_projection_dim=768,  # CLIP-L pooled output
                guidance_embeds=guidance,  # dev is guidance-distilled; schnell is not
                axes_dims_rope=(16, 56, 56),
            ),
            dtype,
        )
        text_encoder_2 = _cast(_t5_xxl(), dtype)
        text_encoder = _cast(_clip_l(), dtype)
        vae = _cast(_vae16(0.3611, 0.1159), dtype)  # FLUX.1 ae: scale_factor, shift_factor
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(77),
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer(t5_length),
        transformer=transformer,
    )


def build_flux_dev_random(device="cpu", dtype=None):
    """black-forest-labs/FLUX.1-dev (11.9B transformer with guidance embedding, CLIP-L + T5-XXL, 16-channel
    VAE, resolution-dependent shift) with random weights: for benchmarks only, its images are noise."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,  # mu from the image's token count, 0.5 at 256 .. 1.15 at 4096
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return _flux(device, dtype, guidance=True, t5_length=512, scheduler=scheduler)


def build_flux_schnell_random(device="cpu", dtype=None):
    """black-forest-labs/FLUX.1-schnell (the timestep-distilled FLUX.1: no guidance embedding, no shift,
    T5 prompts of 256 tokens) with random weights: for benchmarks only, its images are noise."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)  # BFL: shift=False
    return _flux(device, dtype, guidance=False, t5_length=256, scheduler=scheduler)


# ---- Stable Diffusion 3.5 Large -------------------------------------------------------------------
def build_sd35_random(device="cpu", dtype=None):
    """stabilityai/stable-diffusion-3.5-large (8.1B MM-DiT, CLIP-L + OpenCLIP bigG + T5-XXL) with random
    weights: for benchmarks only, its images are noise."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    from pipeline.generate.tokenizer import clip_tokenizer, t5_tokenizer

    with _seeded(device):
        transformer = _cast(
            SD3Transformer2DModel(
                sample_size=128,
                patch_size=2,
                in_channels=16,
                num_layers=38,
                attention_head_dim=64,
                num_attention_heads=38,
                joint_attention_dim=4096,  # T5-XXL width (CLIP features zero-padded to it)
                caption_projection_dim=2432,  # = 38 x 64
                pooled_projection_dim=2048,  # CLIP-L 768 + bigG 1280 pooled
                out_channels=16,
                pos_embed_max_size=192,
                qk_norm="rms_norm",  # new in 3.5; no dual_attention_layers (those are Medium's)
            ),
            dtype,
        )
        text_encoder_3 = _cast(_t5_xxl(), dtype)
        text_encoder = _cast(_clip_l(with_projection=True), dtype)
        text_encoder_2 = _cast(
            _clip_text(
                True,  # OpenCLIP ViT-bigG/14 text tower
                hidden_size=1280,
                intermediate_size=5120,
                num_attention_heads=20,
                num_hidden_layers=32,
                hidden_act="gelu",
                projection_dim=1280,
            ),
            dtype,
        )
        vae = _cast(_vae16(1.5305, 0.0609), dtype)  # SD3's vae/config.json
    tok_2 = clip_tokenizer(77)
    tok_2.pad_token = "!"  # the bigG tokenizer pads with "!" (open_clip's convention), as SDXL's
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),  # static shift, no dynamic shifting
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(77),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tok_2,
        text_encoder_3=text_encoder_3,
        tokenizer_3=t5_tokenizer(256),
    )


# ---- PixArt-Σ -------------------------------------------------------------------------------------
def build_pixart_random(device="cpu", dtype=None):
    """PixArt-alpha/PixArt-Sigma-XL-2-1024-MS (0.61B DiT-XL/2 with cross-attention, T5-XXL, SDXL VAE) with
    random weights: for benchmarks only, its images are noise."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    from pipeline.generate.tokenizer import t5_tokenizer

    with _seeded(device):
        transformer = _cast(
            PixArtTransformer2DModel(
                sample_size=128,  # 1024 px / 8
                patch_size=2,
                in_channels=4,
                out_channels=8,  # predicts noise and the learned variance
                num_layers=28,
                num_attention_heads=16,
                attention_head_dim=72,
                cross_attention_dim=1152,  # = 16 x 72
                caption_channels=4096,  # T5-XXL width
                attention_bias=True,
                activation_fn="gelu-approximate",
                num_embeds_ada_norm=1000,
                norm_type="ada_norm_single",
                norm_elementwise_affine=False,
                norm_eps=1e-6,
                interpolation_scale=2,  # conversion script: {512: 1, 1024: 2}
                use_additional_conditions=False,  # Σ drops α's size/aspect micro-conditions
            ),
            dtype,
        )
        text_encoder = _cast(_t5_xxl(), dtype)
        vae = _cast(_sd_vae(1024, scaling_factor=0.13025, force_upcast=True), dtype)  # SDXL's VAE
    return PixArtSigmaPipeline(
        tokenizer=t5_tokenizer(300),
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(),  # the conversion script's: defaults (linear betas, ε)
    )


# ---- Sana 1600M -----------------------------------------------------------------------------------
def _dc_ae():
    """mit-han-lab/dc-ae-f32c32-sana-1.0 (312M): the deep-compression autoencoder, 32x down, 32 channels."""
    from diffusers import AutoencoderDC

    blocks = ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3
    multiscales = ((), (), (), (5,), (5,), (5,))
    return AutoencoderDC(
        in_channels=3,
        latent_channels=32,
        attention_head_dim=32,
        encoder_block_types=blocks,
        decoder_block_types=blocks,
        encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
        decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
        encoder_layers_per_block=(2, 2, 2, 3, 3, 3),
        decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
        encoder_qkv_multiscales=multiscales,
        decoder_qkv_multiscales=multiscales,
        downsample_block_type="Conv",  # strided convs, not pixel_unshuffle
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )


def _gemma2_2b():
    """google/gemma-2-2b-it's decoder without its LM head (Gemma2Model, 2.6B): Sana's text encoder."""
    from transformers import Gemma2Config, Gemma2Model

    config = Gemma2Config(
        vocab_size=256000,
        hidden_size=2304,
        intermediate_size=9216,
        num_hidden_layers=26,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=256,
        sliding_window=4096,
        final_logit_softcapping=30.0,
        attn_logit_softcapping=50.0,
    )
    return Gemma2Model(config)


def build_sana_random(device="cpu", dtype=None):
    """Efficient-Large-Model/Sana_1600M_1024px_diffusers (1.6B linear-attention DiT, Gemma-2-2B text
    encoder, DC-AE f32c32) with random weights: for benchmarks only, its images are noise."""
    from diffusers import DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel

    from pipeline.generate.tokenizer import gemma_tokenizer

    with _seeded(device):
        transformer = _cast(
            SanaTransformer2DModel(
                in_channels=32,
                out_channels=32,
                num_attention_heads=70,
                attention_head_dim=32,
                num_layers=20,
                num_cross_attention_heads=20,
                cross_attention_head_dim=112,
                cross_attention_dim=2240,  # = 70 x 32 = 20 x 112
                caption_channels=2304,  # Gemma-2-2B width
                mlp_ratio=2.5,
                attention_bias=False,
                sample_size=32,  # 1024 px / 32
                patch_size=1,
                norm_elementwise_affine=False,
                norm_eps=1e-6,
                interpolation_scale=None,  # 1024 px: no positional embedding (conversion script)
            ),
            dtype,
        )
        text_encoder = _cast(_gemma2_2b(), dtype)
        vae = _cast(_dc_ae(), dtype)
    scheduler = DPMSolverMultistepScheduler(  # the conversion script's default "flow-dpm_solver"
        flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction"
    )
    return SanaPipeline(
        tokenizer=gemma_tokenizer(300),
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )
