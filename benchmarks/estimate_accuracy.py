"""How close `sdgen plan`'s history-based estimate comes to the run it estimates (a wall-clock matter,
so measured here and not asserted by a unit test: tests/generate/test_budget.py checks the formula).

Runs the tiny model on 12 prompts x 2 images x 8 steps, adds 12 more prompts, asks `sdgen plan` for
the estimate from the first run's _runs record, runs them, and prints estimate vs the run's own
worker-seconds. Quiet machines only: another busy process slows one run and not the other.

    python benchmarks/estimate_accuracy.py
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.cli import main as cli  # noqa: E402


def _prompts(path: str, prefix: str) -> None:
    pq.write_table(pa.table({"prompt": [f"{prefix} {i}" for i in range(12)]}), path)


def _run(job: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", job, "--no-progress"], check=True, capture_output=True
    )


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="sdgen-estimate-")
    os.makedirs(f"{tmp}/in")
    _prompts(f"{tmp}/in/a.parquet", "first batch")
    job = f"{tmp}/job.yaml"
    cfg = {
        "input": f"{tmp}/in",
        "output": f"{tmp}/out",
        "model": "tiny",
        "generation": {"width": 64, "height": 64, "steps": 8, "images_per_prompt": 2, "batch_size": 3},
        "shards": {"rows_per_shard": 3},
        "ray": {"executor": "inline"},
    }
    with open(job, "w") as f:
        yaml.safe_dump(cfg, f)
    _run(job)  # each run in its own process, as a user's runs are
    _prompts(f"{tmp}/in/b.parquet", "second batch")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(["plan", job, "--json"]) == 0
    est = json.loads(out.getvalue())["estimate"]
    _run(job)
    actual = json.loads(open(f"{tmp}/out/summary.json").read())["worker_seconds"]
    print(
        f"estimate {est['worker_hours'] * 3600:.2f} worker-s ({est['basis']}); actual {actual:.2f} worker-s; "
        f"error {est['worker_hours'] * 3600 / actual - 1:+.1%}"
    )


if __name__ == "__main__":
    main()
