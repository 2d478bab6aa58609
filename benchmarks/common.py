"""Shared helpers of the benchmark scripts (numbers printed, not asserted)."""

from __future__ import annotations

import json
import os
import resource
import time

PROFESSIONS = ["doctor", "nurse", "pilot", "teacher", "ceo", "janitor", "chef", "farmer"]


def prompts(n: int) -> list[str]:
    return [f"a photo of a {PROFESSIONS[i % 8]}, portrait number {i}" for i in range(n)]


def write_prompt_file(path: str, n: int, **columns) -> str:
    """n benchmark prompts; `columns` adds constant per-row override columns (e.g. steps=25)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": prompts(n), **{k: [v] * n for k, v in columns.items()}}), path)
    return path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(name: str, results: dict) -> None:
    """Print results and save them as JSON under $OUT (device runs) or benchmarks/results/."""
    print(json.dumps(results, indent=1))
    out = os.environ.get("OUT") or os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump({**results, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, f, indent=1)
