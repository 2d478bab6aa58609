"""benchmarks/bench_gpu.py runs on CPU with tiny presets (so the GPU run is the same code)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tmp_path, *args):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_gpu", "--tiny", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=900,
    )


def test_bench_gpu_tiny_eager_sd15_and_sdxl(tmp_path):
    _run(tmp_path, "--models", "sd15,sdxl", "--no-compile")
    for model in ("sd15", "sdxl"):
        r = json.load(open(tmp_path / f"bench_gpu_{model}_tiny.json"))
        what = [x["what"] for x in r["rows"]]
        assert what[:4] == [
            "bare batched, eager",
            "ours, eager",
            "bare batched + PIL + PNG, eager",
            "tutorial bs 1, eager",
        ] and all(x["img_per_s"] > 0 for x in r["rows"])
        assert "dpm++" in r["rows"][-1]["what"] and r["rows"][-1]["what"].startswith("ours")
        dev = r["rows"][-2]["deviation"]  # fewer dpm++ steps vs the eager reference, same seeds
        assert dev["max_px"] >= dev["mean_px"] >= 0 and dev["psnr_db"] > 0 and "clip_score_change" in dev
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_gpu", "--table", str(tmp_path / "bench_gpu_sdxl_tiny.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        check=True,
    ).stdout
    assert "| ours, eager |" in out and "tiny-sdxl" in out


@pytest.mark.slow
def test_bench_gpu_tiny_compiled_and_start_probes(tmp_path):
    _run(tmp_path, "--models", "sd15")
    r = json.load(open(tmp_path / "bench_gpu_sd15_tiny.json"))
    comp = [x for x in r["rows"] if x["what"].split(", ")[1].startswith("compiled")]
    assert len(comp) == 2 and comp[0]["deviation"]["max_px"] <= 2 and r["compile_s"] > 0
    assert [x["what"].split(",")[0] for x in r["rows"][-2:]] == ["bare batched", "ours"]  # dpm++ on compiled
    assert "dpm++" in r["rows"][-1]["what"] and r["levers"]["fuse_qkv"] and "partial" not in r
    assert r["start_cold"]["start_s"] > 0 and r["start_warm"]["start_s"] > 0
