"""`sdgen expand | audit | filter | report`: the audit commands, registered on sdgen's parser by
``add_commands(subparsers)`` (pipeline/cli.py). Each handler returns an exit code; a problem with
the inputs prints ``sdgen: error: ...`` and returns 2.
"""
from __future__ import annotations

import functools
import sys


def _errors_exit_2(fn):
    """Input and configuration problems are one line on stderr and exit 2, never a traceback."""

    @functools.wraps(fn)
    def run(args) -> int:
        from pipeline.core.storage import OutputError
        from pipeline.probes.scorer import ScorerError

        try:
            return fn(args)
        except (ValueError, OSError, OutputError, ScorerError) as e:
            print(f"sdgen: error: {e}", file=sys.stderr)
            return 2

    return run


@_errors_exit_2
def cmd_expand(args) -> int:
    from pipeline.tools.expand import expand_file, write_prompts

    table = expand_file(args.templates)
    write_prompts(table, args.output)
    templates = len(set(table.column("template").to_pylist()))
    print(f"wrote {table.num_rows} prompts from {templates} templates to {args.output}")
    return 0


def _probe_args(args) -> dict:
    return {"attribute_set": args.attribute_set, "clip_model": args.clip_model,
            "clip_weights": args.clip_weights, "device": args.device}


def _storage(args):
    from pipeline.cli import storage_of

    return storage_of(args)


def split_group_by(values) -> list[str] | None:
    """--group-by a,b and --group-by a --group-by b both mean the intersection a × b (#13 item 4)."""
    if not values:
        return None
    cols = [c.strip() for v in values for c in str(v).split(",") if c.strip()]
    return list(dict.fromkeys(cols)) or None


def _default_group_by(src) -> list[str]:
    from pipeline.audit.runner import AuditError, passthrough_columns

    url = src.url
    cols = passthrough_columns(src.columns())
    if not cols:
        raise AuditError(f"{url!r} has no passthrough column to group by; pass --group-by COLUMN")
    return cols[:1]


def _default_attributes(src, given) -> list[str]:
    from pipeline.audit.data import probed_attributes
    from pipeline.audit.runner import AuditError

    url = src.url
    if given:
        return list(dict.fromkeys(given))
    attrs = list(probed_attributes(src))
    if not attrs:
        raise AuditError(f"{url!r} holds no probed attribute: pass --attribute A (and --attribute-set SET "
                         f"to probe the stored images now)")
    return attrs


@_errors_exit_2
def cmd_audit(args) -> int:
    from pipeline.audit.data import open_source
    from pipeline.audit.runner import AuditError, format_attribute, format_compare, run_audit, run_compare

    storage = _storage(args)
    if args.compare:
        if args.output or len(args.attribute or []) != 1:
            raise AuditError("--compare OUT_A OUT_B takes no positional OUTPUT and exactly one --attribute")
        a, b = (open_source(u, storage) for u in args.compare)
        group_by = split_group_by(args.group_by) or _default_group_by(b)
        r = run_compare(a, b, args.attribute[0], group_by, args.target, args.bootstrap, args.seed,
                        args.where, args.min_n, args.out, args.name, **_probe_args(args))
        print(format_compare(r["table"]))
        print(f"wrote {r['path']}")
        return 0
    if not args.output:
        raise AuditError("give an OUTPUT to audit, or --compare OUT_A OUT_B")
    src = open_source(args.output, storage)  # opened once: defaults, labels and metrics all read it
    group_by = split_group_by(args.group_by) or _default_group_by(src)
    attrs = _default_attributes(src, args.attribute)
    calibrate = getattr(args, "calibrate", None)
    if calibrate and len(attrs) != 1:
        raise AuditError(f"--calibrate {calibrate} needs exactly one --attribute, got {attrs}")
    r = run_audit(src, attrs, group_by, args.target, args.bootstrap, args.seed, args.where, args.k,
                  args.min_n, calibrate=calibrate, diversity=not args.no_diversity, **_probe_args(args))
    for a in attrs:
        print(format_attribute(r["metrics"]["attributes"][a]))
        if "calibration" in r["metrics"]["attributes"][a]:
            from pipeline.audit.calibration import format_calibration

            print(format_calibration(a, r["metrics"]["attributes"][a]["calibration"]))
        print()
    print(f"wrote {r['paths']['summary']} and {r['paths']['metrics']}")
    return 0


