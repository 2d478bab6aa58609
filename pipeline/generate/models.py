"""Model presets and loading (docs/DESIGN.md §7).

`model:` is one of
- a preset name (pipeline/generate/presets.py: tiny, tiny-sdxl, tiny-sd2, tiny-flux, tiny-sd3,
  tiny-pixart, tiny-sana, toy, and the *-random published architectures), which also knows the
  preset's size, guidance, family and default CLIP;
- a local diffusers directory (model_index.json + safetensors);
- a cloud URL of such a directory (s3://..., gs://...): copied through fsspec into a local cache;
- a hub id (org/name): works where the hub is reachable or cached, a clear error offline.
Only safetensors are loaded and no remote code runs. The model's family (families.py) is read from
its pipeline class before loading and checked against what loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from pathlib import Path

from pipeline.core.storage import filesystem
from pipeline.generate import families, presets
from pipeline.generate.load import ModelError, dtype_kwarg, from_pretrained  # noqa: F401 - ModelError: the error of this module
from pipeline.generate.presets import (  # noqa: F401 - re-exported: older imports keep working
    DEFAULT_GUIDANCE,
    PRESETS,
    TINY_SEED,
    build_sd15_random,
    build_tiny_pipeline,
)
from pipeline.generate.tokenizer import cache_dir

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
SCHEDULER_CLASSES = {  # config name -> (diffusers class, extra config)
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "ddim": ("DDIMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
}


def is_url(spec: str) -> bool:
    return "://" in spec and not spec.startswith("file://")


def model_kind(spec: str) -> str:
    """What a `model:` value names, decided here and only here (every function below switches on it):
    preset | file (a single .safetensors checkpoint) | dir (a local diffusers folder) | url | hub."""
    if presets.get(spec) is not None:
        return "preset"
    local = spec.removeprefix("file://")
    if local.endswith(".safetensors"):
        return "file"
    if is_url(spec):
        return "url"
    if (
        os.path.isdir(local)
        or (os.path.sep in spec and not HUB_ID.match(spec))
        or spec.startswith((".", "/"))
    ):
        return "dir"
    return "hub"


def check_model_spec(spec: str, storage=None) -> str:
    """Cheap up-front check (no weights read). Returns the kind (model_kind)."""
    kind, local = model_kind(spec), spec.removeprefix("file://")
    if kind == "preset" and presets.get(spec).check is not None:
        try:
            presets.get(spec).check()
        except ValueError as e:
            raise ModelError(str(e)) from None
    elif kind == "file" and not os.path.isfile(local):
        raise ModelError(f"model {spec!r}: no such single-file checkpoint")
    elif kind == "dir" and not os.path.isdir(local):
        raise ModelError(f"model {spec!r}: no such local directory")
    elif kind == "dir" and not os.path.isfile(os.path.join(local, "model_index.json")):
        raise ModelError(f"model {spec!r} is a directory without model_index.json (not a diffusers pipeline)")
    elif kind == "url" and not _url_exists(spec, storage):
        raise ModelError(f"model {spec!r}: no model_index.json at that URL")
    elif kind == "hub":
        _check_hub_id(spec)
    return kind


def _url_exists(spec: str, storage) -> bool:
    fs, path = filesystem(spec, storage)
    return fs.exists(f"{path}/model_index.json")


def _check_hub_id(spec: str) -> None:
    if not HUB_ID.match(spec):
        raise ModelError(
            f"model {spec!r} is not a preset ({', '.join(presets.PRESETS)}), a local directory, "
            f"a cloud URL or a hub id"
        )
    if os.environ.get("HF_HUB_OFFLINE") == "1" and not _in_hub_cache(spec):
        raise ModelError(
            f"model {spec!r} looks like a hub id, but the hub is offline (HF_HUB_OFFLINE=1) and "
            f"it is not in the local cache; use a local directory or a preset"
        )


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)
    except Exception:
        return False


def recommended_guidance(spec: str, family: str | None = None) -> float:
    """generation.guidance_scale when the config leaves it null: the preset's recommendation (toy
    1.0: it follows colour and shape words there and reproduces its world's skews) unless another family
    is named, else the family's (7.5 for SD and SDXL, 0 for the few-step ones; the pipeline class's
    default for the transformer families)."""
    preset = presets.get(spec)
    if preset and family in (None, preset.family):
        return preset.guidance
    return families.get(family or "sd").guidance


DEFAULT_RESOLUTION = 512  # when a model's native size cannot be read without loading it


def _config_reader(spec: str, storage):
    """read(relative path) -> text of a model's config files without loading it, or None where they are
    not readable before loading (a hub id, a preset built in code)."""
    kind = model_kind(spec)
    if kind == "preset":
        where = presets.get(spec).config_dir
        return (lambda rel: Path(where(), rel).read_text()) if where else None
    if kind == "dir":
        return lambda rel: Path(spec.removeprefix("file://"), rel).read_text()
    if kind == "url":
        fs, path = filesystem(spec, storage)
        return lambda rel: fs.cat_file(f"{path}/{rel}").decode()
    return None


def native_resolution(spec: str, storage=None, single_file_config: str | None = None) -> int:
    """The model's native image size from its configs alone (the denoiser's sample size x the VAE's
    scale factor; FLUX's configs carry no sample size: 128 latents, its pipeline's default); a
    single-file checkpoint's come from its `single_file_config` directory."""
    import json

    if single_file_config and model_kind(spec) == "file":
        spec = single_file_config
    if model_kind(spec) == "preset":
        return presets.get(spec).native_size
    read = _config_reader(spec, storage)
    if read is None:
        return DEFAULT_RESOLUTION  # a hub id: its configs are not read before loading
    try:
        vae = json.loads(read("vae/config.json"))
        levels = vae.get("encoder_block_out_channels") or vae["block_out_channels"]  # DC-AE | KL
        for denoiser in ("unet", "transformer"):
            try:
                net = json.loads(read(f"{denoiser}/config.json"))
            except OSError:
                continue
            return int(net.get("sample_size") or FLUX_SAMPLE_SIZE) * 2 ** (len(levels) - 1)
        return DEFAULT_RESOLUTION
    except (OSError, KeyError, ValueError, TypeError):
        return DEFAULT_RESOLUTION


