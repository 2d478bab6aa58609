"""`sdgen audit-plan`: how many prompts per group and images per prompt an audit needs, and what that
costs, from stated assumptions or a pilot output (pipeline/audit/planning.py holds the numbers)."""

from __future__ import annotations

from pipeline.audit import planning
from pipeline.cli.common import add_group_by, add_store_options, add_where, split_group_by, store_settings


class PlanError(ValueError):
    """Arguments that do not make a plan (exit 2)."""


def _assumptions(args) -> tuple[list[dict], object]:
    """(one planning case per (attribute, class) of the pilot, or the one stated case; the pilot)."""
    if not args.pilot:
        if args.share is None or args.icc is None:
            raise PlanError("without a PILOT output, give --share P and --icc RHO (stated assumptions)")
        return [{"what": "stated", "p": args.share, "rho": args.icc, "groups": args.groups or 1}], None
    from pipeline.audit.data import open_source
    from pipeline.audit.runner import default_attributes, default_group_by, default_where

    src = open_source(args.pilot, store_settings(args))
    group_by = split_group_by(args.group_by) or default_group_by(src)
    where = args.where or default_where(src)
    cases = []
    for attribute in default_attributes(src, args.attribute):
        classes, tables = planning.pilot_tables(src, attribute, group_by, where)
        icc = planning.pilot_icc(tables)
        for k, c in enumerate(classes):
            if args.cls and c not in args.cls:
                continue
            shares = [v[0] for v in icc[k]["groups"].values()]
            p = args.share if args.share is not None else _hardest(shares)
            rho = args.icc if args.icc is not None else icc[k]["pooled"]
            what = f"{attribute}={c}"
            if args.icc is None and not icc[k]["estimable"]:
                what += (
                    f" (no pilot group has {planning.MIN_PROMPTS}+ prompts: the correlation cannot be "
                    f"estimated, {planning.ASSUMED_ICC} assumed; pass --icc)"
                )
            cases.append({"what": what, "p": p, "rho": rho, "groups": args.groups or len(tables)})
    return cases, src


def _hardest(shares) -> float:
    """The pilot share whose interval is widest (nearest 0.5), kept inside [0.02, 0.98]."""
    return min(max(min(shares, key=lambda s: abs(s - 0.5)), 0.02), 0.98)


def _designs(args, case):
    ms = [int(x) for x in args.images_per_prompt.split(",")]
    if args.half_width is not None:
        return planning.plan_half_width(
            case["p"], case["rho"], args.half_width, ms, reps=args.reps, seed=args.seed
        )
    return planning.plan_disparity(
        case["p"], args.disparity, case["rho"], case["groups"], args.q, ms, reps=args.reps, seed=args.seed
    )


def _cost(src, images: int) -> str:
    """Worker-hours of `images` at the pilot's own measured rate (its run history), when it has one."""
    if src is None or not getattr(src, "run", None):
        return ""
    from pipeline.core.config import JobConfig
    from pipeline.core.lease import read_history
    from pipeline.core.storage import Output
    from pipeline.generate.estimate import history_rate

    try:
        cfg = JobConfig.model_validate(src.run["config"])
    except ValueError:  # a run.json this version cannot read as a job: no rate basis
        return ""
    rate = history_rate(read_history(Output(src.url, cfg.storage)), cfg)
    if not rate:
        return " (no measured rate in the pilot's run history for worker-hours: `sdgen plan JOB --measure`)"
    g = cfg.generation
    hours = images * g.width * g.height * g.steps / rate["pixel_steps_per_worker_s"] / 3600
    return f"; {hours:.3g} worker-hours at the pilot's rate ({g.width}x{g.height}, {g.steps} steps)"


def _table(designs, groups: int) -> str:
    rows = [
        ["images/prompt", "prompts/group", "images/group", "images (all groups)", "formula hw", "simulated"]
    ]
    for d in designs:
        rows.append(
            [str(d.images_per_prompt)]
            + ([str(d.prompts), str(d.images), str(d.images * groups)] if d.reached else ["-"] * 3)
            + [
                f"{d.closed_form:.3f}",
                f"{d.simulated:.2f}" if d.reached else f"> {planning.MAX_PROMPTS} prompts",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _check(args) -> None:
    if (args.half_width is None) == (args.disparity is None):
        raise PlanError("give exactly one target: --half-width H or --disparity D")
    for name in ("half_width", "share", "icc"):
        v = getattr(args, name)
        if v is not None and not 0 <= v < 1:
            raise PlanError(f"--{name.replace('_', '-')} must be in [0, 1), got {v}")
    if args.disparity is not None and not -1 < args.disparity < 1:
        raise PlanError(f"--disparity must be in (-1, 1), got {args.disparity}")


def cmd_audit_plan(args) -> int:
    _check(args)
    cases, src = _assumptions(args)
    goal = (
        f"CI half-width <= {args.half_width} in >= {planning.REACH:.0%} of simulated audits"
        if args.half_width is not None
        else f"detect a share {args.disparity:+} from it with {planning.POWER:.0%} power at BH q={args.q}"
    )
    for case in cases:
        print(
            f"{case['what']}: share {case['p']:.3f}, between-prompt correlation {case['rho']:.3f}, "
            f"{case['groups']} group(s); goal: {goal}"
        )
        designs = _designs(args, case)
        print(_table(designs, case["groups"]))
        reached = [d for d in designs if d.reached]
        if reached:
            best = min(reached, key=lambda d: d.images)
            total = best.images * case["groups"]
            print(
                f"cheapest: {best.prompts} prompts x {best.images_per_prompt} images per group = "
                f"{total} images in all{_cost(src, total)}\n"
            )
        else:
            print(f"no design within {planning.MAX_PROMPTS} prompts per group reaches the goal\n")
    return 0


def add_commands(sub) -> None:
    sp = sub.add_parser(
        "audit-plan",
        help="prompts per group and images per prompt an audit needs (from a pilot or assumptions)",
    )
    sp.add_argument(
        "pilot", nargs="?", help="a pilot sdgen output whose probed shares and correlations to use"
    )
    target = sp.add_argument_group("target (exactly one)")
    target.add_argument("--half-width", type=float, help="CI half-width wanted for a share (e.g. 0.05)")
    target.add_argument(
        "--disparity", type=float, help="difference from the reference share to detect (e.g. 0.1)"
    )
    sp.add_argument("--share", type=float, help="the share to plan for (default: the pilot's nearest 0.5)")
    sp.add_argument("--icc", type=float, help="between-prompt correlation rho (default: the pilot's, pooled)")
    sp.add_argument("--groups", type=int, help="groups compared (BH over them; default: the pilot's, else 1)")
    sp.add_argument("--q", type=float, default=0.05, help="Benjamini-Hochberg level of --disparity")
    sp.add_argument(
        "--attribute",
        action="append",
        help="pilot attribute (repeatable; default: the job's audit.attributes, else all probed)",
    )
    sp.add_argument("--class", dest="cls", action="append", help="pilot class to plan for (repeatable)")
    sp.add_argument(
        "--images-per-prompt", default=",".join(map(str, planning.IMAGES_PER_PROMPT)), help="designs to try"
    )
    sp.add_argument("--reps", type=int, default=planning.REPS, help="simulated audits per checked design")
    sp.add_argument("--seed", type=int, default=0, help="seed of the simulated audits")
    add_group_by(sp)
    add_where(sp, "use only pilot rows")
    add_store_options(sp)
    sp.set_defaults(func=cmd_audit_plan)
