"""The one run entry (`sdgen run`, `pipeline.run`): everything a run does, in order, under one lease.

1. prepare: check and resolve the job once, list and scan the input, plan the shards, with any quota
   round files already written (generate/driver.prepare); a config or input error stops here
2. take the output's lease (core/lease.py); it is held to the end and released last
3. execute the plan (generate/driver.execute): workers commit shards exactly once
4. quota rounds (curate/quota.py), while every shard so far committed: plan the next round from the
   committed rows, write its file, prepare it alone (nothing resolved or scanned again), execute it
5. finish: summary.json and the contact sheet when the run did work, the quota's delivered set,
   _SUCCESS when complete, the run history (OUTPUT/_runs/)
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext

from pipeline.core import layout
from pipeline.core.config import JobConfig
from pipeline.core.lease import Lease, write_history
from pipeline.core.storage import Output
from pipeline.curate import quota as Q
from pipeline.generate.budget import Budget
from pipeline.generate.driver import Prepared, execute, prepare, prepare_round, write_success
from pipeline.generate.events import NullSink
from pipeline.generate.summary import merge_summaries, work_fields


def run(cfg: JobConfig, progress: bool = True, events=None) -> dict:
    """Run (or resume) a job; returns the summary. Raises on config/input errors (before any work), and
    LeaseHeld (exit 3) when another run holds the output's lease."""
    t0, events = time.time(), events or NullSink()
    policy = Q.load_quota_policy(cfg) if cfg.quota else None  # 1. a bad quota is a config error too
    rounds = Q.existing_rounds(Output(cfg.output, cfg.storage)) if cfg.quota else []
    prep = prepare(cfg, extra=tuple(rounds))
    budget = Budget(prep.cfg.limits, prep.cfg.cost)  # one budget for the plan and every quota round
    ttl = prep.cfg.write.lease_ttl_s
    with Lease(prep.output, ttl, log=lambda m: print(m, file=sys.stderr)) if ttl else nullcontext() as lease:
        summary = execute(prep, progress, events, t0, budget)  # 3.
        did_work = bool(prep.pending)
        if policy is not None and summary["complete"]:  # 4.
            summary, more = _quota_rounds(prep, policy, rounds, summary, (progress, events, t0, budget))
            did_work = did_work or more
        summary.update(
            budget.spent(summary["rows_this_run"]), **work_fields(prep.cfg, summary["rows_this_run"])
        )
        _finish(prep, summary, did_work, t0, lease)  # 5.; the lease is released after it
    return summary


def _quota_rounds(prep: Prepared, policy, rounds: list[str], summary: dict, run: tuple) -> tuple[dict, bool]:
    """Rounds until every key is met or stops; returns (the merged summary, whether any round ran).
    ``run``: (progress, events, t0, budget), as the plan ran."""
    cfg, ran = prep.cfg, False
    progress, events, t0, budget = run
    while summary["complete"] and (path := Q.next_round(cfg, prep.output, policy, rounds)):
        rounds.append(path)
        part = execute(prepare_round(prep, path), progress, events, budget=budget)
        summary, ran = merge_summaries(summary, part, time.time() - t0), True
        if part.get("budget_stop"):
            summary["budget_stop"] = part["budget_stop"]
    if not summary["complete"]:  # a failed shard: what was committed stays; the re-run continues here
        summary["quota"] = {"rounds": len(rounds), "complete": False}
    else:
        summary["quota"] = Q.deliver(cfg, prep.output, policy, len(rounds))
    return summary, ran


def _finish(prep: Prepared, summary: dict, did_work: bool, t0: float, lease) -> None:
    """summary.json and the contact sheet (only when the run did work: a run that did nothing writes
    nothing), _SUCCESS when complete, the run's history record."""
    out, cfg = prep.output, prep.cfg
    if did_work or summary.get("quota", {}).get("complete"):
        try:  # disk full: the summary is still printed and the failure listed (exit 1)
            out.write_json(out.path(layout.SUMMARY), summary)
            if did_work and cfg.write.contact_sheet and summary["rows_total"]:
                from pipeline.curate.contact import contact_sheet

                summary["contact_sheet"] = contact_sheet(cfg.output, storage=cfg.storage)
        except OSError as e:
            summary["complete"] = False
            summary["failed_shards"]["(summary.json)"] = f"{type(e).__name__}: {e}"
    if summary["complete"]:
        quota = summary.get("quota")
        write_success(
            out,
            {"rounds": quota["rounds"], "rows": quota["rows"]}
            if quota
            else {"shards": len(prep.shards), "rows": summary["rows_total"]},
        )
    if did_work and lease is not None:  # a run that did work leaves its record: the scheduled job's trend
        try:
            summary["history"] = write_history(out, t0, summary, lease)
        except OSError as e:  # e.g. a full disk: must not hide the summary and the failed-shard list
            summary["history_error"] = f"{type(e).__name__}: {e}"
            print(f"sdgen: warning: run history not written: {summary['history_error']}", file=sys.stderr)
