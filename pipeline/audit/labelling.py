"""`sdgen label OUT --attribute A -n 200 -o SHEET`: a stratified, seeded sample of an output's images
to label by hand, and its CSV template (prompt_id, sample_idx, group, predicted, label) whose filled
form is what `sdgen audit --calibrate` reads; the HTML sheet of the same sample (thumbnails with their
keys and the probe's label) is pipeline/pages/label_sheet.py. Strata are group × predicted class (abstain
included), allocated
as evenly as their sizes allow, so rare predicted classes (where the probe's errors hide) get
labels too. ``from_pixels`` fills the label column from the toy world's pixel analysis
(pipeline/toyworld/analysis.py: the dominant foreground colour), which makes the loop testable.
"""

from __future__ import annotations

import os

import numpy as np

from pipeline.audit.data import AuditError, attribute_labels, iter_images, open_source, read_rows
from pipeline.audit.tables import group_keys


def allocate(sizes, n):
    """Even allocation of n over strata of the given sizes (each capped at its size), largest first."""
    sizes = np.asarray(sizes, int)
    take = np.zeros_like(sizes)
    left = min(int(n), int(sizes.sum()))
    while left > 0:
        open_ = np.flatnonzero(take < sizes)
        share = max(1, left // len(open_))
        for i in open_[np.argsort(-(sizes[open_] - take[open_]), kind="stable")]:
            add = min(share, sizes[i] - take[i], left)
            take[i] += add
            left -= add
            if left == 0:
                break
    return take


def stratified_sample(df, strata_cols, n, seed=0):
    """Rows of ``df`` drawn without replacement per stratum, seeded; rows keyed and sorted first so
    the draw does not depend on row order."""
    df = df.sort_values(["prompt_id", "sample_idx"], kind="stable").reset_index(drop=True)
    strata = df.groupby(strata_cols, sort=True, dropna=False).indices
    names = list(strata)
    take = allocate([len(strata[s]) for s in names], n)
    rng = np.random.default_rng([int(seed), 7])
    picks = [np.sort(rng.choice(strata[s], k, replace=False)) for s, k in zip(names, take) if k]
    return df.iloc[np.concatenate(picks) if picks else []].reset_index(drop=True)


def pixel_labels(pngs, classes):
    """Dominant foreground colour of each toy-world PNG, or None when not one of ``classes``."""
    import io

    from PIL import Image

    from pipeline.toyworld.analysis import dominant_colour

    out = []
    for b in pngs:
        if b is None:
            out.append(None)
            continue
        c = dominant_colour(np.asarray(Image.open(io.BytesIO(b)).convert("RGB")))
        out.append(c if c in classes else None)
    return out


def _images(src, df, wanted_rows):
    """PNG bytes of the rows at positions ``wanted_rows`` of read_rows order."""
    want = {int(i): k for k, i in enumerate(wanted_rows)}
    out = [None] * len(want)
    for offset, batch in iter_images(src):
        for j, b in enumerate(batch):
            if offset + j in want:
                out[want[offset + j]] = b
    return out


def write_labels_csv(sample, dest) -> str:
    """dest/labels.csv: the template to fill (the label column blank unless filled from pixels)."""
    os.makedirs(dest, exist_ok=True)
    sample[["prompt_id", "sample_idx", "group", "predicted", "label"]].to_csv(
        f"{dest}/labels.csv", index=False
    )
    return f"{dest}/labels.csv"


def draw_sample(url, attribute, n, group_by, seed=0, from_pixels=False, storage=None, **probe_args):
    """(sample, PNG bytes of its rows): up to ``n`` ok rows stratified by group × predicted class, with
    columns group, predicted and label (filled from pixels when ``from_pixels``)."""
    src = open_source(url, storage)
    df = read_rows(src)
    df["_row"] = np.arange(len(df))
    labelled, info = attribute_labels(src, df, attribute, **probe_args)
    ok = labelled[labelled["status"] == "ok"].copy()
    if ok.empty:
        raise AuditError(f"{src.url!r} has no ok rows to label")
    ok["group"] = group_keys(ok, group_by).to_numpy()
    ok["predicted"] = ok[f"attr_{attribute}"].fillna("abstain").astype(str)
    sample = stratified_sample(ok, ["group", "predicted"], n, seed)
    pngs = _images(src, df, sample["_row"].to_numpy())
    sample["label"] = pixel_labels(pngs, info["classes"]) if from_pixels else None
    return sample, pngs
