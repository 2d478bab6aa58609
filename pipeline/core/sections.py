"""The job config's sections other than the top level, storage and generation (core/config.py, which
imports these): scoring, shards, writing, probes, safety, mitigation variants, LoRA, GPU speed levers,
limits, storage retries, the Ray executor, audit defaults, quota and cost.
Every knob has a comment saying why it exists; configs/demo.yaml shows them all."""

from __future__ import annotations

import math
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MitigationVariant(_Strict):
    name: str  # recorded in the mitigation_variant column, e.g. "female"
    template: str  # the prompt actually generated; "{prompt}" stands for the original prompt
    weight: float = Field(1.0, gt=0)  # share of each prompt's samples that get this variant

    @field_validator("template")
    @classmethod
    def _has_prompt(cls, v):
        if "{prompt}" not in v:
            raise ValueError(f"a mitigation template must contain {{prompt}}, got {v!r}")
        return v


class MitigationConfig(_Strict):
    # Prompt intervention (docs/AUDIT.md "Mitigation"): each prompt's samples are split over the variants
    # in proportion to their weights (sample k -> variant by stratified position, so 4 samples and
    # two equal weights give exactly 2 + 2). Seeds are unchanged, so before/after audits pair up.
    enabled: bool = False
    only_if_column: Optional[str] = (
        None  # apply to rows where this input column is true/non-empty; null = all rows
    )
    variants: list[MitigationVariant] = Field(default_factory=list)

    @model_validator(mode="after")
    def _enough_variants(self):
        if self.enabled and len(self.variants) < 2:
            raise ValueError(f"mitigation.enabled needs at least 2 variants, got {len(self.variants)}")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"mitigation variant names must be unique, got {names}")
        return self


class LoraConfig(_Strict):
    # LoRA weights from a local path (a directory or .safetensors file written by diffusers'
    # save_lora_weights / peft): users fine-tune styles and subjects this way. Fused into the UNet or
    # transformer (and text encoder) once at load, so generation costs nothing extra per step.
    path: Optional[str] = None  # null = no LoRA
    scale: float = 1.0  # LoRA strength fused into the weights (0 = base model, 1 = as trained)


class AccelConfig(_Strict):
    # GPU speed levers (issue 11), all opt-in. The first group keeps numerics (outputs within the
    # 2/255 batch-composition tolerance) and is not fingerprinted: a resume may change it.
    # prompt embeddings once per unique (prompt, negative) pair in a batch instead of once per image;
    # null = on for CUDA only: on CPU with CFG the text encoder's smaller batch moves a few pixels by
    # 1/255 (measured), so CPU outputs of existing jobs stay byte-identical; CFG off is identical
    encode_unique_prompts: Optional[bool] = None
    # with generation.compile: full = the whole UNet; regional = only its repeated transformer
    # blocks (diffusers compile_repeated_blocks: a fraction of the compile time, most of the speed)
    compile_scope: Literal["full", "regional"] = "full"
    # torch.compile mode: default | reduce-overhead (CUDA graphs: static shapes, no launch gaps)
    # | max-autotune-no-cudagraphs (slow to compile)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = "default"
    # with generation.compile: distinct (width, height) shapes compiled per actor; later shapes run
    # eager, so a job with many sizes never spends its time recompiling
    max_compiled_shapes: int = Field(4, ge=1)
    # with generation.compile: pad a bucket's last, short batch to generation.batch_size (padding
    # rows are discarded; real rows keep their seeds) so the batch dimension never recompiles
    pad_batches: bool = True
    channels_last_vae: bool = False  # VAE decoder in channels_last (generation.channels_last is the UNet's)
    # model CPU offload (accelerate): each component moves to the GPU only while it runs, for cards
    # too small for FLUX or SD3.5 in bf16 (slower: every call moves weights; CUDA only)
    cpu_offload: bool = False
    fuse_qkv: bool = False  # fuse attention Q/K/V projections into one matmul (slower eager; try compiled)
    # persistent torch.compile cache (inductor FX graph / autotune cache) on local or shared disk:
    # a second actor or run with the same shapes starts in seconds instead of recompiling; null = torch's
    # default
    compile_cache_dir: Optional[str] = None
    # The second group changes numerics; it is fingerprinted when set and recorded in run.json:
    # fp8 = torchao float8 dynamic quantisation of the denoiser's (UNet's or transformer's) linear
    # layers (CUDA, sm89+ only)
    fp8: bool = False


