"""Driver scaling: how many shards/s one sdgen driver dispatches, and its memory, with a no-op worker.

Runs the real Ray executor (pipeline.generate.driver.execute_ray: the elastic pool, ray.wait over
ready and task refs, re-queue bookkeeping, events) over many fractional-CPU actors whose worker
returns a commit marker without generating or writing (NoopWorker, chosen in the actors through
SDGEN_WORKER_CLASS). What it measures is the driver alone: dispatch cost per shard, shards/s,
driver RSS growth over the run, and the idle gap an actor sees between two shards.

    PYTHONPATH=$PWD python benchmarks/bench_driver.py --actors 32 --shards 20000
Writes benchmarks/results/bench_driver.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import report  # noqa: E402


class NoopWorker:
    """A ShardWorker stand-in: no model, no output; returns the marker a 1-row shard would."""

    def __init__(self, job, worker_id: str):
        self.worker_id, self.load_seconds, self.on_batch = worker_id, 0.0, None
        self.last_end = None

    def process(self, shard, attempt: int = 1) -> dict:
        start = time.perf_counter()
        gap = None if self.last_end is None else start - self.last_end  # idle since its previous shard
        self.last_end = time.perf_counter()
        return {
            "rows": 1,
            "status_counts": {"ok": 1},
            "timings": {"total": 1e-6},
            "attempt": attempt,
            "worker": self.worker_id,
            "idle_gap_s": gap,
        }


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actors", type=int, default=32)
    ap.add_argument("--shards", type=int, default=20000)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs the local Ray gets")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    from pipeline.core.config import from_dict
    from pipeline.generate.driver import execute_ray
    from pipeline.generate.events import NullSink
    from pipeline.generate.inputs import Shard
    from pipeline.generate.resolve import resolve_job
    from pipeline.generate.summary import Tally

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ray.init(
        num_cpus=args.cpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {
                "SDGEN_WORKER_CLASS": "benchmarks.bench_driver:NoopWorker",
                "PYTHONPATH": root,
                "HF_HUB_OFFLINE": "1",
            }
        },
    )
    cfg = from_dict(
        {
            "input": "unused.parquet",
            "output": "/tmp/unused-bench-driver",
            "model": "tiny",
            "generation": {"width": 64, "height": 64},
            "ray": {
                "num_workers": args.actors,
                "min_workers": args.actors,
                "num_cpus_per_worker": round(args.cpus * 0.5 / args.actors, 4),
            },
        }
    )
    job = resolve_job(cfg)
    shards = [Shard(f"s{i:08d}", "unused.parquet", i, i + 1) for i in range(args.shards)]
    rss0 = _rss_mb()

    class Bar:  # the driver's bar interface, counting only
        n = 0
        total = args.shards

        def update(self, k):
            self.n += k

    class FirstDispatch(NullSink):  # dispatch starts once every actor is ready (min_workers = actors)
        first = None

        def emit(self, event, **fields):
            if event == "shard_started" and self.first is None:
                self.first = time.perf_counter()

    gaps, rss = [], []  # idle gaps an actor reports; driver RSS sampled every 10% of the shards
    step = max(1, args.shards // 10)

    def on_marker(m):
        if m.get("idle_gap_s") is not None:
            gaps.append(m["idle_gap_s"])
        if (len(rss) + 1) * step <= tally.rows + 1:
            rss.append(round(_rss_mb(), 1))

    tally, sink = Tally(on_marker), FirstDispatch()
    t0 = time.perf_counter()
    execute_ray(job, shards, tally, Bar(), sink)
    end = time.perf_counter()
    wall = end - sink.first
    gaps.sort()
    ray.shutdown()
    report(
        "bench_driver",
        {
            "actors": args.actors,
            "shards": args.shards,
            "ray_cpus": args.cpus,
            "committed": tally.count,
            "failed": len(tally.failed),
            "driver_rss_mb_every_10pct": rss,
            "actor_start_s": round(sink.first - t0, 2),
            "dispatch_wall_s": round(wall, 2),
            "shards_per_s": round(args.shards / wall, 1),
            "driver_ms_per_shard": round(1000 * wall / args.shards, 3),
            "driver_rss_mb_before": round(rss0, 1),
            "driver_rss_mb_after": round(_rss_mb(), 1),
            "median_actor_idle_gap_ms": round(1000 * gaps[len(gaps) // 2], 3) if gaps else None,
            "p95_actor_idle_gap_ms": round(1000 * gaps[int(len(gaps) * 0.95)], 3) if gaps else None,
        },
    )


if __name__ == "__main__":
    main()
