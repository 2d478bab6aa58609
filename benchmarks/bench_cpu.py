"""CPU benchmark: the full job (Ray, 1 worker, tiny model) in steady state after model load, against
a bare diffusers loop with the same model, batch, steps and thread count, in one run.

The same job is also run with `executor: inline` (no Ray) to separate the worker's own overhead
from that of Ray's processes, which share the cores with the actor on a small machine.

Steady state = images of shards 2..N over the time between the first and last commit (markers
record `finished_at`), so Ray start-up and model load are excluded but dispatch, CLIP scoring, PNG
encoding, Parquet writing and commits are included.

    python -m benchmarks.bench_cpu [--quick]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from benchmarks.common import prompts, report, write_prompt_file

QUICK = "--quick" in sys.argv
RES, STEPS, BATCH = 64, 10, 8
N_SHARDS, ROWS_PER_SHARD = (3, 8) if QUICK else (int(os.environ.get("BENCH_SHARDS", 17)), 32)


def run_job(tmp: str, executor: str) -> dict:
    import pipeline

    src = write_prompt_file(os.path.join(tmp, "p.parquet"), N_SHARDS * ROWS_PER_SHARD)
    out = os.path.join(tmp, f"out-{executor}")
    summary = pipeline.run(
        {
            "input": src,
            "output": out,
            "model": "tiny",
            "generation": {
                "width": RES,
                "height": RES,
                "steps": STEPS,
                "batch_size": BATCH,
                "images_per_prompt": 1,
            },
            "shards": {"rows_per_shard": ROWS_PER_SHARD},
            "ray": {"executor": executor, "num_workers": 1, "num_cpus_per_worker": 1},
        },
        progress=False,
    )
    from pipeline.core.storage import Output

    markers = sorted(Output(out).committed_markers().values(), key=lambda m: m["finished_at"])
    span = markers[-1]["finished_at"] - markers[0]["finished_at"]
    rows = sum(m["rows"] for m in markers[1:])
    key = "job" if executor == "ray" else f"job_{executor}"
    return {
        f"{key}_steady_img_per_s": round(rows / span, 3),
        f"{key}_wall_s": summary["wall_s"],
        f"{key}_model_load_s": summary["model_load_s"],
        f"{key}_stage_seconds": summary["stage_seconds"],
    }


def bare_loop() -> float:
    """Plain diffusers with the same tiny model, batch, steps, one thread (what the actor gets)."""
    import torch

    from pipeline.generate.models import build_tiny_pipeline, torch_threads

    with torch_threads(1):
        pipe = build_tiny_pipeline()
        pipe.set_progress_bar_config(disable=True)
        ps = prompts(BATCH * 4)
        pipe(ps[:BATCH], height=RES, width=RES, num_inference_steps=2, output_type="pt")  # warm
        n = (N_SHARDS - 1) * ROWS_PER_SHARD
        t = time.perf_counter()
        for b in range(n // BATCH):
            gens = [torch.Generator("cpu").manual_seed(b * BATCH + i) for i in range(BATCH)]
            pipe(
                ps[(b % 4) * BATCH : (b % 4 + 1) * BATCH],
                height=RES,
                width=RES,
                num_inference_steps=STEPS,
                generator=gens,
                output_type="pt",
            )
        return n / (time.perf_counter() - t)


def bare_loop_in_ray_actor() -> float:
    """The same bare loop inside a 1-CPU Ray actor: what running in a Ray worker process costs by
    itself (Ray's daemons, the worker's own threads), apart from anything sdgen adds."""
    import ray

    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.getcwd()}},
    )
    try:
        actor = ray.remote(num_cpus=1)(_BareActor).remote()
        return ray.get(actor.run.remote())
    finally:
        ray.shutdown()


class _BareActor:
    def run(self) -> float:
        return bare_loop()


def main():
    tmp = tempfile.mkdtemp(prefix="sdgen-bench-cpu-")
    res = {
        "model": "tiny",
        "resolution": RES,
        "steps": STEPS,
        "batch": BATCH,
        "images_timed": (N_SHARDS - 1) * ROWS_PER_SHARD,
        "cpu_count": os.cpu_count(),
    }
    res["bare_diffusers_img_per_s"] = round(bare_loop(), 3)
    res.update(run_job(tmp, "ray"))
    res.update(run_job(tmp, "inline"))  # the same worker without Ray: shows what Ray's processes cost
    res["bare_in_ray_actor_img_per_s"] = round(bare_loop_in_ray_actor(), 3)  # Ray's cost alone
    res["bare_again_img_per_s"] = round(bare_loop(), 3)  # drift check (other load on the machine)
    base = (res["bare_diffusers_img_per_s"] + res["bare_again_img_per_s"]) / 2
    res["ratio_job_vs_bare"] = round(res["job_steady_img_per_s"] / base, 3)
    res["ratio_inline_job_vs_bare"] = round(res["job_inline_steady_img_per_s"] / base, 3)
    res["ratio_bare_in_ray_actor_vs_bare"] = round(res["bare_in_ray_actor_img_per_s"] / base, 3)
    report("bench_cpu_quick" if QUICK else "bench_cpu", res)


if __name__ == "__main__":
    main()
