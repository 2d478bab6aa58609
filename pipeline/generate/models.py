"""Model presets and loading (docs/DESIGN.md §7).

`model:` is one of
- `tiny`: an SD1.5-shaped pipeline with small widths and random weights from a fixed seed, built
  in seconds on CPU (tests, plumbing);
- `toy`: the shipped toy-world pipeline (pipeline/toyworld/weights/sd), trained on the toy world;
- `sd15-random`: the SD1.5 architecture with random weights (benchmarks: real compute, noise out);
- a local diffusers directory (model_index.json + safetensors);
- a cloud URL of such a directory (s3://..., gs://...): copied through fsspec into a local cache;
- a hub id (org/name): works where the hub is reachable or cached, a clear error offline.
Only safetensors are loaded and no remote code runs.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from pathlib import Path

from pipeline.core.storage import filesystem
from pipeline.generate.tokenizer import cache_dir, clip_tokenizer

PRESETS = ("tiny", "toy", "sd15-random")
TINY_SEED = 20260101  # fixed: every process builds the same random tiny model
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
SCHEDULER_CLASSES = {  # config name -> (diffusers class, extra config)
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "ddim": ("DDIMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
}


class ModelError(ValueError):
    """The model spec cannot be resolved or loaded; the message names the spec."""


def is_url(spec: str) -> bool:
    return "://" in spec and not spec.startswith("file://")


def check_model_spec(spec: str, storage=None) -> str:
    """Cheap up-front check (no weights read). Returns the kind: preset | dir | url | hub."""
    if spec in PRESETS:
        if spec == "toy":
            from pipeline.toyworld import SD_DIR

            if not (Path(SD_DIR) / "model_index.json").exists():
                raise ModelError(f"model 'toy': shipped weights missing at {SD_DIR}; run `make toy-models`")
        return "preset"
    local = spec.removeprefix("file://")
    if os.path.isdir(local):
        if not os.path.isfile(os.path.join(local, "model_index.json")):
            raise ModelError(f"model {spec!r} is a directory without model_index.json (not a diffusers pipeline)")
        return "dir"
    if is_url(spec):
        fs, path = filesystem(spec, storage)
        if not fs.exists(f"{path}/model_index.json"):
            raise ModelError(f"model {spec!r}: no model_index.json at that URL")
        return "url"
    if os.path.sep in spec and not HUB_ID.match(spec) or spec.startswith((".", "/")):
        raise ModelError(f"model {spec!r}: no such local directory")
    if not HUB_ID.match(spec):
        raise ModelError(f"model {spec!r} is not a preset ({', '.join(PRESETS)}), a local directory, "
                         f"a cloud URL or a hub id")
    if os.environ.get("HF_HUB_OFFLINE") == "1" and not _in_hub_cache(spec):
        raise ModelError(f"model {spec!r} looks like a hub id, but the hub is offline (HF_HUB_OFFLINE=1) and "
                         f"it is not in the local cache; use a local directory or a preset")
    return "hub"


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)
    except Exception:
        return False


DEFAULT_GUIDANCE = 7.5  # diffusers' StableDiffusionPipeline default


def recommended_guidance(spec: str) -> float:
    """generation.guidance_scale when the config leaves it null: the toy model's own recommendation
    (it follows colour and shape words at 1.0 and reproduces its world's skews only there), else 7.5."""
    if spec == "toy":
        from pipeline.toyworld import DEFAULTS

        return float(DEFAULTS["guidance_scale"])
    return DEFAULT_GUIDANCE


DEFAULT_RESOLUTION = 512  # when a model's native size cannot be read without loading it


def native_resolution(spec: str, storage=None) -> int:
    """The model's native image size from its configs alone (UNet sample_size x VAE scale factor)."""
    import json

    if spec in ("tiny", "sd15-random"):
        return 64 if spec == "tiny" else 512
    if spec == "toy":
        from pipeline.toyworld import SD_DIR

        spec = str(SD_DIR)
    local = spec.removeprefix("file://")
    if os.path.isdir(local):
        read = lambda rel: Path(local, rel).read_text()  # noqa: E731
    elif is_url(spec):
        fs, path = filesystem(spec, storage)
        read = lambda rel: fs.cat_file(f"{path}/{rel}").decode()  # noqa: E731
    else:
        return DEFAULT_RESOLUTION  # a hub id: its configs are not read before loading
    try:
        unet, vae = json.loads(read("unet/config.json")), json.loads(read("vae/config.json"))
        return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, KeyError, ValueError, TypeError):
        return DEFAULT_RESOLUTION


