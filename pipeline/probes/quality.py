"""Quality scores from the scorer's image embedding (no second image forward).

Aesthetic predictor: the LAION "improved aesthetic predictor" MLP (Linear d->1024->128->64->16->1, the
dropouts inactive at inference) over the normalised CLIP image embedding, loaded from a local
safetensors file (`scoring.aesthetic_weights`) with its keys `layers.{0,2,4,6,7}.{weight,bias}`.
Its published weights expect ViT-L/14 embeddings (d = 768): the input width is read from the file and
must equal the scorer's, or loading stops naming both. Stored raw as the `aesthetic` column (a
policy may threshold it). No weights can be downloaded here: tests use random weights.
"""

from __future__ import annotations

from pipeline.probes.scorer import ScorerError

HIDDEN = (1024, 128, 64, 16)
DROPOUTS = (0.2, 0.2, 0.1)


def aesthetic_mlp(dim: int):
    import torch.nn as nn

    a, b, c, d = HIDDEN
    return nn.Sequential(
        nn.Linear(dim, a),
        nn.Dropout(DROPOUTS[0]),
        nn.Linear(a, b),
        nn.Dropout(DROPOUTS[1]),
        nn.Linear(b, c),
        nn.Dropout(DROPOUTS[2]),
        nn.Linear(c, d),
        nn.Linear(d, 1),
    )


class AestheticScorer:
    def __init__(self, path: str, embed_dim: int, device):
        import os

        from safetensors.torch import load_file

        if not os.path.isfile(path):
            raise ScorerError(f"scoring.aesthetic_weights: file not found: {path!r}")
        state = load_file(path)
        state = {k.removeprefix("layers."): v for k, v in state.items()}
        if "0.weight" not in state:
            raise ScorerError(
                f"scoring.aesthetic_weights {path!r}: expected keys layers.0.weight ... layers.7.bias "
                f"(LAION aesthetic MLP), got {sorted(state)[:6]}"
            )
        dim = state["0.weight"].shape[1]
        if dim != embed_dim:
            raise ScorerError(
                f"scoring.aesthetic_weights {path!r} takes {dim}-d embeddings but the scoring CLIP "
                f"gives {embed_dim}-d (the LAION MLP needs ViT-L/14: scoring.clip_model ViT-L-14)"
            )
        self.model = aesthetic_mlp(dim)
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ScorerError(f"scoring.aesthetic_weights {path!r}: not the LAION MLP layout: {e}") from None
        self.model = self.model.to(device).eval()

    def __call__(self, image_emb) -> list[float]:
        import torch

        with torch.inference_mode():
            return self.model(image_emb.float()).squeeze(-1).cpu().tolist()


class PreferenceScorer:
    """PickScore / HPSv2-style preference: logit_scale x cos(image, prompt) of an open_clip model
    fine-tuned on human preferences (`scoring.preference_model` + `.preference_weights`, a local
    file). When that model is the scoring CLIP itself, the scorer's embeddings are reused (no second
    forward); otherwise the preference tower encodes the same device tensor once more."""

    def __init__(self, spec: str, weights: str | None, scorer):
        from pipeline.probes.scorer import ClipScorer, check_scorer_spec

        self.shared = (spec, weights) == (scorer.spec, getattr(scorer, "weights", None))
        if self.shared:
            self.tower = scorer
        else:
            check_scorer_spec(spec, weights)
            self.tower = ClipScorer(spec, weights, scorer.device, scorer.dtype)
        scale = getattr(self.tower.model, "logit_scale", None)
        self.scale = float(scale.detach().exp()) if scale is not None else 100.0

    def __call__(self, images_u8, prompts: list[str], scored: dict) -> list[float]:
        if self.shared:
            cos = scored["clip_cos"]
        else:
            cos = (self.tower.encode_images(images_u8) * self.tower.encode_texts(prompts)).sum(-1)
        return (self.scale * cos.float()).cpu().tolist()