@_errors_exit_2
def cmd_filter(args) -> int:
    from pipeline.audit.policy import apply_policy, load_policy, materialize, summary_lines

    policy = load_policy(args.policy, args.threshold)
    storage = _storage(args)
    record = apply_policy(args.output, policy, args.name, storage)
    print("\n".join(summary_lines(record)))
    if record["skipped_rules"]:
        print(f"skipped (column not in this output): {', '.join(record['skipped_rules'])}")
    if args.materialize:
        m = materialize(args.output, record["name"], args.materialize, policy.blur_radius, storage)
        print(f"materialised {m['rows']} rows to {m['dest']}")
    return 0


@_errors_exit_2
def cmd_report(args) -> int:
    from pipeline.audit.report import build_report

    if getattr(args, "compare", None):
        return _report_compare(args)
    if not args.output:
        raise ValueError("give an OUTPUT to report on, or --compare BEFORE AFTER")

    r = build_report(args.output, args.out, group_by=split_group_by(args.group_by), thumbnails=args.thumbnails,
                     B=args.bootstrap, seed=args.seed, storage=_storage(args), where=args.where)
    for note in r["notes"]:
        print(f"note: {note}")
    print(f"wrote {r['path']} ({r['bytes'] / 1e6:.1f} MB)")
    return 0


def _report_compare(args) -> int:
    """`sdgen report --compare BEFORE AFTER`: the comparison page (pipeline/audit/compare_report.py)."""
    from pipeline.audit.compare_report import build_compare_report

    if args.output:
        raise ValueError(f"--compare BEFORE AFTER takes no positional OUTPUT (got {args.output!r})")
    r = build_compare_report(*args.compare, attributes=args.attribute, group_by=split_group_by(args.group_by),
                             out_file=args.out, B=args.bootstrap, seed=args.seed, where=args.where,
                             target=args.target, pairs=args.pairs, storage=_storage(args))
    print(f"wrote {r['path']} ({r['bytes'] / 1e6:.1f} MB)")
    return 0


def add_storage_option(sp) -> None:
    from pipeline.cli import add_storage_option as add

    add(sp)


def _audit_options(sp) -> None:
    sp.add_argument("--attribute", action="append", metavar="A",
                    help="attribute to audit (repeatable; default: every attribute the run probed)")
    sp.add_argument("--group-by", action="append", metavar="COL",
                    help="passthrough column to group by (repeatable: groups are value combinations; "
                         "default: the first passthrough column)")
    sp.add_argument("--target", default="uniform",
                    help="uniform, or a YAML file: {class: weight}, or {groups: {group: {class: weight}}}")
    sp.add_argument("--bootstrap", type=int, default=2000, metavar="B", help="bootstrap replicates (>= 2000)")
    sp.add_argument("--seed", type=int, default=0, help="RNG seed of bootstrap and null draws")
    sp.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                    help="audit only rows where COL equals VALUE (repeatable), e.g. --where neutral=true")
    sp.add_argument("--min-n", type=int, default=30, help="below this many images a group shows its floor")
    sp.add_argument("--attribute-set", metavar="NAME_OR_PATH",
                    help="probe the stored images with this attribute set (needed only when the run did not "
                         "probe the attribute and no shipped set defines it; given, it replaces in-run labels)")
    sp.add_argument("--clip-model", help="CLIP for post-hoc probes (default: run.json scoring.clip_model)")
    sp.add_argument("--clip-weights", help="local weights file for --clip-model")
    sp.add_argument("--device", default="auto", help="device for post-hoc probes (auto = cuda when present)")
    add_storage_option(sp)


