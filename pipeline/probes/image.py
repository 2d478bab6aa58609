"""Per-image probe and safety columns from the one CLIP image embedding the scorer already has.

For every configured attribute A (docs/AUDIT.md "Per-image columns"):
    attr_<A>         class label, or "abstain" (top-two margin below abstain_margin, or no subject)
    attr_<A>_margin  top1 - top2 probability
    attr_<A>_probs   class probabilities, in the class order recorded in run.json
    subject_<set>_p  P(subject present) for attribute sets with a subject detector
For the safety concept list:
    safety_<concept> raw cosine(image, concept) (kept as a number; policy is a separate step)
    safety_flagged   any concept above its threshold (diffusers' checker logic, strict >)
and, when `safety.sd_checker` names a StableDiffusionSafetyChecker directory, its own 17+3 concept
cosines (`sd_checker_cos`) and verdict (`sd_checker_nsfw`). Used in the actor (on the device
tensor) and by `sdgen audit` on stored PNGs alike.
"""

from __future__ import annotations

import pyarrow as pa

from pipeline.probes.attributes import load_attribute_set
from pipeline.probes.safety import load_concepts

ABSTAIN = "abstain"


class ImageProbes:
    def __init__(self, scorer, attribute_sets=(), concepts: str | None = None, sd_checker: str | None = None):
        import torch

        from pipeline.probes import functions as P

        self.scorer = scorer
        scale = getattr(scorer.model, "logit_scale", None)
        self.logit_scale = (
            float(scale.detach().exp()) if scale is not None else 100.0
        )  # the model's own temperature
        self.attributes, self.subjects, self.subject_of = {}, {}, {}
        for set_name in attribute_sets:
            aset = load_attribute_set(set_name)
            for name, spec in aset.attributes.items():
                if name in self.attributes:
                    raise ValueError(f"attribute {name!r} is defined twice (in {set_name!r} and before)")
                classes = P.class_embeddings([scorer.encode_texts(p).cpu() for p in spec.classes.values()])
                self.attributes[name] = (spec, classes.to(scorer.device))
                if spec.subject:  # one detector per set: its attributes share the set-level subject
                    self.subject_of[name] = aset.name
                    if aset.name not in self.subjects:
                        self.subjects[aset.name] = tuple(
                            scorer.encode_texts(spec.subject[k]) for k in ("present", "absent")
                        )
        self.concepts = load_concepts(concepts) if concepts else None
        if self.concepts is not None:
            self.concept_emb = torch.stack(
                [scorer.encode_texts(list(c.prompts)).mean(0) for c in self.concepts.concepts]
            )
        self.checker = _load_checker(sd_checker, scorer.device, scorer.dtype) if sd_checker else None

    # ---- schema ---------------------------------------------------------------------------------------
    def fields(self) -> list[pa.Field]:
        out = []
        for s in self.subjects:
            out.append(pa.field(f"subject_{s}_p", pa.float32()))
        for a in self.attributes:
            out += [
                pa.field(f"attr_{a}", pa.string()),
                pa.field(f"attr_{a}_margin", pa.float32()),
                pa.field(f"attr_{a}_probs", pa.list_(pa.float32())),
            ]
        if self.concepts is not None:
            out += [pa.field(f"safety_{c}", pa.float32()) for c in self.concepts.names]
            out.append(pa.field("safety_flagged", pa.bool_()))
        if self.checker is not None:
            out += [
                pa.field("sd_checker_cos", pa.list_(pa.float32())),
                pa.field("sd_checker_nsfw", pa.bool_()),
            ]
        return out

    # ---- values -------------------------------------------------------------------------------------------
    def compute(self, image_emb, images_u8=None) -> dict[str, list]:
        """Column -> per-row values for a batch of normalised image embeddings (N x D)."""
        from pipeline.probes import functions as P

        cols, subject_ok = {}, {}
        for s, (present, absent) in self.subjects.items():
            p, ok = P.subject_present(image_emb, present, absent, self.logit_scale)
            cols[f"subject_{s}_p"], subject_ok[s] = p.tolist(), ok
        for a, (spec, classes) in self.attributes.items():
            probs = P.zero_shot(image_emb, classes, self.logit_scale)
            ok = subject_ok.get(self.subject_of.get(a))
            idx = P.decide(probs.cpu(), spec.abstain_margin, None if ok is None else ok.cpu())
            names = spec.class_names
            cols[f"attr_{a}"] = [names[i] if i >= 0 else ABSTAIN for i in idx.tolist()]
            cols[f"attr_{a}_margin"] = P.top_margin(probs).tolist()
            cols[f"attr_{a}_probs"] = probs.float().cpu().tolist()
        if self.concepts is not None:
            f = P.concept_flags(
                image_emb.cpu(),
                self.concept_emb.cpu(),
                self.concepts.thresholds,
                self.concepts.special_care,
                self.concepts.adjustment,
            )
            for j, c in enumerate(self.concepts.names):
                cols[f"safety_{c}"] = f.cos[:, j].tolist()
            cols["safety_flagged"] = f.any_flag.tolist()
        if self.checker is not None and images_u8 is not None:
            cos, nsfw = self.checker(images_u8)
            cols["sd_checker_cos"], cols["sd_checker_nsfw"] = cos, nsfw
        return cols


