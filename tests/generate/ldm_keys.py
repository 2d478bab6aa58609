"""Test helper: a diffusers SD1.x pipeline's weights in the original (LDM) single-file key layout,
written for the tiny model so `from_single_file` can be tested offline. diffusers ships only the
other direction (original -> diffusers), which is what the loader under test runs."""

from __future__ import annotations

RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
]
VAE_RESNET = [("conv_shortcut", "nin_shortcut")]
VAE_ATTN = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]


def _sub(rest: str, pairs) -> str:
    for new, old in pairs:
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    return rest


def _unet_key(k: str, layers: int) -> str:
    top = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    for new, old in top.items():
        if k.startswith(new + "."):
            return old + k[len(new) :]
    p = k.split(".")
    if p[0] == "down_blocks":
        i, kind = int(p[1]), p[2]
        if kind == "downsamplers":
            return f"input_blocks.{(layers + 1) * (i + 1)}.0.op." + ".".join(p[5:])
        j, rest = int(p[3]), ".".join(p[4:])
        slot = 0 if kind == "resnets" else 1
        return f"input_blocks.{(layers + 1) * i + j + 1}.{slot}." + (
            _sub(rest, RESNET) if slot == 0 else rest
        )
    if p[0] == "mid_block":
        slot = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}[f"{p[1]}.{p[2]}"]
        rest = ".".join(p[3:])
        return f"middle_block.{slot}." + (_sub(rest, RESNET) if slot != 1 else rest)
    if p[0] == "up_blocks":
        i, kind = int(p[1]), p[2]
        if kind == "upsamplers":
            return f"output_blocks.{(layers + 1) * i + layers}.UPS.conv." + ".".join(p[5:])
        j, rest = int(p[3]), ".".join(p[4:])
        slot = 0 if kind == "resnets" else 1
        return f"output_blocks.{(layers + 1) * i + j}.{slot}." + (_sub(rest, RESNET) if slot == 0 else rest)
    raise KeyError(k)


def _vae_key(k: str, n_blocks: int) -> tuple[str, bool]:
    """(original key, whether a linear weight becomes a 1x1 conv)."""
    p = k.split(".")
    if p[0] in ("quant_conv", "post_quant_conv"):
        return k, False
    side, rest = p[0], p[1:]
    if rest[0] in ("conv_in", "conv_out"):
        return k, False
    if rest[0] == "conv_norm_out":
        return f"{side}.norm_out." + ".".join(rest[1:]), False
    if rest[0] == "mid_block":
        if rest[1] == "attentions":
            sub = _sub(".".join(rest[3:]), VAE_ATTN)
            return f"{side}.mid.attn_1." + sub, sub.split(".")[0] in ("q", "k", "v", "proj_out")
        return f"{side}.mid.block_{int(rest[2]) + 1}." + _sub(".".join(rest[3:]), VAE_RESNET), False
    i = int(rest[1])
    level = i if side == "encoder" else n_blocks - 1 - i
    group = "down" if side == "encoder" else "up"
    if rest[2] in ("downsamplers", "upsamplers"):
        return f"{side}.{group}.{level}.{rest[2][:-2]}.conv." + ".".join(rest[5:]), False
    return f"{side}.{group}.{level}.block.{rest[3]}." + _sub(".".join(rest[4:]), VAE_RESNET), False


def to_original(pipe) -> dict:
    """{original key: tensor} of the UNet (model.diffusion_model.), VAE (first_stage_model.) and text
    encoder (cond_stage_model.transformer.)."""
    out, layers = {}, pipe.unet.config.layers_per_block
    has_attn = ["CrossAttn" in t for t in pipe.unet.config.up_block_types]
    for k, v in pipe.unet.state_dict().items():
        key = _unet_key(k, layers)
        if ".UPS." in key:
            key = key.replace(".UPS.", ".2." if has_attn[int(k.split(".")[1])] else ".1.")
        out["model.diffusion_model." + key] = v
    n = len(pipe.vae.config.block_out_channels)
    for k, v in pipe.vae.state_dict().items():
        key, conv = _vae_key(k, n)
        out["first_stage_model." + key] = v[..., None, None] if conv and v.ndim == 2 else v
    for k, v in pipe.text_encoder.state_dict().items():
        out["cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k)] = v
    return {k: v.contiguous() for k, v in out.items()}
