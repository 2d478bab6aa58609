"""GPU benchmark, one script, one run per model (issue 11): on the same pipeline object and seeds,

    1. bare batched diffusers, eager      (the reference images: deviation is measured against them)
    2. our actor body, eager              (ShardWorker.process: generation, CLIP score, PNG, Parquet, commit)
    3. the tutorial loop                  (batch 1, PIL out, PNG save)
    4. the same pipeline compiled (generation.compile + accel.*): bare batched, then our actor body
    5. opt-in numerics-changing variants (fp8 where torchao and CUDA exist, fewer dpm++ steps)
    6. actor start in fresh processes: cold (empty compile cache) and warm (the cache from cold)

Deviation of every non-reference image set vs eager: max / mean pixel difference, PSNR and the
mean CLIP-score change (same scorer). JSON goes to $OUT or benchmarks/results/; `--table FILE`
prints the markdown rows of RESULTS.md from one.

    python -m benchmarks.bench_gpu --models sd15          # SD1.5 arch, 512², 50 PNDM steps, CFG 7.5, fp16
    python -m benchmarks.bench_gpu --models sdxl          # SDXL arch, 1024², 30 Euler steps, CFG 7.5, fp16
    python -m benchmarks.bench_gpu --tiny                 # CPU smoke test: tiny presets, 64², 3 steps
    python -m benchmarks.bench_gpu --table benchmarks/results/bench_gpu_sd15.json

Env: BENCH_BATCH, BENCH_BATCHES (images = batch x batches), BENCH_COMPILE_SCOPE (full|regional),
BENCH_COMPILE_MODE (default|reduce-overhead|...). Ray is not on the device machine (its wheel
exceeds the transfer limit), so the actor body is timed directly; Ray's costs are measured on CPU.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.common import prompts, report, write_prompt_file

MODELS = {  # name -> (preset, tiny preset, resolution, steps, scheduler, batch, batches)
    "sd15": ("sd15-random", "tiny", 512, 50, "pndm", 16, 4),
    "sdxl": ("sdxl-random", "tiny-sdxl", 1024, 30, "default", 8, 2),
}
GUIDANCE = 7.5
TFLOP_PER_IMAGE = {"sd15": 82.8}  # docs/PERFORMANCE.md: SD1.5 image, 50 steps with CFG, VAE decode included
PEAK_TFLOPS = 800.0  # measured large bf16 matmul on H100/H200 (docs/PERFORMANCE.md, device KINDS.md)


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Bench:
    def __init__(self, model: str, tiny: bool, tmp: str):
        preset, tiny_preset, res, steps, sched, batch, batches = MODELS[model]
        self.model, self.tiny, self.tmp = model, tiny, tmp
        self.preset = tiny_preset if tiny else preset
        self.res, self.steps, self.sched = (64, 3, sched) if tiny else (res, steps, sched)
        self.batch = 2 if tiny else int(os.environ.get("BENCH_BATCH", batch))
        self.batches = 2 if tiny else int(os.environ.get("BENCH_BATCHES", batches))
        self.n = self.batch * self.batches
        self.scope = os.environ.get("BENCH_COMPILE_SCOPE", "regional" if tiny else "full")
        self.mode = os.environ.get("BENCH_COMPILE_MODE", "default")

    def config(self, name: str, n_rows: int, compile_: bool = False, cache: str | None = None, **gen):
        from pipeline.core.config import from_dict

        src = write_prompt_file(os.path.join(self.tmp, f"{name}.parquet"), n_rows)
        return from_dict({
            "input": src, "output": os.path.join(self.tmp, f"out-{name}"), "model": self.preset,
            "generation": {"width": self.res, "height": self.res, "steps": self.steps, "guidance_scale": GUIDANCE,
                           "batch_size": self.batch, "scheduler": self.sched, "compile": compile_, **gen},
            "accel": {"compile_scope": self.scope, "compile_mode": self.mode, "compile_cache_dir": cache,
                      "encode_unique_prompts": True},
            "scoring": {"clip_model": "tiny" if self.tiny else "random:ViT-L-14"},
            "shards": {"rows_per_shard": n_rows}, "write": {"encode_threads": 8}, "ray": {"executor": "inline"}})

    def worker(self, cfg):
        from pipeline.generate.driver import resolve_job
        from pipeline.generate.worker import ShardWorker

        return ShardWorker(resolve_job(cfg), "bench")

    # ---- the loops ----------------------------------------------------------------------------------
    def bare(self, pipe, steps=None, out="pt"):
        """Bare batched diffusers, per-sample CPU generators; returns (img/s, uint8 images on CPU)."""
        import torch

        ps, images = prompts(self.n), []
        sync()
        t = time.perf_counter()
        for b in range(self.batches):
            gens = [torch.Generator("cpu").manual_seed(b * self.batch + i) for i in range(self.batch)]
            im = pipe(ps[b * self.batch:(b + 1) * self.batch], height=self.res, width=self.res,
                      num_inference_steps=steps or self.steps, guidance_scale=GUIDANCE, generator=gens,
                      output_type=out).images
            if out == "pil":
                for x in im:
                    x.save(io.BytesIO(), format="PNG")
            else:
                images.append((im.float() * 255).round().clamp(0, 255).to(torch.uint8).cpu())
        sync()
        rate = self.n / (time.perf_counter() - t)
        return rate, (torch.cat(images) if images else None)

    def tutorial(self, pipe, n: int) -> float:
        import torch

        sync()
        t = time.perf_counter()
        for i in range(n):
            im = pipe(prompts(n)[i], height=self.res, width=self.res, num_inference_steps=self.steps,
                      guidance_scale=GUIDANCE, generator=torch.Generator("cpu").manual_seed(i)).images[0]
            im.save(io.BytesIO(), format="PNG")
        sync()
        return n / (time.perf_counter() - t)

    def ours(self, worker, cfg, name: str) -> tuple[float, dict]:
        from pipeline.generate.inputs import list_input_files
        from pipeline.generate.plan import plan_shards

        # a new input file per call: a new shard name in the same output (nothing is skipped as done)
        run_cfg = cfg.model_copy(update={"input": write_prompt_file(os.path.join(self.tmp, f"{name}.parquet"), self.n)})
        fs, files = list_input_files(run_cfg.input)
        shard = plan_shards(fs, files, os.path.dirname(run_cfg.input), self.n, run_cfg.fingerprint())[0][0]
        sync()
        t = time.perf_counter()
        marker = worker.process(shard)
        sync()
        return marker["rows"] / (time.perf_counter() - t), marker["timings"]


def deviation(scorer, ref, other, device) -> dict:
    """Max / mean |pixel difference|, PSNR (dB) and mean CLIP-score change of `other` vs `ref`."""
    d = (other.int() - ref.int()).abs().float()
    mse = float((d ** 2).mean())
    out = {"max_px": int(d.max()), "mean_px": round(float(d.mean()), 4),
           "psnr_db": round(10 * math.log10(255 ** 2 / mse), 2) if mse > 0 else float("inf")}
    if scorer is not None:
        ps = prompts(len(ref))
        a = scorer.score(ref.to(device), ps)["clip_score"].float()
        b = scorer.score(other.to(device), ps)["clip_score"].float()
        out["clip_score_change"] = round(float((b - a).mean()), 5)
    return out


def start_probe(bench: Bench, cache: str) -> dict:
    """Actor start in a fresh process: build the worker (compile on, cache dir) and run one batch."""
    cmd = [sys.executable, "-m", "benchmarks.bench_gpu", "--start-probe", bench.model, "--cache", cache]
    if bench.tiny:
        cmd.append("--tiny")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])})
    return json.loads(out.stdout.strip().splitlines()[-1])


def probe_main(model: str, tiny: bool, cache: str) -> None:
    tmp = tempfile.mkdtemp(prefix="sdgen-probe-")
    b = Bench(model, tiny, tmp)
    b.batches, b.n = 1, b.batch
    t0 = time.perf_counter()
    cfg = b.config("probe", b.n, compile_=True, cache=cache)
    w = b.worker(cfg)
    load = time.perf_counter() - t0
    b.ours(w, cfg, "probe-run")
    w.close()
    print(json.dumps({"load_s": round(load, 2), "first_batch_s": round(time.perf_counter() - t0 - load, 2),
                      "start_s": round(time.perf_counter() - t0, 2)}))


def run_model(model: str, tiny: bool, compile_: bool) -> dict:
    import torch

    tmp = tempfile.mkdtemp(prefix="sdgen-bench-")
    b = Bench(model, tiny, tmp)
    t0 = time.perf_counter()
    cfg = b.config("main", b.n)
    w = b.worker(cfg)
    res = {"model": model, "preset": b.preset, "device": torch.cuda.get_device_name() if torch.cuda.is_available()
           else "cpu", "torch": torch.__version__, "batch": b.batch, "images": b.n, "resolution": b.res,
           "steps": b.steps, "scheduler": type(w.pipe.scheduler).__name__, "dtype": str(w.dtype),
           "build_s": round(time.perf_counter() - t0, 1), "rows": []}
    pipe = w.pipe
    pipe(prompts(b.batch), height=b.res, width=b.res, num_inference_steps=2, output_type="pt")  # warm kernels
    b.ours(w, cfg, "warm")  # the actor path once (CLIP, encoders, writer)
    rate, ref = b.bare(pipe)
    row = lambda what, r, **kw: res["rows"].append({"what": what, "img_per_s": round(r, 3), **kw})  # noqa: E731
    row("bare batched, eager", rate)
    r, stages = b.ours(w, cfg, "ours-eager")
    row("ours, eager", r, stages=stages)
    row("bare batched + PIL + PNG, eager", b.bare(pipe, out="pil")[0])
    row("tutorial bs 1, eager", b.tutorial(pipe, 2 if tiny else 4))
    row("bare batched, eager (again: drift)", b.bare(pipe)[0])
    if compile_:
        from pipeline.generate.accel import compile_unet

        t = time.perf_counter()
        compile_unet(pipe, b.scope, b.mode, 4)
        w.generator.pad_to = b.batch
        b.bare(pipe, steps=2)  # the compile itself
        res["compile_s"] = round(time.perf_counter() - t, 1)
        rate, imgs = b.bare(pipe)
        row(f"bare batched, compiled ({b.scope}, {b.mode})", rate, deviation=deviation(w.scorer, ref, imgs, w.device))
        row(f"ours, compiled ({b.scope}, {b.mode})", b.ours(w, cfg, "ours-compiled")[0])
    variants(b, w, ref, row)
    eager = (res["rows"][0]["img_per_s"] + res["rows"][4]["img_per_s"]) / 2  # before and after: drift averaged
    for x in res["rows"]:
        x["ratio_vs_bare_eager"] = round(x["img_per_s"] / eager, 3)
    if model in TFLOP_PER_IMAGE and not tiny:
        res["flop_bound_img_per_s"] = round(PEAK_TFLOPS / TFLOP_PER_IMAGE[model], 2)
    if torch.cuda.is_available():
        res["peak_mem_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    w.close()
    if compile_:
        cache = os.path.join(tmp, "compile-cache")
        res["start_cold"], res["start_warm"] = start_probe(b, cache), start_probe(b, cache)
    return res


def variants(b: Bench, w, ref, row) -> None:
    """Opt-in numerics-changing options, each with its deviation from eager: fewer steps with
    DPM-Solver++ (where the model's sampler is not already it), FP8 where torchao and CUDA exist."""
    import torch

    from pipeline.generate.models import set_scheduler

    pipe, before = w.pipe, w.pipe.scheduler
    set_scheduler(pipe, "dpm++")
    few = max(2, b.steps // 2)
    rate, imgs = b.bare(pipe, steps=few)
    row(f"bare batched, dpm++ {few} steps", rate, deviation=deviation(w.scorer, ref, imgs, w.device))
    pipe.scheduler = before
    try:
        import torchao  # noqa: F401
    except ImportError:
        return
    if torch.cuda.is_available():
        from pipeline.generate.accel import _fp8

        _fp8(pipe.unet, torch.device("cuda"))
        rate, imgs = b.bare(pipe)
        row("bare batched, fp8 (torchao)", rate, deviation=deviation(w.scorer, ref, imgs, w.device))


def table(path: str) -> str:
    """Markdown rows of one result file (RESULTS.md)."""
    r = json.load(open(path))
    lines = [f"{r['model']} ({r['preset']}) on {r['device']}, torch {r['torch']}, {r['resolution']}², "
             f"{r['steps']} steps {r['scheduler']}, batch {r['batch']}, {r['dtype']}, compile {r.get('compile_s', '-')} s, "
             f"peak {r.get('peak_mem_GiB', '-')} GiB", "",
             "| what | img/s | vs bare eager (mean of 2) | max px | mean px | PSNR dB | CLIP-score change |",
             "|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        d = x.get("deviation", {})
        lines.append(f"| {x['what']} | {x['img_per_s']} | {x['ratio_vs_bare_eager']} | {d.get('max_px', '')} | "
                     f"{d.get('mean_px', '')} | {d.get('psnr_db', '')} | {d.get('clip_score_change', '')} |")
    if "start_cold" in r:
        lines += ["", f"actor start (fresh process, compile on): cold {r['start_cold']['start_s']} s, "
                      f"warm cache {r['start_warm']['start_s']} s"]
    return "\n".join(lines)


def main(argv=None):
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny presets on CPU (a smoke test of this script)")
    ap.add_argument("--models", default="sd15", help="comma list of: " + ", ".join(MODELS))
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled rows and the start probes")
    ap.add_argument("--table", help="print the markdown table of a result JSON and exit")
    ap.add_argument("--start-probe", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.table:
        print(table(a.table))
        return
    if a.start_probe:
        return probe_main(a.start_probe, a.tiny, a.cache)
    if not torch.cuda.is_available() and not a.tiny:
        print("bench_gpu: no CUDA device here; skipped (use --tiny for a CPU smoke test of the script)")
        return
    for model in a.models.split(","):
        res = run_model(model, a.tiny, not a.no_compile)
        name = f"bench_gpu_{model}" + ("_tiny" if a.tiny else "")
        report(name, res)
        out = os.environ.get("OUT") or os.path.join(os.path.dirname(__file__), "results")
        print(table(os.path.join(out, f"{name}.json")))


if __name__ == "__main__":
    main()
