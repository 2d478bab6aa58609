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
    python -m benchmarks.bench_gpu --models flux-schnell,flux-dev,sd35,sana   # 1024², their defaults, bf16
    python -m benchmarks.bench_gpu --tiny                 # CPU smoke test: tiny presets, 64², 3 steps
    python -m benchmarks.bench_gpu --table benchmarks/results/bench_gpu_sd15.json

Env: BENCH_BATCH, BENCH_BATCHES (images = batch x batches), BENCH_COMPILE_SCOPE (full|regional),
BENCH_COMPILE_MODE (default|reduce-overhead|...), BENCH_LEVERS (applied with compile: comma list of
channels_last, fuse_qkv, channels_last_vae; default channels_last,fuse_qkv), BENCH_SKIP (comma list of
rows to leave out: pil, tutorial, dpm, fp8, start). The JSON is rewritten after every row, so a run cut
short by a time limit still leaves what it measured. Ray is not on the device machine (its wheel
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

MODELS = {  # name -> (preset, tiny preset, resolution, steps, scheduler, batch, batches, guidance)
    "sd15": ("sd15-random", "tiny", 512, 50, "pndm", 16, 4, 7.5),
    "sdxl": ("sdxl-random", "tiny-sdxl", 1024, 30, "default", 8, 2, 7.5),
    # the transformer families at their pipeline defaults (schnell: its 4 published steps), bf16
    "flux-schnell": ("flux-schnell-random", "tiny-flux", 1024, 4, "default", 4, 2, 0.0),
    "flux-dev": ("flux-dev-random", "tiny-flux", 1024, 28, "default", 4, 1, 3.5),
    "sd35": ("sd35-random", "tiny-sd3", 1024, 28, "default", 4, 1, 7.0),
    "sana": ("sana-random", "tiny-sana", 1024, 20, "default", 8, 1, 4.5),
}
TFLOP_PER_IMAGE = {"sd15": 82.8}  # docs/PERFORMANCE.md: SD1.5 image, 50 steps with CFG, VAE decode included
PEAK_TFLOPS = 800.0  # measured large bf16 matmul on H100/H200 (docs/PERFORMANCE.md, device KINDS.md)


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Bench:
    def __init__(self, model: str, tiny: bool, tmp: str):
        preset, tiny_preset, res, steps, sched, batch, batches, self.guidance = MODELS[model]
        self.model, self.tiny, self.tmp = model, tiny, tmp
        self.preset = tiny_preset if tiny else preset
        self.res, self.steps, self.sched = (64, 3, sched) if tiny else (res, steps, sched)
        self.batch = 2 if tiny else int(os.environ.get("BENCH_BATCH", batch))
        self.batches = 2 if tiny else int(os.environ.get("BENCH_BATCHES", batches))
        self.n = self.batch * self.batches
        self.scope = os.environ.get("BENCH_COMPILE_SCOPE", "regional" if tiny else "full")
        self.mode = os.environ.get("BENCH_COMPILE_MODE", "default")
        self.levers = [x for x in os.environ.get("BENCH_LEVERS", "channels_last,fuse_qkv").split(",") if x]
        self.skip = set(os.environ.get("BENCH_SKIP", "").split(","))

    def config(self, name: str, n_rows: int, compile_: bool = False, cache: str | None = None):
        """The job; with compile_, the levers of BENCH_LEVERS too (what the compiled rows measure)."""
        from pipeline.core.config import from_dict

        src = write_prompt_file(os.path.join(self.tmp, f"{name}.parquet"), n_rows)
        lv = self.levers if compile_ else []
        return from_dict(
            {
                "input": src,
                "output": os.path.join(self.tmp, f"out-{name}"),
                "model": self.preset,
                "generation": {
                    "width": self.res,
                    "height": self.res,
                    "steps": self.steps,
                    "guidance_scale": self.guidance,
                    "batch_size": self.batch,
                    "scheduler": self.sched,
                    "compile": compile_,
                    "channels_last": "channels_last" in lv,
                },
                "accel": {
                    "compile_scope": self.scope,
                    "compile_mode": self.mode,
                    "compile_cache_dir": cache,
                    "encode_unique_prompts": True,
                    "fuse_qkv": "fuse_qkv" in lv,
                    "channels_last_vae": "channels_last_vae" in lv,
                },
                "scoring": {"clip_model": "tiny" if self.tiny else "random:ViT-L-14"},
                "shards": {"rows_per_shard": n_rows},
                "write": {"encode_threads": 8},
                "ray": {"executor": "inline"},
            }
        )

    def worker(self, cfg):
        from pipeline.generate.resolve import resolve_job
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
            im = pipe(
                ps[b * self.batch : (b + 1) * self.batch],
                height=self.res,
                width=self.res,
                num_inference_steps=steps or self.steps,
                guidance_scale=self.guidance,
                generator=gens,
                output_type=out,
            ).images
            if out == "pil":
                for x in im:
                    x.save(io.BytesIO(), format="PNG")
            else:
                images.append((im.float() * 255).round().clamp(0, 255).to(torch.uint8).cpu())
        sync()
        rate = self.n / (time.perf_counter() - t)
        return rate, (torch.cat(images) if images else None)

    def warm(self, worker, cfg, name: str) -> float:
        """Untimed 2-step passes of bare and of our actor body: whatever (re)compiles a change brings
        (the actor calls the denoiser with its own arguments: a graph of its own) happens here. Seconds."""
        t = time.perf_counter()
        self.bare(worker.pipe, steps=2)
        self.ours(worker, cfg, name, n=self.batch, steps=2)
        return round(time.perf_counter() - t, 1)

    def tutorial(self, pipe, n: int) -> float:
        import torch

        sync()
        t = time.perf_counter()
        for i in range(n):
            im = pipe(
                prompts(n)[i],
                height=self.res,
                width=self.res,
                num_inference_steps=self.steps,
                guidance_scale=self.guidance,
                generator=torch.Generator("cpu").manual_seed(i),
            ).images[0]
            im.save(io.BytesIO(), format="PNG")
        sync()
        return n / (time.perf_counter() - t)

    def ours(self, worker, cfg, name: str, n: int | None = None, **columns) -> tuple[float, dict]:
        """Our actor body on one shard of n rows; `columns` are per-row overrides (e.g. steps=25)."""
        from pipeline.generate.inputs import list_input_files
        from pipeline.generate.plan import plan_shards

        # a new input file per call: a new shard name in the same output (nothing is skipped as done)
        src = write_prompt_file(os.path.join(self.tmp, f"{name}.parquet"), n or self.n, **columns)
        run_cfg = cfg.model_copy(update={"input": src})
        fs, files = list_input_files(run_cfg.input)
        shard = plan_shards(fs, files, os.path.dirname(run_cfg.input), n or self.n, run_cfg.fingerprint())[0][
            0
        ]
        sync()
        t = time.perf_counter()
        marker = worker.process(shard)
        sync()
        ok = marker["status_counts"].get("ok", 0)
        if ok != marker["rows"]:  # a failed row is fast and blank: never count it as throughput
            raise RuntimeError(
                f"{name}: {marker['rows'] - ok} of {marker['rows']} rows failed: {marker['status_counts']}"
            )
        return ok / (time.perf_counter() - t), marker["timings"]


def deviation(scorer, ref, other, device) -> dict:
    """Max / mean |pixel difference|, PSNR (dB) and mean CLIP-score change of `other` vs `ref`."""
    d = (other.int() - ref.int()).abs().float()
    mse = float((d**2).mean())
    out = {
        "max_px": int(d.max()),
        "mean_px": round(float(d.mean()), 4),
        "psnr_db": round(10 * math.log10(255**2 / mse), 2) if mse > 0 else float("inf"),
    }
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
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])},
    )
    if out.returncode:
        return {"start_s": "failed", "error": out.stderr.strip()[-600:]}
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
    print(
        json.dumps(
            {
                "load_s": round(load, 2),
                "first_batch_s": round(time.perf_counter() - t0 - load, 2),
                "start_s": round(time.perf_counter() - t0, 2),
            }
        )
    )


