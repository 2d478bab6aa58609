"""The page of `sdgen label`: dest/index.html shows the sampled images with their keys, group and the
probe's label, beside dest/labels.csv (pipeline/audit/labelling.py draws the sample)."""

from __future__ import annotations

import base64

from pipeline.audit.labelling import draw_sample, write_labels_csv
from pipeline.pages.render import render


def write_sheet(sample, pngs, dest, attribute) -> dict:
    """dest/index.html (thumbnails and keys) and dest/labels.csv (the template)."""
    csv = write_labels_csv(sample, dest)
    images = [
        {
            "src": "data:image/png;base64," + base64.b64encode(b).decode() if b else None,
            "prompt_id": r.prompt_id,
            "sample_idx": r.sample_idx,
            "group": r.group,
            "predicted": r.predicted,
        }
        for r, b in zip(sample.itertuples(), pngs)
    ]
    with open(f"{dest}/index.html", "w") as f:
        f.write(render("label_sheet.html", attribute=attribute, images=images))
    return {"html": f"{dest}/index.html", "csv": csv}


def make_sheet(
    url, attribute, n, dest, group_by, seed=0, from_pixels=False, storage=None, **probe_args
) -> dict:
    """Draw the sample, write the sheet; returns {"rows", "strata", "html", "csv", "filled"}."""
    sample, pngs = draw_sample(url, attribute, n, group_by, seed, from_pixels, storage, **probe_args)
    paths = write_sheet(sample, pngs, dest, attribute)
    return {
        "rows": len(sample),
        "strata": int(sample.groupby(["group", "predicted"]).ngroups),
        "filled": int(sample["label"].notna().sum()),
        **paths,
    }
