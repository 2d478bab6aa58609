"""`sdgen status | verify | contact-sheet`: what an output holds, whether its rows regenerate, what its
images look like."""

from __future__ import annotations

import json

from pipeline.cli.common import add_store_options, store_settings


def cmd_status(args) -> int:
    from pipeline.tools.status import output_status

    st = output_status(args.output, store_settings(args))
    print(json.dumps(st, indent=1, default=str))
    return 0


def cmd_verify(args) -> int:
    from pipeline.tools.verify import verify

    rep = verify(args.output, n=args.n, batch_size=args.batch_size, storage=store_settings(args))
    for r in rep["rows"]:
        print(
            f"{r['prompt_id']}#{r['sample_idx']} seed={r['seed']} bytes_equal={r['bytes_equal']} "
            f"max_pixel_diff={r['max_pixel_diff']}"
        )
    print(
        f"{rep['bytes_equal']}/{rep['n']} byte-identical; max pixel difference {rep['max_pixel_diff']}/255 "
        f"(regenerated at batch size {rep['batch_size']})"
    )
    return 0


def cmd_contact_sheet(args) -> int:
    from pipeline.curate.contact import contact_sheet

    # --policy NAME never applied to this output: a PolicyError (a ValueError: exit 2)
    print(
        contact_sheet(
            args.output, args.o, max_images=args.max_images, storage=store_settings(args), policy=args.policy
        )
    )
    return 0


def add_commands(sub) -> None:
    sp = sub.add_parser("status", help="what an output holds: committed shards, rows per status")
    sp.add_argument("output")
    add_store_options(sp)
    sp.set_defaults(func=cmd_status)
    sp = sub.add_parser(
        "verify", help="regenerate N rows from their metadata and compare with the stored PNGs"
    )
    sp.add_argument("output")
    sp.add_argument("--n", type=int, default=8)
    sp.add_argument("--batch-size", type=int, default=1)
    add_store_options(sp)
    sp.set_defaults(func=cmd_verify)
    sp = sub.add_parser("contact-sheet", help="a labelled PNG grid of an output's images")
    sp.add_argument("output")
    sp.add_argument("-o", default=None, help="PNG path (default OUTPUT/contact_sheet.png)")
    sp.add_argument("--max-images", type=int, default=64)
    sp.add_argument(
        "--policy",
        metavar="NAME",
        help="mark only this sdgen filter policy's flag/blur/drop "
        "decisions (default: every policy applied to the output)",
    )
    add_store_options(sp)
    sp.set_defaults(func=cmd_contact_sheet)
