"""What a run will cost before it starts (`sdgen plan`): worker-hours and wall time for the pending
work, from a basis that is said aloud.

    1. history: the output's own `_runs/` records of the same model (same size and steps preferred):
       pixel-steps per worker-second of generation (their worker-seconds less model loads), and the
       mean model load per worker
    2. --measure: one batch of the configured size and steps on this machine, the model load timed
       apart (it is paid once per worker)
    3. neither: "no basis yet"

worker-hours = (pending pixel-steps / rate + load × workers) / 3600; wall = the same spread over the
workers (generation divides, the load does not).
"""

from __future__ import annotations

import time

from pipeline.generate.budget import money


def history_rate(history: list[dict], cfg) -> dict | None:
    """The rate and load from earlier runs of the same model, or None."""
    g = cfg.generation
    usable = [
        h for h in history if h.get("model") == cfg.model and h.get("pixel_steps") and h.get("worker_seconds")
    ]
    same = [h for h in usable if h.get("size") == [g.width, g.height] and h.get("steps") == g.steps]
    use = same or usable
    if not use:
        return None
    loads = [x for h in use for x in (h.get("model_load_s") or [])]
    gen_s = sum(h["worker_seconds"] for h in use) - sum(loads)
    if gen_s <= 0:
        return None
    return {
        "pixel_steps_per_worker_s": sum(h["pixel_steps"] for h in use) / gen_s,
        "load_s": sum(loads) / len(loads) if loads else 0.0,
        "basis": f"{len(use)} earlier run(s) of model {cfg.model!r} in OUTPUT/_runs"
        + (" at the same size and steps" if same else " (other sizes or steps)"),
    }


def measured_rate(job) -> dict:
    """One batch of the configured size and steps, generated here; the model load timed apart."""
    from pipeline.generate.diffusion import Sample
    from pipeline.generate.families import cuda_dtype
    from pipeline.generate.models import torch_threads
    from pipeline.generate.worker import build_generator
    from pipeline.probes.scorer import resolve_device_dtype

    cfg, g = job.config, job.config.generation
    dev, dtype = resolve_device_dtype(g.device, g.dtype, cuda_dtype(g.family))
    with torch_threads(cfg.ray.num_cpus_per_worker):
        t0 = time.perf_counter()
        _, _, gen = build_generator(cfg, dev, dtype)
        load = time.perf_counter() - t0
        batch = [
            Sample(i, "measure", i, "a photo of a cat", "", i, g.width, g.height, g.steps, g.guidance_scale)
            for i in range(g.batch_size)
        ]
        t1 = time.perf_counter()
        gen.generate(batch)
        gen_s = time.perf_counter() - t1
    return {
        "pixel_steps_per_worker_s": len(batch) * g.width * g.height * g.steps / gen_s,
        "load_s": load,
        "basis": f"--measure: one batch of {len(batch)} at {g.width}x{g.height}, "
        f"{g.steps} steps on {dev.type} "
        f"here ({gen_s:.2f} s; model load {load:.2f} s, counted once per worker)",
    }


def estimate(pixel_steps: int, workers: int, rate: dict | None, cost=None) -> dict:
    """Worker-hours and wall hours of ``pixel_steps`` pending work on ``workers`` workers."""
    if rate is None:
        return {"basis": "no basis yet: run once (its _runs/ record is the basis) or pass --measure"}
    gen_s = pixel_steps / rate["pixel_steps_per_worker_s"]
    worker_s = gen_s + rate["load_s"] * workers
    return {
        "basis": rate["basis"],
        "workers": workers,
        "worker_hours": round(worker_s / 3600, 5),
        "wall_hours": round((gen_s / workers + rate["load_s"]) / 3600, 5),
        **money(worker_s / 3600, cost),
    }
