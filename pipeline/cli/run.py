"""`sdgen run` and `sdgen plan`: a job config in, a run (or its plan) out."""

from __future__ import annotations

import json

from pipeline.cli.common import EXIT_BUDGET, EXIT_FAULT
from pipeline.core import config as config_mod


def _load(args):
    return config_mod.load(args.config, args.set)


def cmd_run(args) -> int:
    from pipeline.curate.quota import quota_lines
    from pipeline.generate.events import EventSink
    from pipeline.generate.summary import format_summary
    from pipeline.launch import run

    show_bar = not args.no_progress and args.log_format == "text"  # a bar would garble JSON lines
    summary = run(_load(args), show_bar, EventSink(args.log_format, bar_shown=show_bar))
    print(format_summary(summary))
    for line in quota_lines(summary.get("quota")):
        print(line)
    if summary["failed_shards"]:
        return EXIT_FAULT
    return EXIT_BUDGET if summary.get("budget_stop") else 0


def cmd_plan(args) -> int:
    from pipeline.generate.driver import prepare
    from pipeline.generate.inputs import InputError, list_input_files
    from pipeline.generate.plan import count_work

    cfg = _load(args)
    prep = prepare(cfg, scan_rows=False)  # footers only: seconds for millions of rows
    fs, files = list_input_files(cfg.input, cfg.storage)
    work = count_work(fs, files, prep.cfg.generation)  # the override columns only
    if work["images"] > cfg.limits.max_images:
        raise InputError(
            f"the input asks for {work['images']} images, more than limits.max_images "
            f"({cfg.limits.max_images}); raise the limit or split the input"
        )
    info = {**prep.info, **work, "committed_images": sum(m["rows"] for m in prep.committed.values())}
    info["estimate"] = _estimate(args, prep, work, info)
    print(json.dumps(info, indent=1) if args.json else "\n".join(f"{k:34s}{v}" for k, v in info.items()))
    if work["rows_overriding_images_per_prompt"] and not args.json:
        print(
            f"note: {work['rows_overriding_images_per_prompt']} row(s) set their own images_per_prompt, "
            f"which overrides generation.images_per_prompt ({cfg.generation.images_per_prompt}) for them"
        )
    return 0


def _estimate(args, prep, work: dict, info: dict) -> dict:
    """Worker-hours and wall time of the pending work (generate/estimate.py says from what)."""
    from pipeline.core.lease import read_history
    from pipeline.generate.estimate import estimate, history_rate, measured_rate

    cfg = prep.cfg
    n = cfg.ray.num_workers
    workers = args.workers or (1 if cfg.ray.executor == "inline" or n == "auto" else n)
    rate = history_rate(read_history(prep.output), cfg) or (measured_rate(prep.job) if args.measure else None)
    pending = work["pixel_steps"] * max(work["images"] - info["committed_images"], 0) / max(work["images"], 1)
    out = estimate(round(pending), workers, rate, cfg.cost)
    if n == "auto" and not args.workers and cfg.ray.executor != "inline":
        out["note"] = "ray.num_workers: auto (one per GPU): estimated for 1 worker; pass --workers N"
    return out


def add_commands(sub) -> None:
    def with_config(name, help_):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("config", help="job YAML (see configs/demo.yaml)")
        sp.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config value, e.g. --set generation.steps=10 (repeatable)",
        )
        return sp

    sp = with_config("run", "run or resume a job")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar (a line per shard instead)")
    sp.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="events on stderr: text lines, or one JSON object per line (no progress bar)",
    )
    sp.set_defaults(func=cmd_run)
    sp = with_config(
        "plan",
        "shards, images, what is committed, and what the rest will cost (worker-hours, "
        "wall time; from the output's run history, or --measure)",
    )
    sp.add_argument("--json", action="store_true")
    sp.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="estimate the wall time for N workers (default: ray.num_workers; 1 for inline or auto)",
    )
    sp.add_argument(
        "--measure",
        action="store_true",
        help="no run history for this model yet: load it and time one batch here (the load is timed apart)",
    )
    sp.set_defaults(func=cmd_plan)
