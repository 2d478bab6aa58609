"""Stage 3: train the toy UNet2DConditionModel on VAE latents, conditioned on the frozen toy-CLIP text tower.

Exactly the pieces the shipped pipeline uses: SD's tokenizer (16 tokens, <|endoftext|> padding), the
converted CLIPTextModel and the autoencoder, both rounded to their fp16 storage precision first,
so what the UNet sees in training is what it sees after ``from_pretrained``. Captions are dropped
(replaced by "") 10% of the time so classifier-free guidance works. "a {shape}" captions carry the
world's colour skews; at guidance 1 the sampler should reproduce them.

Run alone: ``python -m pipeline.toyworld.training.train_unet`` (needs WORK_DIR/clip.safetensors and vae/).
"""

from __future__ import annotations

import math
import os

import numpy as np

from . import common as C

STEPS = int(os.environ.get("SDGEN_TOY_UNET_STEPS", 7000))  # ~35-40 min at ~0.3 s/step on 2 cores
BATCH = 32  # measured 0.3 s/step; colour skews need many "a {shape}" examples, not big batches
LR = 1e-3  # AdamW, warmup then cosine to 10%; a 1M-parameter UNet tolerates this
WARMUP = 200  # linear warmup steps
WEIGHT_DECAY = 0.01  # near zero: unlimited data
CAPTION_DROPOUT = 0.1  # share of "" captions: the unconditional branch classifier-free guidance needs
# Loss: plain MSE on v (no Min-SNR weighting: in x0 terms it would weigh the pure-noise end, where
# colour is decided, by SNR ~ 0, undoing what v-prediction buys; see common.SCHEDULER_CFG).
EMA_DECAY = 0.999  # EMA of the weights is what ships; smooths the last ~1000 steps of noise
LOG_EVERY = 100
CKPT_EVERY = int(os.environ.get("SDGEN_TOY_UNET_CKPT_EVERY", 0))  # 0: no intermediate snapshots


def fp16_round(module):
    """Round a module's weights to fp16 and back (their shipped precision), in place."""
    import torch

    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(torch.float16).float())
    return module


def load_stage_inputs():
    """The frozen text encoder (converted from the toy CLIP) and autoencoder from earlier stages."""
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    from .convert import check_equal, text_encoder_from_clip
    from .train_clip import build_clip

    clip = build_clip()
    clip.load_state_dict(load_file(str(C.WORK_DIR / "clip.safetensors")))
    fp16_round(clip.eval())
    text_encoder = text_encoder_from_clip(clip)
    check_equal(clip, text_encoder)
    vae = fp16_round(AutoencoderKL.from_pretrained(C.WORK_DIR / "vae").eval().requires_grad_(False))
    return text_encoder, vae


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**C.UNET_CFG)


class TextCache:
    """last_hidden_state of each distinct caption, computed once (the world has ~80 distinct captions)."""

    def __init__(self, text_encoder, tok):
        self.te, self.tok, self.cache = text_encoder, tok, {}

    def __call__(self, captions):
        import torch

        new = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if new:
            with torch.no_grad():
                h = self.te(C.tokenize(self.tok, new).to(self.te.device)).last_hidden_state
            self.cache.update(zip(new, h))
        return torch.stack([self.cache[c] for c in captions])


def lr_at(step: int, steps: int) -> float:
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / max(1, steps - WARMUP))))


def diffusion_loss(unet, sched, latents, context, gen):
    """MSE of the UNet's prediction (v or epsilon, per the schedule) at uniformly drawn timesteps.

    Random draws use the CPU generator, so a run on any device sees the same noise and timesteps.
    """
    import torch

    dev = latents.device
    noise = torch.randn(latents.shape, generator=gen).to(dev)
    t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=gen).to(dev)
    pred = unet(sched.add_noise(latents, noise, t), t, context).sample
    v_pred = sched.config.prediction_type == "v_prediction"
    target = sched.get_velocity(latents, noise, t) if v_pred else noise
    return ((pred - target) ** 2).mean()


def encode_latents(vae, images, gen):
    """Scaled posterior samples (SD convention: latent_dist.sample() * scaling_factor)."""
    import torch

    from ..world import to_tensor

    with torch.no_grad():
        post = vae.encode(to_tensor(images).to(vae.device)).latent_dist
        eps = torch.randn(post.mean.shape, generator=gen).to(vae.device)
        return (post.mean + post.std * eps) * vae.config.scaling_factor


def train(steps: int = STEPS, device: str = "cpu"):
    """Train; returns (EMA UNet, text encoder, vae, log). Runs on CPU by default (the shipped weights)."""
    import torch
    from diffusers import DDPMScheduler

    C.setup_torch(C.SEEDS["unet"])
    gen = torch.Generator().manual_seed(C.SEEDS["unet"])
    text_encoder, vae = (m.to(device) for m in load_stage_inputs())
    texts, unet = TextCache(text_encoder, C.tokenizer()), build_unet().to(device)
    ema = [p.detach().clone() for p in unet.parameters()]
    sched = DDPMScheduler(**C.SCHEDULER_CFG)
    opt = torch.optim.AdamW(unet.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    log = C.TrainLog(
        "unet",
        steps=steps,
        batch=BATCH,
        lr=LR,
        caption_dropout=CAPTION_DROPOUT,
        ema_decay=EMA_DECAY,
        schedule=C.SCHEDULER_CFG,
    )
    window = []
    for step in range(steps):
        b = C.world_batch("unet", step, BATCH)
        drop = (torch.rand(BATCH, generator=gen) < CAPTION_DROPOUT).tolist()
        context = texts(["" if d else c for d, c in zip(drop, b.captions)])
        loss = diffusion_loss(unet, sched, encode_latents(vae, b.images, gen), context, gen)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay = min(EMA_DECAY, (1 + step) / (10 + step))  # short memory early, when weights move fast
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in unet.parameters()], 1 - decay)
        window.append(loss.item())
        if (step + 1) % LOG_EVERY == 0 or step == steps - 1:
            log.log(step + 1, loss=np.mean(window), lr=lr_at(step, steps))
            window = []
        if (
            CKPT_EVERY and (step + 1) % CKPT_EVERY == 0
        ):  # optional EMA snapshots, for studying training length
            _with_ema(build_unet(), ema).save_pretrained(C.WORK_DIR / f"unet_step{step + 1}")
    return _with_ema(unet, ema).eval(), text_encoder, vae, log


def _with_ema(unet, ema):
    """Copy EMA weights into ``unet`` (on its device) and return it."""
    import torch

    with torch.no_grad():
        for p, e in zip(unet.parameters(), ema):
            p.copy_(e)
    return unet


def main(steps: int = STEPS) -> None:
    """Train and save the EMA UNet to WORK_DIR/unet/."""
    unet, _, _, log = train(steps)
    unet.save_pretrained(C.WORK_DIR / "unet", safe_serialization=True)
    log.finish()


if __name__ == "__main__":
    main()
