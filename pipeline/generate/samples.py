"""Rows -> samples, as pure functions of a pyarrow table and the job config (no model, no I/O).

For one shard's rows: take each row's prompt id (explicit, or derived from content; numbered by the
scan when it repeats, docs/DESIGN.md §2), drop or rename duplicates, set invalid rows aside with their
reason, expand ``images_per_prompt`` into seeded samples, assign mitigation variants, and screen every
sample's prompt. The worker calls `expand`; the unit tests call it on plain tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from pipeline.core import schema
from pipeline.generate.diffusion import Sample
from pipeline.generate.inputs import RowLimits, Shard, prompt_ids, row_limits, row_overrides, row_problems
from pipeline.generate.seeds import seeds_for_row


@dataclass
class Invalid:
    row: int  # index within the shard's table
    prompt_id: str
    prompt: str | None
    reason: str


@dataclass
class Expansion:
    samples: list = field(default_factory=list)  # Sample, to generate
    blocked: list = field(default_factory=list)  # (Sample, reason): prompt screening blocked them
    invalid: list = field(default_factory=list)  # Invalid rows (on_invalid_row: mark)


def expand(table: pa.Table, shard: Shard, cfg, screen=None, limits: RowLimits | None = None) -> Expansion:
    """The shard's samples, blocked samples and invalid rows, in row order; `limits` as the driver's
    scan used them (default: the config's, without the scheduler's cap)."""
    overrides = row_overrides(table)
    ids, prompts = prompt_ids(table, overrides), table.column(schema.PROMPT).to_pylist()
    problems = row_problems(table, shard.file, shard.start, limits or row_limits(cfg))
    mitigate = mitigation_mask(table, cfg.mitigation)
    out = Expansion()
    for i, (pid, prompt, o) in enumerate(zip(ids, prompts, overrides)):
        row = shard.start + i
        if row in shard.skip:
            continue  # a duplicate id under policy "first"
        if row in shard.renames:
            pid = f"{pid}~{shard.renames[row]}"
        if row in problems:
            out.invalid.append(Invalid(i, pid, prompt, str(problems[row])))
            continue
        for s in row_samples(i, pid, prompt, o, mitigate[i], cfg):
            hit, reason = screen.check(s.prompt) if screen else (False, None)
            (out.blocked.append((s, f"prompt screening: {reason}")) if hit else out.samples.append(s))
    return out


def row_samples(i: int, pid: str, prompt: str, o: dict, mitigate: bool, cfg) -> list[Sample]:
    """One valid row's samples: seeds from (run seed, prompt id, k) or the row's own seed."""
    g, m = cfg.generation, cfg.mitigation
    n, start = o.get("images_per_prompt", g.images_per_prompt), o.get("sample_start", 0)
    out = []
    for k, seed in enumerate(seeds_for_row(g.seed, pid, n, o.get("seed"), start), start):
        v = variant(m.variants, k, n) if mitigate else None
        out.append(
            Sample(
                row=i,
                prompt_id=pid,
                sample_idx=k,
                seed=seed,
                prompt=v.template.replace("{prompt}", prompt) if v else prompt,
                negative_prompt=o.get("negative_prompt", g.negative_prompt),
                width=o.get("width", g.width),
                height=o.get("height", g.height),
                steps=o.get("steps", g.steps),
                guidance_scale=float(o.get("guidance_scale", g.guidance_scale)),
                source_prompt=prompt if m.enabled else None,
                variant=v.name if v else None,
            )
        )
    return out


def mitigation_mask(table: pa.Table, m) -> list[bool]:
    """Which rows take mitigation variants (all, none, or those whose ``only_if_column`` is true)."""
    if not m.enabled:
        return [False] * table.num_rows
    if m.only_if_column is None:
        return [True] * table.num_rows
    if m.only_if_column not in table.column_names:
        raise ValueError(f"mitigation.only_if_column {m.only_if_column!r} is not an input column")
    return [bool(v) for v in table.column(m.only_if_column).to_pylist()]


def variant(variants, k: int, n: int):
    """Stratified assignment: sample k of n takes the variant whose cumulative weight interval holds
    (k + 0.5) / n, so every prompt's samples follow the weights as closely as n allows."""
    total, u, acc = sum(v.weight for v in variants), (k + 0.5) / n, 0.0
    for v in variants:
        acc += v.weight / total
        if u < acc:
            return v
    return variants[-1]
