"""Model presets and loading (docs/DESIGN.md §7).

`model:` is one of
- a preset name (pipeline/generate/presets.py: tiny, tiny-sdxl, tiny-sd2, toy, sd15-random,
  sd2-random, sdxl-random), which also knows the preset's size, guidance and default CLIP;
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
from pipeline.generate import presets
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


def recommended_guidance(spec: str) -> float:
    """generation.guidance_scale when the config leaves it null: the preset's recommendation (toy
    1.0: it follows colour and shape words there and reproduces its world's skews), else 7.5."""
    return presets.get(spec).guidance if model_kind(spec) == "preset" else DEFAULT_GUIDANCE


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
    """The model's native image size from its configs alone (UNet sample_size x VAE scale factor);
    a single-file checkpoint's come from its `single_file_config` directory."""
    import json

    if single_file_config and model_kind(spec) == "file":
        spec = single_file_config
    if model_kind(spec) == "preset":
        return presets.get(spec).native_size
    read = _config_reader(spec, storage)
    if read is None:
        return DEFAULT_RESOLUTION  # a hub id: its configs are not read before loading
    try:
        unet, vae = json.loads(read("unet/config.json")), json.loads(read("vae/config.json"))
        return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, KeyError, ValueError, TypeError):
        return DEFAULT_RESOLUTION


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
):
    """The text-to-image pipeline for `spec`, on `device` in `dtype`, with the chosen scheduler;
    `lora` (a LoraConfig) is fused in when it has a path."""
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
    if lora is not None and lora.path:
        apply_lora(pipe, lora.path, lora.scale)
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
