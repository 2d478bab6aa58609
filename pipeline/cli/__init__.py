"""`sdgen`: the only place argparse lives. One module per command family (run: run, plan; output:
status, verify, contact-sheet; audit: expand, audit, filter, report, label; audit_plan: audit-plan;
curate: dedup, export);
`common` holds the shared option groups and the one error → exit-code map every command goes through.
`python -m pipeline.cli` is the same as `sdgen`."""

from __future__ import annotations

import argparse
import os
import sys

from pipeline.cli import audit, audit_plan, curate, output, run
from pipeline.cli.common import report
from pipeline.core.version import __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sdgen",
        description="Synthetic image datasets from prompt sets, "
        "with deterministic seeds, exactly-once commits and bias audits.",
    )
    p.add_argument("--version", action="version", version=f"sdgen {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for family in (run, output, audit, audit_plan, curate):
        family.add_commands(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `sdgen status OUT | head`: the reader left; not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not raise again
        return 0
    except Exception as e:  # noqa: BLE001 - mapped to one line and an exit code, or re-raised (a bug)
        return report(e)
