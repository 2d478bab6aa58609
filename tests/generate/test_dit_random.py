"""The random-weight DiT pipelines (pipeline/generate/dit_random.py) built on torch's meta device: the
published architectures, parameter for parameter, with nothing allocated."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from pipeline.generate import dit_random  # noqa: E402

B = 10**9
# Published sizes, parameters per component:
FLUX_TRANSFORMER = 11.90 * B  # FLUX.1-dev/-schnell: "12B"; the HF model page lists 11.9B params
T5_XXL_ENCODER = 4.762 * B  # text_encoder_2 of FLUX.1: 9,524,621,312 bytes of bf16 in its safetensors index
CLIP_L_TEXT = 0.1231 * B  # openai/clip-vit-large-patch14's text tower (SD1.5/SDXL text_encoder: 123.06M)
CLIP_BIGG_TEXT = 0.6947 * B  # OpenCLIP bigG text tower with projection (SDXL's text_encoder_2: 694.66M)
SD35_LARGE_TRANSFORMER = 8.06 * B  # Stability AI's SD3.5 Large model card: "8.1 billion parameters" MMDiT
PIXART_SIGMA_TRANSFORMER = 0.61 * B  # PixArt-Σ paper: 0.6B (DiT-XL/2 + cross-attention; α has 0.611B)
SANA_1600M_TRANSFORMER = 1.60 * B  # Sana paper / model name: 1.6B (Sana-1600M)
GEMMA2_2B = 2.61 * B  # google/gemma-2-2b model page: 2.61B params (the LM head is tied to the embedding)

PRESETS = {
    "build_flux_dev_random": (
        "FluxPipeline",
        {"transformer": FLUX_TRANSFORMER, "text_encoder_2": T5_XXL_ENCODER, "text_encoder": CLIP_L_TEXT},
    ),
    "build_flux_schnell_random": (
        "FluxPipeline",
        {"transformer": FLUX_TRANSFORMER, "text_encoder_2": T5_XXL_ENCODER},
    ),
    "build_sd35_random": (
        "StableDiffusion3Pipeline",
        {
            "transformer": SD35_LARGE_TRANSFORMER,
            "text_encoder_3": T5_XXL_ENCODER,
            "text_encoder_2": CLIP_BIGG_TEXT,
            "text_encoder": CLIP_L_TEXT,
        },
    ),
    "build_pixart_random": (
        "PixArtSigmaPipeline",
        {"transformer": PIXART_SIGMA_TRANSFORMER, "text_encoder": T5_XXL_ENCODER},
    ),
    "build_sana_random": (
        "SanaPipeline",
        {"transformer": SANA_1600M_TRANSFORMER, "text_encoder": GEMMA2_2B},
    ),
}


def _modules(pipe):
    return [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]


@pytest.mark.parametrize("builder", sorted(PRESETS))
def test_meta_build_has_published_architecture(builder):
    pipe_class, published = PRESETS[builder]
    pipe = getattr(dit_random, builder)(device="meta")
    assert type(pipe).__name__ == pipe_class
    tensors = [t for m in _modules(pipe) for t in (*m.parameters(), *m.buffers())]
    assert tensors and all(t.device.type == "meta" for t in tensors)
    counts = dit_random.parameter_counts(pipe)
    assert set(counts) == {n for n, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    for name, size in published.items():
        assert abs(counts[name] - size) / size < 0.02, (name, counts[name], size)


def test_flux_variants_differ_where_published():
    dev, schnell = dit_random.build_flux_dev_random("meta"), dit_random.build_flux_schnell_random("meta")
    assert dev.transformer.config.guidance_embeds and not schnell.transformer.config.guidance_embeds
    assert dev.scheduler.config.use_dynamic_shifting and dev.scheduler.config.max_shift == 1.15
    assert not schnell.scheduler.config.use_dynamic_shifting and schnell.scheduler.config.shift == 1.0
    assert dev.vae.config.latent_channels == 16 and dev.vae.config.shift_factor == 0.1159


def test_dtype_casts_every_module_but_t5_wo_in_fp16():
    """Like from_pretrained(torch_dtype=...): bf16 everywhere; in fp16 T5 keeps its `wo` in fp32."""
    pipe = dit_random.build_pixart_random("meta", dtype=torch.bfloat16)
    assert {p.dtype for m in _modules(pipe) for p in m.parameters()} == {torch.bfloat16}
    pipe = dit_random.build_pixart_random("meta", dtype=torch.float16)
    fp32 = {n for n, p in pipe.text_encoder.named_parameters() if p.dtype == torch.float32}
    assert fp32 and all(".wo." in n for n in fp32)
    assert {p.dtype for p in pipe.transformer.parameters()} == {torch.float16}


@pytest.mark.parametrize(
    "builder, args, shapes",
    [
        ("build_flux_dev_random", (), [(1, 512, 4096), (1, 768)]),  # T5 states (512 tokens), CLIP pooled
        ("build_sd35_random", (None, None), [(1, 77 + 256, 4096), None, (1, 2048)]),  # CLIP+T5, 2 pooled
        ("build_sana_random", (), [(1, 300, 2304)]),  # Gemma states, last 300 tokens
    ],
)
def test_prompt_encodes_to_the_transformer_widths_on_meta(builder, args, shapes):
    """The tokenizers fit the pipelines and the text encoders' widths the transformers' (PixArt-Σ is left
    out: T5 with an attention mask calls .item(), which meta tensors cannot)."""
    pipe = getattr(dit_random, builder)(device="meta")
    with torch.no_grad():
        out = pipe.encode_prompt("a photo of a cat", *args, device=torch.device("meta"))
    for got, want in zip(out, shapes):
        assert want is None or tuple(got.shape) == want
