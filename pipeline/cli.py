"""`sdgen` command line: run, plan, status, verify, contact-sheet; expand, audit, filter and report
come from pipeline.audit.commands."""
from __future__ import annotations

import argparse
import json
import os
import sys

from pipeline.core import config as config_mod


def _load(args):
    return config_mod.load(args.config, args.set)


def add_storage_option(sp) -> None:
    """Read-side commands take the job config whose `storage:` section reaches the output."""
    sp.add_argument("--config", dest="storage_config", metavar="JOB.yaml",
                    help="take storage settings (endpoint, keys, region) from this job config's storage "
                         "section; default: the environment (AWS_*)")


def storage_of(args):
    """The StorageConfig named by --config, or None (fsspec reads the environment)."""
    path = getattr(args, "storage_config", None)
    return config_mod.load_storage(path) if path else None


def cmd_run(args) -> int:
    from pipeline.generate.driver import format_summary, run_job
    from pipeline.generate.events import EventSink
    from pipeline.tools.quota import quota_lines, run_quota

    show_bar = not args.no_progress and args.log_format == "text"  # a bar would garble JSON lines
    cfg = _load(args)
    summary = (run_quota if cfg.quota else run_job)(cfg, show_bar, EventSink(args.log_format, bar_shown=show_bar))
    print(format_summary(summary))
    for line in quota_lines(summary.get("quota")):
        print(line)
    return 0 if not summary["failed_shards"] else 1


def cmd_plan(args) -> int:
    from pipeline.generate.driver import prepare
    from pipeline.generate.inputs import InputError, list_input_files
    from pipeline.generate.plan import count_work

    cfg = _load(args)
    prep = prepare(cfg, scan_rows=False)  # footers only: seconds for millions of rows
    fs, files = list_input_files(cfg.input, cfg.storage)
    work = count_work(fs, files, prep.cfg.generation)  # the override columns only
    if work["images"] > cfg.limits.max_images:
        raise InputError(f"the input asks for {work['images']} images, more than limits.max_images "
                         f"({cfg.limits.max_images}); raise the limit or split the input")
    info = {**prep.info, **work, "committed_images": sum(m["rows"] for m in prep.committed.values())}
    print(json.dumps(info, indent=1) if args.json else "\n".join(f"{k:34s}{v}" for k, v in info.items()))
    if work["rows_overriding_images_per_prompt"] and not args.json:
        print(f"note: {work['rows_overriding_images_per_prompt']} row(s) set their own images_per_prompt, "
              f"which overrides generation.images_per_prompt ({cfg.generation.images_per_prompt}) for them")
    return 0


def cmd_status(args) -> int:
    from pipeline.tools.status import output_status

    st = output_status(args.output, storage_of(args))
    print(json.dumps(st, indent=1, default=str))
    return 0


def cmd_verify(args) -> int:
    from pipeline.tools.verify import verify

    rep = verify(args.output, n=args.n, batch_size=args.batch_size, storage=storage_of(args))
    for r in rep["rows"]:
        print(f"{r['prompt_id']}#{r['sample_idx']} seed={r['seed']} bytes_equal={r['bytes_equal']} "
              f"max_pixel_diff={r['max_pixel_diff']}")
    print(f"{rep['bytes_equal']}/{rep['n']} byte-identical; max pixel difference {rep['max_pixel_diff']}/255 "
          f"(regenerated at batch size {rep['batch_size']})")
    return 0


def cmd_contact_sheet(args) -> int:
    from pipeline.audit.policy import PolicyError
    from pipeline.tools.contact import contact_sheet

    try:
        print(contact_sheet(args.output, args.o, max_images=args.max_images, storage=storage_of(args),
                            policy=args.policy))
    except PolicyError as e:  # --policy NAME that was never applied to this output
        print(f"sdgen: error: {e}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdgen", description="Synthetic image datasets from prompt sets, "
                                "with deterministic seeds, exactly-once commits and bias audits.")
    from pipeline import __version__

    p.add_argument("--version", action="version", version=f"sdgen {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(name, help_):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("config", help="job YAML (see configs/demo.yaml)")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set generation.steps=10 (repeatable)")
        return sp

    sp = with_config("run", "run or resume a job")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar (a line per shard instead)")
    sp.add_argument("--log-format", choices=("text", "json"), default="text",
                    help="events on stderr: text lines, or one JSON object per line (no progress bar)")
    sp.set_defaults(func=cmd_run)
    sp = with_config("plan", "shards, prompts, images and what is already committed (reads only metadata)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_plan)
    sp = sub.add_parser("status", help="what an output holds: committed shards, rows per status")
    sp.add_argument("output")
    add_storage_option(sp)
    sp.set_defaults(func=cmd_status)
    sp = sub.add_parser("verify", help="regenerate N rows from their metadata and compare with the stored PNGs")
    sp.add_argument("output")
    sp.add_argument("--n", type=int, default=8)
    sp.add_argument("--batch-size", type=int, default=1)
    add_storage_option(sp)
    sp.set_defaults(func=cmd_verify)
    sp = sub.add_parser("contact-sheet", help="a labelled PNG grid of an output's images")
    sp.add_argument("output")
    sp.add_argument("-o", default=None, help="PNG path (default OUTPUT/contact_sheet.png)")
    sp.add_argument("--max-images", type=int, default=64)
    sp.add_argument("--policy", metavar="NAME", help="mark only this sdgen filter policy's flag/blur/drop "
                    "decisions (default: every policy applied to the output)")
    add_storage_option(sp)
    sp.set_defaults(func=cmd_contact_sheet)
    from pipeline.audit.commands import add_commands  # expand, audit, filter, report

    add_commands(sub)
    from pipeline.tools.commands import add_commands as add_dataset_commands  # dedup, export

    add_dataset_commands(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.core.lease import LEASE_EXIT_CODE, LeaseHeld
    from pipeline.core.retry import StorageError
    from pipeline.core.storage import OutputError
    from pipeline.generate.inputs import InputError
    from pipeline.generate.models import ModelError
    from pipeline.generate.ray_pool import WorkerStartError
    from pipeline.probes.scorer import ScorerError

    known = (config_mod.ConfigError, InputError, ModelError, ScorerError, OutputError, WorkerStartError)
    try:
        return args.func(args)
    except LeaseHeld as e:  # an overlapping (scheduled) run: not an error of this config
        print(f"sdgen: {e}", file=sys.stderr)
        return LEASE_EXIT_CODE
    except StorageError as e:  # transient faults that outlasted the retries: not the user's input
        print(f"sdgen: {e}", file=sys.stderr)
        return 1
    except known as e:
        print(f"sdgen: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `sdgen status OUT | head`: the reader left; not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not raise again
        return 0


if __name__ == "__main__":
    sys.exit(main())
