"""Loading a diffusers pipeline from a local folder or the hub, and the error every model problem is:
the lowest layer of model handling, under both the preset registry (presets.py) and spec dispatch
(models.py), so neither imports the other's loader."""

from __future__ import annotations

from pathlib import Path


class ModelError(ValueError):
    """The model spec cannot be resolved or loaded; the message names the spec."""


def dtype_kwarg() -> str:
    """diffusers renamed from_pretrained's torch_dtype to dtype (the old name warns): use what it has."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"


def from_pretrained(source: str, dtype, offline_hint: bool = False):
    import json

    from diffusers import AutoPipelineForText2Image
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()  # one bar per component per actor is noise in a job's log
    tlog.disable_progress_bar()
    kwargs = {dtype_kwarg(): dtype, "use_safetensors": True}
    index = Path(source, "model_index.json")
    if index.exists() and "safety_checker" in json.loads(index.read_text()):
        # sdgen scores safety itself on the CLIP tensor it already has (no second CLIP pass)
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        return AutoPipelineForText2Image.from_pretrained(source, **kwargs)
    except Exception as e:
        hint = " (the hub is unreachable or HF_HUB_OFFLINE=1: use a local directory)" if offline_hint else ""
        raise ModelError(f"could not load model {source!r}{hint}: {type(e).__name__}: {e}") from e
