"""Where the shipped toy-world weights live and the settings they were evaluated at.

The runtime (``model: toy``) needs only this; the training scripts in ``training/`` write here.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SD_DIR = WEIGHTS_DIR / "sd"  # a diffusers StableDiffusionPipeline directory
CLIP_DIR = WEIGHTS_DIR / "clip"  # an open_clip local-dir model
LOG_PATH = WEIGHTS_DIR / "train_log.json"  # what the last training run did (stages, seconds, hashes)

#: The toy preset's default sampler: DPM-Solver++(2M) is accurate in 20 steps on this model.
DEFAULT_STEPS = 20
# 1.0 (CFG off): follows colour/shape words (99.8% / 100%) AND reproduces the world's colour skews of
# "a {shape}" (within 0.05 at 200/shape); guidance > 1 amplifies them (eval_report.json), and costs 2x
DEFAULT_GUIDANCE = 1.0
