"""Validate and plan a job on the driver, then drive its shards through workers (Ray actors, or
inline), retrying failed shards, and return the summary. The run entry around it (lease, quota
rounds, summary.json, contact sheet, _SUCCESS) is pipeline/launch.py.

    1. check config, model and scorer specs; list and scan the input (before any model loads)
    2. run.json: written on the first run, fingerprint-checked on every later one
    3. plan shards; skip those whose commit marker is valid (resume)
    4. execute: one actor per worker, each loads its pipeline once; a shard goes to an idle
       actor; an exception or a dead actor re-queues it (bounded tries)
    5. the summary of what was planned, committed and failed (generate/summary.py)
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace

from pipeline.core import layout, retry
from pipeline.core.config import ConfigError, JobConfig
from pipeline.core.job import ResolvedJob
from pipeline.core.storage import Output, OutputError, library_versions, remove_stale_temp
from pipeline.generate.budget import Budget
from pipeline.generate.inputs import (
    MAX_LISTED_PROBLEMS,
    InputError,
    Shard,
    check_audit_defaults,
    duplicate_report,
    list_input_files,
    row_limits,
    scan_input,
)
from pipeline.generate.models import (
    check_model_spec,
    native_resolution,
    recommended_guidance,
    train_timesteps,
)
from pipeline.generate.plan import plan_shards, shard_images
from pipeline.generate.presets import default_attribute_sets, default_clip_model, default_concept_list
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


def resolve_defaults(cfg: JobConfig) -> JobConfig:
    """Fill values that depend on the model, before anything is fingerprinted or stored in run.json:
    width/height null = its native size, guidance null = its recommended scale, clip_model auto =
    the CLIP that goes with it (toy for toy)."""
    g, sc = cfg.generation, cfg.scoring
    update = {}
    if g.width is None or g.height is None:
        size = native_resolution(cfg.model, cfg.storage, cfg.single_file_config)
        update.update(width=g.width or size, height=g.height or size)
    if g.guidance_scale is None:
        update["guidance_scale"] = recommended_guidance(cfg.model)
    if sc.clip_model == "auto":
        sc = sc.model_copy(update={"clip_model": default_clip_model(cfg.model)})
    return cfg.model_copy(update={"generation": g.model_copy(update=update), "scoring": sc})


def _auto_probes(cfg: JobConfig) -> tuple[tuple[str, ...], str | None]:
    """probes.attributes / safety.concepts "auto": the preset's own sets (the toy world's for `toy`,
    whose CLIP is calibrated for them), none for other models, and none when scoring is off (they
    reuse its forward)."""
    on = cfg.scoring.enabled
    a, c = cfg.probes.attributes, cfg.safety.concepts
    attribute_sets = (default_attribute_sets(cfg.model) if on else ()) if a == "auto" else tuple(a)
    concept_list = (default_concept_list(cfg.model) if on else None) if c == "auto" else c
    return attribute_sets, concept_list


def resolve_job(cfg: JobConfig) -> ResolvedJob:
    """Decide every "auto"/null value once (core/job.py lists them); checks the model spec first."""
    kind = check_model_spec(cfg.model, cfg.storage)
    cfg = resolve_defaults(cfg)
    attribute_sets, concept_list = _auto_probes(cfg)
    return ResolvedJob(cfg, attribute_sets, concept_list, kind, train_timesteps(cfg.model, cfg.storage))


def _check_concept_clip(cfg: JobConfig, probe_info: dict) -> None:
    """A concept list's thresholds are cosines of the CLIP it was calibrated on; under another CLIP its
    flags mean nothing. Warn, and say so in run.json (plumbing tests pair them on purpose)."""
    import warnings

    cs = probe_info.get("concepts") or {}
    want = cs.get("clip_model")
    if want and cfg.scoring.enabled and want != cfg.scoring.clip_model:
        cs["warning"] = (
            f"concept list {cs['name']!r} is calibrated on clip_model {want!r} but scored with "
            f"{cfg.scoring.clip_model!r}: its thresholds (safety_flagged) do not apply"
        )
        warnings.warn(cs["warning"], stacklevel=3)


def prepare(cfg: JobConfig | ResolvedJob, scan_rows: bool = True, extra: tuple = ()) -> Prepared:
    """Steps 1-3: everything that can fail on config or input, before any model loads. `extra`: quota
    round files inside the output (pipeline/curate/quota.py), planned after the input, never scanned
    for duplicates (their rows carry the prompt ids they continue)."""
    job = cfg if isinstance(cfg, ResolvedJob) else resolve_job(cfg)
    cfg = job.config
    if cfg.scoring.enabled:
        check_scorer_spec(cfg.scoring.clip_model, cfg.scoring.clip_weights)
    probe_info = describe_probes(job)
    _check_concept_clip(cfg, probe_info)
    retry.configure(cfg.retry)
    limits = check_limits(job)
    in_fs, files = list_input_files(cfg.input, cfg.storage)
    check_audit_defaults(cfg, in_fs, files)
    scan = scan_input(in_fs, files, cfg.generation.images_per_prompt, limits=limits) if scan_rows else None
    if scan is not None:
        _raise_on_bad_rows(cfg, scan, in_fs)
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


def check_output_writable(output: Output) -> None:
    """A local output must be (or be creatable as) a writable directory: say so before any model loads
    instead of failing at the first commit. Object stores are checked by their first write."""
    import os

    if not output.local:
        return
    path = output.root
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"output {output.url!r} is a file, not a directory; choose a directory path")
    probe = path
    while not os.path.exists(probe):  # the nearest existing folder is where it will be created
        probe = os.path.dirname(probe) or "."
    if not os.access(probe, os.W_OK | os.X_OK):
        ro = os.statvfs(probe).f_flag & os.ST_RDONLY
        raise OutputError(
            f"output {output.url!r} is not writable: {probe!r} is "
            + ("on a read-only filesystem" if ro else "not writable by this user")
            + "; choose another output or fix its permissions"
        )


def check_limits(job: ResolvedJob):
    """The resolved config against `limits` and the scheduler's training timesteps (resolved from its
    config, no model load); returns the RowLimits every row is checked against."""
    cfg = job.config
    g, lim = cfg.generation, cfg.limits
    limits = row_limits(cfg, job.train_timesteps)
    if g.steps > limits.max_steps:
        raise ConfigError(f"generation.steps {g.steps} exceeds {limits.steps_why} ({limits.max_steps})")
    if g.width * g.height > lim.max_pixels:
        raise ConfigError(
            f"generation.width x height = {g.width} x {g.height} = {g.width * g.height} pixels "
            f"exceeds limits.max_pixels ({lim.max_pixels})"
        )
    return limits


def describe_probes(job: ResolvedJob) -> dict:
    """Attribute sets, concept list and screening rules, validated from their YAML (no CLIP)."""
    import os

    from pipeline.probes.image import describe

    cfg = job.config
    if cfg.safety.sd_checker and not os.path.isdir(cfg.safety.sd_checker):
        raise ConfigError(f"safety.sd_checker {cfg.safety.sd_checker!r}: no such directory")
    try:
        return describe(job.attribute_sets, job.concept_list, cfg.safety.screening)
    except (ValueError, OSError) as e:
        raise ConfigError(f"probes/safety configuration: {e}") from None


def _raise_on_bad_rows(cfg: JobConfig, scan, in_fs) -> None:
    if scan.rows == 0:
        raise InputError(f"input {cfg.input!r} has no rows")
    if scan.problems and cfg.shards.on_invalid_row == "error":
        listed = "\n".join(f"  {p}" for p in scan.problems[:MAX_LISTED_PROBLEMS])
        more = len(scan.problems) - MAX_LISTED_PROBLEMS
        raise InputError(
            f"{len(scan.problems)} input row(s) are invalid:\n{listed}"
            + (f"\n  ... and {more} more" if more > 0 else "")
            + "\n(fix them, or set shards.on_invalid_row: mark to emit them as status 'invalid')"
        )
    if scan.images > cfg.limits.max_images:
        raise InputError(
            f"the input asks for {scan.images} images, more than limits.max_images "
            f"({cfg.limits.max_images}); raise the limit or split the input"
        )
    if scan.duplicates and cfg.shards.duplicates == "error":
        raise InputError(
            f"{scan.duplicates} input row(s) repeat an earlier prompt_id "
            f"(shards.duplicates: error):\n{duplicate_report(in_fs, scan)}"
        )


def run_info(job: ResolvedJob, probes: dict) -> dict:
    return {
        "config": job.redacted(),
        "resolved": job.resolved_probes(),
        "fingerprint": job.fingerprint(),
        "probes": probes,
        "fingerprint_fields": job.fingerprint_fields(),
        "versions": library_versions(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


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
        bar = _progress_bar(_pending_images(prep), progress)
        run = _execute_inline if cfg.ray.executor == "inline" else _execute_ray
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


def _pending_images(prep: Prepared) -> int:
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


def _execute_inline(job: ResolvedJob, pending: list, tally: Tally, bar, events=None, budget=None) -> None:
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


def _execute_ray(job: ResolvedJob, pending: list, tally: Tally, bar, events=None, budget=None) -> None:
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
