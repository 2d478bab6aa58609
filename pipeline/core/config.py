"""Job configuration: YAML validated up front, `--set dotted.key=value` overrides, a fingerprint.

Every knob is documented here (the comment says why it exists) and in configs/demo.yaml. Unknown
keys are rejected with the offending key named, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from pipeline.core.sections import (  # noqa: F401 (re-exported: config.LimitsConfig, ...)
    AccelConfig,
    AuditDefaults,
    CostConfig,
    LimitsConfig,
    LoraConfig,
    MitigationConfig,
    MitigationVariant,
    ProbesConfig,
    QuotaConfig,
    RayConfig,
    RetryConfig,
    SafetyConfig,
    ScoringConfig,
    ShardsConfig,
    WriteConfig,
    _Strict,
)

SCHEDULERS = ("default", "pndm", "ddim", "dpm++", "euler", "euler_a")
DTYPES = ("auto", "float32", "float16", "bfloat16")
# generate/families.py holds what each is (core imports nothing else of sdgen, so the names live here)
FAMILY_NAMES = (
    "sd",
    "sdxl",
    "sdxl-turbo",
    "sdxl-lightning",
    "sd3",
    "flux-dev",
    "flux-schnell",
    "pixart-sigma",
    "sana",
)


class ConfigError(ValueError):
    """A configuration problem, raised before any work starts; the message names key and value."""


class StorageConfig(_Strict):
    # fsspec storage options for s3:// (or other cloud) input, output and model URLs. Anything left
    # null comes from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL).
    endpoint_url: Optional[str] = None  # S3-compatible endpoint (MinIO, moto, R2...); null = AWS
    key: Optional[str] = None  # access key id; redacted in run.json
    secret: Optional[str] = None  # secret access key; redacted in run.json
    region: Optional[str] = None  # bucket region, when the endpoint needs one
    options: dict[str, Any] = Field(default_factory=dict)  # extra fsspec kwargs, passed through as-is


class GenerationConfig(_Strict):
    images_per_prompt: int = 1  # samples per prompt row; a row's `images_per_prompt` column overrides
    # the model family (docs/MODELS.md): auto = from the model's pipeline class (and FLUX's guidance
    # embedding: dev or schnell); name sdxl-turbo or sdxl-lightning for those few-step checkpoints
    family: str = "auto"
    # denoising steps; more = slower, usually sharper; null = the family's: 25 for SD/SDXL, 28 for
    # FLUX-dev and SD3, 4 for FLUX-schnell and SDXL-Lightning, 1 for SDXL-Turbo, 20 for PixArt and Sana
    steps: Optional[int] = None
    # classifier-free guidance; <= 1 disables CFG (half the denoiser work); null = the model's
    # recommended value: 1.0 for the toy model (reproduces its world's colour skews), the family's
    # pipeline default for transformer families (FLUX-dev 3.5 as its guidance embedding), else 7.5
    guidance_scale: Optional[float] = None
    # T5/Gemma prompt length in tokens (FLUX, SD3, PixArt, Sana); null = the pipeline class's default
    max_sequence_length: Optional[int] = None
    # FLUX only: true classifier-free guidance for rows with a negative prompt when > 1 (two
    # transformer passes per step); 1.0 = diffusers' default, FLUX ignores negative prompts
    true_cfg_scale: float = 1.0
    # pixels, multiples of 8; null = the model's native size (its denoiser's sample size x VAE scale:
    # 512 for SD1.5, 1024 for SDXL, FLUX.1, SD3.5 and Sana, 64 for the toy model), resolved before the
    # run and stored in run.json
    width: Optional[int] = None
    height: Optional[int] = None
    batch_size: int = 8  # images per denoiser call; the main throughput lever on GPUs (OOM halves it)
    seed: int = 0  # job seed: sample seeds are sha256(f"{seed}:{prompt_id}:{sample_idx}") (DESIGN §3)
    scheduler: str = "default"  # default (the model's own) | pndm | ddim | dpm++ | euler | euler_a
    dtype: str = "auto"  # auto = float16 on CUDA, float32 on CPU; or float32 | float16 | bfloat16
    negative_prompt: str = ""  # used for rows without a `negative_prompt` column value
    device: str = "auto"  # auto = cuda when present, else cpu; or an explicit torch device string
    channels_last: bool = False  # UNet memory format; measured slower eager on H200 (docs/PERFORMANCE.md)
    compile: bool = False  # torch.compile the denoiser once per actor (~1 min compile; pays off on long runs)

    @field_validator("images_per_prompt", "steps", "batch_size", "max_sequence_length")
    @classmethod
    def _positive(cls, v, info):
        if v is not None and v < 1:
            raise ValueError(f"{info.field_name} must be >= 1, got {v!r}")
        return v

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, v, info):
        if v is not None and (v < 8 or v % 8):
            raise ValueError(f"{info.field_name} must be a positive multiple of 8, got {v!r}")
        return v

    @field_validator("guidance_scale")
    @classmethod
    def _finite(cls, v):
        if v is not None and (not math.isfinite(v) or v < 0):
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {v!r}")
        return v

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, v):
        if not 0 <= v < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {v!r}")
        return v

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, v):
        if v not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {v!r}; choose one of {', '.join(SCHEDULERS)}")
        return v

    @field_validator("family")
    @classmethod
    def _family(cls, v):
        if v != "auto" and v not in FAMILY_NAMES:
            raise ValueError(f"unknown family {v!r}; choose auto or one of {', '.join(FAMILY_NAMES)}")
        return v

    @field_validator("true_cfg_scale")
    @classmethod
    def _true_cfg(cls, v):
        if not math.isfinite(v) or v < 1:
            raise ValueError(f"true_cfg_scale must be a finite number >= 1, got {v!r}")
        return v

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v):
        if v not in DTYPES:
            raise ValueError(f"unknown dtype {v!r}; choose one of {', '.join(DTYPES)}")
        return v


class JobConfig(_Strict):
    input: str  # Parquet prompts: a file, a directory or a cloud prefix (s3://bucket/prompts/)
    output: str  # output directory or cloud prefix (layout in docs/OUTPUT.md: data/, _commits/, run.json)
    model: str = "tiny"  # tiny | toy | local diffusers dir | hub id | cloud URL of a diffusers dir
    storage: StorageConfig = Field(default_factory=StorageConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    shards: ShardsConfig = Field(default_factory=ShardsConfig)
    write: WriteConfig = Field(default_factory=WriteConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    mitigation: MitigationConfig = Field(default_factory=MitigationConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    accel: AccelConfig = Field(default_factory=AccelConfig)
    # for a single-file checkpoint (model: /path/model.safetensors): a local diffusers directory
    # whose configs (model_index.json, */config.json, tokenizers) describe it; its weights are not
    # read. diffusers would fetch these from the hub otherwise, which offline runs cannot.
    single_file_config: Optional[str] = None

    @model_validator(mode="after")
    def _single_file_needs_config(self):
        if str(self.model).endswith(".safetensors") and not self.single_file_config:
            raise ValueError(
                f"model {self.model!r} is a single-file checkpoint: set single_file_config to a local "
                f"diffusers directory with its configs (e.g. the matching base model's)"
            )
        return self

    limits: LimitsConfig = Field(default_factory=LimitsConfig)  # bounded work (not fingerprinted)
    retry: RetryConfig = Field(default_factory=RetryConfig)  # transient storage faults (not fingerprinted)
    audit: AuditDefaults = Field(default_factory=AuditDefaults)  # audit/report defaults (not fingerprinted)
    cost: CostConfig = Field(default_factory=CostConfig)  # money per worker-hour (not fingerprinted)
    quota: Optional[QuotaConfig] = (
        None  # null = one pass; set = rounds until N kept per key (not fingerprinted)
    )

    @model_validator(mode="after")
    def _non_empty(self):
        for key in ("input", "output", "model"):
            if not str(getattr(self, key)).strip():
                raise ValueError(f"{key} must not be empty")
        g, lim = self.generation, self.limits
        if g.steps is not None and g.steps > lim.max_steps:
            raise ValueError(f"generation.steps {g.steps} exceeds limits.max_steps {lim.max_steps}")
        if g.images_per_prompt > lim.max_images_per_prompt:
            raise ValueError(
                f"generation.images_per_prompt {g.images_per_prompt} exceeds "
                f"limits.max_images_per_prompt {lim.max_images_per_prompt}"
            )
        for side in ("width", "height"):
            if getattr(g, side) and getattr(g, side) > lim.max_side:
                raise ValueError(
                    f"generation.{side} {getattr(g, side)} exceeds limits.max_side {lim.max_side}"
                )
        if g.width and g.height and g.width * g.height > lim.max_pixels:
            raise ValueError(
                f"generation.width x height = {g.width} x {g.height} = {g.width * g.height} pixels "
                f"exceeds limits.max_pixels {lim.max_pixels}"
            )
        if (
            self.write.embeddings or self.scoring.aesthetic_weights or self.scoring.preference_model
        ) and not self.scoring.enabled:
            raise ValueError(
                "write.embeddings: true and quality scores "
                "need scoring.enabled: true (they use its embedding)"
            )
        probed = (
            (isinstance(self.probes.attributes, list) and self.probes.attributes)
            or self.safety.concepts not in (None, "auto")
            or self.safety.sd_checker
        )
        if not self.scoring.enabled and probed:  # "auto" is checked once resolved (core/job.py)
            raise ValueError(
                "probes and safety concepts need scoring.enabled: true (they reuse its CLIP forward)"
            )
        return self

    # ---- derived --------------------------------------------------------------------------------
    def fingerprint_fields(self) -> dict:
        """The settings that change output bytes. Execution knobs (batch size, workers, threads,
        device) are left out on purpose: a resume may change them, and the seed contract keeps
        images equal within 2/255 across batch sizes."""
        d = self.model_dump()
        gen = {k: v for k, v in d["generation"].items() if k not in ("batch_size", "device", "compile")}
        # keys added with the model families (wave 3): hashed only where they mean something an older
        # output could not have had, so SD/SDXL outputs keep their fingerprint and resume
        for key, old_meaning in (("family", ("auto", "sd", "sdxl")), ("max_sequence_length", (None,))):
            if gen.get(key) in old_meaning:
                gen.pop(key)
        if gen.get("true_cfg_scale") == 1.0:
            gen.pop("true_cfg_scale")
        write = {k: v for k, v in d["write"].items() if k in ("row_group_size", "png_compress_level")}
        if d["write"]["embeddings"]:  # only when on, so fingerprints of existing outputs stay as they were
            write["embeddings"] = True
        optional = ("aesthetic_weights", "preference_model", "preference_weights")  # absent when null
        scoring = {k: v for k, v in d["scoring"].items() if not (k in optional and v is None)}
        return {
            "input": d["input"].rstrip("/"),
            "model": d["model"],
            "generation": gen,
            "scoring": scoring,
            "shards": d["shards"],
            "write": write,
            "probes": d["probes"],
            "safety": d["safety"],
            "mitigation": d["mitigation"],
            **self._optional_fingerprint(d),
        }

    @staticmethod
    def _optional_fingerprint(d: dict) -> dict:
        """Output-changing keys added after outputs existed: hashed only when set, so older outputs
        keep their fingerprint and resume."""
        extra = {"lora": d["lora"]} if d["lora"]["path"] else {}
        if d["single_file_config"]:
            extra["single_file_config"] = d["single_file_config"]
        if d["accel"]["fp8"]:
            extra["accel"] = {"fp8": True}
        return extra

    def fingerprint(self) -> str:
        blob = json.dumps(self.fingerprint_fields(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def redacted(self) -> dict:
        """The resolved config as a dict with secrets replaced, for run.json and logs."""
        d = self.model_dump()
        for k in ("key", "secret"):
            if d["storage"][k]:
                d["storage"][k] = "***"
        d["storage"]["options"] = {
            k: ("***" if _secret_like(k) else v) for k, v in d["storage"]["options"].items()
        }
        return d


def _secret_like(key: str) -> bool:
    return any(s in key.lower() for s in ("secret", "key", "token", "password", "credential"))


# ---- loading ----------------------------------------------------------------------------------
def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `dotted.key=value` overrides; values parse as YAML (so 3 is int, true is bool)."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects dotted.key=value, got {item!r}")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set has an empty key: {item!r}")
        node = raw
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {p!r} is a value, not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(value) if value != "" else ""
    return raw


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        secret = any(_secret_like(str(p)) for p in e["loc"])
        value = "(value hidden: the key looks secret)" if secret else f"(value {e.get('input')!r})"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key {value}; check the spelling against configs/demo.yaml")
        elif e["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if secret:
                msg = msg.split(", got ")[0]  # a validator's own message may echo the value too
            got = (
                "" if ", got " in msg or secret or not e["loc"] else f" (got {e.get('input')!r})"
            )  # echoed already, or the whole config
            lines.append(f"  {key}: {msg}{got}" + (f" {value}" if secret else ""))
    return f"invalid config {source}:\n" + "\n".join(lines)


def from_dict(raw: dict, overrides: list[str] | None = None, source: str = "<dict>") -> JobConfig:
    """Validate a config dict (after overrides); raise ConfigError naming every bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config {source} must be a mapping at the top level, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [])
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def read_yaml(path: str | Path, what: str, error: type[Exception] = ConfigError):
    """Parse a YAML file; a missing file or bad YAML raises `error` naming `what` and the path."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} file not found: {str(path)!r}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise error(f"{what} {str(path)!r} is not valid YAML: {e}") from None


def load_storage(path: str | Path) -> StorageConfig:
    """Only the `storage:` section of a job config file (read-side commands: the rest may not apply)."""
    return load_store_settings(path)[0]


def load_store_settings(path: str | Path) -> tuple[StorageConfig, RetryConfig]:
    """The `storage:` and `retry:` sections of a job config file: how a read-side command given
    `--config` reaches the output and how often it retries (the rest of the file may not apply)."""
    raw = read_yaml(path, "config") or {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config {str(path)!r} must be a mapping at the top level, got {type(raw).__name__}"
        )
    out = []
    for key, model in (("storage", StorageConfig), ("retry", RetryConfig)):
        try:
            out.append(model.model_validate(raw.get(key) or {}))
        except ValidationError as e:
            raise ConfigError(_format_errors(e, repr(str(path))).replace("\n  ", f"\n  {key}.")) from None
    return out[0], out[1]


def resolve_paths(raw: dict, base: Path) -> dict:
    """Relative local `input`/`output` of a config file resolve against the file's folder (as most
    tools do), written relative to the current directory so a run from the repo root fingerprints
    as before. URLs (``s3://``), absolute paths and --set values (the caller's own) are left alone."""
    raw = dict(raw)
    for key in ("input", "output"):
        v = raw.get(key)
        if isinstance(v, str) and v.strip() and "://" not in v and not os.path.isabs(v):
            raw[key] = os.path.relpath(os.path.join(base, v))
    return raw


def load(path: str | Path, overrides: list[str] | None = None) -> JobConfig:
    """Read a YAML config file (relative paths resolve against its folder), apply overrides, validate."""
    raw = read_yaml(path, "config") or {}
    if isinstance(raw, dict):
        raw = resolve_paths(raw, Path(path).resolve().parent)
    return from_dict(raw, overrides, source=repr(str(path)))
