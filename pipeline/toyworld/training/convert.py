"""Turn the toy CLIP's text tower into a ``transformers.CLIPTextModel`` (Stable Diffusion's text encoder).

This is how SD 1.x is built (OpenAI CLIP's text tower, frozen) and gives the UNet a text embedding
that already separates colours and shapes. open_clip and transformers implement the same
pre-LayerNorm causal transformer; only names differ, and open_clip's fused ``in_proj`` splits into
q/k/v. ``check_equal`` verifies the two produce the same last hidden state on SD-padded tokens.
"""

from __future__ import annotations

from . import common as C


def text_config():
    """CLIPTextConfig matching common.CLIP_MODEL_CFG's text tower."""
    from transformers import CLIPTextConfig

    t = C.CLIP_MODEL_CFG["text_cfg"]
    return CLIPTextConfig(
        vocab_size=t["vocab_size"],
        hidden_size=t["width"],
        intermediate_size=int(4 * t["width"]),
        num_hidden_layers=t["layers"],
        num_attention_heads=t["heads"],
        max_position_embeddings=t["context_length"],
        projection_dim=C.EMBED_DIM,
        hidden_act="quick_gelu" if C.CLIP_MODEL_CFG.get("quick_gelu") else "gelu",
        layer_norm_eps=1e-5,  # torch.nn.LayerNorm's default, which open_clip uses
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,  # SD pads with <|endoftext|>
    )


def text_state_dict(clip_state: dict) -> dict:
    """Map an open_clip CLIP state dict (text tower) to CLIPTextModel parameter names."""
    sd = {
        "text_model.embeddings.token_embedding.weight": clip_state["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": clip_state["positional_embedding"],
        "text_model.final_layer_norm.weight": clip_state["ln_final.weight"],
        "text_model.final_layer_norm.bias": clip_state["ln_final.bias"],
    }
    names = {
        "ln_1": "layer_norm1",
        "ln_2": "layer_norm2",
        "mlp.c_fc": "mlp.fc1",
        "mlp.c_proj": "mlp.fc2",
        "attn.out_proj": "self_attn.out_proj",
    }
    for i in range(C.CLIP_MODEL_CFG["text_cfg"]["layers"]):
        src, dst = f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        for a, b in names.items():
            for p in ("weight", "bias"):
                sd[f"{dst}{b}.{p}"] = clip_state[f"{src}{a}.{p}"]
        for p in ("weight", "bias"):
            q, k, v = clip_state[f"{src}attn.in_proj_{p}"].chunk(3, dim=0)
            for name, tensor in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                sd[f"{dst}self_attn.{name}.{p}"] = tensor
    return {k: v.detach().clone().float().contiguous() for k, v in sd.items()}


def text_encoder_from_clip(clip_model):
    """A frozen fp32 CLIPTextModel with the toy CLIP's text tower weights."""
    from transformers import CLIPTextModel

    model = CLIPTextModel(text_config())
    sd = text_state_dict(clip_model.state_dict())
    if not any(k.startswith("text_model.") for k in model.state_dict()):  # transformers >= 5 drops the prefix
        sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"text tower conversion: missing {missing}, unexpected {unexpected}")
    return model.eval().requires_grad_(False)


def open_clip_hidden_states(clip_model, ids):
    """open_clip's per-token text features after ln_final (what SD calls last_hidden_state)."""
    x = clip_model.token_embedding(ids) + clip_model.positional_embedding
    x = clip_model.transformer(x, attn_mask=clip_model.attn_mask)
    return clip_model.ln_final(x)


def check_equal(
    clip_model, text_encoder, captions=("a red circle", "a photo of a triangle", "", "an x mark")
):
    """Max |difference| of the two implementations on SD-tokenized captions; raises above 1e-4."""
    import torch

    ids = C.tokenize(C.tokenizer(), list(captions))
    with torch.no_grad():
        ref = open_clip_hidden_states(clip_model, ids)
        out = text_encoder(ids).last_hidden_state
    err = float((ref - out).abs().max())
    if err > 1e-4:
        raise RuntimeError(f"converted text encoder differs from open_clip by {err}")
    return err