def fetch_url_to_cache(url: str, storage=None) -> str:
    """Copy a cloud diffusers directory into the local cache once; returns the local dir."""
    fs, path = filesystem(url, storage)
    dest = cache_dir() / "models" / hashlib.sha256(url.encode()).hexdigest()[:16]
    if (dest / ".complete").exists():
        return str(dest)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for remote in fs.find(path):
        rel = remote[len(path):].lstrip("/")
        if rel.endswith((".bin", ".ckpt", ".pt", ".pth")):
            continue  # safetensors only: pickled weights never leave the bucket
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(tmp / rel))
    (tmp / ".complete").write_text(url)
    if dest.exists():  # another actor won the race; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, dest)
    return str(dest)


def build_tiny_pipeline():
    """SD1.5-shaped StableDiffusionPipeline with small widths and random weights (fixed seed).
    The VAE downsamples by 8 like SD's, so the same width/height rules apply."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):  # never disturb (or depend on) the caller's RNG
        torch.manual_seed(TINY_SEED)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, sample_size=8, cross_attention_dim=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=8)
        vae = AutoencoderKL(
            block_out_channels=(16, 16, 32, 32), norm_num_groups=8, latent_channels=4, layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        text = CLIPTextModel(CLIPTextConfig(
            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            vocab_size=49408, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1)
    return StableDiffusionPipeline(
        unet=unet.eval(), vae=vae.eval(), text_encoder=text.eval(), tokenizer=clip_tokenizer(77),
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def build_sd15_random(device="cpu"):
    """The Stable Diffusion 1.5 architecture (859M-parameter UNet, 512x512) with random weights,
    initialised directly on `device`: same compute as the real model, for benchmarks only (its
    images are noise). Configs as in shared/gpu/sd_anchor.py."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(TINY_SEED)
        unet = UNet2DConditionModel(
            sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
            cross_attention_dim=768, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        text = CLIPTextModel(CLIPTextConfig(
            hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
            vocab_size=49408, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_act="quick_gelu"))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1)
    return StableDiffusionPipeline(
        unet=unet.eval(), vae=vae.eval(), text_encoder=text.eval(), tokenizer=clip_tokenizer(77),
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _dtype_kwarg() -> str:
    """diffusers renamed from_pretrained's torch_dtype to dtype (the old name warns): use what it has."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"


def _from_pretrained(source: str, dtype, offline_hint: bool):
    import json

    from diffusers import AutoPipelineForText2Image
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()  # one bar per component per actor is noise in a job's log
    tlog.disable_progress_bar()
    kwargs = {_dtype_kwarg(): dtype, "use_safetensors": True}
    index = Path(source, "model_index.json")
    if index.exists() and "safety_checker" in json.loads(index.read_text()):
        # sdgen scores safety itself on the CLIP tensor it already has (no second CLIP pass)
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        return AutoPipelineForText2Image.from_pretrained(source, **kwargs)
    except Exception as e:
        hint = " (the hub is unreachable or HF_HUB_OFFLINE=1: use a local directory)" if offline_hint else ""
        raise ModelError(f"could not load model {source!r}{hint}: {type(e).__name__}: {e}") from e


def load_pipeline(spec: str, dtype, device, scheduler: str = "default", storage=None):
    """The text-to-image pipeline for `spec`, on `device` in `dtype`, with the chosen scheduler."""
    if spec in ("tiny", "sd15-random"):  # built in float32; loaded ones get torch_dtype instead
        pipe = build_tiny_pipeline() if spec == "tiny" else build_sd15_random(device)
        if dtype != pipe.unet.dtype:
            pipe = pipe.to(dtype=dtype)
    elif spec == "toy":
        from pipeline.toyworld import SD_DIR

        pipe = _from_pretrained(str(SD_DIR), dtype, False)
    elif os.path.isdir(spec.removeprefix("file://")):
        pipe = _from_pretrained(spec.removeprefix("file://"), dtype, False)
    elif is_url(spec):
        pipe = _from_pretrained(fetch_url_to_cache(spec, storage), dtype, False)
    else:
        pipe = _from_pretrained(spec, dtype, True)
    set_scheduler(pipe, scheduler)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def set_scheduler(pipe, name: str) -> None:
    """Swap the scheduler, keeping the model's noise schedule (betas, timestep spacing)."""
    if name == "default":
        return
    if name not in SCHEDULER_CLASSES:
        raise ModelError(f"unknown scheduler {name!r}; choose one of default, {', '.join(SCHEDULER_CLASSES)}")
    import diffusers

    cls_name, extra = SCHEDULER_CLASSES[name]
    pipe.scheduler = getattr(diffusers, cls_name).from_config(pipe.scheduler.config, **extra)


@contextlib.contextmanager
def torch_threads(n: float):
    """Run a block with torch using n threads (what a Ray actor with n CPUs uses): CPU float
    reductions, hence PNG bytes, depend on the thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device_dtype(device: str, dtype: str):
    """`auto` device = cuda when present; `auto` dtype = float16 on CUDA, float32 on CPU."""
    import torch

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    if dtype == "auto":
        dt = torch.float16 if dev.type == "cuda" else torch.float32
    else:
        dt = getattr(torch, dtype)
    return dev, dt
