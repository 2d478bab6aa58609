"""Scale on CPU, two figures:

1. `sdgen plan` of a 10-million-row prompt file: wall time and peak driver memory (it reads only
   Parquet footers).
2. An actor's peak memory is bounded by its batch, not its shard size: the same worker, batch and
   image size (256x256, batch 8) on shards of 32, 256 and 1024 images (parts are written in row
   groups as they fill).

    python -m benchmarks.bench_scale [--rows N]
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time

from benchmarks.common import report

ROWS = int(sys.argv[sys.argv.index("--rows") + 1]) if "--rows" in sys.argv else 10_000_000
CHUNK = 500_000  # rows written per row group: the generator itself stays small


def write_big_prompt_file(path: str, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    words = ["doctor", "nurse", "pilot", "teacher", "ceo", "janitor", "chef", "farmer"]
    schema = pa.schema([("prompt", pa.string()), ("group", pa.string())])
    with pq.ParquetWriter(path, schema) as w:
        for start in range(0, n, CHUNK):
            idx = range(start, min(n, start + CHUNK))
            w.write_table(
                pa.table(
                    {
                        "prompt": [f"a photo of a {words[i % 8]} number {i}" for i in idx],
                        "group": [words[i % 8] for i in idx],
                    },
                    schema=schema,
                )
            )


def child_peak_mb(cmd: list[str], env=None) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, stdout) of a child process (ru_maxrss of the waited-for child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:  # ru_maxrss is a max over all children: run each measurement in a fresh parent
        raise RuntimeError("peak RSS not attributable: run this benchmark in a fresh process")
    return seconds, peak / 1024, out


WORKER_SNIPPET = """
import sys, os, resource
from pipeline.core.config import from_dict
from pipeline.generate.inputs import list_input_files
from pipeline.generate.plan import plan_shards
from pipeline.generate.resolve import resolve_job
from pipeline.generate.worker import ShardWorker
from benchmarks.common import write_prompt_file
rows, tmp = int(sys.argv[1]), sys.argv[2]
src = write_prompt_file(os.path.join(tmp, f"p{rows}.parquet"), rows)
cfg = from_dict({"input": src, "output": os.path.join(tmp, f"out{rows}"), "model": "tiny",
    "generation": {"width": 256, "height": 256, "steps": 2, "batch_size": 8, "images_per_prompt": 1},
    "shards": {"rows_per_shard": rows}, "write": {"png_compress_level": 1}, "ray": {"executor": "inline"}})
job = resolve_job(cfg)  # workers run resolved jobs only
w = ShardWorker(job)
fs, files = list_input_files(src)
shard = plan_shards(fs, files, tmp, rows, cfg.fingerprint())[0][0]
m = w.process(shard)
print(m["rows"], m["size"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def actor_memory(tmp: str, rows: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", WORKER_SNIPPET, str(rows), tmp],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    ).stdout.split()
    n, size, peak = int(out[0]), int(out[1]), float(out[2])
    return {"shard_images": n, "part_MB": round(size / 2**20, 1), "peak_rss_MB": round(peak, 1)}


def main():
    tmp = tempfile.mkdtemp(prefix="sdgen-bench-scale-")
    big = os.path.join(tmp, "prompts-10M.parquet")
    t = time.perf_counter()
    write_big_prompt_file(big, ROWS)
    res = {
        "rows": ROWS,
        "file_MB": round(os.path.getsize(big) / 2**20, 1),
        "write_s": round(time.perf_counter() - t, 1),
    }
    cfg = os.path.join(tmp, "plan.yaml")
    with open(cfg, "w") as f:
        f.write(f"input: {big}\noutput: {tmp}/out\nmodel: tiny\n")
    seconds, peak, out = child_peak_mb(
        [sys.executable, "-m", "pipeline.cli", "plan", cfg, "--json"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    res.update(plan_s=round(seconds, 2), plan_peak_rss_MB=round(peak, 1), plan_output=out.strip())
    # peak RSS levels off once the batch pipeline is warm: a shard 4x larger costs no more memory
    sizes = (
        (8, 16, 32) if "--quick" in sys.argv else (32, 256, 1024)
    )  # --quick: a smoke run, not a measurement
    res["actor_by_shard_size"] = [actor_memory(tmp, n) for n in sizes]
    mid, big = res["actor_by_shard_size"][1:]
    res["actor_rss_256_to_1024_images_MB"] = round(big["peak_rss_MB"] - mid["peak_rss_MB"], 1)
    res["part_growth_256_to_1024_images_MB"] = round(big["part_MB"] - mid["part_MB"], 1)
    report("bench_scale_quick" if "--quick" in sys.argv else "bench_scale", res)


if __name__ == "__main__":
    main()
