"""The benchmark scripts still run after code moves (smoke runs with tiny sizes; numbers are not
checked here: RESULTS.md reports the real runs). Results go to a temporary $OUT, not benchmarks/results."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _bench(tmp_path, *args) -> dict:
    env = {**os.environ, "OUT": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (res,) = tmp_path.glob("*.json")
    return json.loads(res.read_text())


def test_bench_scale_runs(tmp_path):
    res = _bench(tmp_path, "benchmarks.bench_scale", "--rows", "20000", "--quick")
    assert res["rows"] == 20000 and json.loads(res["plan_output"])["rows"] == 20000
    assert [a["shard_images"] for a in res["actor_by_shard_size"]] == [8, 16, 32]


def test_bench_cpu_quick_runs(tmp_path):
    res = _bench(tmp_path, "benchmarks.bench_cpu", "--quick")
    assert res["job_steady_img_per_s"] > 0 and res["job_inline_steady_img_per_s"] > 0
    assert 0 < res["ratio_job_vs_bare"] < 2
