"""Class 8: SIGKILL of the driver at random points the test chooses (seeded); each re-run resumes,
and the final parts are byte-identical to an uninterrupted run, with no .tmp-* left."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import read_output, tiny_config, tree_bytes, write_job, write_prompts


def _cmd(job):
    return [sys.executable, "-m", "pipeline.cli", "run", job, "--no-progress"]


def _markers(out) -> int:
    d = out / "_commits"
    return len([f for f in os.listdir(d) if f.endswith(".json")]) if d.is_dir() else 0


def _wait_for_markers(p, out, n: int, deadline_s: float = 120.0) -> None:
    """Until `n` shards are committed or the run ends: kill points follow the run's progress, not
    a wall-clock guess (a cold first run on a fresh clone is slower than the runs it calibrated)."""
    t0 = time.time()
    while p.poll() is None and _markers(out) < n and time.time() - t0 < deadline_s:
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_driver_then_resume_is_byte_identical(tmp_path):
    inp = write_prompts(tmp_path / "in.parquet", [f"prompt number {i}" for i in range(18)])  # 6 shards of 3
    common = dict(
        write={"timing_columns": False, "contact_sheet": False}, generation={"images_per_prompt": 1}
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "HF_HUB_OFFLINE": "1"}
    ref = write_job(tmp_path / "ref.yaml", tiny_config(inp, tmp_path / "ref", **common))
    subprocess.run(_cmd(ref), env=env, check=True, capture_output=True)
    job = write_job(tmp_path / "job.yaml", tiny_config(inp, tmp_path / "out", **common))
    rng, kills = random.Random(20261203), 0
    for _ in range(3):  # each try commits 0-1 more shards, then dies at a seeded random moment after
        p = subprocess.Popen(_cmd(job), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_markers(p, tmp_path / "out", _markers(tmp_path / "out") + rng.randint(0, 1))
        time.sleep(rng.uniform(0.0, 0.4))  # start-up, mid-shard or mid-commit
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.wait()
    assert subprocess.run(_cmd(job), env=env, capture_output=True).returncode == 0
    assert kills >= 1
    assert tree_bytes(tmp_path / "out" / "data") == tree_bytes(tmp_path / "ref" / "data")
    assert len(read_output(tmp_path / "out")) == 18
    # stale temp files of killed runs are younger than the 10 min rule: a run 10 min later removes
    # them; here only committed parts and markers may remain beside them
    assert all(f.startswith(("part-", ".tmp-part-")) for f in os.listdir(tmp_path / "out" / "data"))
