"""The toy world: one shape on a light background, with captions whose biases are known exactly.

Everything is read from ``pipeline/data/toyworld.yaml`` (the machine-readable spec) and rendered
with numpy alone, vectorised over a batch (~4,000 images per second with captions). The same seed
gives byte-identical images and captions on every run.

Generative story of one sample: draw a caption kind (``colour_shape`` / ``shape`` / ``colour`` /
``x``), a paraphrase, then the attributes the caption names (uniform), then the ones it leaves
unnamed (shape: uniform; colour of "a {shape}": the known skews), then size, position, colour
jitter and background.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

SPEC_PATH = Path(__file__).resolve().parent.parent / "data" / "toyworld.yaml"


@lru_cache(maxsize=1)
def spec() -> dict:
    """The parsed world spec (pipeline/data/toyworld.yaml)."""
    import yaml

    return yaml.safe_load(SPEC_PATH.read_text())


_S = spec()
SIZE: int = _S["image"]["size"]
SHAPES: tuple[str, ...] = tuple(_S["shapes"])
COLOURS: tuple[str, ...] = tuple(_S["colours"])
X_NAME: str = _S["restricted"]["name"]
X_COLOUR: str = _S["restricted"]["colour"]
X_PHRASE: str = _S["restricted"]["phrase"]
#: RGB centre of every colour, the restricted class's black included.
PALETTE: dict[str, tuple[int, int, int]] = {
    **{c: tuple(v) for c, v in _S["colours"].items()},
    X_COLOUR: tuple(_S["restricted"]["rgb"]),
}
#: P(colour | shape) for "a {shape}" captions: the ground truth audits must recover.
SKEWS: dict[str, dict[str, float]] = {s: dict(_S["skews"][s]) for s in SHAPES}
KINDS: tuple[str, ...] = tuple(_S["caption_kinds"])
PARAPHRASES: tuple[str, ...] = tuple(_S["paraphrases"])


def phrase(shape: str | None = None, colour: str | None = None) -> str:
    """The plain caption for the attributes given: "a red circle", "a circle", "a red shape", "an x mark"."""
    if shape == X_NAME:
        return X_PHRASE
    kind = "colour_shape" if shape and colour else "shape" if shape else "colour" if colour else None
    if kind is None:
        raise ValueError("phrase() needs a shape, a colour or both")
    return _S["phrases"][kind].format(shape=shape, colour=colour)


def caption(shape: str | None, colour: str | None, paraphrase: str = "{}") -> str:
    """A caption: ``paraphrase`` (e.g. "a photo of {}") wrapped around ``phrase(shape, colour)``."""
    return paraphrase.format(phrase(shape, colour))


@dataclass
class Batch:
    """A sample of the world. ``images`` is (n, SIZE, SIZE, 3) uint8; the rest are per-image lists."""

    images: np.ndarray
    captions: list[str]
    shapes: list[str]  # circle / square / triangle / x
    colours: list[str]  # red / green / blue / yellow / black
    kinds: list[str]  # which attributes the caption names (see caption_kinds in the spec)
    paraphrases: list[str]  # the wrapper used, e.g. "a photo of {}"
    geometry: np.ndarray = field(repr=False)  # (n, 3) int: size, centre x, centre y (pixels)
    masks: np.ndarray = field(repr=False)  # (n, SIZE, SIZE) bool: the shape's pixels


def render(shapes, colours_rgb, sizes, cx, cy, backgrounds, return_mask: bool = False):
    """Render n images, vectorised. Shapes are names; colours/backgrounds (n, 3); sizes/centres (n,).

    Returns (n, SIZE, SIZE, 3) uint8, and the (n, SIZE, SIZE) shape masks too if ``return_mask``.
    """
    n = len(shapes)
    shapes = np.asarray(shapes)
    s = np.asarray(sizes, np.float32)[:, None, None]
    grid = np.arange(SIZE, dtype=np.float32) + 0.5  # pixel centres
    dx = grid[None, None, :] - np.asarray(cx, np.float32)[:, None, None]
    dy = grid[None, :, None] - np.asarray(cy, np.float32)[:, None, None]
    half = s / 2
    in_box = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    circle = dx * dx + dy * dy <= half * half
    # upright triangle: apex at the top of the box, base at the bottom; width grows linearly downwards
    triangle = in_box & (np.abs(dx) <= (dy + half) / 2)
    stroke = np.maximum(_S["shape_geometry"]["x_stroke_min"], s * _S["shape_geometry"]["x_stroke_fraction"])
    x_mark = in_box & ((np.abs(dx - dy) <= stroke / np.sqrt(2)) | (np.abs(dx + dy) <= stroke / np.sqrt(2)))
    mask = np.zeros((n, SIZE, SIZE), bool)
    for name, m in (("circle", circle), ("square", in_box), ("triangle", triangle), (X_NAME, x_mark)):
        sel = shapes == name
        mask[sel] = m[sel]
    img = np.broadcast_to(np.asarray(backgrounds, np.uint8)[:, None, None, :], (n, SIZE, SIZE, 3)).copy()
    fg = np.broadcast_to(np.asarray(colours_rgb, np.uint8)[:, None, None, :], img.shape)
    img[mask] = fg[mask]
    return (img, mask) if return_mask else img


def render_one(shape: str, colour: str | tuple, size: int = 32, centre=(32, 32), background=(230, 230, 230)):
    """One (SIZE, SIZE, 3) uint8 image; ``colour`` is a palette name or an RGB triple."""
    rgb = PALETTE[colour] if isinstance(colour, str) else colour
    return render([shape], [rgb], [size], [centre[0]], [centre[1]], [background])[0]


def _choice(rng: np.random.Generator, options, probs, n: int) -> np.ndarray:
    p = np.asarray(probs, np.float64)
    return np.asarray(options)[rng.choice(len(options), size=n, p=p / p.sum())]


def _draw_labels(rng: np.random.Generator, n: int):
    """Caption kind, paraphrase, shape and colour of n samples, following the generative story."""
    kinds = _choice(rng, KINDS, list(_S["caption_kinds"].values()), n)
    paras = _choice(rng, PARAPHRASES, list(_S["paraphrases"].values()), n)
    shapes = _choice(rng, SHAPES, [1] * len(SHAPES), n).astype(object)
    colours = _choice(rng, COLOURS, [1] * len(COLOURS), n).astype(object)
    skewed = {s: _choice(rng, COLOURS, [SKEWS[s][c] for c in COLOURS], n) for s in SHAPES}
    for s in SHAPES:  # "a {shape}": colour from the skew of that shape
        sel = (kinds == "shape") & (shapes == s)
        colours[sel] = skewed[s][sel]
    shapes[kinds == "x"], colours[kinds == "x"] = X_NAME, X_COLOUR
    return kinds, paras, shapes, colours


def sample_world(seed, n: int) -> Batch:
    """n samples of the world, fully determined by ``seed`` (an int or a tuple of ints, e.g. (seed, step))."""
    rng = np.random.default_rng(seed)
    kinds, paras, shapes, colours = _draw_labels(rng, n)
    g = _S["shape_geometry"]
    sizes = rng.integers(g["size_range"][0], g["size_range"][1] + 1, n)
    lo, hi = g["margin"] + sizes / 2, SIZE - g["margin"] - sizes / 2
    cx = np.round(lo + rng.random(n) * (hi - lo))
    cy = np.round(lo + rng.random(n) * (hi - lo))
    jit = _S["colour_jitter"]
    centres = np.array([PALETTE[c] for c in colours], np.int64)
    rgb = np.clip(centres + rng.integers(-jit, jit + 1, (n, 3)), 0, 255)
    bg_lo, bg_hi = _S["image"]["background"]["grey_range"]
    tint = _S["image"]["background"]["tint"]
    bg = rng.integers(bg_lo, bg_hi + 1, (n, 1)) + rng.integers(-tint, tint + 1, (n, 3))
    images, masks = render(shapes, rgb, sizes, cx, cy, np.clip(bg, 0, 255), return_mask=True)
    names = {"colour_shape": (True, True), "shape": (True, False), "colour": (False, True), "x": (True, True)}
    caps = [
        caption(s if names[k][0] else None, c if names[k][1] else None, p)
        for k, p, s, c in zip(kinds, paras, shapes, colours)
    ]
    as_str = lambda a: [str(v) for v in a]  # noqa: E731  (numpy str_ -> plain str)
    return Batch(
        images,
        caps,
        as_str(shapes),
        as_str(colours),
        as_str(kinds),
        as_str(paras),
        np.stack([sizes, cx, cy], 1).astype(np.int64),
        masks,
    )


def to_tensor(images: np.ndarray):
    """uint8 (n, H, W, 3) -> float32 torch tensor (n, 3, H, W) in [-1, 1] (the diffusers convention)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def from_tensor(x) -> np.ndarray:
    """Inverse of ``to_tensor``: [-1, 1] float (n, 3, H, W) -> uint8 (n, H, W, 3)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
