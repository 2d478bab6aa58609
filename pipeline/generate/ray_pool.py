"""Ray actor pool: one long-lived actor per worker, each owning its pipeline on its GPU (or CPU).

The driver keeps one shard in flight per actor; a finished actor gets the next shard. A task that
raises comes back as an error for the driver to re-queue; an actor that dies (OOM-killed, node
lost, SIGKILL) is replaced by a fresh one and its shard re-queued.
"""
from __future__ import annotations

import math

from pipeline.core.job import ResolvedJob


class WorkerStartError(RuntimeError):
    """An actor could not start (model or scorer failed to load); carries the actor's error."""


class ShardActor:
    """Actor body (made remote in ActorPool.start): a ShardWorker built inside the actor process."""

    def __init__(self, job_dict: dict, worker_id: str, num_threads: int):
        import torch

        torch.set_num_threads(max(1, num_threads))  # the CPU share Ray reserved for this actor
        from pipeline.generate.worker import ShardWorker

        self.worker = ShardWorker(ResolvedJob.from_dict(job_dict), worker_id)

    def ready(self) -> float:
        return self.worker.load_seconds

    def process(self, shard, attempt: int) -> dict:
        return self.worker.process(shard, attempt)


class ActorPool:
    def __init__(self, job: ResolvedJob):
        self.job, self.cfg = job, job.config
        self.started_ray = False
        self.actors: dict[str, object] = {}  # worker id -> handle
        self.idle: list[str] = []
        self.inflight: dict = {}  # object ref -> (worker id, shard)
        self.replaced = 0  # actors replaced after dying; bounded so a crash loop ends the run

    def __enter__(self):
        import ray

        if not ray.is_initialized():
            # Only the config's ray.runtime_env goes to ray.init, never the driver's variables: a local
            # Ray's workers inherit this process's environment anyway, a cluster's nodes have their own
            # (secrets from the node, a mounted Secret or an instance role, never a runtime env, which
            # Ray shows in its dashboard), and inside a Ray job the job's runtime env already applies
            # (Ray refuses to merge a ray.init env that repeats one of its fields or variables).
            kwargs = dict(include_dashboard=False, log_to_driver=True)
            if self.cfg.ray.runtime_env:
                kwargs["runtime_env"] = dict(self.cfg.ray.runtime_env)
            if self.cfg.ray.address:
                ray.init(address=self.cfg.ray.address, **kwargs)
            else:
                ray.init(**kwargs)
            self.started_ray = True
        return self

    def __exit__(self, *exc):
        import ray

        for handle in self.actors.values():
            ray.kill(handle, no_restart=True)
        if self.started_ray:
            ray.shutdown()

    # ---- start ---------------------------------------------------------------------------------------------
    def _resources(self) -> tuple[float, float, int]:
        """(gpus, cpus) per actor and how many actors the cluster can hold now."""
        import ray

        total = ray.cluster_resources()
        r = self.cfg.ray
        gpus = r.num_gpus_per_worker if r.num_gpus_per_worker is not None else (1.0 if total.get("GPU") else 0.0)
        cpus = r.num_cpus_per_worker
        fit = math.floor(total.get("CPU", 0) / cpus + 1e-9)
        if gpus > 0:
            fit = min(fit, math.floor(total.get("GPU", 0) / gpus + 1e-9))
        if fit < 1:
            raise WorkerStartError(f"the Ray cluster ({dict(total)}) cannot hold one worker needing "
                                   f"{cpus} CPU and {gpus} GPU (ray.num_cpus_per_worker / ray.num_gpus_per_worker)")
        return gpus, cpus, fit

    def _new_actor(self, worker_id: str):
        import ray

        gpus, cpus, _ = self._resources()
        opts = dict(num_gpus=gpus, num_cpus=cpus, max_restarts=0, max_concurrency=1)
        if self.cfg.ray.runtime_env and not self.started_ray:  # joined cluster: per-actor environment
            opts["runtime_env"] = self.cfg.ray.runtime_env
        remote = ray.remote(ShardActor).options(**opts)
        return remote.remote(self.job.to_dict(), worker_id, max(1, int(cpus)))

    def start(self) -> list[float]:
        """Create the actors and wait until each has loaded its models; returns load seconds."""
        import ray

        _, _, fit = self._resources()
        n = self.cfg.ray.num_workers
        if fit < n:
            print(f"sdgen: the cluster holds {fit} of the {n} requested workers now; starting {fit}")
            n = fit
        self.actors = {str(i): self._new_actor(str(i)) for i in range(n)}
        try:
            loads = ray.get([a.ready.remote() for a in self.actors.values()])
        except ray.exceptions.RayError as e:
            raise WorkerStartError(f"a worker failed to start (model or scorer load): {_cause(e)}") from None
        self.idle = list(self.actors)
        return loads

    # ---- dispatch ----------------------------------------------------------------------------------------------
    def has_idle(self) -> bool:
        return bool(self.idle)

    def busy(self) -> bool:
        return bool(self.inflight)

    def submit(self, shard, attempt: int) -> None:
        wid = self.idle.pop(0)
        self.inflight[self.actors[wid].process.remote(shard, attempt)] = (wid, shard)

    def wait(self) -> list:
        """Block until at least one shard finishes; returns [(shard, marker or None, error or None)]."""
        import ray

        ready, _ = ray.wait(list(self.inflight), num_returns=1)
        ready, _ = ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=0)
        out = []
        for ref in ready:
            wid, shard = self.inflight.pop(ref)
            try:
                out.append((shard, ray.get(ref), None))
                self.idle.append(wid)
            except ray.exceptions.RayActorError as e:  # the actor process is gone: replace it
                out.append((shard, None, f"worker {wid} died: {_cause(e)}"))
                self._replace(wid)
            except ray.exceptions.RayError as e:  # the task raised; the actor is fine
                out.append((shard, None, _cause(e)))
                self.idle.append(wid)
        return out

    def _replace(self, wid: str) -> None:
        import ray

        self.replaced += 1
        limit = self.cfg.ray.num_workers * self.cfg.ray.max_shard_tries
        if self.replaced > limit:
            raise WorkerStartError(f"{self.replaced} workers died during this run (limit {limit}); giving up")
        ray.kill(self.actors[wid], no_restart=True)
        self.actors[wid] = self._new_actor(wid)
        try:
            ray.get(self.actors[wid].ready.remote())
        except ray.exceptions.RayError as e:
            raise WorkerStartError(f"a replacement worker failed to start: {_cause(e)}") from None
        self.idle.append(wid)


def _cause(e: BaseException) -> str:
    """The innermost useful message of a Ray error (first line of the original exception)."""
    cause = getattr(e, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}".splitlines()[0][:500]
    text = str(e).strip().splitlines()
    return (text[-1] if text else type(e).__name__)[:500]