def finish(res: dict) -> None:
    """Ratios vs bare eager (mean of the runs before and after: drift averaged), once both exist."""
    ref = [x["img_per_s"] for x in res["rows"] if x["what"].startswith("bare batched, eager")]
    if len(ref) == 2:
        for x in res["rows"]:
            x["ratio_vs_bare_eager"] = round(x["img_per_s"] / (sum(ref) / 2), 3)


def run_model(model: str, tiny: bool, compile_: bool, save=lambda res: None) -> dict:
    """Every row for one model; `save(res)` after each row (a cut-short run keeps what it measured)."""
    import torch

    tmp = tempfile.mkdtemp(prefix="sdgen-bench-")
    b = Bench(model, tiny, tmp)
    t0 = time.perf_counter()
    cfg = b.config("main", b.n)
    w = b.worker(cfg)
    res = {
        "model": model,
        "preset": b.preset,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "batch": b.batch,
        "images": b.n,
        "resolution": b.res,
        "steps": b.steps,
        "scheduler": type(w.pipe.scheduler).__name__,
        "dtype": str(w.dtype),
        "build_s": round(time.perf_counter() - t0, 1),
        "rows": [],
    }
    if model in TFLOP_PER_IMAGE and not tiny:
        res["flop_bound_img_per_s"] = round(PEAK_TFLOPS / TFLOP_PER_IMAGE[model], 2)

    def row(what, r, **kw):
        res["rows"].append({"what": what, "img_per_s": round(r, 3), **kw})
        finish(res)
        if torch.cuda.is_available():
            res["peak_mem_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        save(res)

    pipe = w.pipe
    pipe(prompts(b.batch), height=b.res, width=b.res, num_inference_steps=2, output_type="pt")  # warm kernels
    b.ours(w, cfg, "warm")  # the actor path once (CLIP, encoders, writer)
    rate, ref = b.bare(pipe)
    row("bare batched, eager", rate)
    r, stages = b.ours(w, cfg, "ours-eager")
    row("ours, eager", r, stages=stages)
    if "pil" not in b.skip:
        row("bare batched + PIL + PNG, eager", b.bare(pipe, out="pil")[0])
    if "tutorial" not in b.skip:
        row("tutorial bs 1, eager", b.tutorial(pipe, 2 if tiny else 4))
    row("bare batched, eager (again: drift)", b.bare(pipe)[0])
    label = "eager"
    if compile_:
        from pipeline.generate.accel import apply

        t = time.perf_counter()
        res["levers"] = apply(pipe, b.config("compiled", b.n, compile_=True), w.device)
        w.generator.pad_to = b.batch
        b.warm(w, cfg, "warm-compiled")  # the compile itself
        res["compile_s"] = round(time.perf_counter() - t, 1)
        label = f"compiled ({b.scope}, {b.mode}{''.join(', ' + x for x in b.levers)})"
        rate, imgs = b.bare(pipe)
        row(f"bare batched, {label}", rate, deviation=deviation(w.scorer, ref, imgs, w.device))
        row(f"ours, {label}", b.ours(w, cfg, "ours-compiled")[0])
    variants(b, w, ref, row, cfg, label, res)
    w.close()
    if compile_ and "start" not in b.skip:
        cache = os.path.join(tmp, "compile-cache")
        res["start_cold"] = start_probe(b, cache)
        save(res)
        res["start_warm"] = start_probe(b, cache)
    return res


def variants(b: Bench, w, ref, row, cfg, label: str, res: dict) -> None:
    """Opt-in numerics-changing options on top of `label`, each with its deviation from eager and
    its end-to-end rate: fewer steps with DPM-Solver++ (rows override steps), then FP8 where torchao
    and CUDA exist (the UNet recompiles once when it is compiled)."""
    import torch

    from pipeline.generate.models import set_scheduler

    pipe, before = w.pipe, w.pipe.scheduler
    if not w.generator.family.transformer and "dpm" not in b.skip:  # flow families keep their scheduler
        set_scheduler(pipe, "dpm++")
        few = max(2, b.steps // 2)
        res["dpm_warm_s"] = b.warm(w, cfg, "warm-dpm")
        rate, imgs = b.bare(pipe, steps=few)
        row(
            f"bare batched, dpm++ {few} steps, {label}",
            rate,
            deviation=deviation(w.scorer, ref, imgs, w.device),
        )
        row(f"ours, dpm++ {few} steps, {label}", b.ours(w, cfg, "ours-dpm", steps=few)[0])
        pipe.scheduler = before
    try:
        import torchao  # noqa: F401
    except ImportError:
        return
    if torch.cuda.is_available() and "fp8" not in b.skip:
        from pipeline.generate.accel import _fp8
        from pipeline.generate.families import denoiser

        t = time.perf_counter()
        try:
            _fp8(denoiser(pipe), torch.device("cuda"))
            b.warm(w, cfg, "warm-fp8")  # quantise (and recompile, when compiled)
        except Exception as e:  # a torchao/torch mismatch must not cost the rest of the run
            res["fp8_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            return
        res["fp8_setup_s"] = round(time.perf_counter() - t, 1)
        rate, imgs = b.bare(pipe)
        row(f"bare batched, fp8 (torchao), {label}", rate, deviation=deviation(w.scorer, ref, imgs, w.device))
        row(f"ours, fp8 (torchao), {label}", b.ours(w, cfg, "ours-fp8")[0])


def table(path: str) -> str:
    """Markdown rows of one result file (RESULTS.md)."""
    r = json.load(open(path))
    lines = [
        f"{r['model']} ({r['preset']}) on {r['device']}, torch {r['torch']}, {r['resolution']}², "
        f"{r['steps']} steps {r['scheduler']}, batch {r['batch']}, {r['dtype']}, "
        f"compile {r.get('compile_s', '-')} s, "
        f"peak {r.get('peak_mem_GiB', '-')} GiB, fp8 setup {r.get('fp8_setup_s', '-')} s"
        + (" (PARTIAL: the run was cut short)" if r.get("partial") else ""),
        "",
        "| what | img/s | vs bare eager (mean of 2) | max px | mean px | PSNR dB | CLIP-score change |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        d = x.get("deviation", {})
        lines.append(
            f"| {x['what']} | {x['img_per_s']} | {x.get('ratio_vs_bare_eager', '')} | "
            f"{d.get('max_px', '')} | "
            f"{d.get('mean_px', '')} | {d.get('psnr_db', '')} | {d.get('clip_score_change', '')} |"
        )
    if "start_cold" in r:
        warm = r.get("start_warm", {}).get("start_s", "not measured")
        lines += [
            "",
            f"actor start (fresh process, compile on): cold {r['start_cold']['start_s']} s, "
            f"warm cache {warm} s",
        ]
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
    out = os.environ.get("OUT") or os.path.join(os.path.dirname(__file__), "results")
    for model in a.models.split(","):
        name = f"bench_gpu_{model}" + ("_tiny" if a.tiny else "")

        def save(res, name=name):
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, f"{name}.json"), "w") as f:
                json.dump({**res, "partial": True}, f, indent=1)
            print(f"bench_gpu: {res['rows'][-1]['what'] if res['rows'] else '-'} done", flush=True)

        report(name, run_model(model, a.tiny, not a.no_compile, save))
        print(table(os.path.join(out, f"{name}.json")))


if __name__ == "__main__":
    main()