FLUX_SAMPLE_SIZE = 128  # FluxPipeline.default_sample_size: 1024 px at the VAE's 8x


def model_family(spec: str, configured: str = "auto", storage=None, single_file_config=None) -> str:
    """generation.family: the configured one, else the preset's, else from model_index.json's pipeline
    class (FLUX: dev or schnell from its guidance embedding). A class sdgen does not run is a ModelError
    naming it and the supported ones, before any work starts. A hub id's configs are not read before
    loading: SD unless configured (the loaded pipeline is checked against it)."""
    import json

    if configured != "auto":
        return configured
    if single_file_config and model_kind(spec) == "file":
        spec = single_file_config
    if model_kind(spec) == "preset":
        return presets.get(spec).family
    read = _config_reader(spec, storage)
    if read is None:
        return "sd"
    try:
        class_name = json.loads(read("model_index.json"))["_class_name"]
    except (OSError, KeyError, ValueError, TypeError):
        return "sd"  # unreadable here: loading will say what is wrong
    embeds = None
    if class_name == "FluxPipeline":
        try:
            embeds = bool(json.loads(read("transformer/config.json")).get("guidance_embeds", True))
        except (OSError, ValueError):
            embeds = None
    return families.family_of_class(class_name, embeds, where=f" {spec!r}").name


def train_timesteps(spec: str, storage=None) -> int | None:
    """The scheduler's training timesteps (``num_train_timesteps``) from its config alone, without
    loading the model: a preset built in code has diffusers' default (1000); a preset with configs on
    disk (toy), a local dir or a URL is read. None for a hub id (not read before loading): the worker
    then takes the loaded scheduler's, once."""
    import json

    read = _config_reader(spec, storage)
    if read is None:
        return 1000 if model_kind(spec) == "preset" else None
    try:
        return int(json.loads(read("scheduler/scheduler_config.json")).get("num_train_timesteps", 1000))
    except (OSError, KeyError, ValueError, TypeError):
        return None


def fetch_url_to_cache(url: str, storage=None) -> str:
    """Copy a cloud diffusers directory into the local cache once; returns the local dir."""
    fs, path = filesystem(url, storage)
    dest = cache_dir() / "models" / hashlib.sha256(url.encode()).hexdigest()[:16]
    if (dest / ".complete").exists():
        return str(dest)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for remote in fs.find(path):
        rel = remote[len(path) :].lstrip("/")
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


