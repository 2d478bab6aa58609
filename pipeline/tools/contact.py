"""Contact sheet: one PNG with a labelled grid of an output's images (prompt, CLIP score, probe
labels), for a person to open. `sdgen contact-sheet OUTPUT`, or `write.contact_sheet: true`."""
from __future__ import annotations

import io

from pipeline.core.dataset import Dataset

CELL = 128  # pixels per image in the sheet (small images are upscaled with nearest neighbour)
LABEL_LINES = 3
LINE_H = 11  # PIL's built-in bitmap font is ~11 px tall: no font files needed offline


def _labels(row: dict, attrs: list[str]) -> list[str]:
    lines = [str(row["prompt"])[:22]]
    score = row.get("clip_score")
    lines.append(f"#{row['sample_idx']} clip {score:.2f}" if score is not None else f"#{row['sample_idx']}")
    probe = " ".join(str(row[a]) for a in attrs if row.get(a) is not None)
    if probe:
        lines.append(probe[:22])
    return lines[:LABEL_LINES]


def contact_sheet(output_url: str, path: str | None = None, max_images: int = 64, columns: int = 8,
                  storage=None) -> str:
    """Write the sheet (default OUTPUT/contact_sheet.png); returns where it went."""
    from PIL import Image, ImageDraw

    ds = Dataset(output_url, storage)
    meta = ds.table(columns=None)  # no image bytes: only the rows shown are read below
    if meta.num_rows == 0:
        raise ValueError(f"{output_url!r} has no committed rows")
    rows = sorted((r for r in meta.to_pylist() if r.get("status") == "ok"),
                  key=lambda r: (r["prompt"], r["sample_idx"]))[:max_images]
    pngs = ds.images((r["prompt_id"], r["sample_idx"]) for r in rows)
    rows = [{**r, "image": {"bytes": pngs[(r["prompt_id"], r["sample_idx"])]}} for r in rows]
    attrs = [c for c in meta.column_names if c.startswith("attr_") and not c.endswith(("_margin", "_probs"))]
    cols = min(columns, max(1, len(rows)))
    cell_h = CELL + LABEL_LINES * LINE_H + 6
    sheet = Image.new("RGB", (cols * CELL, ((len(rows) + cols - 1) // cols) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(rows):
        x, y = (i % cols) * CELL, (i // cols) * cell_h
        img = Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
        scale = CELL / max(img.size)  # fit the cell; nearest neighbour keeps small images crisp
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.NEAREST if scale > 1 else Image.LANCZOS)
        sheet.paste(img, (x, y))
        for j, line in enumerate(_labels(row, attrs)):
            draw.text((x + 2, y + CELL + 2 + j * LINE_H), line, fill="black")
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    if path is None:
        path = ds.output.path("contact_sheet.png")
        ds.output.write_bytes_atomic(path, buf.getvalue())
    else:
        with open(path, "wb") as f:
            f.write(buf.getvalue())
    return path