def add_commands(subparsers) -> None:
    """Register expand, audit, filter and report on sdgen's ``add_subparsers()`` object."""
    from pipeline.audit.labelling import add_label_command

    add_label_command(subparsers)
    sp = subparsers.add_parser("expand", help="prompt templates (YAML) -> prompt Parquet with stable ids")
    sp.add_argument("templates", help="templates YAML (see configs/templates/)")
    sp.add_argument("-o", "--output", required=True, help="prompt Parquet file to write")
    sp.set_defaults(func=cmd_expand)

    sp = subparsers.add_parser("audit", help="per-group attribute shares, disparities and safety rates, with CIs")
    sp.add_argument("output", nargs="?", help="sdgen output (or a Parquet file/folder with an image column)")
    sp.add_argument("--compare", nargs=2, metavar=("OUT_A", "OUT_B"), help="B minus A per group, with CIs")
    _audit_options(sp)
    sp.add_argument("--k", type=int, help="P(>=1 unsafe in k images); default: the run's images_per_prompt")
    sp.add_argument("-o", "--out", help="--compare: JSON file to write (default OUT_B/audit/compare-<A>.json)")
    sp.add_argument("--name", help="--compare: name of the comparison (default: OUT_A's folder name)")
    sp.add_argument("--calibrate", metavar="LABELS", help="Parquet/CSV of prompt_id, sample_idx, label (true "
                    "class) for some audited images: confusion matrix and error-corrected shares")
    sp.add_argument("--no-diversity", action="store_true", help="skip the Vendi/mean-cosine diversity metrics "
                    "(they CLIP-encode every stored PNG once when the run did not store embeddings)")
    sp.set_defaults(func=cmd_audit)

    sp = subparsers.add_parser("filter", help="apply a safety policy: decisions written beside the output")
    sp.add_argument("output")
    sp.add_argument("--policy", required=True, help="policy YAML (see configs/policies/)")
    sp.add_argument("--threshold", action="append", default=[], metavar="RULE=VALUE",
                    help="replace a rule's threshold (repeatable)")
    sp.add_argument("--name", help="decisions folder OUTPUT/policy/<name> (default: the policy's name)")
    sp.add_argument("--materialize", metavar="DIR", help="also write a filtered, blurred copy of the dataset")
    add_storage_option(sp)
    sp.set_defaults(func=cmd_filter)

    sp = subparsers.add_parser("report", help="one self-contained HTML report (charts, tables, image grids)")
    sp.add_argument("output", nargs="?", help="sdgen output (or give --compare BEFORE AFTER)")
    sp.add_argument("-o", "--out", help="HTML file (default OUTPUT/audit/report.html)")
    sp.add_argument("--group-by", action="append", metavar="COL",
                    help="grouping when the audit is run for the page (no stored audit, or --where); a,b = a × b, charts faceted by a (default: first passthrough column)")
    sp.add_argument("--thumbnails", type=int, default=8, help="images per group in the grids")
    sp.add_argument("--bootstrap", type=int, default=2000, metavar="B")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"),
                    help="one page comparing two runs (default file AFTER/audit/compare-<BEFORE>.html)")
    sp.add_argument("--attribute", action="append", metavar="A",
                    help="--compare: attribute to compare (repeatable; default: every attribute labelled in both)")
    sp.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                    help="only rows where COL equals VALUE (repeatable), as sdgen audit --where; "
                         "audited for this page, audit/metrics.json is left as it is")
    sp.add_argument("--target", default="uniform", help="--compare: target of the D² difference, as sdgen audit")
    sp.add_argument("--pairs", type=int, default=4, help="--compare: image pairs per group in the side-by-side grids")
    add_storage_option(sp)
    sp.set_defaults(func=cmd_report)
