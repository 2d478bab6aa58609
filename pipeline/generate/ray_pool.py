"""Ray actor pool, elastic: every actor is requested up front, each gets work as soon as it is ready.

start   request num_workers actors (auto: one per GPU in the cluster, re-counted as nodes
        join); actors the cluster cannot hold yet stay pending: on an autoscaling cluster
        (KubeRay, Anyscale) pending actors are what makes it add nodes
wait    one ray.wait over the actors' `ready` refs and the shards in flight together: a ready
        actor joins the pool (dispatch begins once ray.min_workers are ready), a finished
        shard comes back to the driver
loss    an actor that dies (node lost, OOM-killed, SIGKILL) is re-requested and its shard
        handed back to the driver, which re-queues it (bounded per shard by ray.max_shard_tries,
        never by a count of dead actors, so a long preemptible run survives any number of
        preemptions); the worker commits, the driver only re-queues, so nothing is written twice
errors  every actor failing to load (model, scorer) is a WorkerStartError (exit 2); so is no
        actor ready within ray.start_timeout_s; a worker slot whose actor fails to start
        max_shard_tries times in a row is given up, with its error reported
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass

from pipeline.core.job import ResolvedJob
from pipeline.generate.events import EventSink, NullSink
from pipeline.generate.ray_actor import ProgressTally, ShardActor  # noqa: F401 - ShardActor re-exported

AUTO_RECOUNT_S = 10.0  # how often num_workers: auto re-counts the cluster's GPUs
WAIT_TICK_S = 0.5  # longest ray.wait: progress, timeouts and auto re-counts are checked between waits


class WorkerStartError(ValueError):
    """No worker could start (model or scorer failed to load, or no capacity in time)."""


@dataclass
class Slot:
    handle: object
    ready: bool = False
    busy: bool = False
    host: str = ""
    start_failures: int = 0  # consecutive failed starts (an exception in the actor's __init__)
    given_up: bool = False


class ActorPool:
    def __init__(self, job: ResolvedJob, events: EventSink | None = None, budget=None):
        self.job, self.cfg = job, job.config
        self.events = events or NullSink()
        self.budget = budget  # generate/budget.py: each actor's worker-seconds, request to release
        self.started_ray = False
        self.slots: dict[str, Slot] = {}
        self.refs: dict = {}  # object ref -> ("ready", wid, None) or ("task", wid, shard)
        self.dispatching = False
        self.progress = None
        self.ever_ready = 0
        self.last_start_error = ""
        self.load_seconds: list[float] = []  # per actor that became ready
        self._gpus = self._cpus = 0.0
        self._limit = 0  # most actors worth having (pending shards)
        self._no_ready_since = time.monotonic()
        self._recount_at = 0.0
        self._progress_at = 0.0

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

        for wid, slot in self.slots.items():
            ray.kill(slot.handle, no_restart=True)
            if self.budget is not None:
                self.budget.worker_released(wid)
        if self.progress is not None:
            ray.kill(self.progress, no_restart=True)
        if self.started_ray:
            ray.shutdown()

    # ---- start ---------------------------------------------------------------------------------------------
    def _target(self) -> int:
        import ray

        n = self.cfg.ray.num_workers
        if n == "auto":
            gpus = ray.cluster_resources().get("GPU", 0)
            n = max(1, math.floor(gpus / (self._gpus or 1.0) + 1e-9)) if gpus else 1
        return max(1, min(n, self._limit))

    def _check_capacity(self) -> None:
        """A Ray this driver started itself has no autoscaler: if it cannot hold one worker, say so now."""
        import ray

        total = ray.cluster_resources()
        fit = math.floor(total.get("CPU", 0) / self._cpus + 1e-9)
        if self._gpus > 0:
            fit = min(fit, math.floor(total.get("GPU", 0) / self._gpus + 1e-9))
        if fit < 1:
            raise WorkerStartError(
                f"the Ray cluster ({dict(total)}) cannot hold one worker needing {self._cpus} "
                f"CPU and {self._gpus} GPU (ray.num_cpus_per_worker / ray.num_gpus_per_worker)"
            )

    def start(self, shards: int) -> None:
        """Request the actors (non-blocking): as many as num_workers, never more than there are shards."""
        import ray

        r = self.cfg.ray
        gpus_now = ray.cluster_resources().get("GPU", 0)
        self._gpus = (
            r.num_gpus_per_worker if r.num_gpus_per_worker is not None else (1.0 if gpus_now else 0.0)
        )
        self._cpus, self._limit = r.num_cpus_per_worker, max(1, shards)
        if not r.address:  # a local Ray we started: no autoscaler will ever add capacity
            self._check_capacity()
        self.progress = self._new_tally()
        self._grow()
        self._no_ready_since = self._recount_at = time.monotonic()

    def _new_tally(self):
        """The progress tally lives on the driver's node: a lost worker node must not take it along."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        return ray.remote(ProgressTally).options(num_cpus=0, scheduling_strategy=here).remote()

    def _grow(self) -> None:
        for i in range(len(self.slots), self._target()):
            self._request(str(i))

    def _request(self, wid: str, failures: int = 0) -> None:
        import ray

        opts = dict(num_gpus=self._gpus, num_cpus=self._cpus, max_restarts=0, max_concurrency=1)
        if self.cfg.ray.runtime_env and not self.started_ray:  # joined cluster: per-actor environment
            opts["runtime_env"] = self.cfg.ray.runtime_env
        handle = (
            ray.remote(ShardActor)
            .options(**opts)
            .remote(self.job.to_dict(), wid, max(1, int(self._cpus)), self.progress)
        )
        self.slots[wid] = Slot(handle, start_failures=failures)
        self.refs[handle.ready.remote()] = ("ready", wid, None)
        if self.budget is not None:
            self.budget.worker_started(wid)  # billed from the request, as a rented GPU is

    # ---- dispatch ------------------------------------------------------------------------------------
    def idle(self) -> list[str]:
        """Ready actors with nothing to do (none until min_workers are ready)."""
        if not self.dispatching:
            return []
        return [w for w, s in self.slots.items() if s.ready and not s.busy]

    def busy(self) -> bool:
        return any(kind == "task" for kind, _, _ in self.refs.values())

    def submit(self, wid: str, shard, attempt: int) -> None:
        slot = self.slots[wid]
        slot.busy = True
        self.refs[slot.handle.process.remote(shard, attempt)] = ("task", wid, shard)
        self.events.emit("shard_started", shard=shard.name, worker=wid, host=slot.host, attempt=attempt)

    def take_progress(self) -> dict:
        """{shard: images generated} since the last call, at most a few times a second (else {})."""
        import ray

        now = time.monotonic()
        if self.progress is None or now - self._progress_at < WAIT_TICK_S:
            return {}
        self._progress_at = now
        try:
            return ray.get(self.progress.take.remote())
        except ray.exceptions.RayActorError:  # progress is best effort: never fail a run for it
            self.progress = None
            return {}

    def wait(self) -> list:
        """Wait (at most WAIT_TICK_S) for actors to become ready and shards to finish; returns the
        finished shards as [(shard, marker or None, error or None)]."""
        import ray

        out = []
        if self.refs:
            done, _ = ray.wait(list(self.refs), num_returns=1, timeout=WAIT_TICK_S)
            if done:
                done, _ = ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
            for ref in done:
                kind, wid, shard = self.refs.pop(ref)
                if kind == "ready":
                    self._on_ready(ref, wid)
                else:
                    out.append((shard, *self._on_task(ref, wid, shard)))
        else:
            time.sleep(WAIT_TICK_S)
        self._housekeeping()
        return out

    def _on_ready(self, ref, wid: str) -> None:
        import ray

        slot = self.slots[wid]
        try:
            info = ray.get(ref)
        except ray.exceptions.RayError as e:
            self._start_failed(wid, e)
            return
        slot.ready, slot.host, slot.start_failures = True, info["host"], 0
        self.ever_ready += 1
        self.load_seconds.append(info["load_s"])
        self.events.emit(
            "worker_ready",
            worker=wid,
            host=info["host"],
            node=info["node_id"],
            gpu=info["gpu"],
            load_s=info["load_s"],
        )

    def _on_task(self, ref, wid: str, shard):
        import ray

        slot = self.slots[wid]
        try:
            marker = ray.get(ref)
        except ray.exceptions.RayActorError as e:  # the actor process (or its node) is gone
            error = f"worker {wid} on {slot.host or '?'} died: {_cause(e)}"
            self.events.emit("worker_died", worker=wid, host=slot.host, error=error, rerequested=True)
            ray.kill(slot.handle, no_restart=True)
            self._request(wid)  # re-requested: it waits for capacity like any pending actor
            return None, error
        except ray.exceptions.RayError as e:  # the task raised; the actor is fine
            slot.busy = False
            return None, _cause(e)
        slot.busy = False
        return marker, None

    def _start_failed(self, wid: str, e: BaseException) -> None:
        import ray

        slot = self.slots[wid]
        init_failed = getattr(e, "actor_init_failed", False)
        self.last_start_error = _cause(e)
        failures = slot.start_failures + 1 if init_failed else 0  # a lost node is not the worker's fault
        ray.kill(slot.handle, no_restart=True)
        give_up = failures >= self.cfg.ray.max_shard_tries
        self.events.emit(
            "worker_start_failed", worker=wid, error=self.last_start_error, failures=failures, gave_up=give_up
        )
        if (
            init_failed
            and not self.ever_ready
            and all(s.start_failures or w == wid for w, s in self.slots.items())
        ):
            raise WorkerStartError(
                f"every worker failed to start (model or scorer load): {self.last_start_error}"
            )
        if give_up:
            slot.given_up = True
            slot.start_failures = failures
            if self.budget is not None:
                self.budget.worker_released(wid)
            if all(s.given_up for s in self.slots.values()):
                raise WorkerStartError(
                    f"every worker failed to start {failures} times in a row; last error: "
                    f"{self.last_start_error}"
                )
            return
        self._request(wid, failures)

    def _housekeeping(self) -> None:
        """Dispatch gate (min_workers), the start timeout, and the auto re-count."""
        now = time.monotonic()
        ready = sum(s.ready for s in self.slots.values())
        need = 1 if self.dispatching else min(self.cfg.ray.min_workers, len(self.slots))
        if ready >= need:
            self.dispatching, self._no_ready_since = True, now
        elif now - self._no_ready_since > self.cfg.ray.start_timeout_s:
            raise WorkerStartError(self._timeout_message(ready, need))
        if self.cfg.ray.num_workers == "auto" and now - self._recount_at > AUTO_RECOUNT_S:
            self._recount_at = now
            self._grow()

    def _timeout_message(self, ready: int, need: int) -> str:
        import ray

        msg = (
            f"{ready} of the {need} needed workers ready after ray.start_timeout_s="
            f"{self.cfg.ray.start_timeout_s:g} s; each needs {self._cpus} CPU and {self._gpus} GPU, "
            f"the cluster has {dict(ray.cluster_resources())}"
        )
        return msg + (f"; last start error: {self.last_start_error}" if self.last_start_error else "")


def _cause(e: BaseException) -> str:
    """The innermost useful message of a Ray error (first line of the original exception)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}".splitlines()[0][:500]
    text = [x.strip() for x in str(e).strip().splitlines() if x.strip()]
    return (text[-1] if text else type(e).__name__)[:500]


class LiveProgress:
    """Per-batch progress from the actors: images generated per shard in flight. The bar moves as
    batches finish; a shard's commit replaces its provisional count by its rows, a failed attempt
    takes its count back. Counts reach the tally asynchronously, so a shard's last batch can arrive
    after its result: counts for a shard not in flight are dropped (they made the bar pass its total)."""

    def __init__(self, bar):
        self.bar, self.shown, self.open_ = bar, Counter(), set()

    def open(self, name: str) -> None:
        self.open_.add(name)

    def add(self, counts: dict) -> None:
        for name, n in counts.items():
            if name in self.open_:
                self.shown[name] += n
                self.bar.update(n)

    def done(self, name: str) -> None:
        self.open_.discard(name)
        if self.shown.get(name):
            self.bar.update(-self.shown.pop(name))
