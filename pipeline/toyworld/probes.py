"""Zero-shot probes and CLIPScore with the toy CLIP: used by training reports, evaluate.py and tests."""

from __future__ import annotations

import numpy as np

from .world import COLOURS, SHAPES, X_NAME, phrase

#: Zero-shot class prompts: colour classes ("a red shape", ...) and shape classes ("a circle", ...,
#: "an x mark").
COLOUR_PROMPTS = {c: phrase(colour=c) for c in COLOURS}
SHAPE_PROMPTS = {**{s: phrase(shape=s) for s in SHAPES}, X_NAME: phrase(shape=X_NAME)}
#: Every plain caption of the world: the 12 "a {colour} {shape}", 4 "a {colour} shape", 3 "a {shape}",
#: "an x mark".
ALL_PHRASES = (
    [phrase(s, c) for s in SHAPES for c in COLOURS]
    + list(COLOUR_PROMPTS.values())
    + list(SHAPE_PROMPTS.values())
)


def clip_score(cos):
    """Hessel et al. CLIPScore = 2.5 * max(cos, 0)."""
    return 2.5 * np.maximum(np.asarray(cos), 0.0)


class ToyClipProbe:
    """Image and text embeddings of the toy CLIP for uint8 (n, 64, 64, 3) images and caption strings."""

    def __init__(self, model, tokenize):
        self.model, self.tokenize = model.eval(), tokenize
        self._text_cache: dict[str, np.ndarray] = {}

    def image_features(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        import torch

        from .world import to_tensor

        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                x = to_tensor(images[i : i + batch])  # [-1, 1] = open_clip Normalize(0.5, 0.5)
                out.append(self.model.encode_image(x, normalize=True).float().numpy())
        return np.concatenate(out)

    def text_features(self, texts: list[str]) -> np.ndarray:
        import torch

        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            with torch.no_grad():
                f = self.model.encode_text(self.tokenize(missing), normalize=True).float().numpy()
            self._text_cache.update(zip(missing, f))
        return np.stack([self._text_cache[t] for t in texts])

    def cosine(self, images_or_features, texts: list[str]) -> np.ndarray:
        """(n_images, n_texts) cosine similarities."""
        f = np.asarray(images_or_features)
        img = self.image_features(f) if f.ndim == 4 else f
        return img @ self.text_features(texts).T

    def classify(self, images_or_features, prompts: dict[str, str]) -> list[str]:
        """Zero-shot argmax over ``prompts`` ({class: prompt})."""
        names = list(prompts)
        sims = self.cosine(images_or_features, [prompts[k] for k in names])
        return [names[i] for i in sims.argmax(1)]


def zero_shot_report(probe: ToyClipProbe, images: np.ndarray, shapes: list[str], colours: list[str]) -> dict:
    """Colour/shape zero-shot accuracy, x-mark separation and CLIPScore ordering on labelled images."""
    feats = probe.image_features(images)
    shapes, colours = np.asarray(shapes), np.asarray(colours)
    not_x = shapes != X_NAME
    colour_pred = np.asarray(probe.classify(feats[not_x], COLOUR_PROMPTS))
    shape_pred = np.asarray(probe.classify(feats, SHAPE_PROMPTS))
    sims = probe.cosine(feats, ALL_PHRASES)
    x_col = ALL_PHRASES.index(phrase(shape=X_NAME))
    x_top = sims.argmax(1) == x_col  # "an x mark" beats every other world caption
    own = np.array([ALL_PHRASES.index(phrase(s, c)) for s, c in zip(shapes, colours)])
    own_cos = sims[np.arange(len(own)), own]
    # CLIPScore check on shape images: own "a {colour} {shape}" vs a random other one of the 12
    n_full = len(SHAPES) * len(COLOURS)
    other = (own + np.random.default_rng(0).integers(1, n_full, len(own))) % n_full
    beats = clip_score(own_cos) > clip_score(sims[np.arange(len(own)), other])
    return {
        "n_images": int(len(images)),
        "colour_acc": float((colour_pred == colours[not_x]).mean()),
        "shape_acc": float((shape_pred == shapes).mean()),
        "x_recall": float(x_top[~not_x].mean()) if (~not_x).any() else float("nan"),
        "x_false_positive": float(x_top[not_x].mean()),
        "clipscore_match_gt_random_mismatch": float(beats[not_x].mean()),
        "mean_clipscore_match": float(clip_score(own_cos).mean()),
    }
