"""What runs inside a Ray actor: the shard worker, its Ray custom metrics and per-batch progress.

Metrics (``ray.util.metrics``; Ray exports them on every node's metrics port with a ``ray_`` prefix,
so they reach Prometheus and the dashboard):
    sdgen_images            counter, tags status (ok, failed, blocked, invalid) and worker
    sdgen_shard_seconds     histogram of a shard's wall seconds in the actor, tag worker
    sdgen_images_per_second gauge: the last shard's images / its seconds, tag worker
Progress: the worker reports each generated batch to one small ``ProgressTally`` actor with a
fire-and-forget call (no round trip); the driver collects the tallies a few times a second.
"""

from __future__ import annotations

import os
import socket

from pipeline.core.job import ResolvedJob

SHARD_SECONDS_BOUNDARIES = [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]


class ProgressTally:
    """Actor body: images generated per shard since the driver last asked."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def add(self, shard: str, n: int) -> None:
        self.counts[shard] = self.counts.get(shard, 0) + n

    def take(self) -> dict:
        out, self.counts = self.counts, {}
        return out


class _Metrics:
    def __init__(self, worker_id: str):
        from ray.util.metrics import Counter, Gauge, Histogram

        self.tags = {"worker": worker_id}
        self.images = Counter(
            "sdgen_images", "images written by sdgen workers, by row status", tag_keys=("status", "worker")
        )
        self.seconds = Histogram(
            "sdgen_shard_seconds",
            "seconds per shard in a worker",
            boundaries=SHARD_SECONDS_BOUNDARIES,
            tag_keys=("worker",),
        )
        self.rate = Gauge(
            "sdgen_images_per_second", "images per second of the last shard", tag_keys=("worker",)
        )

    def record(self, marker: dict) -> None:
        for status, n in (marker.get("status_counts") or {}).items():
            if n:
                self.images.inc(n, tags={**self.tags, "status": status})
        total = (marker.get("timings") or {}).get("total")
        if total:
            self.seconds.observe(total, tags=self.tags)
            self.rate.set(marker["rows"] / total, tags=self.tags)


class ShardActor:
    """Actor body (made remote by ActorPool): a ShardWorker built inside the actor process."""

    def __init__(self, job_dict: dict, worker_id: str, num_threads: int, progress=None):
        import torch

        torch.set_num_threads(max(1, num_threads))  # the CPU share Ray reserved for this actor
        worker_cls = _worker_class()
        self.worker = worker_cls(ResolvedJob.from_dict(job_dict), worker_id)
        self.worker_id, self.progress, self.shard = worker_id, progress, None
        if progress is not None:
            self.worker.on_batch = self._on_batch
        self.metrics = _Metrics(worker_id)

    def _on_batch(self, n: int) -> None:
        if self.shard is not None:
            self.progress.add.remote(self.shard, n)  # fire and forget: progress must never slow a shard

    def ready(self) -> dict:
        import ray

        return {
            "load_s": round(self.worker.load_seconds, 3),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "gpu": [str(g) for g in ray.get_gpu_ids()],
        }

    def process(self, shard, attempt: int) -> dict:
        self.shard = shard.name
        try:
            marker = self.worker.process(shard, attempt)
        finally:
            self.shard = None
        self.metrics.record(marker)
        return marker


def _worker_class():
    """The shard worker: ShardWorker, or a benchmark's stand-in named by SDGEN_WORKER_CLASS
    ("module:Class", e.g. benchmarks.bench_driver:NoopWorker, to measure the driver alone)."""
    spec = os.environ.get("SDGEN_WORKER_CLASS")
    if not spec:
        from pipeline.generate.worker import ShardWorker

        return ShardWorker
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)