def describe(attribute_sets=(), concepts: str | None = None, screening: str | None = None) -> dict:
    """What will be probed (class order, margins, thresholds, caveats), from the YAML files alone:
    validates them up front and goes into run.json, where audits read the class order."""
    from pipeline.probes.safety import PromptScreen

    attrs = {}
    for set_name in attribute_sets:
        aset = load_attribute_set(set_name)
        for a, s in aset.attributes.items():
            if a in attrs:
                raise ValueError(f"attribute {a!r} is defined twice (in {set_name!r} and before)")
            attrs[a] = {
                "set": aset.name,
                "classes": s.class_names,
                "abstain_margin": s.abstain_margin,
                "subject": bool(s.subject),
                "caveats": s.caveats,
                "description": s.description,
            }
    cs = load_concepts(concepts) if concepts else None
    if screening:
        PromptScreen.load(screening)
    return {
        "attributes": attrs,
        "screening": screening,
        "concepts": None
        if cs is None
        else {
            "name": cs.name,
            "calibrated": cs.calibrated,
            "clip_model": cs.clip_model,
            "thresholds": dict(zip(cs.names, cs.thresholds)),
        },
    }


def _load_checker(path: str, device, dtype):
    """diffusers' StableDiffusionSafetyChecker from a local directory, returning raw cosines too.
    Its own forward() throws scores away; this runs the same embeddings and threshold logic."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    from pipeline.probes import functions as P
    from pipeline.probes.scorer import OPENAI_MEAN, OPENAI_STD

    model = StableDiffusionSafetyChecker.from_pretrained(path, use_safetensors=True).to(device, dtype).eval()
    size = model.config.vision_config.image_size
    mean = torch.tensor(OPENAI_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD, device=device).view(1, 3, 1, 1)

    def run(images_u8):
        x = torch.nn.functional.interpolate(
            images_u8.to(device).float() / 255, size=(size, size), mode="bicubic", antialias=True
        ).clamp(0, 1)
        with torch.inference_mode():
            emb = model.visual_projection(model.vision_model(((x - mean) / std).to(dtype))[1]).float()
        concepts = torch.cat([model.special_care_embeds, model.concept_embeds]).float()
        thresholds = torch.cat([model.special_care_embeds_weights, model.concept_embeds_weights]).float()
        special = [True] * model.special_care_embeds.shape[0] + [False] * model.concept_embeds.shape[0]
        f = P.concept_flags(emb.cpu(), concepts.cpu(), thresholds.cpu(), special)
        return f.cos.tolist(), f.any_flag.tolist()

    return run
