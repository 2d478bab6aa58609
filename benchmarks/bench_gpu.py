"""GPU benchmark: the actor body (ShardWorker.process: generation, CLIP scoring on the device tensor,
PNG encoding in threads, Parquet part, commit) against the tutorial loop and bare batched diffusers,
same model object, same batch and steps, in one run.

SD1.5 architecture with random weights (shared/gpu/sd_anchor.py's configs), fp16, 512x512, 50 PNDM
steps, guidance 7.5, CLIP ViT-L/14 (random) for scoring. Ray itself is not on the device machine,
so the actor body is timed directly; Ray's dispatch costs are measured on CPU by bench_cpu.

    python -m benchmarks.bench_gpu            # on a CUDA machine
    python -m benchmarks.bench_gpu --tiny     # a CPU smoke test of this script (tiny model, 64x64)
"""
from __future__ import annotations

import io
import os
import sys
import tempfile
import time

from benchmarks.common import prompts, report, write_prompt_file

TINY = "--tiny" in sys.argv
BATCH = 2 if TINY else int(os.environ.get("BENCH_BATCH", "16"))
N_BATCHES = 2 if TINY else int(os.environ.get("BENCH_BATCHES", "4"))
RES, STEPS = (64, 3) if TINY else (512, 50)
TFLOP_PER_IMAGE = 82.8  # docs/PERFORMANCE.md: SD1.5 image, 50 steps with CFG, VAE decode included
PEAK_TFLOPS = 800.0  # measured large bf16 matmul on H100/H200 (docs/PERFORMANCE.md, device KINDS.md)


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def make_worker(tmp: str, n_rows: int, name: str):
    from pipeline.core.config import from_dict
    from pipeline.generate.driver import resolve_job
    from pipeline.generate.worker import ShardWorker

    src = write_prompt_file(os.path.join(tmp, f"{name}.parquet"), n_rows)
    cfg = from_dict({
        "input": src, "output": os.path.join(tmp, f"out-{name}"), "model": "tiny" if TINY else "sd15-random",
        "generation": {"width": RES, "height": RES, "steps": STEPS, "guidance_scale": 7.5, "batch_size": BATCH,
                       "images_per_prompt": 1, "scheduler": "pndm"},
        "scoring": {"clip_model": "tiny" if TINY else "random:ViT-L-14"},
        "shards": {"rows_per_shard": n_rows}, "write": {"encode_threads": 8}, "ray": {"executor": "inline"}})
    return cfg, ShardWorker(resolve_job(cfg), "bench")


def shard_of(cfg):
    from pipeline.generate.inputs import list_input_files, plan_shards

    fs, files = list_input_files(cfg.input)
    return plan_shards(fs, files, os.path.dirname(cfg.input), cfg.shards.rows_per_shard, cfg.fingerprint())[0][0]


def bare(pipe, out: str, n_batches: int) -> float:
    """Bare batched diffusers: per-sample CPU generators, output_type pt (or PIL + PNG save)."""
    import torch

    ps = prompts(BATCH * n_batches)
    sync()
    t = time.perf_counter()
    for b in range(n_batches):
        gens = [torch.Generator("cpu").manual_seed(b * BATCH + i) for i in range(BATCH)]
        images = pipe(ps[b * BATCH:(b + 1) * BATCH], height=RES, width=RES, num_inference_steps=STEPS,
                      guidance_scale=7.5, generator=gens, output_type=out).images
        if out == "pil":
            for im in images:
                im.save(io.BytesIO(), format="PNG")
    sync()
    return BATCH * n_batches / (time.perf_counter() - t)


def tutorial(pipe, n: int) -> float:
    """The tutorial way: batch 1, PIL out, PNG save."""
    import torch

    sync()
    t = time.perf_counter()
    for i in range(n):
        im = pipe(prompts(n)[i], height=RES, width=RES, num_inference_steps=STEPS, guidance_scale=7.5,
                  generator=torch.Generator("cpu").manual_seed(i)).images[0]
        im.save(io.BytesIO(), format="PNG")
    sync()
    return n / (time.perf_counter() - t)


def ours(worker, cfg) -> tuple[float, dict]:
    shard = shard_of(cfg)
    sync()
    t = time.perf_counter()
    marker = worker.process(shard)
    sync()
    return marker["rows"] / (time.perf_counter() - t), marker["timings"]


def main():
    import torch

    if not torch.cuda.is_available() and not TINY:
        print("bench_gpu: no CUDA device here; skipped (use --tiny for a CPU smoke test of the script)")
        return
    tmp = tempfile.mkdtemp(prefix="sdgen-bench-")
    n = BATCH * N_BATCHES
    t0 = time.perf_counter()
    cfg, worker = make_worker(tmp, n, "main")
    res = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
           "torch": torch.__version__, "batch": BATCH, "images": n, "resolution": RES, "steps": STEPS,
           "dtype": str(worker.dtype), "build_s": round(time.perf_counter() - t0, 1)}
    pipe = worker.pipe
    pipe(prompts(BATCH), height=RES, width=RES, num_inference_steps=2, output_type="pt")  # warm kernels
    warm = cfg.model_copy(update={"input": write_prompt_file(os.path.join(tmp, "warm.parquet"), BATCH)})
    worker.process(shard_of(warm))  # warm the actor path once (CLIP, encoders, writer), same output
    res["bare_pt_img_per_s"] = round(bare(pipe, "pt", N_BATCHES), 3)
    res["ours_img_per_s"], res["ours_stage_seconds"] = ours(worker, cfg)
    res["ours_img_per_s"] = round(res["ours_img_per_s"], 3)
    res["bare_pt_again_img_per_s"] = round(bare(pipe, "pt", N_BATCHES), 3)  # drift check
    res["bare_pil_png_img_per_s"] = round(bare(pipe, "pil", N_BATCHES), 3)
    res["tutorial_bs1_img_per_s"] = round(tutorial(pipe, 2 if TINY else 4), 3)
    base = (res["bare_pt_img_per_s"] + res["bare_pt_again_img_per_s"]) / 2
    res["ratio_ours_vs_bare_batched"] = round(res["ours_img_per_s"] / base, 3)
    res["ratio_ours_vs_bare_pil_png"] = round(res["ours_img_per_s"] / res["bare_pil_png_img_per_s"], 3)
    res["ratio_ours_vs_tutorial"] = round(res["ours_img_per_s"] / res["tutorial_bs1_img_per_s"], 2)
    if not TINY:
        res["fraction_of_flop_bound"] = round(res["ours_img_per_s"] * TFLOP_PER_IMAGE / PEAK_TFLOPS, 3)
    if torch.cuda.is_available():
        res["peak_mem_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    worker.close()
    report("bench_gpu_tiny" if TINY else "bench_gpu", res)


if __name__ == "__main__":
    main()
