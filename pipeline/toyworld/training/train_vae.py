"""Stage 2: train the toy AutoencoderKL (64x64x3 <-> 16x16x4) on world images.

With a plain MSE loss the light background dominates and every colour decodes to one olive tone;
foreground pixels are therefore weighted FG_WEIGHT times. The stage ends by checking that
reconstructions keep their colour and shape (pixel analysis) and by measuring the latent scale
(``scaling_factor``, SD's 0.18215) that makes scaled latents unit-variance for the UNet.

Run alone: ``python -m pipeline.toyworld.training.train_vae`` (writes WORK_DIR/vae/).
"""

from __future__ import annotations

import math

import numpy as np

from . import common as C

STEPS = 1500  # colour is right after ~400 steps; the rest sharpens edges (~5 min on 2 cores)
BATCH = 16  # 0.17 s/step; larger batches buy little for a 0.23M-parameter model
LR = 1e-3  # Adam; cosine decay to 10% so the final weights settle
FG_WEIGHT = 5.0  # foreground pixels count 5x in the MSE (the prototype's fix for colour collapse)
KL_WEIGHT = 1e-4  # per latent element; keeps the posterior near N(0, I)-shaped without blurring
LOG_EVERY = 50


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**C.VAE_CFG)


def lr_at(step: int, steps: int) -> float:
    return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, steps))))


def vae_loss(vae, x, mask, gen):
    """Foreground-weighted MSE of a posterior sample's reconstruction, plus KL; returns (loss, mse)."""
    import torch

    post = vae.encode(x).latent_dist
    z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
    rec = vae.decode(z).sample
    w = 1.0 + (FG_WEIGHT - 1.0) * mask[:, None].float()
    mse = (w * (rec - x) ** 2).sum() / (w.sum() * 3)
    kl = post.kl().sum() / post.mean.numel()
    return mse + KL_WEIGHT * kl, mse


def train(steps: int = STEPS):
    """Train and return the autoencoder; logs into weights/train_log.json under "vae"."""
    import torch

    from ..world import to_tensor

    C.setup_torch(C.SEEDS["vae"])
    gen = torch.Generator().manual_seed(C.SEEDS["vae"])
    vae = build_vae()
    opt = torch.optim.Adam(vae.parameters(), lr=LR)
    log = C.TrainLog("vae", steps=steps, batch=BATCH, lr=LR, fg_weight=FG_WEIGHT, kl_weight=KL_WEIGHT)
    window = []
    for step in range(steps):
        b = C.world_batch("vae", step, BATCH)
        loss, mse = vae_loss(vae, to_tensor(b.images), torch.from_numpy(b.masks), gen)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append(mse.item())
        if (step + 1) % LOG_EVERY == 0 or step == steps - 1:
            log.log(step + 1, weighted_mse=np.mean(window))
            window = []
    return vae.eval(), log


def check_reconstruction(vae, n: int = 256) -> dict:
    """Colour/shape of reconstructions of held-out images (pixel analysis), and the latent scale."""
    import torch

    from ..analysis import dominant_colour, shape_of
    from ..world import from_tensor, sample_world, to_tensor

    b = sample_world((C.EVAL_WORLD_SEED, 1), n)
    with torch.no_grad():
        post = vae.encode(to_tensor(b.images)).latent_dist
        rec = from_tensor(vae.decode(post.mean).sample)
        z = post.sample(generator=torch.Generator().manual_seed(0))
    colours, shapes = dominant_colour(rec), shape_of(rec)
    return {
        "n_images": n,
        "colour_acc": float(np.mean([a == b_ for a, b_ in zip(colours, b.colours)])),
        "shape_acc": float(np.mean([a == b_ for a, b_ in zip(shapes, b.shapes)])),
        "mean_abs_err": float(np.abs(rec.astype(float) - b.images).mean()),
        "latent_mean": [round(float(v), 4) for v in z.mean((0, 2, 3))],
        "latent_std": float(z.std()),
        "scaling_factor": float(1.0 / z.std()),
    }


def main(steps: int = STEPS, strict: bool = True) -> None:
    """Train, check reconstructions (stop if colour is lost and ``strict``), save WORK_DIR/vae/."""
    vae, log = train(steps)
    report = check_reconstruction(vae)
    print("[vae] reconstruction:", report, flush=True)
    if strict and report["colour_acc"] < 0.95:
        raise SystemExit(
            f"autoencoder loses colour ({report['colour_acc']:.1%}); do not train the UNet on it"
        )
    vae.register_to_config(scaling_factor=round(report["scaling_factor"], 5))
    vae.save_pretrained(C.WORK_DIR / "vae", safe_serialization=True)
    log.finish(reconstruction=report)


if __name__ == "__main__":
    main()