class LimitsConfig(_Strict):
    """Bounds on the work one row or one run may ask for, checked before any model loads (config values
    and every row's overrides). They change no output bytes, so they are not fingerprinted."""

    max_steps: int = Field(
        1000, ge=1
    )  # denoising steps per image (also capped by the scheduler's training timesteps)
    # pixels per image (width x height): 4096 x 4096 by default; far past SDXL's 1024 x 1024
    max_pixels: int = Field(4096 * 4096, ge=64)
    max_side: int = Field(8192, ge=8)  # width or height alone: a 100000 x 64 strip is no image anyone wants
    max_images_per_prompt: int = Field(10_000, ge=1)  # one row's images_per_prompt (config or column)
    max_images: int = Field(100_000_000, ge=1)  # images one run may ask for in total (all rows)
    # budgets of one run: when reached, no new shard starts, shards in flight finish and commit, and
    # `sdgen run` exits 4; a re-run (a larger budget) continues, byte-identical to an unlimited run
    max_worker_hours: Optional[float] = Field(None, gt=0)  # worker-hours (summed over workers, load included)
    max_wall_hours: Optional[float] = Field(None, gt=0)  # hours since the run started


class CostConfig(_Strict):
    """What a worker-hour costs, printed beside hours (plan, summary, status); not fingerprinted."""

    per_worker_hour: Optional[float] = Field(None, ge=0)  # price of one worker (GPU) for an hour; null = none
    currency: str = "USD"  # printed after the amount


class RetryConfig(_Strict):
    """Retries of transient storage faults (5xx, SlowDown/503, timeouts, resets): core/retry.py. They
    change no output bytes, so they are not fingerprinted."""

    attempts: int = Field(5, ge=1)  # tries per storage call in all; 1 = fail at the first transient error
    base_s: float = Field(0.2, ge=0)  # first backoff; doubles per try (full jitter) to spread many workers
    max_s: float = Field(10.0, ge=0)  # cap on one backoff, so a try never waits longer than this


class AuditDefaults(_Strict):
    """What `sdgen audit`, `report` and `label` use for this output when given no --group-by / --where
    (and `audit` and `report` with no --attribute): the question the job was run to answer. Read from
    run.json; changes no output bytes (not fingerprinted). Columns must be the input's own, attributes
    among those the run probes (both checked before any work)."""

    group_by: list[str] = Field(
        default_factory=list
    )  # input columns (a × b); [] = the input's first own column
    where: list[str] = Field(default_factory=list)  # COL=VALUE filters, all must hold; [] = every row
    # probed attributes to audit when no --attribute is given (names from the probes' sets, e.g. colour);
    # [] = every probed attribute
    attributes: list[str] = Field(default_factory=list)

    @field_validator("where")
    @classmethod
    def _col_eq_value(cls, v: list[str]) -> list[str]:
        for item in v:
            if "=" not in item or not item.split("=", 1)[0].strip():
                raise ValueError(f"each item must read COLUMN=VALUE, got {item!r}")
        return v


class RayConfig(_Strict):
    executor: Literal["ray", "inline"] = "ray"  # inline = one worker in this process, no Ray (debug)
    address: Optional[str] = None  # null = start a local Ray; "auto" or "ray://host:10001" = join one
    # actors; each loads its pipeline once and keeps it. auto = one per GPU in the cluster, re-counted
    # as nodes join (an autoscaling cluster grows the pool); 1 on a cluster without GPUs. All are
    # requested up front: pending actors are what makes an autoscaler add nodes
    num_workers: Union[Literal["auto"], int] = 1
    # dispatch starts once this many actors are ready (more join as they load); capped at num_workers
    min_workers: int = Field(1, ge=1)
    # seconds to wait for min_workers ready actors (and, later, for any ready actor when all are
    # gone) before the run stops with exit 2: a cluster that can never hold a worker is an error,
    # not an endless wait. Long enough for an autoscaler to boot a GPU node and load a model
    start_timeout_s: float = Field(900.0, gt=0)
    num_gpus_per_worker: Optional[float] = None  # null = 1 if the cluster has GPUs else 0; 0.5 = 2/GPU
    num_cpus_per_worker: float = Field(1.0, gt=0)  # also sets torch's thread count inside the actor
    max_shard_tries: int = Field(3, ge=1)  # a shard failing (exception, dead actor) this often fails the run
    runtime_env: dict[str, Any] = Field(default_factory=dict)  # passed to ray.init (cluster runs)

    @field_validator("num_workers")
    @classmethod
    def _workers(cls, v):
        if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"num_workers must be an integer >= 1 or 'auto', got {v!r}")
        return v

    @field_validator("num_gpus_per_worker")
    @classmethod
    def _gpus(cls, v):
        if v is not None and (not math.isfinite(v) or v < 0):
            raise ValueError(f"num_gpus_per_worker must be >= 0 (fractions allowed), got {v!r}")
        return v


class QuotaConfig(_Strict):
    """Generate until each key has `accepted` images that `policy` keeps (pipeline/curate/quota.py,
    docs/DESIGN.md "Quotas"). The first round is the plain run; later rounds add samples with new
    sample indices, so every seed stays what the seed contract says. Not fingerprinted: raising N
    and re-running continues the same output."""

    accepted: int = Field(ge=1)  # images per key the policy must keep (decisions keep or flag)
    per: str = "prompt_id"  # the key: prompt_id, or an input column (e.g. profession) whose prompts share it
    policy: str  # a `sdgen filter` policy YAML (configs/policies/); what it drops or blurs does not count
    max_oversample: float = Field(
        4.0, ge=1.0
    )  # stop a key after this many × accepted images; its shortfall is reported
    max_rounds: int = Field(20, ge=1)  # rounds after the first: a bound on a policy that keeps almost nothing


