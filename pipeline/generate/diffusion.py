"""Generation inside the actor: expand rows into samples, bucket them, run the diffusers pipeline
with per-sample seeded latents, and return uint8 images still on the device.

Batches are bucketed by (width, height, steps, guidance) so one denoiser call never mixes shapes or
schedules (FLUX also by whether a row has a negative prompt: true CFG is per call). A failing batch
(out of memory, anything) is retried at half size down to one row, and a row that still fails
becomes a failed row, not a missing one (docs/DESIGN.md §6).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.generate import families
from pipeline.generate.encode import embed_batch
from pipeline.generate.seeds import initial_latents


@dataclass
class Sample:
    row: int  # index of the source row within the shard
    prompt_id: str
    sample_idx: int
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    steps: int
    guidance_scale: float
    source_prompt: str | None = None  # the input prompt, when mitigation rewrote `prompt`
    variant: str | None = None  # the mitigation variant's name

    @property
    def bucket(self) -> tuple:
        return (self.width, self.height, self.steps, self.guidance_scale)


@dataclass
class BatchResult:
    samples: list  # the Samples, in order
    images: object  # uint8 (N, 3, H, W) on the device; zeros where a sample failed
    errors: list  # None or an error message per sample
    seconds: float  # wall time of the generation calls


def make_batches(samples: list[Sample], batch_size: int, by_negative: bool = False) -> list[list[Sample]]:
    """Deterministic batches: buckets in order of first appearance, samples in input order;
    `by_negative` (FLUX) also keeps rows with and without a negative prompt apart."""
    buckets: dict[tuple, list[Sample]] = {}
    for s in samples:
        key = s.bucket + ((bool(s.negative_prompt),) if by_negative else ())
        buckets.setdefault(key, []).append(s)
    return [b[i : i + batch_size] for b in buckets.values() for i in range(0, len(b), batch_size)]


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


TRUNCATION_PREFIX = 80  # characters of the dropped text kept in diffusers' CLIP-truncation warning


class _ShortTruncation:
    """logging filter: diffusers logs the whole dropped text of an over-long prompt (10 KB prompts, 10 KB
    warnings); keep a short prefix and the length."""

    def filter(self, record) -> bool:
        msg = record.getMessage()
        if "was truncated because CLIP" in msg and len(msg) > 200:
            head, _, dropped = msg.partition("tokens: ")
            record.msg, record.args = (
                f"{head}tokens: {dropped[:TRUNCATION_PREFIX]}... ({len(dropped)} chars)",
                (),
            )
        return True


def shorten_truncation_warnings(module: str) -> None:
    import logging

    log = logging.getLogger(module)
    if not any(isinstance(f, _ShortTruncation) for f in log.filters):
        log.addFilter(_ShortTruncation())


class Generator:
    """Wraps a loaded pipeline: seeded latents in, uint8 device images out."""

    def __init__(
        self,
        pipe,
        device,
        dtype,
        encode_unique_prompts: bool = False,
        pad_to: int | None = None,
        max_sequence_length: int | None = None,
        true_cfg_scale: float = 1.0,
        family: families.Family | None = None,
    ):
        self.pipe, self.device, self.dtype = pipe, device, dtype
        self.family = family or families.family_of_pipe(pipe)  # given: a wrapped pipeline (tests)
        self.pad_to = (
            pad_to  # compiled denoisers: short batches padded to this size (no batch-dim recompiles)
        )
        self.encode_unique_prompts = encode_unique_prompts  # text encoders once per unique pair (encode.py)
        self.max_sequence_length = max_sequence_length  # T5/Gemma text length; None = the class default
        self.true_cfg_scale = true_cfg_scale  # FLUX: true CFG for rows with a negative prompt when > 1
        if self.family.explicit_latents:
            self.latent_channels = pipe.unet.config.in_channels
            self.scale = getattr(pipe, "vae_scale_factor", 8)
        self.oom_splits = 0  # how often a batch was halved after an out-of-memory error
        shorten_truncation_warnings(type(pipe).__module__)

    @property
    def by_negative(self) -> bool:
        """Batches must keep rows with and without a negative prompt apart (FLUX's true CFG)."""
        return self.family.name.startswith("flux") and self.true_cfg_scale > 1

    def _seeded(self, batch: list[Sample]) -> dict:
        """Per-sample seeded noise: UNet families get sdgen's latents (and the generators, which
        stochastic schedulers such as euler_a keep drawing step noise from); transformer families get
        one CPU generator per sample, and their pipeline's own prepare_latents draws each sample from
        its generator in the family's layout. Either way a sample's noise is independent of its batch."""
        import torch

        if not self.family.explicit_latents:
            return {"generator": [torch.Generator("cpu").manual_seed(s.seed) for s in batch]}
        s0 = batch[0]
        shape = (self.latent_channels, s0.height // self.scale, s0.width // self.scale)
        latents, gens = initial_latents([s.seed for s in batch], shape, self.device, self.dtype)
        return {"latents": latents, "generator": gens}

    def _run(self, batch: list[Sample]):
        """One pipeline call for a bucket-homogeneous batch -> (uint8 images, finite mask)."""
        import torch

        s0 = batch[0]
        negatives = [s.negative_prompt for s in batch]
        extra = families.call_kwargs(self.family, self.max_sequence_length, self.true_cfg_scale, negatives)
        with torch.inference_mode():
            out = self.pipe(
                **self._text_kwargs(batch),
                **self._seeded(batch),
                **extra,
                height=s0.height,
                width=s0.width,
                num_inference_steps=s0.steps,
                guidance_scale=s0.guidance_scale,
                output_type="pt",
            )
            images = out.images if hasattr(out, "images") else out[0]
            finite = torch.isfinite(images).flatten(1).all(dim=1)
            images = torch.where(finite.view(-1, 1, 1, 1), images, torch.zeros_like(images))
            images_u8 = (images.float() * 255).round().clamp(0, 255).to(torch.uint8)
        return images_u8, finite

    def _text_kwargs(self, batch: list[Sample]) -> dict:
        """Prompt embeddings of the batch's unique pairs (encode.py), or the prompts as text."""
        prompts, negatives = [s.prompt for s in batch], [s.negative_prompt for s in batch]
        fam = self.family
        cfg = families.uses_cfg(self.pipe, fam, batch[0].guidance_scale, self.true_cfg_scale, negatives)
        if self.encode_unique_prompts:
            msl = self.max_sequence_length or fam.max_sequence_length
            embeds = embed_batch(self.pipe, fam, prompts, negatives, cfg, self.device, msl)
            if embeds is not None:
                return embeds
        return families.text_kwargs(fam, prompts, negatives, cfg)

    def generate(self, batch: list[Sample]) -> BatchResult:
        """Generate a batch (padded to `pad_to` with copies of its last sample, discarded after:
        every real row keeps its own seeded latents), halving it on failure down to single rows."""
        n = len(batch)
        if not self.pad_to or n >= self.pad_to:
            return self._generate(batch)
        res = self._generate(batch + [batch[-1]] * (self.pad_to - n))
        return BatchResult(batch, res.images[:n], res.errors[:n], res.seconds)

    def _generate(self, batch: list[Sample]) -> BatchResult:
        import torch

        t0 = time.perf_counter()
        try:
            images, finite = self._run(batch)
            errors = [
                None if ok else "non-finite pixels in output (fp16 overflow?)" for ok in finite.tolist()
            ]
            return BatchResult(batch, images, errors, time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - every failure is retried smaller, then recorded
            if _is_oom(e) and torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(batch) == 1:
                s = batch[0]
                blank = torch.zeros((1, 3, s.height, s.width), dtype=torch.uint8, device=self.device)
                return BatchResult(batch, blank, [f"{type(e).__name__}: {e}"[:500]], time.perf_counter() - t0)
            self.oom_splits += int(_is_oom(e))
            half = len(batch) // 2
            a, b = self._generate(batch[:half]), self._generate(batch[half:])
            return BatchResult(
                batch, torch.cat([a.images, b.images]), a.errors + b.errors, time.perf_counter() - t0
            )
