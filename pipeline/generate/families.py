"""The model families sdgen runs, one row each: what differs between a UNet checkpoint of 2022 and a
flow-matching transformer of 2025 is all here, so the worker, the encoder and the resolver ask the
family instead of reading `pipe.unet`.

    family        pipeline class               denoiser     steps  guidance  dtype on CUDA
    sd            StableDiffusionPipeline      unet          25     7.5      float16
    sdxl          StableDiffusionXLPipeline    unet          25     7.5      float16
    sdxl-turbo    StableDiffusionXLPipeline    unet           1     0.0      float16  (trailing timesteps)
    sdxl-lightning StableDiffusionXLPipeline   unet           4     0.0      float16  (trailing timesteps)
    sd3           StableDiffusion3Pipeline     transformer   28     7.0      bfloat16
    flux-dev      FluxPipeline                 transformer   28     3.5      bfloat16 (guidance embedding)
    flux-schnell  FluxPipeline                 transformer    4     0.0      bfloat16 (no guidance)
    pixart-sigma  PixArtSigmaPipeline          transformer   20     4.5      float16
    sana          SanaPipeline                 transformer   20     4.5      bfloat16

Steps and guidance of the transformer families are their pipeline classes' own defaults (schnell's
4 steps are its published recommendation), so a plain `pipe(prompt, generator=...)` with a row's size,
steps and guidance reproduces the row. The UNet families keep sdgen's earlier defaults (25 steps, 7.5).

Seeds: the UNet families draw their latents in sdgen (seeds.initial_latents, float32 then cast: the
contract of waves 1-2, kept byte for byte); the transformer families hand the pipeline one CPU generator
per sample and let its own `prepare_latents` draw each sample's noise in the family's layout (FLUX's
packed 2x2 patches, SD3's 16 channels, Sana's 32x DC-AE), which is exactly what a plain call with that
one generator draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.core.config import FAMILY_NAMES
from pipeline.generate.load import ModelError


@dataclass(frozen=True)
class Family:
    name: str
    pipeline: str  # the diffusers class its checkpoints name in model_index.json
    denoiser: str  # attribute of the denoising network: unet | transformer
    steps: int  # generation.steps when null
    guidance: float  # generation.guidance_scale when null
    cuda_dtype: str  # generation.dtype auto on CUDA (bf16 where fp16 overflows: FLUX, SD3, Sana)
    explicit_latents: bool  # True: sdgen draws SD-layout latents; False: per-sample generators
    max_sequence_length: int | None = None  # the class's default text length (T5/Gemma); None: CLIP only
    # scheduler config overrides of a few-step variant (SDXL-Turbo/Lightning sample trailing timesteps)
    scheduler: dict = field(default_factory=dict)
    description: str = ""

    @property
    def transformer(self) -> bool:
        return self.denoiser == "transformer"


_SD = dict(denoiser="unet", cuda_dtype="float16", explicit_latents=True)
_DIT = dict(denoiser="transformer", explicit_latents=False)
TRAILING = {"timestep_spacing": "trailing"}
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("sd", "StableDiffusionPipeline", steps=25, guidance=7.5, description="SD 1.x / 2.x", **_SD),
        Family("sdxl", "StableDiffusionXLPipeline", steps=25, guidance=7.5, description="SDXL", **_SD),
        Family("sdxl-turbo", "StableDiffusionXLPipeline", steps=1, guidance=0.0, scheduler=TRAILING, **_SD),
        Family(
            "sdxl-lightning", "StableDiffusionXLPipeline", steps=4, guidance=0.0, scheduler=TRAILING, **_SD
        ),
        Family(
            "sd3",
            "StableDiffusion3Pipeline",
            steps=28,
            guidance=7.0,
            cuda_dtype="bfloat16",
            max_sequence_length=256,
            **_DIT,
        ),
        Family(
            "flux-dev",
            "FluxPipeline",
            steps=28,
            guidance=3.5,
            cuda_dtype="bfloat16",
            max_sequence_length=512,
            **_DIT,
        ),
        Family(
            "flux-schnell",
            "FluxPipeline",
            steps=4,
            guidance=0.0,
            cuda_dtype="bfloat16",
            max_sequence_length=512,
            **_DIT,
        ),
        Family(
            "pixart-sigma",
            "PixArtSigmaPipeline",
            steps=20,
            guidance=4.5,
            cuda_dtype="float16",
            max_sequence_length=300,
            **_DIT,
        ),
        Family(
            "sana",
            "SanaPipeline",
            steps=20,
            guidance=4.5,
            cuda_dtype="bfloat16",
            max_sequence_length=300,
            **_DIT,
        ),
    )
}
assert tuple(FAMILIES) == FAMILY_NAMES, "core.config.FAMILY_NAMES lists the families for config validation"
# the family a checkpoint of each class is when nothing else tells (FLUX: its guidance embedding does)
BY_CLASS = {"StableDiffusionPipeline": "sd", "StableDiffusionXLPipeline": "sdxl"}
BY_CLASS.update({f.pipeline: f.name for f in FAMILIES.values() if f.transformer})
SUPPORTED = ", ".join(sorted(set(BY_CLASS) | {"FluxPipeline"}))


def get(name: str) -> Family:
    return FAMILIES[name]


def cuda_dtype(name: str) -> str | None:
    """generation.dtype auto on CUDA for family `name` (None for "auto": not resolved here)."""
    return None if name == "auto" else FAMILIES[name].cuda_dtype


def family_of_class(class_name: str, guidance_embeds: bool | None = None, where: str = "") -> Family:
    """The family of a pipeline class (model_index.json's `_class_name`); exit 2 for any other class."""
    if class_name == "FluxPipeline":
        return FAMILIES["flux-schnell" if guidance_embeds is False else "flux-dev"]
    if class_name not in BY_CLASS:
        raise ModelError(
            f"model{where}: pipeline class {class_name!r} is not supported; supported classes: {SUPPORTED}"
        )
    return FAMILIES[BY_CLASS[class_name]]


def family_of_pipe(pipe) -> Family:
    """The family of a loaded pipeline, from its class (FLUX: dev or schnell by its guidance embedding);
    a named few-step variant (sdxl-turbo, -lightning) is the config's, applied when loading."""
    embeds = None
    if type(pipe).__name__ == "FluxPipeline":
        embeds = bool(getattr(pipe.transformer.config, "guidance_embeds", True))
    return family_of_class(type(pipe).__name__, embeds)


def denoiser(pipe):
    """The denoising network (UNet or transformer) of a loaded pipeline."""
    return pipe.unet if hasattr(pipe, "unet") and pipe.unet is not None else pipe.transformer


def call_kwargs(fam: Family, max_sequence_length: int | None, true_cfg_scale: float, negatives) -> dict:
    """The family's own call arguments beyond size, steps and guidance: the T5/Gemma text length and
    FLUX's true CFG (only when a negative prompt is given: diffusers' rule)."""
    kwargs = {}
    if fam.max_sequence_length is not None:
        kwargs["max_sequence_length"] = max_sequence_length or fam.max_sequence_length
    if fam.name.startswith("flux") and true_cfg_scale > 1 and any(negatives):
        kwargs["true_cfg_scale"] = true_cfg_scale
    return kwargs


def uses_cfg(pipe, fam: Family, guidance_scale: float, true_cfg_scale: float = 1.0, negatives=()) -> bool:
    """Whether the call runs classifier-free guidance (two denoiser passes per step)."""
    if fam.name.startswith("flux"):
        return true_cfg_scale > 1 and any(negatives)
    if fam.transformer:
        return guidance_scale > 1
    # diffusers' UNet rule: CFG when guidance > 1 and the UNet has no guidance embedding (LCM-style)
    return guidance_scale > 1 and getattr(pipe.unet.config, "time_cond_proj_dim", None) is None


def text_kwargs(fam: Family, prompts: list[str], negatives: list[str], cfg: bool) -> dict:
    """The prompts as text for a plain call: FLUX takes a negative prompt only for true CFG (an empty
    one would switch true CFG on for rows that have none)."""
    if fam.name.startswith("flux"):
        return {"prompt": prompts, **({"negative_prompt": negatives} if cfg else {})}
    return {"prompt": prompts, "negative_prompt": negatives}
