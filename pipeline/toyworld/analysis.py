"""Pixel analysis of toy-world images (rendered or generated): foreground, colour and shape.

No model is involved: colour is the majority palette colour of the foreground pixels, shape a
nearest-template match on geometric features of the largest foreground blob (how the blob's
width varies from its top to its bottom, and how much of its bounding box it fills). This is the
measurement the quality bar and the skew audits rely on, so it is tested on clean world images
(>= 98% accurate) and used unchanged on generated ones.
"""

from __future__ import annotations

import numpy as np

from .world import COLOURS, PALETTE, X_COLOUR, X_NAME

#: A pixel is foreground when some channel differs from the background estimate by more than this.
#: The darkest background is ~200 grey; the lightest shape channel difference (yellow's blue) is ~170.
FG_THRESHOLD = 60
#: Fewer foreground pixels than this (a 16-pixel shape has ~130) means "no shape found".
MIN_PIXELS = 40
#: Rows (fractions of the blob's height) at which the blob's horizontal span is measured.
PROFILE_ROWS = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
#: Feature templates: span / bbox width at PROFILE_ROWS, then fill ratio (area / bbox area).
#: Means measured on 2,000 clean world images (pipeline/data/toyworld.yaml geometry).
TEMPLATES = {
    "circle": [0.63, 0.93, 1.00, 0.93, 0.61, 0.81],
    "square": [1.00, 1.00, 1.00, 1.00, 1.00, 1.00],
    "triangle": [0.13, 0.33, 0.52, 0.71, 0.90, 0.52],
    X_NAME: [1.00, 0.64, 0.27, 0.64, 1.00, 0.42],
}
_NAMES = list(PALETTE)  # the four colours and black
_RGB = np.array([PALETTE[c] for c in _NAMES], np.float32)


def _batch(img) -> np.ndarray:
    a = np.asarray(img)
    return a[None] if a.ndim == 3 else a


def background(img) -> np.ndarray:
    """Background colour estimate per image: median of the 1-pixel border, (n, 3) float."""
    a = _batch(img).astype(np.float32)
    border = np.concatenate([a[:, 0], a[:, -1], a[:, 1:-1, 0], a[:, 1:-1, -1]], axis=1)
    return np.median(border, axis=1)


def foreground_mask(img) -> np.ndarray:
    """Boolean mask of pixels that differ from the background; (H, W) for one image, (n, H, W) for many."""
    a = _batch(img).astype(np.float32)
    diff = np.abs(a - background(a)[:, None, None, :]).max(axis=-1)
    mask = diff > FG_THRESHOLD
    return mask[0] if np.asarray(img).ndim == 3 else mask


def pixel_colours(img, mask=None) -> np.ndarray:
    """Per-image counts of foreground pixels nearest to each palette colour, (n, 5) in ``_NAMES`` order."""
    a = _batch(img).astype(np.float32)
    m = foreground_mask(a) if mask is None else np.asarray(mask).reshape(a.shape[:3])
    d = ((a[..., None, :] - _RGB) ** 2).sum(-1)  # (n, H, W, 5) squared distances to the palette
    nearest = d.argmin(-1)
    return np.stack([((nearest == k) & m).sum((1, 2)) for k in range(len(_NAMES))], 1)


def dominant_colour(img) -> str | None | list:
    """The majority palette colour (red/green/blue/yellow/black) of the foreground, None if no shape.

    One image -> a string or None; a batch (n, H, W, 3) -> a list.
    """
    counts = pixel_colours(img)
    out = [(_NAMES[int(c.argmax())] if c.sum() >= MIN_PIXELS else None) for c in counts]
    return out[0] if np.asarray(img).ndim == 3 else out


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (1 + int(sizes.argmax()))


def shape_features(mask: np.ndarray) -> np.ndarray | None:
    """Width profile and fill ratio of the largest blob of a 2-D mask (see TEMPLATES), None if too small."""
    blob = _largest_blob(mask)
    if blob.sum() < MIN_PIXELS:
        return None
    rows, cols = np.nonzero(blob)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    h, w = bottom - top + 1, right - left + 1
    spans = []
    for f in PROFILE_ROWS:
        r = blob[top + min(h - 1, int(f * h))]
        c = np.nonzero(r)[0]
        spans.append((c.max() - c.min() + 1) / w if len(c) else 0.0)
    return np.array(spans + [blob.sum() / (h * w)], np.float32)


def shape_of(img) -> str | None | list:
    """circle / square / triangle / x (nearest template), or None if no shape; a batch gives a list."""
    a = _batch(img)
    masks = foreground_mask(a)
    names, tmpl = list(TEMPLATES), np.array(list(TEMPLATES.values()), np.float32)
    out = []
    for m in masks:
        f = shape_features(m)
        out.append(None if f is None else names[int(((tmpl - f) ** 2).sum(1).argmin())])
    return out[0] if np.asarray(img).ndim == 3 else out


def colour_shares(colours, classes=COLOURS) -> dict[str, float]:
    """Share of each colour among the measured (non-None) colours of a list; black counts as 'other'."""
    valid = [c for c in colours if c is not None]
    n = max(len(valid), 1)
    shares = {c: sum(v == c for v in valid) / n for c in classes}
    shares["other"] = sum(v not in classes for v in valid) / n
    return shares


__all__ = [
    "FG_THRESHOLD",
    "MIN_PIXELS",
    "TEMPLATES",
    "X_COLOUR",
    "background",
    "colour_shares",
    "dominant_colour",
    "foreground_mask",
    "pixel_colours",
    "shape_features",
    "shape_of",
]