def from_single_file(path: str, config_dir: str, dtype):
    """A single-file checkpoint (original Stable Diffusion key layout, .safetensors) with the configs
    of a local diffusers directory: nothing is fetched from the hub (local_files_only)."""
    import json

    import diffusers

    index = Path(config_dir, "model_index.json")
    if not index.is_file():
        raise ModelError(
            f"single_file_config {config_dir!r}: no model_index.json (a diffusers directory is needed)"
        )
    cls = getattr(diffusers, json.loads(index.read_text())["_class_name"])
    kwargs = {dtype_kwarg(): dtype, "config": config_dir, "local_files_only": True}
    if "safety_checker" in json.loads(index.read_text()):
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        return cls.from_single_file(path, **kwargs)
    except Exception as e:
        raise ModelError(
            f"could not load single-file model {path!r} with configs {config_dir!r}: {type(e).__name__}: {e}"
        ) from e


def apply_lora(pipe, path: str, scale: float) -> None:
    """Load LoRA weights from a local path and fuse them at `scale` (no per-step adapter cost)."""
    if not os.path.exists(path):
        raise ModelError(f"lora.path {path!r}: no such file or directory")
    try:
        pipe.load_lora_weights(path, adapter_name="sdgen")
        pipe.fuse_lora(lora_scale=scale, adapter_names=["sdgen"])
        pipe.unload_lora_weights()  # the fused weights stay; the adapter modules go
    except Exception as e:
        raise ModelError(f"could not apply lora.path {path!r}: {type(e).__name__}: {e}") from e


def load_pipeline(
    spec: str,
    dtype,
    device,
    scheduler: str = "default",
    storage=None,
    lora=None,
    single_file_config: str | None = None,
    family: str | None = None,
    cpu_offload: bool = False,
):
    """The text-to-image pipeline for `spec`, on `device` in `dtype`, with the chosen scheduler;
    `lora` (a LoraConfig) is fused in when it has a path; `family` (resolved) is checked against what
    loaded and brings its scheduler settings (few-step variants); `cpu_offload` keeps each component on
    the CPU until it runs (accelerate's model offload) instead of moving the whole pipeline."""
    kind, local = model_kind(spec), spec.removeprefix("file://")
    if kind == "preset":  # built ones are created in float32 and cast; loaded ones get the dtype kwarg
        pipe = presets.get(spec).build(device, dtype)
    elif kind == "file":
        pipe = from_single_file(local, single_file_config, dtype)
    elif kind == "dir":
        pipe = from_pretrained(local, dtype)
    elif kind == "url":
        pipe = from_pretrained(fetch_url_to_cache(spec, storage), dtype)
    else:
        pipe = from_pretrained(spec, dtype, True)
    fam = check_family(pipe, spec, family)
    if lora is not None and lora.path:
        apply_lora(pipe, lora.path, lora.scale)
    set_scheduler(pipe, scheduler, fam)
    if cpu_offload:
        enable_cpu_offload(pipe, device)
    else:
        pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_family(pipe, spec: str, family: str | None):
    """The loaded pipeline's family, which must be of the resolved family's class (a hub id's class is
    only known now); a class sdgen does not run is a ModelError naming the supported ones."""
    loaded = families.family_of_pipe(pipe)
    if family is None:
        return loaded
    want = families.get(family)
    if want.pipeline != loaded.pipeline:
        raise ModelError(
            f"model {spec!r} loaded as {loaded.pipeline} (family {loaded.name!r}), but generation.family "
            f"is {family!r} ({want.pipeline}); set generation.family: {loaded.name} or auto"
        )
    return want


def enable_cpu_offload(pipe, device) -> None:
    if device.type != "cuda":
        raise ModelError(f"accel.cpu_offload needs a CUDA device, got device {str(device)!r}")
    pipe.enable_model_cpu_offload(device=device)


def set_scheduler(pipe, name: str, fam=None) -> None:
    """Swap the scheduler, keeping the model's noise schedule (betas, timestep spacing); a few-step
    family (SDXL-Turbo/Lightning) samples trailing timesteps. The named schedulers are DDPM-type: the
    flow-matching families keep their own (its timestep shift comes from the model's config)."""
    import diffusers

    fam = fam or families.family_of_pipe(pipe)
    if name == "default":
        if fam.scheduler:
            pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, **fam.scheduler)
        return
    if name not in SCHEDULER_CLASSES:
        raise ModelError(f"unknown scheduler {name!r}; choose one of default, {', '.join(SCHEDULER_CLASSES)}")
    if fam.transformer:
        raise ModelError(
            f"generation.scheduler {name!r} is a DDPM-type scheduler; the {fam.name} family runs its own "
            f"flow-matching scheduler: use scheduler: default"
        )
    cls_name, extra = SCHEDULER_CLASSES[name]
    pipe.scheduler = getattr(diffusers, cls_name).from_config(
        pipe.scheduler.config, **{**extra, **fam.scheduler}
    )


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
