"""`sdgen expand | audit | filter | report | label`: prompt sets in, audits, policies and pages out."""

from __future__ import annotations

from pipeline.audit.spec import MIN_N, AuditSpec
from pipeline.cli.common import (
    add_bootstrap,
    add_group_by,
    add_probe_options,
    add_store_options,
    add_where,
    probe_spec,
    split_group_by,
    store_settings,
)


class UsageError(ValueError):
    """Arguments that do not fit together (exit 2)."""


def cmd_expand(args) -> int:
    from pipeline.tools.expand import expand_file, write_prompts

    table = expand_file(args.templates)
    write_prompts(table, args.output)
    templates = len(set(table.column("template").to_pylist()))
    print(f"wrote {table.num_rows} prompts from {templates} templates to {args.output}")
    return 0


def cmd_audit(args) -> int:
    if args.compare:
        return _audit_compare(args)
    from pipeline.audit.calibration import format_calibration
    from pipeline.audit.data import open_source
    from pipeline.audit.runner import default_attributes, default_group_by, default_where, run_audit
    from pipeline.audit.spec import older_method, stale_entries
    from pipeline.audit.text import format_attribute, format_findings

    if not args.output:
        raise UsageError("give an OUTPUT to audit, or --compare OUT_A OUT_B")
    src = open_source(
        args.output, store_settings(args)
    )  # opened once: defaults, labels and metrics all read it
    group_by = split_group_by(args.group_by) or default_group_by(src)
    attrs = default_attributes(src, args.attribute)
    if args.calibrate and len(attrs) != 1:
        raise UsageError(f"--calibrate {args.calibrate} needs exactly one --attribute, got {attrs}")
    where = args.where or (
        [] if args.group_by else default_where(src)
    )  # the job's audit defaults go together
    spec = AuditSpec(
        attrs,
        group_by,
        args.target,
        bootstrap=args.bootstrap,
        min_n=args.min_n,
        seed=args.seed,
        where=where,
        calibration=args.calibrate,
        k=args.k,
        pool_icc=not args.no_pool_icc,
        diversity=not args.no_diversity,
        probe=probe_spec(args),
    )
    r = run_audit(src, spec)
    print(format_findings(r["metrics"]) + "\n")  # what was found first, then the tables behind it
    for a in attrs:
        print(format_attribute(r["metrics"]["attributes"][a]))
        if "calibration" in r["metrics"]["attributes"][a]:
            print(format_calibration(a, r["metrics"]["attributes"][a]["calibration"]))
        print()
    print(f"wrote {r['paths']['summary']} and {r['paths']['metrics']}")
    for a, old in stale_entries(r.merged):  # other attributes kept in metrics.json from an older sdgen
        print(
            f"note: metrics.json also holds {a} from {older_method(old)}: "
            f"`sdgen audit {args.output} --attribute {a}` redoes it, as `sdgen report` does"
        )
    return 0


def _audit_compare(args) -> int:
    from pipeline.audit.compare import run_compare
    from pipeline.audit.data import open_source
    from pipeline.audit.runner import default_group_by
    from pipeline.audit.text import format_compare

    if args.output or len(args.attribute or []) != 1:
        raise UsageError("--compare OUT_A OUT_B takes no positional OUTPUT and exactly one --attribute")
    storage = store_settings(args)
    a, b = (open_source(u, storage) for u in args.compare)
    group_by = split_group_by(args.group_by) or default_group_by(b)
    spec = AuditSpec(
        args.attribute,
        group_by,
        args.target,
        bootstrap=args.bootstrap,
        min_n=args.min_n,
        seed=args.seed,
        where=args.where,
        probe=probe_spec(args),
    )
    r = run_compare(a, b, spec, args.out, args.name)
    print(format_compare(r["table"]))
    print(f"wrote {r['path']}")
    return 0


