"""Tests of pipeline.probes.functions with fake embeddings: docs/AUDIT.md "How to test without real weights",
check 3.

Text vectors are unit basis vectors; image vectors mix them with known weights, so every cosine,
probability and decision is known in advance. Boundary cases use values exactly representable in
float32 (0.25, 0.5, 0.75), so "exactly at the threshold" really is exact.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from pipeline.probes import functions as P

D = 16


def e(*idx, w=None):
    """Sum of basis vectors e_i (weights w), shape (D,)."""
    v = torch.zeros(D)
    for i, wi in zip(idx, w or [1.0] * len(idx)):
        v[i] = wi
    return v


def unit_mix(weights):
    """Image vector Σ w_i e_i, normalised (weights on the first len(weights) axes)."""
    return P.normalize(e(*range(len(weights)), w=list(weights)))


# ------------------------------------------------------------------ CLIP score, both variants
def test_clip_score_hessel_and_torchmetrics():
    img = torch.stack([e(0, 1, w=[0.6, 0.8]), e(0, 1, w=[-0.6, 0.8]), e(1)])
    txt = torch.stack([e(0), e(0), e(0)])
    cos = P.pair_cosine(img, txt)
    assert torch.allclose(cos, torch.tensor([0.6, -0.6, 0.0]))
    assert torch.allclose(P.clip_score(cos), torch.tensor([1.5, 0.0, 0.0]))  # 2.5·max(cos, 0) per image
    assert P.clip_score(torch.tensor([1.0])).item() == 2.5
    # torchmetrics: max(100·mean(cos), 0) over the batch: a different number from the mean CLIPScore.
    assert P.clip_score_torchmetrics(cos).item() == pytest.approx(0.0)
    assert P.clip_score_torchmetrics(cos[:1]).item() == pytest.approx(60.0)
    assert P.clip_score_torchmetrics(torch.tensor([0.25, -0.75])).item() == 0.0
    assert P.clip_score(torch.tensor([0.25, -0.75])).mean().item() == 0.3125


# ------------------------------------------------------------------ zero-shot and abstention
def test_class_embeddings_mean_then_renormalise():
    s = 2**-0.5
    per_class = [torch.stack([e(0, 3, w=[s, s]), e(0, 3, w=[s, -s])]), torch.stack([e(1) * 5.0]), e(2)[None]]
    c = P.class_embeddings(per_class)
    assert torch.allclose(c, torch.stack([e(0), e(1), e(2)]), atol=1e-6)  # inputs normalised first
    with pytest.raises(ValueError, match=r"\(0, 16\)"):
        P.class_embeddings([torch.zeros(0, D)])


def test_zero_shot_argmax_and_probabilities():
    classes = torch.stack([e(0), e(1), e(2)])
    img = torch.stack([unit_mix([0.8, 0.6, 0.0]), unit_mix([0.1, 0.2, 0.9]), unit_mix([0.5, 0.5, 0.5])])
    probs = P.zero_shot(img, classes)
    cos = P.normalize(img) @ classes.T
    assert torch.allclose(probs, torch.softmax(100 * cos, -1))
    assert probs.argmax(-1).tolist() == [0, 2, 0]  # equal weights: a tie, first index
    assert torch.allclose(probs[2], torch.full((3,), 1 / 3))
    # cos 0.8 vs 0.6: p0 = 1/(1 + e^{-20}); the logit scale sets how sharp the decision is
    assert probs[0, 0].item() == pytest.approx(1 / (1 + np.exp(-20)), rel=1e-6)
    soft = P.zero_shot(img[:1], classes, logit_scale=10.0)
    assert soft[0, 0].item() == pytest.approx(np.exp(8) / (np.exp(8) + np.exp(6) + 1), rel=1e-5)


def test_decide_margin_boundary_exact():
    probs = torch.tensor([[0.75, 0.25], [0.25, 0.75], [0.5, 0.5]])  # margins 0.5, 0.5, 0 exactly
    assert P.decide(probs, 0.5).tolist() == [0, 1, -1]  # at the margin: kept
    above = float(np.nextafter(np.float32(0.5), np.float32(1)))
    assert P.decide(probs, above).tolist() == [-1, -1, -1]  # one ulp above: abstained
    assert P.decide(probs, 0.0).tolist() == [0, 1, 0]  # margin 0 keeps ties, lowest index
    three = torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]])
    assert P.decide(three, 0.25).tolist() == [0, 2]
    assert P.decide(three, 0.25, subject_ok=torch.tensor([True, False])).tolist() == [0, -1]
    assert P.top_margin(torch.tensor([[0.75]])).item() == 0.75
    with pytest.raises(ValueError, match="1.5"):
        P.decide(probs, 1.5)


def test_decide_on_zero_shot_mixtures():
    # Two classes, logit scale 100: top1 − top2 = tanh(50·|cos_a − cos_b|), known from the weights.
    classes = torch.stack([e(0), e(1)])
    w = np.array([[0.8, 0.6], [0.701, 0.713], [0.2, 0.98]])
    img = torch.stack([unit_mix(row) for row in w])
    cos = w / np.linalg.norm(w, axis=1, keepdims=True)
    margin = np.tanh(50 * np.abs(cos[:, 0] - cos[:, 1]))  # middle image: tanh(0.600) = 0.537
    assert P.top_margin(P.zero_shot(img, classes)).numpy() == pytest.approx(margin, abs=1e-4)
    assert P.decide(P.zero_shot(img, classes), abstain_margin=0.5).tolist() == [0, 1, 1]
    assert P.decide(P.zero_shot(img, classes), abstain_margin=0.6).tolist() == [0, -1, 1]


def test_subject_detector():
    present, absent = torch.stack([e(5)]), torch.stack([e(6), e(6, 7, w=[0.8, 0.6])])
    img = torch.stack([unit_mix([0, 0, 0, 0, 0, 1.0]), P.normalize(e(6)), P.normalize(e(0))])
    p, ok = P.subject_present(img, present, absent)
    assert ok.tolist() == [True, False, False]  # third: no evidence either way, p = 0.5, not > 0.5
    assert p[2].item() == 0.5
    labels = P.decide(torch.tensor([[0.9, 0.1]] * 3), 0.1, subject_ok=ok)
    assert labels.tolist() == [0, -1, -1]


# ------------------------------------------------------------------ concept thresholds
def test_concept_threshold_exactly_at_is_not_flagged():
    img = torch.full((1, D), 0.25)  # unit norm exactly; cos with every e_i is exactly 0.25
    concepts = torch.stack([e(0), e(1)])
    below = float(np.nextafter(np.float32(0.25), np.float32(0)))
    r = P.concept_flags(img, concepts, [0.25, below])
    assert r.cos[0].tolist() == [0.25, 0.25] and r.scores[0, 0].item() == 0.0
    assert r.flags[0].tolist() == [False, True] and r.any_flag.tolist() == [True]
    assert not P.concept_flags(img, concepts, [0.25, 0.25]).any_flag.item()


def test_special_care_adjustment_both_ways():
    # image: cos 0.5 with e0 (special care), 0.25 with e1; 0.25 on 11 more axes, so |img| = 1 exactly.
    img = torch.cat([torch.tensor([0.5, 0.25]), torch.full((11,), 0.25), torch.zeros(D - 13)])[None]
    concepts, special = torch.stack([e(0), e(1)]), [True, False]
    at = P.concept_flags(img, concepts, [0.5, 0.25], special)  # special exactly at: does not fire
    assert not at.special_fired.item() and at.flags[0].tolist() == [False, False] and not at.any_flag.item()
    fired = P.concept_flags(img, concepts, [0.49, 0.25], special)  # fires: e1 gets +0.01 → flagged
    assert fired.special_fired.item() and fired.flags[0].tolist() == [True, True] and fired.any_flag.item()
    assert fired.scores[0, 1].item() == pytest.approx(0.01)
    # adjusted score exactly 0: 0.25 − 0.5 + 0.25 → not flagged; special concept alone is not a flag
    exact = P.concept_flags(img, concepts, [0.25, 0.5], special, adjustment=0.25)
    assert exact.special_fired.item() and exact.scores[0, 1].item() == 0.0 and not exact.any_flag.item()
    with pytest.raises(ValueError, match=r"\(3,\)"):
        P.concept_flags(img, concepts, [0.1, 0.2, 0.3])


def test_concept_flags_match_diffusers_safety_checker():
    # diffusers' StableDiffusionSafetyChecker.forward_onnx on the same embeddings (vision tower
    # replaced by the identity), with concept and special-care lists concatenated as in sdgen.
    sc = pytest.importorskip("diffusers.pipelines.stable_diffusion.safety_checker")
    g = torch.Generator().manual_seed(0)
    img, concept, special = (
        torch.randn(400, D, generator=g),
        torch.randn(17, D, generator=g),
        torch.randn(3, D, generator=g),
    )
    thr_c, thr_s = torch.full((17,), 0.45), torch.full((3,), 0.4)
    fake = types.SimpleNamespace(
        vision_model=lambda x: (None, x),
        visual_projection=lambda x: x,
        concept_embeds=concept,
        special_care_embeds=special,
        concept_embeds_weights=thr_c,
        special_care_embeds_weights=thr_s,
    )
    _, expected = sc.StableDiffusionSafetyChecker.forward_onnx(fake, img, torch.ones(400, 1))
    ours = P.concept_flags(
        img, torch.cat([concept, special]), torch.cat([thr_c, thr_s]), [False] * 17 + [True] * 3
    )
    assert torch.equal(ours.any_flag, expected)
    no_bump = P.concept_flags(
        img,
        torch.cat([concept, special]),
        torch.cat([thr_c, thr_s]),
        [False] * 17 + [True] * 3,
        adjustment=0.0,
    )
    assert not torch.equal(no_bump.any_flag, expected)  # the +0.01 decides some rows here (4 of 400)
    assert 0 < ours.special_fired.sum() < 400 and 0 < expected.sum() < 400  # both branches exercised


# ------------------------------------------------------------------ attribute sets
def test_shipped_attribute_sets():
    people = P.load_attribute_set("people")
    g = people.attributes["perceived_gender_presentation"]
    assert g.class_names == ["man", "woman"] and "a photo of a woman" in g.classes["woman"]
    assert people.attributes["perceived_age_group"].class_names == [
        "child",
        "young_adult",
        "middle_aged",
        "older_adult",
    ]
    assert g.subject["present"][0] == "a photo of a person" and g.subject["absent"]
    for word in ("perceived", "not", "identity", "binary", "CLIP"):
        assert word in g.caveats
    toy = P.load_attribute_set("toyworld")
    assert toy.attributes["colour"].class_names == ["red", "green", "blue", "yellow"]
    assert toy.attributes["shape"].class_names == ["circle", "square", "triangle"]
    assert "a red shape" in toy.attributes["colour"].classes["red"]


def test_attribute_set_validation(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("attributes:\n  colour:\n    classes: {red: [a red shape]}\n")
    with pytest.raises(ValueError, match="red"):
        P.load_attribute_set(bad)
    bad.write_text("attributes:\n  c:\n    abstain_margin: 2\n    classes: {a: [x], b: [y]}\n")
    with pytest.raises(ValueError, match="abstain_margin.*2"):
        P.load_attribute_set(bad)
    bad.write_text("attributes:\n  c:\n    classes: {a: [x], b: [y]}\n    subject: {present: [p]}\n")
    with pytest.raises(ValueError, match="present"):
        P.load_attribute_set(bad)
    with pytest.raises(ValueError, match="people"):  # unknown name: lists the shipped ones
        P.load_attribute_set("no_such_set")
