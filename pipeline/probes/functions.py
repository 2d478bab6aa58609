"""Per-image probes on CLIP embeddings: CLIPScore, zero-shot attribute labels, concept thresholds.

Pure functions of embeddings (torch tensors; no model is loaded here), so they are tested with fake
unit vectors. Definitions follow docs/AUDIT.md, "Per-image columns". Attribute labels
are always *perceived* presentation as judged by CLIP, never identity.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

ABSTAIN = -1


def normalize(x) -> torch.Tensor:
    """Rows scaled to unit L2 norm (float32). Idempotent, so callers may pass normalised input."""
    return F.normalize(torch.as_tensor(x, dtype=torch.float32), dim=-1)


def pair_cosine(image_emb, text_emb) -> torch.Tensor:
    """cos(image_i, text_i) for each row i (image i against its own prompt)."""
    return (normalize(image_emb) * normalize(text_emb)).sum(-1)


def clip_score(cos) -> torch.Tensor:
    """Hessel et al. (2021) CLIPScore per image: 2.5 · max(cos, 0). Store the raw cos beside it."""
    return 2.5 * torch.as_tensor(cos, dtype=torch.float32).clamp(min=0)


def clip_score_torchmetrics(cos) -> torch.Tensor:
    """torchmetrics' CLIPScore of a batch: max(100 · mean(cos), 0), one number, NOT per image.

    Only for comparison with papers that report it; sdgen's ``clip_score`` column is ``clip_score``.
    """
    return (100.0 * torch.as_tensor(cos, dtype=torch.float32).mean()).clamp(min=0)


def class_embeddings(text_emb_list) -> torch.Tensor:
    """K × D class embeddings: per class, the mean of its normalised prompt embeddings, renormalised.

    ``text_emb_list`` holds one (n_k × D) tensor per class (the embeddings of that class's prompts).
    """
    if len(text_emb_list) == 0:
        raise ValueError("class_embeddings needs at least one class, got an empty list")
    rows = []
    for k, e in enumerate(text_emb_list):
        e = torch.as_tensor(e, dtype=torch.float32)
        if e.ndim != 2 or e.shape[0] == 0:
            raise ValueError(f"class {k}: expected an (n_prompts x D) tensor, got shape {tuple(e.shape)}")
        rows.append(normalize(e).mean(0))
    return normalize(torch.stack(rows))


def zero_shot(image_emb, class_text_emb, logit_scale: float = 100.0) -> torch.Tensor:
    """N × K class probabilities: softmax_k(logit_scale · cos(image, class_k)).

    100 is CLIP's learned logit scale (exp(4.6052)); inputs are renormalised, which is a no-op for
    unit vectors.
    """
    return torch.softmax(logit_scale * normalize(image_emb) @ normalize(class_text_emb).T, dim=-1)


def top_margin(probs) -> torch.Tensor:
    """top1 − top2 of each row of ``probs`` (top1 itself when there is one class)."""
    probs = torch.as_tensor(probs)
    if probs.shape[-1] == 1:
        return probs[..., 0]
    top = probs.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def decide(probs, abstain_margin: float, subject_ok=None) -> torch.Tensor:
    """Label index per row (argmax), or -1 (abstain) when top1 − top2 < abstain_margin or subject_ok
    is False for the row.

    Boundary semantics: abstain iff margin < abstain_margin, so a margin exactly equal to
    ``abstain_margin`` is NOT abstained. With abstain_margin = 0 a tie is kept and goes to the lowest
    class index (torch.argmax returns the first maximum); use a positive margin to abstain on ties.
    """
    probs = torch.as_tensor(probs)
    if not 0 <= float(abstain_margin) <= 1:
        raise ValueError(f"abstain_margin must be in [0, 1], got {abstain_margin!r}")
    labels = probs.argmax(-1)
    abstain = top_margin(probs) < abstain_margin
    if subject_ok is not None:
        abstain |= ~torch.as_tensor(subject_ok, dtype=torch.bool)
    return torch.where(abstain, torch.full_like(labels, ABSTAIN), labels)


def subject_present(image_emb, present_emb, absent_emb, logit_scale: float = 100.0, min_prob: float = 0.5):
    """Subject detector: (P(present), ok) from zero-shot between the pooled "present" prompts (e.g.
    "a photo of a person") and the pooled "absent" prompts ("a photo of an empty scene").

    ok iff P(present) > min_prob (strictly: a tie is no evidence of a subject, so it abstains).
    """
    probs = zero_shot(image_emb, class_embeddings([present_emb, absent_emb]), logit_scale)
    return probs[:, 0], probs[:, 0] > min_prob


class ConceptFlags(NamedTuple):
    cos: torch.Tensor  # N × C raw cosine similarities (kept as numbers)
    scores: torch.Tensor  # N × C cos − threshold (+ adjustment after a special-care hit)
    flags: torch.Tensor  # N × C bool, scores > 0
    any_flag: torch.Tensor  # N bool, any flag among the non-special-care concepts
    special_fired: torch.Tensor  # N bool, some special-care concept above its threshold


def concept_flags(image_emb, concept_emb, thresholds, special_care=None, adjustment: float = 0.01):
    """Concept-threshold detector, the logic of diffusers' StableDiffusionSafetyChecker.

    score_c = cos_c − threshold_c, flag_c iff score_c > 0 (strictly: exactly at the threshold is NOT
    flagged). When a special-care concept fires, every other concept's score gets + ``adjustment``
    (thresholds stricter by 0.01 in diffusers). As in diffusers, special-care concepts only adjust:
    they are reported in ``flags`` (unadjusted) but do not count toward ``any_flag``. This matches
    diffusers' ``forward_onnx`` exactly (tested); its default ``forward`` rounds scores to 3 decimals
    first, so there a score in (0, 0.0005) is not flagged.
    """
    cos = normalize(image_emb) @ normalize(concept_emb).T
    thr = torch.as_tensor(thresholds, dtype=torch.float32)
    if thr.shape != (cos.shape[1],):
        raise ValueError(f"need one threshold per concept ({cos.shape[1]}), got shape {tuple(thr.shape)}")
    special = (
        torch.zeros(cos.shape[1], dtype=torch.bool)
        if special_care is None
        else torch.as_tensor(special_care, dtype=torch.bool)
    )
    if special.shape != thr.shape:
        raise ValueError(f"special_care must have one entry per concept, got shape {tuple(special.shape)}")
    raw = cos - thr
    special_fired = (raw[:, special] > 0).any(1)
    bump = torch.where(special, 0.0, float(adjustment)) * special_fired[:, None].float()
    scores = raw + bump
    flags = scores > 0
    return ConceptFlags(cos, scores, flags, flags[:, ~special].any(1), special_fired)


# Attribute sets live in pipeline/probes/attributes.py (YAML only, no torch); re-exported for callers.
from pipeline.probes.attributes import AttributeSet, AttributeSpec, load_attribute_set  # noqa: E402,F401
