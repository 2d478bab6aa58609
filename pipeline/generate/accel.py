"""GPU speed levers applied to a loaded pipeline, once per actor (issue 11; keys under `accel:` in
config.py, plus generation.compile / generation.channels_last).

Numerics-preserving (within the 2/255 batch-composition tolerance): fused QKV projections,
channels_last UNet/VAE, torch.compile of the whole UNet or only its repeated transformer blocks
(regional), CUDA graphs (compile mode reduce-overhead), a persistent compile cache, and a bounded
number of compiled shapes (later shapes run eager instead of recompiling). Numerics-changing, so
fingerprinted and recorded: FP8 (torchao float8 on the UNet's linear layers, CUDA only).

`apply` returns what was done; the worker stores it in every commit marker (per-shard provenance).
"""

from __future__ import annotations

import os

from pipeline.generate import families
from pipeline.generate.models import ModelError


class AccelError(ModelError):
    """An acceleration option cannot run here; the message names the key (`sdgen: error`, exit 2)."""


def set_compile_cache(path: str) -> None:
    """Point inductor's FX-graph/autotune cache and Triton's kernel cache at `path` (a shared disk
    makes a second actor's compile mostly cache hits). Must run before the first compile."""
    import torch

    os.makedirs(path, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(path, "triton"))
    torch._inductor.config.fx_graph_cache = True


def _fp8(unet, device) -> None:
    if device.type != "cuda":
        raise AccelError(
            f"accel.fp8 needs a CUDA device (float8 matmuls are sm89+), got device {str(device)!r}"
        )
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_
    except ImportError as e:
        raise AccelError(f"accel.fp8 needs torchao (pip install torchao): {e}") from None
    quantize_(unet, Float8DynamicActivationFloat8WeightConfig())


def compile_denoiser(pipe, scope: str, mode: str, max_shapes: int) -> None:
    """torch.compile the denoiser (UNet or transformer) with static shapes, at most `max_shapes`
    (w, h, batch) variants; dynamo runs eager beyond that instead of recompiling. Regional compiles
    its repeated blocks only (FLUX's 19 double- and 38 single-stream blocks compile once each kind)."""
    import torch

    torch._dynamo.config.cache_size_limit = max_shapes
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = max_shapes
    kwargs = {"dynamic": False} if mode == "default" else {"dynamic": False, "mode": mode}
    name = "unet" if families.denoiser(pipe) is getattr(pipe, "unet", None) else "transformer"
    net = getattr(pipe, name)
    if scope == "regional" and getattr(net, "_repeated_blocks", None):
        net.compile_repeated_blocks(fullgraph=True, **kwargs)
    elif scope == "regional":  # SD3, PixArt-Σ, Sana name no repeated blocks: compile each block in place
        for blocks in (getattr(net, n, None) for n in ("transformer_blocks", "single_transformer_blocks")):
            for block in blocks or ():
                block.compile(fullgraph=True, **kwargs)
    else:
        setattr(pipe, name, torch.compile(getattr(pipe, name), **kwargs))


def apply(pipe, cfg, device) -> dict:
    """Apply the configured levers in a safe order (fuse, layout, quantise, compile); returns them."""
    import torch

    g, a = cfg.generation, cfg.accel
    done: dict = {}
    if a.cpu_offload:
        done["cpu_offload"] = True  # applied while loading (models.load_pipeline)
    if a.compile_cache_dir:
        set_compile_cache(a.compile_cache_dir)
        done["compile_cache_dir"] = a.compile_cache_dir
    if a.fuse_qkv:
        # SD/SDXL pipelines fuse UNet and VAE; the transformer families fuse on the model itself
        target = pipe if hasattr(pipe, "fuse_qkv_projections") else families.denoiser(pipe)
        target.fuse_qkv_projections()
        done["fuse_qkv"] = True
    if g.channels_last and hasattr(pipe, "unet"):  # a transformer's tokens have no memory format
        pipe.unet.to(memory_format=torch.channels_last)
        done["channels_last"] = True
    if a.channels_last_vae:
        pipe.vae.to(memory_format=torch.channels_last)
        done["channels_last_vae"] = True
    if a.fp8:
        _fp8(families.denoiser(pipe), device)
        done["fp8"] = "torchao float8 dynamic activation + weight, denoiser linear layers"
    if g.compile:
        compile_denoiser(pipe, a.compile_scope, a.compile_mode, a.max_compiled_shapes)
        done["compile"] = {
            "scope": a.compile_scope,
            "mode": a.compile_mode,
            "max_shapes": a.max_compiled_shapes,
            "pad_batches": a.pad_batches,
        }
    return done
