"""Stage 1: train the toy CLIP (open_clip custom config) contrastively on the world.

The world has only ~60 distinct captions, so a batch holds many captions that are true of several
images ("a circle" is true of every circle). Plain CLIP loss would push those apart as negatives;
we use the multi-positive form instead: the target of image i over the batch's texts is uniform
over the texts whose named attributes all match image i (and symmetrically for texts).

Run alone: ``python -m pipeline.toyworld.training.train_clip`` (writes WORK_DIR/clip.safetensors).
"""

from __future__ import annotations

import math

import numpy as np

from . import common as C

STEPS = 1000  # held-out zero-shot is ~99% after 300 steps; 1000 adds margin (~3 min on 2 cores)
BATCH = 128  # ~40 distinct captions per batch: enough negatives for 17 classes
LR = 1e-3  # AdamW; small transformers from scratch tolerate 1e-3 with warmup
WARMUP = 100  # linear warmup steps, then cosine decay to 10% of LR
WEIGHT_DECAY = 0.05  # mild: the data is unlimited, overfitting is not the risk
NOISE_STD = 0.06  # Gaussian pixel noise (in [-1, 1] units, ~8/255): robustness to generated images
BLUR_P = 0.5  # share of images blurred 3x3: generated images are softer than renders
LOG_EVERY = 50


def build_clip():
    """An untrained toy CLIP (open_clip.model.CLIP)."""
    from open_clip.model import CLIP

    cfg = dict(C.CLIP_MODEL_CFG)
    return CLIP(**cfg)


def compatibility(batch) -> np.ndarray:
    """(n, n) bool: caption j is true of image i (every attribute caption j names matches image i)."""
    shapes, colours = np.asarray(batch.shapes), np.asarray(batch.colours)
    kinds = np.asarray(batch.kinds)
    names_shape = kinds != "colour"  # "a {colour} shape" leaves the shape open
    names_colour = kinds != "shape"  # "a {shape}" leaves the colour open (x: black, always)
    same_shape = shapes[:, None] == shapes[None, :]
    same_colour = colours[:, None] == colours[None, :]
    return (same_shape | ~names_shape[None, :]) & (same_colour | ~names_colour[None, :])


def augment(x, gen):
    """Blur half the images (3x3 box) and add Gaussian noise, using the stage's generator."""
    import torch
    import torch.nn.functional as F

    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    pick = (torch.rand(x.shape[0], 1, 1, 1, generator=gen) < BLUR_P).float()
    x = pick * blurred + (1 - pick) * x
    return x + NOISE_STD * torch.randn(x.shape, generator=gen)


def multi_positive_loss(model, img, txt, compat):
    """Symmetric CLIP loss with soft targets spread over all compatible pairs."""
    import torch

    fi = model.encode_image(img, normalize=True)
    ft = model.encode_text(txt, normalize=True)
    logits = model.logit_scale.exp().clamp(max=100) * fi @ ft.T
    target = torch.from_numpy(compat).float()
    li = -(target / target.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    lt = -(target.T / target.T.sum(1, keepdim=True) * logits.T.log_softmax(1)).sum(1).mean()
    return (li + lt) / 2


def lr_at(step: int) -> float:
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, STEPS - WARMUP)
    return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(steps: int = STEPS):
    """Train and return the toy CLIP; logs into weights/train_log.json under "clip"."""
    import torch

    from ..world import to_tensor

    C.setup_torch(C.SEEDS["clip"])
    gen = torch.Generator().manual_seed(C.SEEDS["clip"])
    model, tok = build_clip(), C.tokenizer()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}],
        lr=LR,
        betas=(0.9, 0.98),
    )
    log = C.TrainLog("clip", steps=steps, batch=BATCH, lr=LR)
    window = []
    for step in range(steps):
        b = C.world_batch("clip", step, BATCH)
        loss = multi_positive_loss(
            model, augment(to_tensor(b.images), gen), C.tokenize(tok, b.captions), compatibility(b)
        )
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append(loss.item())
        if (step + 1) % LOG_EVERY == 0 or step == steps - 1:
            log.log(step + 1, loss=np.mean(window), logit_scale=model.logit_scale.exp().item())
            window = []
    model.eval()
    return model, log


def held_out_report(model, n: int = 1000) -> dict:
    """Zero-shot report (probes.zero_shot_report) on n held-out world images."""
    from ..probes import ToyClipProbe, zero_shot_report
    from ..world import sample_world

    b = sample_world((C.EVAL_WORLD_SEED, 0), n)
    tok = C.tokenizer()
    return zero_shot_report(ToyClipProbe(model, lambda t: C.tokenize(tok, t)), b.images, b.shapes, b.colours)


def main(steps: int = STEPS) -> None:
    """Train, report held-out zero-shot accuracy, save WORK_DIR/clip.safetensors."""
    from safetensors.torch import save_file

    model, log = train(steps)
    report = held_out_report(model)
    print("[clip] held-out:", report, flush=True)
    C.WORK_DIR.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(C.WORK_DIR / "clip.safetensors")
    )
    log.finish(held_out=report)


if __name__ == "__main__":
    main()
