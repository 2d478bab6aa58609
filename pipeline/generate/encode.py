"""Prompt embeddings once per unique (prompt, negative prompt) pair of a batch (issue 11).

diffusers encodes every row of a batch, so a prompt with 8 images runs the text encoder 8 times.
Here the batch's unique pairs are encoded once with the pipeline's own ``encode_prompt`` (same
tokenizer, padding, clip-skip and SDXL pooling as a plain call) and indexed back to one row per
sample; the pipeline then receives ``prompt_embeds`` / ``negative_prompt_embeds`` (and SDXL's pooled
embeddings). Pipelines without ``encode_prompt`` get None and are called with text as before.
"""

from __future__ import annotations


def uses_cfg(pipe, guidance_scale: float) -> bool:
    """diffusers' rule: CFG when guidance > 1 and the UNet has no guidance embedding (LCM-style)."""
    return guidance_scale > 1 and getattr(pipe.unet.config, "time_cond_proj_dim", None) is None


def unique_pairs(prompts: list[str], negatives: list[str]) -> tuple[list[tuple[str, str]], list[int]]:
    """(unique pairs in first-appearance order, index of each row's pair)."""
    order: dict[tuple[str, str], int] = {}
    index = [order.setdefault(pair, len(order)) for pair in zip(prompts, negatives)]
    return list(order), index


def embed_batch(pipe, prompts: list[str], negatives: list[str], guidance_scale: float, device) -> dict | None:
    """Keyword arguments for ``pipe(...)`` carrying the embeddings of every row, or None when this
    pipeline cannot take embeddings (the caller passes text then)."""
    import torch

    if not hasattr(pipe, "encode_prompt"):
        return None
    pairs, index = unique_pairs(prompts, negatives)
    cfg = uses_cfg(pipe, guidance_scale)
    u_prompts, u_negs = [p for p, _ in pairs], [n for _, n in pairs]
    xl = hasattr(pipe, "text_encoder_2")
    if xl:
        out = pipe.encode_prompt(
            u_prompts,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=cfg,
            negative_prompt=u_negs,
        )
        names = (
            "prompt_embeds",
            "negative_prompt_embeds",
            "pooled_prompt_embeds",
            "negative_pooled_prompt_embeds",
        )
    else:
        out = pipe.encode_prompt(u_prompts, device, 1, cfg, negative_prompt=u_negs)
        names = ("prompt_embeds", "negative_prompt_embeds")
    rows = torch.tensor(index, device=out[0].device)
    kwargs = {
        name: t.index_select(0, rows)
        for name, t in zip(names, out)
        if t is not None and (cfg or "negative" not in name)
    }
    return kwargs
