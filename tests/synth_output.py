"""Synthetic sdgen outputs with KNOWN labels and scores, written through pipeline.core.storage.Output exactly
as a run writes them (parts, commit markers, run.json), for audit/policy/report tests."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import schema
from pipeline.core.storage import Output

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 200, 30),
    "abstain": (128, 128, 128),
}
CLASSES = {"colour": ["red", "green", "blue", "yellow"]}


def png(rgb, size=16) -> bytes:
    from PIL import Image

    im = Image.new("RGB", (size, size), (236, 236, 236))  # a light frame around the colour, like a toy shape
    im.paste(tuple(int(c) for c in rgb), (3, 3, size - 3, size - 3))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def probe_fields(classes=CLASSES, concepts=("x_mark",)) -> list[pa.Field]:
    out = [pa.field("subject_toyworld_p", pa.float32())]
    for a in classes:
        out += [
            pa.field(f"attr_{a}", pa.string()),
            pa.field(f"attr_{a}_margin", pa.float32()),
            pa.field(f"attr_{a}_probs", pa.list_(pa.float32())),
        ]
    out += [pa.field(f"safety_{c}", pa.float32()) for c in concepts]
    return out + [pa.field("safety_flagged", pa.bool_())]


def row(
    prompt_id,
    sample_idx,
    label=None,
    status="ok",
    group=None,
    x_mark=0.0,
    flagged=False,
    classes=CLASSES,
    prompt=None,
    **extra,
) -> dict:
    """One output row; the image is a solid patch of the label's colour (so a grid shows the label)."""
    r = {
        "prompt_id": prompt_id,
        "sample_idx": sample_idx,
        "prompt": prompt or f"a {group} ({prompt_id})",
        "negative_prompt": "",
        "seed": 1000 + sample_idx,
        "width": 16,
        "height": 16,
        "model": "synthetic",
        "scheduler": "PNDMScheduler",
        "steps": 3,
        "guidance_scale": 7.5,
        "status": status,
        "shard": "s",
        "error": None if status == "ok" else f"{status} for a test",
        "shape": group,
        **extra,
    }
    if status != "ok":
        return r
    r.update(
        image={
            "bytes": png(COLOURS.get(label or "abstain", (0, 0, 0))),
            "path": f"{prompt_id}_{sample_idx}.png",
        },
        clip_score=0.5,
        clip_cos=0.2,
        subject_toyworld_p=0.9,
        safety_x_mark=x_mark,
        safety_flagged=flagged,
    )
    for a, cls in classes.items():
        probs = np.full(len(cls), 0.1 / max(1, len(cls) - 1))
        if label in cls:
            probs[cls.index(label)] = 0.9
        r.update(
            {
                f"attr_{a}": label or "abstain",
                f"attr_{a}_margin": 0.8 if label in cls else 0.0,
                f"attr_{a}_probs": (probs / probs.sum()).tolist(),
            }
        )
    return r


def make_output(root, rows, classes=CLASSES, shards=2, passthrough=("shape",), run_extra=None) -> str:
    """Write ``rows`` as an sdgen output at ``root`` in ``shards`` committed parts; returns the path."""
    out = Output(str(root))
    fields = probe_fields(classes)
    # passthrough: column names (strings), or {name: pyarrow type} for other input column types
    pt = pa.schema(
        [pa.field(c, passthrough[c] if isinstance(passthrough, dict) else pa.string()) for c in passthrough]
    )
    sch = schema.output_schema(pt, fields)
    for i, chunk in enumerate(np.array_split(np.arange(len(rows)), shards)):
        name = f"synthetic-{i:03d}"
        table = pa.Table.from_pylist([{**rows[j], "shard": name} for j in chunk], schema=sch)
        spool = out.spool_path(name)
        pq.write_table(table, spool, row_group_size=8)
        out.commit_part(name, spool, {"rows": table.num_rows})
    attrs = {
        a: {
            "set": "toyworld",
            "classes": list(c),
            "abstain_margin": 0.1,
            "subject": True,
            "caveats": "Synthetic labels for tests.",
            "description": f"{a} of the shape.",
        }
        for a, c in classes.items()
    }
    run = {
        "config": {
            "model": "synthetic",
            "scoring": {"clip_model": "tiny", "clip_weights": None},
            "generation": {
                "width": 16,
                "height": 16,
                "seed": 0,
                "images_per_prompt": 8,
                "steps": 3,
                "guidance_scale": 7.5,
            },
        },
        "fingerprint": "f" * 64,
        "probes": {
            "attributes": attrs,
            "concepts": {"name": "toyworld", "calibrated": False, "thresholds": {"x_mark": 0.2}},
            "screening": "default",
        },
        "versions": {"sdgen": "test"},
        "created": "2026-01-01T00:00:00+00:00",
        **(run_extra or {}),
    }
    out.write_json(out.path("run.json"), run)
    return str(root)


def known_rows() -> list[dict]:
    """circle: 5 prompts x 8 = 40 ok (28 red, 12 blue) + 4 abstained + 4 blocked + 1 failed;
    square: 3 prompts x 8 = 24 ok (6 of each colour): below 30, floor only;
    triangle: 4 prompts x 10 = 40 ok (36 green, 4 yellow), 3 of them x-marked (flagged)."""
    rows = []
    labels = ["red"] * 28 + ["blue"] * 12
    for i, lab in enumerate(labels):
        rows.append(row(f"c{i // 8}", i % 8, lab, group="circle"))
    rows += [row("c5", k, None, group="circle") for k in range(4)]  # abstained
    rows += [row("c6", k, status="blocked", group="circle") for k in range(4)]
    rows.append(row("c7", 0, status="failed", group="circle"))
    for i in range(24):
        rows.append(row(f"s{i // 8}", i % 8, ["red", "green", "blue", "yellow"][i % 4], group="square"))
    for i in range(40):
        x = 0.3 if i in (3, 17, 33) else 0.05
        rows.append(
            row(
                f"t{i // 10}",
                i % 10,
                "yellow" if i % 10 == 9 else "green",
                group="triangle",
                x_mark=x,
                flagged=x > 0.2,
            )
        )
    return rows


def dump(obj) -> str:
    return json.dumps(obj, indent=1, default=str)


def cli(argv) -> int:
    """Run a command exactly as `sdgen` would: argparse, the command, the one error → exit-code map."""
    from pipeline.cli import main

    return main([str(a) for a in argv])
