"""Contact sheet: one PNG with a labelled grid of an output's images (prompt, CLIP score, probe
labels), for a person to open. `sdgen contact-sheet OUTPUT`, or `write.contact_sheet: true`.

Images a `sdgen filter` decision flags, blurs or drops (OUTPUT/policy/<name>/decisions.parquet; every
policy there, or the one `--policy NAME` names; the most severe decision wins) get a coloured border
and a label line "<decision>: <rule>"; blur and drop images are shown blurred, never in the clear."""

from __future__ import annotations

import io

from pipeline.core import layout
from pipeline.core.dataset import Dataset

CELL = 128  # pixels per image in the sheet (small images are upscaled with nearest neighbour)
LABEL_LINES = 3
LINE_H = 11  # PIL's built-in bitmap font is ~11 px tall: no font files needed offline
BORDER = 4  # px: width of the coloured frame around a tile a policy decided on (visible at a glance)
SEVERITY = {"flag": 1, "blur": 2, "drop": 3}  # as the policy's ordering (keep < flag < blur < drop)
MARK = {"flag": (245, 160, 0), "blur": (150, 60, 200), "drop": (215, 25, 25)}  # frame colour per decision


def decisions(ds, policy: str | None = None) -> dict:
    """{(prompt_id, sample_idx): (decision, rule)} for rows a policy flags, blurs or drops: the named
    policy, or every policy applied to the output (the most severe decision per row)."""
    from pipeline.curate.policy import PolicyError, read_decisions

    if policy is None:
        try:
            names = sorted(
                p.rstrip("/").rsplit("/", 1)[-1]
                for p in ds.output.fs.ls(ds.output.path(layout.POLICY), detail=False)
            )
        except FileNotFoundError:
            return {}
    else:
        names = [policy]
    out = {}
    for name in names:
        try:
            d = read_decisions(ds.url, name, ds.storage)
        except PolicyError:
            if policy is not None:  # asked for by name: say it is missing (exit 2)
                raise
            continue  # a folder without decisions is not a policy applied
        for r in d[d["decision"].isin(list(SEVERITY))].itertuples(index=False):
            k = (r.prompt_id, int(r.sample_idx))
            if k not in out or SEVERITY[r.decision] > SEVERITY[out[k][0]]:
                out[k] = (r.decision, r.rule)
    return out


def _labels(row: dict, attrs: list[str]) -> list[str]:
    lines = [str(row["prompt"])[:22]]
    score = row.get("clip_score")
    lines.append(f"#{row['sample_idx']} clip {score:.2f}" if score is not None else f"#{row['sample_idx']}")
    probe = " ".join(str(row[a]) for a in attrs if row.get(a) is not None)
    if probe:
        lines.append(probe[:22])
    return lines[:LABEL_LINES]


def contact_sheet(
    output_url: str,
    path: str | None = None,
    max_images: int = 64,
    columns: int = 8,
    storage=None,
    policy: str | None = None,
) -> str:
    """Write the sheet (default OUTPUT/contact_sheet.png); returns where it went. ``policy``: whose
    decisions mark the tiles (default every policy applied)."""
    from PIL import Image, ImageDraw, ImageFilter

    ds = Dataset(output_url, storage)
    meta = ds.table(columns=None)  # no image bytes: only the rows shown are read below
    if meta.num_rows == 0:
        raise ValueError(f"{output_url!r} has no committed rows")
    rows = sorted(
        (r for r in meta.to_pylist() if r.get("status") == "ok"), key=lambda r: (r["prompt"], r["sample_idx"])
    )[:max_images]
    pngs = ds.images((r["prompt_id"], r["sample_idx"]) for r in rows)
    rows = [{**r, "image": {"bytes": pngs[(r["prompt_id"], r["sample_idx"])]}} for r in rows]
    marks = decisions(ds, policy)
    attrs = [c for c in meta.column_names if c.startswith("attr_") and not c.endswith(("_margin", "_probs"))]
    cols = min(columns, max(1, len(rows)))
    cell_h = CELL + LABEL_LINES * LINE_H + 6
    sheet = Image.new("RGB", (cols * CELL, ((len(rows) + cols - 1) // cols) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(rows):
        x, y = (i % cols) * CELL, (i // cols) * cell_h
        img = Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
        scale = CELL / max(img.size)  # fit the cell; nearest neighbour keeps small images crisp
        img = img.resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))),
            Image.NEAREST if scale > 1 else Image.LANCZOS,
        )
        mark = marks.get((row["prompt_id"], int(row["sample_idx"])))
        if mark and mark[0] != "flag":
            img = img.filter(ImageFilter.GaussianBlur(max(2, max(img.size) // 12)))
        sheet.paste(img, (x, y))
        lines = _labels(row, attrs)
        if mark:
            draw.rectangle((x, y, x + CELL - 1, y + CELL - 1), outline=MARK[mark[0]], width=BORDER)
            lines = [*lines[: LABEL_LINES - 1], f"{mark[0]}: {mark[1]}"[:22]]
        for j, line in enumerate(lines):
            colour = MARK[mark[0]] if mark and j == len(lines) - 1 else "black"
            draw.text((x + 2, y + CELL + 2 + j * LINE_H), line, fill=colour)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    if path is None:
        path = ds.output.path(layout.CONTACT_SHEET)
        ds.output.write_bytes_atomic(path, buf.getvalue())
    else:
        with open(path, "wb") as f:
            f.write(buf.getvalue())
    return path
