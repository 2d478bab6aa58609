"""`sdgen verify OUTPUT`: regenerate a sample of committed rows from their stored metadata alone
(prompt, negative prompt, seed, size, steps, guidance + run.json's model and scheduler) and
compare with the stored PNGs: byte equality, and the max pixel difference where bytes differ."""

from __future__ import annotations

import io

import numpy as np

from pipeline.core.config import JobConfig
from pipeline.core.dataset import Dataset
from pipeline.core.storage import OutputError
from pipeline.generate.diffusion import Sample, make_batches
from pipeline.generate.families import cuda_dtype
from pipeline.generate.models import torch_threads
from pipeline.generate.partwriter import encode_png
from pipeline.generate.worker import build_generator
from pipeline.probes.scorer import resolve_device_dtype


def _decode(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def pick_rows(ds: Dataset, n: int, seed: int = 0):
    """n committed ok rows, chosen at random with a fixed seed (deterministic); only their images are read."""
    cols = [
        "prompt_id",
        "sample_idx",
        "prompt",
        "negative_prompt",
        "seed",
        "width",
        "height",
        "steps",
        "guidance_scale",
        "status",
    ]
    df = ds.table(columns=cols).to_pandas()
    if df.empty:
        raise OutputError(f"output {ds.url!r} has no committed rows to verify")
    df = df[df["status"] == "ok"].sort_values(["prompt_id", "sample_idx"]).reset_index(drop=True)
    idx = np.random.default_rng(seed).choice(len(df), size=min(n, len(df)), replace=False)
    rows = df.iloc[np.sort(idx)].reset_index(drop=True)
    pngs = ds.images(zip(rows["prompt_id"], rows["sample_idx"]))
    rows["image"] = [{"bytes": pngs[(p, int(i))]} for p, i in zip(rows["prompt_id"], rows["sample_idx"])]
    return rows


def verify(output_url: str, n: int = 8, batch_size: int = 1, storage=None, device: str = "auto") -> dict:
    ds = Dataset(output_url, storage).require_run()
    cfg = JobConfig.model_validate(ds.run["config"] | {"storage": storage.model_dump() if storage else {}})
    rows = pick_rows(ds, n)
    with torch_threads(cfg.ray.num_cpus_per_worker):  # as the run's workers did
        return _regenerate(cfg, rows, batch_size, device)


def _regenerate(cfg: JobConfig, rows, batch_size: int, device: str) -> dict:
    import torch

    dev, dtype = resolve_device_dtype(
        device if device != "auto" else cfg.generation.device,
        cfg.generation.dtype,
        cuda_dtype(cfg.generation.family),
    )
    _, _, gen = build_generator(cfg, dev, dtype)  # the worker's own generation path and settings
    samples = [
        Sample(
            i,
            r.prompt_id,
            int(r.sample_idx),
            r.prompt,
            r.negative_prompt or "",
            int(r.seed),
            int(r.width),
            int(r.height),
            int(r.steps),
            float(r.guidance_scale),
        )
        for i, r in enumerate(rows.itertuples())
    ]
    report = []
    for batch in make_batches(samples, batch_size, gen.by_negative):  # one size and schedule per call
        res = gen.generate(batch)
        images = res.images.permute(0, 2, 3, 1).cpu().numpy()
        for s, img, err in zip(batch, images, res.errors):
            stored = rows.iloc[s.row]["image"]["bytes"]
            png = encode_png(torch.from_numpy(img[None]), 0, None, cfg.write.png_compress_level)[0]
            diff = int(np.abs(_decode(stored).astype(int) - img.astype(int)).max())
            report.append(
                {
                    "row": s.row,
                    "prompt_id": s.prompt_id,
                    "sample_idx": s.sample_idx,
                    "seed": s.seed,
                    "bytes_equal": png == stored,
                    "max_pixel_diff": diff,
                    "error": err,
                }
            )
    report = [{k: v for k, v in r.items() if k != "row"} for r in sorted(report, key=lambda r: r["row"])]
    return {
        "rows": report,
        "n": len(report),
        "bytes_equal": sum(r["bytes_equal"] for r in report),
        "max_pixel_diff": max(r["max_pixel_diff"] for r in report),
        "batch_size": batch_size,
    }
