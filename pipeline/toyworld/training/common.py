"""Shared pieces of the toy-model training scripts: paths, seeds, architectures, tokenizer, log.

Every architecture hyperparameter lives here, with the reason for its value, so the training
scripts, the converter and the evaluation build exactly the same models.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..shipped import CLIP_DIR, LOG_PATH, SD_DIR, WEIGHTS_DIR  # noqa: F401 (re-exported for the stages)

#: Stage outputs before they are packed into SD_DIR / CLIP_DIR (not shipped); train_all adds a
#: sub-directory per --out unless SDGEN_TOY_WORK is set.
WORK_DIR = Path(os.environ.get("SDGEN_TOY_WORK", os.path.join(tempfile.gettempdir(), "sdgen_toy_work")))

# Seeds: one per stage, so a stage can be re-run alone and give the same weights. The world data a
# stage trains on is sample_world((WORLD_SEED, STAGE_ID, step), batch): disjoint streams per stage.
WORLD_SEED = 1234
SEEDS = {"clip": 1, "vae": 2, "unet": 3}  # torch.manual_seed for init/noise of each stage
EVAL_WORLD_SEED = 999_001  # held-out world images for evaluation/tests

CONTEXT_LENGTH = 16  # "a photo of a yellow triangle" is 8 tokens with SOT/EOT; 16 leaves room for paraphrases
TEXT_WIDTH = 64  # the text tower width = the UNet cross-attention dim; 64 separates 17 classes easily
EMBED_DIM = 64  # CLIP joint embedding size

#: open_clip model config of the toy CLIP (open_clip.model.CLIP kwargs).
CLIP_MODEL_CFG = {
    "embed_dim": EMBED_DIM,
    "quick_gelu": False,  # plain GELU: maps to transformers' hidden_act="gelu" in the converted text encoder
    "vision_cfg": {
        "image_size": 64,  # the world's native resolution: no resizing anywhere
        "patch_size": 8,  # 8x8 patches -> 64 tokens; 16 px patches lose the triangle/circle outline
        "width": 64,  # ~0.13 s per batch-128 step on 2 cores; the task is colour + 4 shapes
        "layers": 4,
        "head_width": 32,  # 2 heads
    },
    "text_cfg": {
        "context_length": CONTEXT_LENGTH,
        "vocab_size": 49408,  # the real CLIP BPE vocabulary, so SD's tokenizer works unchanged
        "width": TEXT_WIDTH,
        "heads": 2,  # head width 32, as in the vision tower
        "layers": 2,  # two layers: enough to bind "red" to "circle"; the SD prototype used the same
    },
}
#: Images enter the toy CLIP as [-1, 1] (x / 127.5 - 1) at 64x64: open_clip's Normalize(0.5, 0.5).
CLIP_PREPROCESS_CFG = {
    "size": 64,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}

#: diffusers AutoencoderKL kwargs: 64x64x3 <-> 16x16x4 (two downsamplings, like SD's 8x but 4x).
VAE_CFG = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,  # SD's latent layout
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [
        16,
        32,
        32,
    ],  # measured ~0.17 s/step at batch 16 on 2 cores; shapes are flat colour
    "layers_per_block": 1,
    "norm_num_groups": 8,  # GroupNorm over 16-32 channels
    "sample_size": 64,
    "mid_block_add_attention": False,  # attention at 16x16 costs more than it helps for one flat shape
}

#: diffusers UNet2DConditionModel kwargs on 16x16x4 latents with a 16 x 64 text context.
UNET_CFG = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [32, 64],  # two levels (16x16, 8x8): ~0.3 s per batch-32 step on 2 cores
    "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],  # text attention at both levels:
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],  # colour is global, shape local
    "cross_attention_dim": TEXT_WIDTH,
    "attention_head_dim": 8,  # heads of 8 channels: 4 heads at 32 ch, 8 at 64 ch
    "norm_num_groups": 8,
}

#: DDPM training schedule: SD 1.x's scaled-linear betas, rescaled to zero terminal SNR, with
#: v-prediction (as SD 2.x "-v" models; Lin et al. 2023, "Common diffusion noise schedules and sample
#: steps are flawed"). Why: the colour of "a circle" is decided at the highest noise levels. With
#: epsilon-prediction those levels carry almost no x0 signal in the loss, and SD's schedule never
#: shows the model pure noise, which is where sampling starts; the first toy model trained that way
#: followed colour prompts under guidance but drew "a circle" red only ~50% of the time at guidance 1
#: (the world says 70%). Zero terminal SNR + v-prediction trains exactly the start of sampling.
SCHEDULER_CFG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
    "clip_sample": False,
}


def setup_torch(seed: int) -> None:
    """Seed torch, pin 2 threads, and turn on deterministic kernels for a stage."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(int(os.environ.get("SDGEN_TOY_THREADS", "2")))  # the target machine has 2 cores
    torch.use_deterministic_algorithms(True, warn_only=True)  # free on CPU; same weights every run


def tokenizer():
    """Stable Diffusion's CLIP BPE tokenizer, padded with <|endoftext|> to CONTEXT_LENGTH."""
    from pipeline.generate.tokenizer import clip_tokenizer

    return clip_tokenizer(model_max_length=CONTEXT_LENGTH)


def tokenize(tok, captions: list[str]):
    """Token ids (n, CONTEXT_LENGTH) exactly as StableDiffusionPipeline produces them."""
    return tok(
        list(captions), padding="max_length", max_length=CONTEXT_LENGTH, truncation=True, return_tensors="pt"
    ).input_ids


def world_batch(stage: str, step: int, n: int):
    """The world samples a stage trains on at ``step`` (deterministic, disjoint across stages)."""
    from ..world import sample_world

    return sample_world((WORLD_SEED, list(SEEDS).index(stage), step), n)


class TrainLog:
    """Losses every N steps, wall time and seeds per stage, merged into weights/train_log.json."""

    def __init__(self, stage: str, path: Path | None = None, **info):
        self.stage, self.path, self.t0 = (
            stage,
            Path(path or os.environ.get("SDGEN_TOY_LOG", LOG_PATH)),
            time.time(),
        )
        self.cpu0 = time.process_time()  # CPU seconds: comparable across runs even when the machine is shared
        self.entry = {"seed": SEEDS.get(stage), "world_seed": WORLD_SEED, **info, "losses": []}

    def log(self, step: int, **values) -> None:
        row = {
            "step": step,
            "t": round(time.time() - self.t0, 1),
            **{k: round(float(v), 5) for k, v in values.items()},
        }
        self.entry["losses"].append(row)
        print(f"[{self.stage}] " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)

    def finish(self, **extra) -> dict:
        self.entry.update(
            extra, wall_s=round(time.time() - self.t0, 1), cpu_s=round(time.process_time() - self.cpu0, 1)
        )
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        data[self.stage] = self.entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(data, indent=1))
        return self.entry


def running_mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")