def cmd_filter(args) -> int:
    from pipeline.curate.materialize import materialize
    from pipeline.curate.policy import apply_policy, load_policy, summary_lines

    policy = load_policy(args.policy, args.threshold)
    storage = store_settings(args)
    record = apply_policy(args.output, policy, args.name, storage)
    print("\n".join(summary_lines(record)))
    if record["skipped_rules"]:
        print(f"skipped (column not in this output): {', '.join(record['skipped_rules'])}")
    if args.materialize:
        m = materialize(args.output, record["name"], args.materialize, policy.blur_radius, storage)
        print(f"materialised {m['rows']} rows to {m['dest']}")
    return 0


def cmd_report(args) -> int:
    if args.compare:
        return _report_compare(args)
    from pipeline.pages.report import build_report

    if not args.output:
        raise UsageError("give an OUTPUT to report on, or --compare BEFORE AFTER")
    # how to audit when the page needs it (no stored audit, or --where); --target is --compare's
    spec = AuditSpec(
        group_by=split_group_by(args.group_by), bootstrap=args.bootstrap, seed=args.seed, where=args.where
    )
    r = build_report(args.output, args.out, spec, thumbnails=args.thumbnails, storage=store_settings(args))
    for note in r["notes"]:
        print(f"note: {note}")
    print(f"wrote {r['path']} ({r['bytes'] / 1e6:.1f} MB)")
    return 0


def _report_compare(args) -> int:
    """`sdgen report --compare BEFORE AFTER`: the comparison page (pipeline/pages/compare.py)."""
    from pipeline.pages.compare import build_compare_report

    if args.output:
        raise UsageError(f"--compare BEFORE AFTER takes no positional OUTPUT (got {args.output!r})")
    spec = AuditSpec(
        args.attribute,
        split_group_by(args.group_by),
        args.target,
        bootstrap=args.bootstrap,
        seed=args.seed,
        where=args.where,
    )
    r = build_compare_report(
        *args.compare, spec, out_file=args.out, pairs=args.pairs, storage=store_settings(args)
    )
    print(f"wrote {r['path']} ({r['bytes'] / 1e6:.1f} MB)")
    return 0


def cmd_label(args) -> int:
    from pipeline.audit.data import open_source
    from pipeline.audit.runner import default_group_by
    from pipeline.pages.label_sheet import make_sheet

    src = open_source(args.output, store_settings(args))
    group_by = split_group_by(args.group_by) or default_group_by(src)
    r = make_sheet(
        src,
        args.attribute,
        args.n,
        args.out,
        group_by,
        args.seed,
        args.from_pixels,
        **probe_spec(args).kwargs(),
    )
    print(
        f"wrote {r['rows']} images in {r['strata']} strata (group x predicted class) to {r['html']} and "
        f"{r['csv']}" + (f"; {r['filled']} labels filled from pixels" if args.from_pixels else "")
    )
    return 0


def add_commands(sub) -> None:
    _add_label(sub)
    sp = sub.add_parser("expand", help="prompt templates (YAML) -> prompt Parquet with stable ids")
    sp.add_argument("templates", help="templates YAML (see configs/templates/)")
    sp.add_argument("-o", "--output", required=True, help="prompt Parquet file to write")
    sp.set_defaults(func=cmd_expand)
    _add_audit(sub)
    sp = sub.add_parser("filter", help="apply a safety policy: decisions written beside the output")
    sp.add_argument("output")
    sp.add_argument("--policy", required=True, help="policy YAML (see configs/policies/)")
    sp.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="RULE=VALUE",
        help="replace a rule's threshold (repeatable)",
    )
    sp.add_argument("--name", help="decisions folder OUTPUT/policy/<name> (default: the policy's name)")
    sp.add_argument("--materialize", metavar="DIR", help="also write a filtered, blurred copy of the dataset")
    add_store_options(sp)
    sp.set_defaults(func=cmd_filter)
    _add_report(sub)