class ScoringConfig(_Strict):
    enabled: bool = True  # CLIP-score every image on the device tensor (one image forward per batch)
    # tiny (random, tests) | toy (shipped toy-world CLIP) | an open_clip model name with clip_weights
    # | local-dir:/path (an open_clip directory: open_clip_config.json + weights)
    # | auto (toy for model toy, else tiny: no real CLIP can be assumed offline)
    clip_model: str = "auto"
    clip_weights: Optional[str] = None  # local weights file for a named open_clip model (no downloads)
    # LAION aesthetic MLP (local safetensors) over the same image embedding -> `aesthetic` column; its
    # published weights need clip_model ViT-L-14. null = off (and left out of the fingerprint)
    aesthetic_weights: Optional[str] = None
    # PickScore/HPSv2-style preference tower -> `preference` column = logit_scale x cos(image, prompt):
    # a clip_model spec (tiny | toy | open_clip name | local-dir:) and its local weights; the same
    # spec and weights as clip_model reuse its forward. null = off (and left out of the fingerprint)
    preference_model: Optional[str] = None
    preference_weights: Optional[str] = None


class ShardsConfig(_Strict):
    rows_per_shard: int = 64  # prompt rows per shard = unit of commit and retry; smaller = finer resume
    # what to do when two input rows share a prompt_id: number (2nd copy gets "<id>~1", ...; counted
    # and reported) | first (keep the first in file/row order, skip the rest) | error (stop)
    duplicates: Literal["number", "first", "error"] = "number"
    # bad row values (null prompt, width not /8, NaN guidance...): error = stop before any model
    # loads, listing them | mark = emit the row with status "invalid" and the reason, no image
    on_invalid_row: Literal["error", "mark"] = "error"

    @field_validator("rows_per_shard")
    @classmethod
    def _positive(cls, v):
        if v < 1:
            raise ValueError(f"rows_per_shard must be >= 1, got {v!r}")
        return v


class WriteConfig(_Strict):
    row_group_size: int = 32  # images per Parquet row group: bounds writer memory, lets readers stream
    png_compress_level: int = Field(6, ge=0, le=9)  # zlib level; 1 = fast and big, 9 = slow and small
    encode_threads: int = Field(4, ge=1)  # PNG encoders overlapping the next batch's generation
    # resume check of a committed shard: sha256 (re-hash every part, the contract) | size (fast on
    # large cloud outputs)
    verify_commits: Literal["sha256", "size"] = "sha256"
    # per-row t_generate_s/t_score_s/t_encode_s; the only columns that differ between two runs of
    # a shard. false = null timings, so a retried shard's part is byte-identical too
    timing_columns: bool = True
    contact_sheet: bool = False  # after a run that did work: OUTPUT/contact_sheet.png, a labelled image grid
    # `phash` column: 64-bit perceptual hash (16 hex digits) of every ok image, for `sdgen dedup`;
    # ~1 ms per 512x512 image in the PNG encode threads. Not in the fingerprint: it only adds a
    # column, so outputs written before it existed still resume (dedup hashes their PNGs itself)
    phash: bool = True
    # `clip_image_embedding` column: the scorer's normalised image embedding as float16 (2 bytes x
    # the CLIP width per image: 1.5 KB for ViT-L/14, 1 KB for ViT-B); for dedup --by-embedding and the
    # audit's diversity without re-encoding PNGs. In the fingerprint only when true (changes the schema)
    embeddings: bool = False
    # one run at a time per output (pipeline/core/lease.py): OUTPUT/_lock, renewed every ttl/3 s while
    # running; an overlapping run exits 3 and does nothing; a lease older than this (holder killed)
    # is taken over. null = no lease (and no _runs/ history), for outputs shared by design
    lease_ttl_s: Optional[float] = Field(300.0, gt=0)


class ProbesConfig(_Strict):
    # attribute sets probed by CLIP zero-shot on every image (docs/AUDIT.md): shipped names (people,
    # toyworld: pipeline/data/attributes/) or YAML paths. auto = [toyworld] for model toy, else none
    attributes: Union[Literal["auto"], list[str]] = "auto"


class SafetyConfig(_Strict):
    screening: Optional[str] = (
        "default"  # prompt screening rules (pipeline/data/screening/ name or path); null = off
    )
    # CLIP concept list with per-concept thresholds (pipeline/data/safety/ name or path); auto =
    # toyworld for model toy, else none (the generic list's thresholds are uncalibrated); null = off
    concepts: Optional[str] = "auto"
    sd_checker: Optional[str] = None  # local dir of diffusers' StableDiffusionSafetyChecker (a 2nd CLIP pass)
