"""Column names, status values and the Arrow schema of output rows (docs/DESIGN.md §4)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

# Row status values: a failure is data, not a missing row.
OK, FAILED, BLOCKED, INVALID = "ok", "failed", "blocked", "invalid"
STATUSES = (OK, FAILED, BLOCKED, INVALID)

# Input columns with a meaning; every other input column passes through unchanged.
PROMPT, PROMPT_ID = "prompt", "prompt_id"
OVERRIDES = {  # per-row override column -> accepted Arrow type test and config field it overrides
    "negative_prompt": pa.types.is_string,
    "images_per_prompt": pa.types.is_integer,
    "sample_start": pa.types.is_integer,  # first sample_idx of the row (quota rounds continue a prompt)
    "seed": pa.types.is_integer,
    "width": pa.types.is_integer,
    "height": pa.types.is_integer,
    "steps": pa.types.is_integer,
    "guidance_scale": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
}

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # HF datasets Image convention

CORE_FIELDS = [
    pa.field("prompt_id", pa.string()),
    pa.field("sample_idx", pa.int32()),
    pa.field("prompt", pa.string()),
    pa.field("negative_prompt", pa.string()),
    pa.field("seed", pa.int64()),
    pa.field("image", IMAGE_TYPE),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("model", pa.string()),
    pa.field("scheduler", pa.string()),
    pa.field("steps", pa.int32()),
    pa.field("guidance_scale", pa.float32()),
    pa.field("clip_score", pa.float32()),  # Hessel CLIPScore = 2.5 * max(cos, 0)
    pa.field("clip_cos", pa.float32()),  # raw cosine(image, prompt) of the scoring CLIP
    pa.field("status", pa.string()),
    pa.field("error", pa.string()),
    pa.field("shard", pa.string()),
    pa.field("t_generate_s", pa.float32()),  # this row's share of its batch's generation time
    pa.field("t_score_s", pa.float32()),
    pa.field("t_encode_s", pa.float32()),  # PNG encode of this image (in a thread, off the GPU path)
]
CORE_NAMES = [f.name for f in CORE_FIELDS]
# Columns sdgen adds beside the core ones when the config asks (generate/worker.py, probes/image.py):
# never an input's own column, so never a default grouping of the audit.
DERIVED_NAMES = frozenset(
    {
        "phash",
        "clip_image_embedding",
        "aesthetic",
        "preference",
        "source_prompt",
        "mitigation_variant",
        "timings",
    }
)
DERIVED_PREFIXES = ("attr_", "subject_", "safety_", "sd_checker_")


def is_derived(name: str) -> bool:
    """A column sdgen writes (core, probe, score, hash, embedding) or an input column it consumes as a
    per-row setting (OVERRIDES): everything but the input's own passthrough columns."""
    return (
        name in CORE_NAMES or name in DERIVED_NAMES or name in OVERRIDES or name.startswith(DERIVED_PREFIXES)
    )


def output_schema(passthrough: pa.Schema, extra_fields: list[pa.Field] = ()) -> pa.Schema:
    """Core columns, then extra score columns (probes, safety), then passthrough input columns."""
    fields = list(CORE_FIELDS) + list(extra_fields)
    names = {f.name for f in fields}
    fields += [f for f in passthrough if f.name not in names]
    return pa.schema(fields).with_metadata({b"huggingface": json.dumps(hf_features(fields)).encode()})


def _hf_feature(t: pa.DataType):
    if t == IMAGE_TYPE:
        return {"_type": "Image"}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"_type": "List", "feature": _hf_feature(t.value_type)}
    if pa.types.is_fixed_size_list(t):
        return {"_type": "List", "feature": _hf_feature(t.value_type), "length": t.list_size}
    if pa.types.is_struct(t):
        return {f.name: _hf_feature(f.type) for f in t}
    name = {
        pa.string(): "string",
        pa.large_string(): "large_string",
        pa.binary(): "binary",
        pa.bool_(): "bool",
    }.get(t)
    if name is None:  # numbers: Arrow says "float"/"double", datasets wants "float32"/"float64"
        name = (
            np.dtype(t.to_pandas_dtype()).name
            if (pa.types.is_integer(t) or pa.types.is_floating(t))
            else str(t)
        )
    return {"dtype": name, "_type": "Value"}


def hf_features(fields) -> dict:
    """Hugging Face `datasets` feature metadata, so `load_dataset("parquet")` decodes `image`."""
    return {"info": {"features": {f.name: _hf_feature(f.type) for f in fields}}}