def _add_audit(sub) -> None:
    sp = sub.add_parser("audit", help="per-group attribute shares, disparities and safety rates, with CIs")
    sp.add_argument("output", nargs="?", help="sdgen output (or a Parquet file/folder with an image column)")
    sp.add_argument("--compare", nargs=2, metavar=("OUT_A", "OUT_B"), help="B minus A per group, with CIs")
    sp.add_argument(
        "--attribute",
        action="append",
        metavar="A",
        help="attribute to audit (repeatable; default: the job's audit.attributes, else every probed one)",
    )
    add_group_by(sp)
    sp.add_argument(
        "--target",
        default="uniform",
        help="uniform, or a YAML file: {class: weight}, or {groups: {group: {class: weight}}}",
    )
    add_bootstrap(sp)
    add_where(sp, "audit only rows")
    sp.add_argument("--min-n", type=int, default=MIN_N, help="below this many images a group shows its floor")
    sp.add_argument(
        "--no-pool-icc",
        action="store_true",
        help="every group's share interval from its own prompts only (default: the between-prompt "
        "correlation is pooled over the groups where they agree)",
    )
    add_probe_options(sp)
    add_store_options(sp)
    sp.add_argument("--k", type=int, help="P(>=1 unsafe in k images); default: the run's images_per_prompt")
    sp.add_argument(
        "-o", "--out", help="--compare: JSON file to write (default OUT_B/audit/compare-<A>.json)"
    )
    sp.add_argument("--name", help="--compare: name of the comparison (default: OUT_A's folder name)")
    sp.add_argument(
        "--calibrate",
        metavar="LABELS",
        help="Parquet/CSV of prompt_id, sample_idx, label (true "
        "class) for some audited images: confusion matrix and error-corrected shares",
    )
    sp.add_argument(
        "--no-diversity",
        action="store_true",
        help="skip the Vendi/mean-cosine diversity metrics "
        "(they CLIP-encode every stored PNG once when the run did not store embeddings)",
    )
    sp.set_defaults(func=cmd_audit)


def _add_report(sub) -> None:
    sp = sub.add_parser("report", help="one self-contained HTML report (charts, tables, image grids)")
    sp.add_argument("output", nargs="?", help="sdgen output (or give --compare BEFORE AFTER)")
    sp.add_argument("-o", "--out", help="HTML file (default OUTPUT/audit/report.html)")
    add_group_by(
        sp,
        "used when the audit is run for the page (no stored audit, or --where); charts faceted "
        "by the first; default: the input's own columns, first one",
    )
    sp.add_argument("--thumbnails", type=int, default=8, help="images per group in the grids")
    add_bootstrap(sp)
    sp.add_argument(
        "--compare",
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        help="one page comparing two runs (default file AFTER/audit/compare-<BEFORE>.html)",
    )
    sp.add_argument(
        "--attribute",
        action="append",
        metavar="A",
        help="--compare: attribute to compare (repeatable; default: every attribute labelled in both)",
    )
    add_where(sp, "only rows (audited for this page; audit/metrics.json is left as it is)")
    sp.add_argument(
        "--target", default="uniform", help="--compare: target of the D² difference, as sdgen audit"
    )
    sp.add_argument(
        "--pairs", type=int, default=4, help="--compare: image pairs per group in the side-by-side grids"
    )
    add_store_options(sp)
    sp.set_defaults(func=cmd_report)


def _add_label(sub) -> None:
    sp = sub.add_parser("label", help="a stratified sample of images to label, for audit --calibrate")
    sp.add_argument("output")
    sp.add_argument("--attribute", required=True, help="the probed attribute to calibrate")
    sp.add_argument("-n", type=int, default=200, help="images to sample")
    sp.add_argument("-o", "--out", required=True, help="folder for index.html and labels.csv")
    add_group_by(sp, "strata; default: the input's own columns, first one")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument(
        "--from-pixels",
        action="store_true",
        help="toy world: fill labels from pixel analysis (dominant foreground colour)",
    )
    add_probe_options(sp)
    add_store_options(sp)
    sp.set_defaults(func=cmd_label)
