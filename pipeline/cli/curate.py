"""`sdgen dedup | export`: from an output to a training set."""

from __future__ import annotations

from pipeline.cli.common import add_store_options, add_where, store_settings


def cmd_dedup(args) -> int:
    from pipeline.curate.dedup import run_dedup

    r = run_dedup(args.output, args.threshold, args.by_embedding, args.name, storage=store_settings(args))
    print(
        f"dedup {r['name']} ({r['method']}, threshold {r['threshold']}): {r['rows']} images, "
        f"{r['duplicates']} near-duplicates of {r['clusters_with_duplicates']} kept images"
    )
    print(f"decisions: {r['dir']}/decisions.parquet")
    return 0


def cmd_export(args) -> int:
    from pipeline.curate.export import export

    r = export(
        args.output,
        args.format,
        args.dest,
        keep_only=args.keep_only,
        dedup=args.dedup,
        where=args.where,
        shard_size=args.shard_size,
        storage=store_settings(args),
    )
    print(
        f"exported {r['rows']} images ({r['skipped']} left out) as {args.format} to {args.dest}: "
        f"{r['files']} files written, {r['reused']} reused; card {r['card']}"
    )
    return 0


def add_commands(sub) -> None:
    sp = sub.add_parser(
        "dedup", help="near-duplicate images (pHash or CLIP embedding): decisions beside the data"
    )
    sp.add_argument("output")
    sp.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="pHash: max Hamming distance of 64 bits (default 4); --by-embedding: min cosine (default 0.95)",
    )
    sp.add_argument(
        "--by-embedding",
        action="store_true",
        help="compare clip_image_embedding (needs write.embeddings: true) instead of pHash",
    )
    sp.add_argument("--name", help="decisions folder OUTPUT/dedup/<name> (default phash / embedding)")
    add_store_options(sp)
    sp.set_defaults(func=cmd_dedup)

    sp = sub.add_parser("export", help="WebDataset shards or an image folder, with a dataset card")
    sp.add_argument("output")
    sp.add_argument("--format", required=True, choices=["webdataset", "imagefolder"])
    sp.add_argument(
        "-o",
        "--dest",
        required=True,
        help="destination folder or URL (s3://bucket/set, with --config "
        "storage settings or AWS_* in the environment)",
    )
    sp.add_argument(
        "--keep-only",
        metavar="POLICY",
        help="only rows sdgen filter decided keep/flag/blur under OUTPUT/policy/<POLICY> (blur is applied)",
    )
    sp.add_argument("--dedup", metavar="NAME", help="leave out near-duplicates of OUTPUT/dedup/<NAME>")
    add_where(sp)
    sp.add_argument(
        "--shard-size", type=int, default=1000, help="webdataset: samples per tar (a part may span several)"
    )
    add_store_options(sp)
    sp.set_defaults(func=cmd_export)
