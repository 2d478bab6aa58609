"""Plan a job on the driver (its resolution and checks are generate/resolve.py), then drive its shards
through workers (Ray actors, or inline), retrying failed shards, and return the summary. The run entry
around it (lease, quota rounds, summary.json, contact sheet, _SUCCESS) is pipeline/launch.py.

    1. check config, model and scorer specs; list and scan the input (before any model loads)
    2. run.json: written on the first run, fingerprint-checked on every later one
    3. plan shards; skip those whose commit marker is valid (resume)
    4. execute: one actor per worker, each loads its pipeline once; a shard goes to an idle
       actor; an exception or a dead actor re-queues it (bounded tries)
    5. the summary of what was planned, committed and failed (generate/summary.py)
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace

from pipeline.core import layout, retry
from pipeline.core.config import JobConfig
from pipeline.core.job import ResolvedJob
from pipeline.core.storage import Output, remove_stale_temp
from pipeline.generate.budget import Budget
from pipeline.generate.inputs import (
    Shard,
    check_audit_defaults,
    list_input_files,
    scan_input,
)
from pipeline.generate.plan import plan_shards, shard_images
from pipeline.generate.resolve import (
    check_concept_clip,
    check_limits,
    check_output_writable,
    describe_probes,
    raise_on_bad_rows,
    resolve_job,
    run_info,
)
from pipeline.generate.summary import Tally, build_summary, work_fields
from pipeline.probes.scorer import check_scorer_spec


@dataclass
class Prepared:
    job: ResolvedJob
    output: Output
    shards: list
    pending: list
    committed: dict  # shard -> marker, valid ones only
    scan: object = None
    info: dict = field(default_factory=dict)
    probes: dict = field(default_factory=dict)  # what is probed (class order etc.), for run.json
    extra_images: dict = field(default_factory=dict)  # shard -> images, for quota-round shards

    @property
    def cfg(self) -> JobConfig:
        return self.job.config


def prepare(cfg: JobConfig | ResolvedJob, scan_rows: bool = True, extra: tuple = ()) -> Prepared:
    """Steps 1-3: everything that can fail on config or input, before any model loads. `extra`: quota
    round files inside the output (pipeline/curate/quota.py), planned after the input, never scanned
    for duplicates (their rows carry the prompt ids they continue)."""
    job = cfg if isinstance(cfg, ResolvedJob) else resolve_job(cfg)
    cfg = job.config
    if cfg.scoring.enabled:
        check_scorer_spec(cfg.scoring.clip_model, cfg.scoring.clip_weights)
    probe_info = describe_probes(job)
    check_concept_clip(cfg, probe_info)
    retry.configure(cfg.retry)
    limits = check_limits(job)
    in_fs, files = list_input_files(cfg.input, cfg.storage)
    check_audit_defaults(cfg, in_fs, files)
    scan = scan_input(in_fs, files, cfg.generation.images_per_prompt, limits=limits) if scan_rows else None
    if scan is not None:
        raise_on_bad_rows(cfg, scan, in_fs)
    output = Output(cfg.output, cfg.storage)
    check_output_writable(output)
    remove_stale_temp(output)  # temp files of dead runs, wherever they are
    root = in_fs._strip_protocol(cfg.input).rstrip("/")
    shards, rows = plan_shards(
        in_fs, files, root, cfg.shards.rows_per_shard, cfg.fingerprint(), scan, cfg.shards.duplicates
    )
    extra_images = {}
    for f in extra:
        more, n = plan_shards(output.fs, [f], f, cfg.shards.rows_per_shard, cfg.fingerprint())
        shards += [replace(s, in_output=True) for s in more]
        rows.update(n)
        extra_images.update(shard_images(output.fs, f, more, cfg.generation.images_per_prompt))
    committed = output.valid_commits(cfg.write.verify_commits, names={s.name for s in shards})
    pending = [s for s in shards if s.name not in committed]
    info = {
        "files": len(files),
        "rows": sum(rows.values()),
        "shards": len(shards),
        "committed_shards": len(committed),
        "pending_shards": len(pending),
    }
    if scan is not None:
        info.update(images=scan.images, invalid_rows=len(scan.problems), duplicate_ids=scan.duplicates)
        if scan.ipp_overrides:  # only when present: summaries of other runs stay as they were
            info["rows_overriding_images_per_prompt"] = scan.ipp_overrides
    return Prepared(job, output, shards, pending, committed, scan, info, probe_info, extra_images)


def prepare_round(prep: Prepared, path: str) -> Prepared:
    """A quota round's plan: the shards of its round file only (inside the output), with the job, output
    and probes ``prep`` already resolved; nothing is resolved or scanned again."""
    cfg, out = prep.cfg, prep.output
    shards, rows = plan_shards(out.fs, [path], path, cfg.shards.rows_per_shard, cfg.fingerprint())
    shards = [replace(s, in_output=True) for s in shards]
    committed = out.valid_commits(cfg.write.verify_commits, names={s.name for s in shards})
    pending = [s for s in shards if s.name not in committed]
    info = {
        "files": 1,
        "rows": sum(rows.values()),
        "shards": len(shards),
        "committed_shards": len(committed),
        "pending_shards": len(pending),
    }
    images = shard_images(out.fs, path, shards, cfg.generation.images_per_prompt)
    return replace(
        prep, shards=shards, pending=pending, committed=committed, scan=None, info=info, extra_images=images
    )


def execute(
    prep: Prepared, progress: bool = True, events=None, t0: float | None = None, budget: Budget | None = None
) -> dict:
    """Steps 2-5 for a prepared plan: run.json, then every pending shard through the workers (until a
    budget is reached); returns the summary. Nothing else: the lease, summary.json, the contact sheet
    and _SUCCESS belong to the run entry (pipeline/launch.py)."""
    from pipeline.generate.events import NullSink

    t0, events = time.time() if t0 is None else t0, events or NullSink()
    cfg = prep.cfg  # with model-dependent defaults resolved
    budget = budget or Budget(cfg.limits, cfg.cost)
    prep.output.check_or_write_run(run_info(prep.job, prep.probes))
    events.emit(
        "run_started",
        fingerprint=cfg.fingerprint(),
        output=cfg.output,
        executor=cfg.ray.executor,
        **{k: prep.info.get(k) for k in ("shards", "committed_shards", "pending_shards", "images")},
    )
    tally = Tally()
    if prep.pending:
        bar = _progress_bar(pending_images(prep), progress)
        run = execute_inline if cfg.ray.executor == "inline" else execute_ray
        run(prep.job, prep.pending, tally, bar, events, budget)
        bar.close()
    summary = build_summary(prep, tally, time.time() - t0)
    summary.update(budget.spent(summary["rows_this_run"]), **work_fields(cfg, summary["rows_this_run"]))
    if budget.stopped:
        summary["budget_stop"] = {
            "reason": budget.stopped,
            "shards_not_started": len(prep.pending) - tally.count - len(tally.failed),
        }
    events.emit("run_finished", **summary)
    return summary


def write_success(output, record: dict) -> None:
    """OUTPUT/_SUCCESS once every planned shard is committed (its calls retried by the store's policy).
    What outlasts the retries says that the shards are all in and only finishing failed: the next run
    plans nothing, redoes no shard, and writes it."""
    try:
        if not output.exists(output.path(layout.SUCCESS)):
            output.write_json(output.path(layout.SUCCESS), record)
    except retry.StorageError as e:
        raise retry.StorageError(
            f"{e}; every shard is committed ({record.get('rows')} rows), only writing "
            "_SUCCESS failed: run the same command again to finish (no shard is redone)"
        ) from e


def pending_images(prep: Prepared) -> int:
    """The progress bar's total: a quota round's shards exactly, the input's by each file's even split
    (exact for the usual file whose rows all ask for the same number)."""
    total = 0.0
    for s in prep.pending:
        if s.in_output:
            total += prep.extra_images.get(s.name, 0)
        elif prep.scan is not None and s.file in prep.scan.file_images:
            rows, images = prep.scan.file_images[s.file]
            total += images * (s.stop - s.start) / max(rows, 1)
    return round(total)


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="img",
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
        desc="generating",
    )


# ---- executors ------------------------------------------------------------------------------------
def _record(tally: Tally, shard: Shard, marker: dict, bar, events=None) -> None:
    tally.commit(shard.name, marker)
    bar.update(marker["rows"])
    if events is not None:
        events.emit(
            "shard_committed",
            shard=shard.name,
            rows=marker["rows"],
            attempt=marker.get("attempt"),
            worker=marker.get("worker"),
            host=marker.get("host"),
            status_counts=marker.get("status_counts"),
            seconds=marker.get("timings"),
        )
        events.progress(tally.rows, bar.total)


def execute_inline(job: ResolvedJob, pending: list, tally: Tally, bar, events=None, budget=None) -> None:
    """One worker in this process, no Ray (debugging, notebooks, small jobs), with the torch thread
    count an actor would use, so both executors write the same bytes."""
    from pipeline.generate.models import torch_threads
    from pipeline.generate.worker import ShardWorker

    cfg, budget = job.config, budget or Budget()
    with torch_threads(cfg.ray.num_cpus_per_worker):
        budget.worker_started("inline")
        try:
            worker = ShardWorker(job, "inline")
            tally.load_s.append(worker.load_seconds)
            try:
                for shard in pending:
                    if budget.exhausted():  # a budget: no new shard starts
                        break
                    _process_with_retries(worker, shard, cfg.ray.max_shard_tries, tally, bar, events)
            finally:
                worker.close()
        finally:
            budget.worker_released("inline")


def _process_with_retries(worker, shard: Shard, tries: int, tally: Tally, bar, events=None) -> None:
    for attempt in range(1, tries + 1):
        if events is not None:
            events.emit("shard_started", shard=shard.name, worker="inline", attempt=attempt)
        try:
            marker = worker.process(shard, attempt)
        except Exception as e:  # noqa: BLE001 - recorded, retried, then reported
            tally.fail(shard.name, f"{type(e).__name__}: {e}")
            if events is not None:
                events.emit(
                    "shard_failed",
                    shard=shard.name,
                    attempt=attempt,
                    error=tally.failed[shard.name],
                    requeued=attempt < tries,
                )
            continue
        _record(tally, shard, marker, bar, events)
        return


def execute_ray(job: ResolvedJob, pending: list, tally: Tally, bar, events=None, budget=None) -> None:
    """Shards go to whichever actor is ready; a failed shard (exception, dead actor or node) is
    re-queued until ray.max_shard_tries. The pool never writes: workers commit, so a re-queued shard
    that had in fact committed is rewritten with the same bytes, never duplicated."""
    from pipeline.generate.ray_pool import ActorPool, LiveProgress, WorkerStartError

    cfg, budget = job.config, budget or Budget()
    with ActorPool(job, events, budget) as pool:
        pool.start(len(pending))
        # attempts of shards in flight, and of failed ones waiting for their next try: nothing is kept
        # per committed shard (memory flat in the shard count)
        queue, tries, live = deque(pending), {}, LiveProgress(bar)
        try:
            while (queue and not budget.stopped) or pool.busy():
                for wid in pool.idle():
                    if not queue or budget.exhausted():  # a budget: no new shard starts
                        break
                    shard = queue.popleft()
                    tries[shard.name] = tries.get(shard.name, 0) + 1
                    live.open(shard.name)
                    pool.submit(wid, shard, tries[shard.name])
                for shard, marker, error in pool.wait():
                    live.done(shard.name)
                    attempt = tries.pop(shard.name, 1)
                    if marker is not None:
                        _record(tally, shard, marker, bar, events)
                        continue
                    requeue = attempt < cfg.ray.max_shard_tries
                    tally.fail(shard.name, error)
                    pool.events.emit(
                        "shard_failed", shard=shard.name, attempt=attempt, error=error, requeued=requeue
                    )
                    if requeue:
                        tries[shard.name] = attempt
                        queue.append(shard)
                live.add(pool.take_progress())
        except WorkerStartError as e:
            if not pool.ever_ready:
                raise  # nothing could ever start: a setup problem (exit 2)
            for shard in list(queue) + [s for kind, _, s in pool.refs.values() if kind == "task"]:
                tally.fail(shard.name, f"no worker left to run it: {e}")
        tally.load_s += pool.load_seconds
