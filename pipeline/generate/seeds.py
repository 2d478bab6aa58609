"""The seed contract (docs/DESIGN.md §3): a sample's seed depends on (job seed, prompt id, sample index)
only, never on batch composition, worker, retry or position in the file."""

from __future__ import annotations

import hashlib

MASK_63 = (1 << 63) - 1  # keep seeds positive in int64 columns and in torch.manual_seed


def sample_seed(job_seed: int, prompt_id: str, sample_idx: int) -> int:
    """First 8 bytes, big-endian, of sha256(f"{job_seed}:{prompt_id}:{sample_idx}"), masked to 63 bits."""
    digest = hashlib.sha256(f"{job_seed}:{prompt_id}:{sample_idx}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & MASK_63


def seeds_for_row(
    job_seed: int, prompt_id: str, n: int, row_seed: int | None = None, start: int = 0
) -> list[int]:
    """Seeds of samples start..start+n-1 of one prompt row. A row that carries its own `seed` uses
    seed + k (the common UI convention), so a known seed reproduces a known image. Sample k's seed
    never depends on n or start: a quota round that continues a prompt draws new, deterministic seeds."""
    if row_seed is not None:
        return [int(row_seed) + k for k in range(start, start + n)]
    return [sample_seed(job_seed, prompt_id, k) for k in range(start, start + n)]


def initial_latents(seeds: list[int], shape: tuple[int, ...], device, dtype):
    """Per-sample initial noise: one CPU torch.Generator per seed (diffusers' advice for
    cross-device stability), drawn on the CPU in float32, then moved to the device. Returns
    (latents, generators); the generators continue into the scheduler's step noise, exactly as
    `pipe(generator=torch.Generator("cpu").manual_seed(seed))` does for a single image."""
    import torch

    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    noise = [torch.randn(shape, generator=g, dtype=torch.float32) for g in gens]
    return torch.stack(noise).to(device=device, dtype=dtype), gens
