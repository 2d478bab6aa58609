"""Prompt embeddings once per unique (prompt, negative prompt) pair of a batch (issue 11), per family.

diffusers encodes every row of a batch, so a prompt with 8 images runs the text encoders (T5-XXL's
4.7B parameters for FLUX and SD3) 8 times. Here the batch's unique pairs are encoded once with the
pipeline's own ``encode_prompt`` (same tokenizers, padding, clip-skip, pooling, max_sequence_length and
the call's own defaults such as PixArt's caption cleaning and Sana's instruction prefix) and indexed
back to one row per sample; the pipeline then receives the embeddings instead of text. Pipelines
without ``encode_prompt`` get None and are called with text as before.
"""

from __future__ import annotations

import inspect

from pipeline.generate.families import Family


def unique_pairs(prompts: list[str], negatives: list[str]) -> tuple[list[tuple[str, str]], list[int]]:
    """(unique pairs in first-appearance order, index of each row's pair)."""
    order: dict[tuple[str, str], int] = {}
    index = [order.setdefault(pair, len(order)) for pair in zip(prompts, negatives)]
    return list(order), index


def call_default(pipe, name: str):
    """The default of `name` in the pipeline's __call__ (what a plain call encodes with)."""
    p = inspect.signature(type(pipe).__call__).parameters.get(name)
    return None if p is None else p.default


def _sd(pipe, prompts, negs, cfg, device, msl):
    if hasattr(pipe, "text_encoder_2"):  # SDXL: two CLIPs and pooled embeddings
        out = pipe.encode_prompt(
            prompts,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=cfg,
            negative_prompt=negs,
        )
        return out, (
            "prompt_embeds",
            "negative_prompt_embeds",
            "pooled_prompt_embeds",
            "negative_pooled_prompt_embeds",
        )
    return pipe.encode_prompt(prompts, device, 1, cfg, negative_prompt=negs), (
        "prompt_embeds",
        "negative_prompt_embeds",
    )


def _sd3(pipe, prompts, negs, cfg, device, msl):
    out = pipe.encode_prompt(
        prompt=prompts,
        prompt_2=None,
        prompt_3=None,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=cfg,
        negative_prompt=negs,
        max_sequence_length=msl,
    )
    return out, (
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    )


def _flux(pipe, prompts, negs, cfg, device, msl):
    def enc(texts):
        embeds, pooled, _ids = pipe.encode_prompt(
            prompt=texts, prompt_2=None, device=device, num_images_per_prompt=1, max_sequence_length=msl
        )
        return embeds, pooled

    out = enc(prompts) + (enc(negs) if cfg else (None, None))  # true CFG only with negatives
    return out, (
        "prompt_embeds",
        "pooled_prompt_embeds",
        "negative_prompt_embeds",
        "negative_pooled_prompt_embeds",
    )


def _pixart_sana(pipe, prompts, negs, cfg, device, msl):
    extra = {"clean_caption": call_default(pipe, "clean_caption")}
    if "complex_human_instruction" in inspect.signature(pipe.encode_prompt).parameters:
        extra["complex_human_instruction"] = call_default(pipe, "complex_human_instruction")  # Sana
    out = pipe.encode_prompt(
        prompts,
        do_classifier_free_guidance=cfg,
        negative_prompt=negs,
        num_images_per_prompt=1,
        device=device,
        max_sequence_length=msl,
        **extra,
    )
    names = (
        "prompt_embeds",
        "prompt_attention_mask",
        "negative_prompt_embeds",
        "negative_prompt_attention_mask",
    )
    return out, names


# families whose __call__ defaults negative_prompt to "" and refuses it beside negative_prompt_embeds
NEGATIVE_TEXT_DEFAULT = ("pixart-sigma", "sana")

ENCODERS = {
    "sd3": _sd3,
    "flux-dev": _flux,
    "flux-schnell": _flux,
    "pixart-sigma": _pixart_sana,
    "sana": _pixart_sana,
}


def embed_batch(
    pipe, fam: Family, prompts: list[str], negatives: list[str], cfg: bool, device, msl=None
) -> dict | None:
    """Keyword arguments for ``pipe(...)`` carrying the embeddings of every row, or None when this
    pipeline cannot take embeddings (the caller passes text then). `cfg`: whether the call guides
    (families.uses_cfg)."""
    import torch

    if not hasattr(pipe, "encode_prompt"):
        return None
    pairs, index = unique_pairs(prompts, negatives)
    u_prompts, u_negs = [p for p, _ in pairs], [n for _, n in pairs]
    out, names = ENCODERS.get(fam.name, _sd)(pipe, u_prompts, u_negs, cfg, device, msl)
    rows = torch.tensor(index, device=out[0].device)
    kwargs = {
        name: t.index_select(0, rows)
        for name, t in zip(names, out)
        if t is not None and (cfg or "negative" not in name)
    }
    if fam.name in NEGATIVE_TEXT_DEFAULT:
        kwargs["negative_prompt"] = None  # the embeddings above carry it
    return kwargs
