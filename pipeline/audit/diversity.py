"""Image diversity per prompt and per group, from CLIP image embeddings (issue 12, AUDIT.md "Diversity").

    vendi        exp(entropy of the eigenvalues of K / n), K = the cosine-similarity matrix of the n
                 images (Friedman & Dieng 2023): 1 when all images are alike, n when all are orthogonal;
                 "the effective number of distinct images"
    mean_cos     mean cosine similarity over pairs i != j: higher = more alike (mode collapse)

Both come with percentile bootstrap CIs: per prompt over its seeds; per group over prompts, then seeds
(as the attribute audit). Resampling with replacement repeats images, which lowers Vendi and raises
mean_cos in a replicate, so the intervals are wide and slightly shifted for small n: compare groups of
similar size. Embeddings: the stored `clip_image_embedding` column (write.embeddings), else the stored
PNGs encoded by the run's CLIP (kept at OUTPUT/audit/embeddings.parquet and reused while rows match).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.audit.data import KEYS, AuditError, Source, decode_batch, iter_images, read_rows
from pipeline.audit.tables import group_keys
from pipeline.core.storage import read_frame

REPLICATES = 200  # bootstrap replicates for diversity (an eigen-decomposition each; intervals are rough)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def weighted_vendi(x: np.ndarray, w: np.ndarray) -> float:
    """Vendi score of normalised rows x with multiplicities w (a bootstrap replicate's counts)."""
    w = np.asarray(w, np.float64)
    keep = w > 0
    x, w = x[keep], w[keep] / w[keep].sum()
    if len(x) <= x.shape[1]:  # n x n: sqrt(w) G sqrt(w) has the eigenvalues of the weighted K / n
        s = np.sqrt(w)
        m = (x @ x.T) * s[:, None] * s[None, :]
    else:  # d x d: sum_i w_i x_i x_i^T, same non-zero eigenvalues
        m = (x * w[:, None]).T @ x
    lam = np.clip(np.linalg.eigvalsh(m), 0, None)
    lam = lam[lam > 1e-12]
    return float(np.exp(-(lam * np.log(lam)).sum()))


def weighted_mean_cos(x: np.ndarray, w: np.ndarray) -> float:
    """Mean cosine over ordered pairs of distinct positions (copies of one image count as pairs)."""
    w = np.asarray(w, np.float64)
    n = w.sum()
    if n < 2:
        return float("nan")
    s = (x * w[:, None]).sum(0)
    return float((s @ s - (w * (x * x).sum(1)).sum()) / (n * (n - 1)))


def diversity(x: np.ndarray) -> dict:
    x = _normalise(x)
    w = np.ones(len(x))
    return {"n": len(x), "vendi": weighted_vendi(x, w), "mean_cos": weighted_mean_cos(x, w)}


def _ci(values) -> tuple[float, float]:
    v = np.asarray([a for a in values if np.isfinite(a)])
    return (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) if len(v) else (np.nan, np.nan)


def _with_ci(x: np.ndarray, weight_draws) -> dict:
    x = _normalise(x)
    out = diversity(x)
    draws = list(weight_draws)
    out["vendi_ci"] = _ci(weighted_vendi(x, w) for w in draws)
    out["mean_cos_ci"] = _ci(weighted_mean_cos(x, w) for w in draws)
    return out


def per_prompt(x: np.ndarray, rng, B: int = REPLICATES) -> dict:
    n = len(x)
    return _with_ci(x, (np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(B)))


def per_group(x: np.ndarray, prompt_codes: np.ndarray, rng, B: int = REPLICATES) -> dict:
    """Hierarchical bootstrap: prompts with replacement, then seeds within each drawn prompt."""
    members = [np.flatnonzero(prompt_codes == c) for c in np.unique(prompt_codes)]

    def draw():
        w = np.zeros(len(x))
        for p in rng.integers(0, len(members), len(members)):
            m = members[p]
            np.add.at(w, m[rng.integers(0, len(m), len(m))], 1)
        return w

    return {**_with_ci(x, (draw() for _ in range(B))), "prompts": len(members)}


# ---------------------------------------------------------------- embeddings of an output
def embeddings(
    src: Source, df: pd.DataFrame, clip_model=None, clip_weights=None, device="auto"
) -> np.ndarray:
    """One embedding row per row of ``df`` (ok rows; NaN rows where none): stored, else post-hoc."""
    if "clip_image_embedding" in df.columns:
        have = df["clip_image_embedding"].notna().to_numpy()
        if have.all() or have[df["status"].to_numpy() == "ok"].all():
            dim = len(df.loc[have, "clip_image_embedding"].iloc[0])
            return np.stack(
                [
                    np.asarray(e, np.float32) if e is not None else np.full(dim, np.nan, np.float32)
                    for e in df["clip_image_embedding"]
                ]
            )
    table = _posthoc_embeddings(src, clip_model, clip_weights, device)
    emb = df[KEYS].merge(table.astype({"sample_idx": df["sample_idx"].dtype}), on=KEYS, how="left")["emb"]
    dim = len(next(e for e in emb if e is not None))
    return np.stack(
        [np.asarray(e, np.float32) if e is not None else np.full(dim, np.nan, np.float32) for e in emb]
    )


def _posthoc_embeddings(src: Source, clip_model, clip_weights, device) -> pd.DataFrame:
    import torch

    from pipeline.audit.data import _clip_spec, _keys_hash
    from pipeline.probes.scorer import ClipScorer, check_scorer_spec, resolve_device_dtype

    keys = read_rows(src, columns=KEYS)
    khash = _keys_hash(keys)
    clip, weights = _clip_spec(src, clip_model, clip_weights)
    path, meta_path = f"{src.audit_dir}/embeddings.parquet", f"{src.audit_dir}/embeddings.json"
    meta = src.output.read_json(meta_path) or {}
    if meta.get("keys_sha256") == khash and (meta.get("clip_model"), meta.get("clip_weights")) == (
        clip,
        weights,
    ):
        return read_frame(src.fs, path)
    check_scorer_spec(clip, weights)
    dev, dtype = resolve_device_dtype(device, "auto")
    scorer = ClipScorer(clip, weights, dev, dtype)
    emb = [None] * len(keys)
    for offset, pngs in iter_images(src, 64):
        for positions, u8 in decode_batch(pngs).values():
            e = scorer.encode_images(torch.from_numpy(u8)).cpu().numpy().astype(np.float16)
            for p, v in zip(positions, e):
                emb[offset + p] = v
    table = pd.DataFrame(
        {"prompt_id": keys["prompt_id"].astype(str), "sample_idx": keys["sample_idx"], "emb": emb}
    )
    src.output.write_table(path, table)
    src.output.write_json(
        meta_path, {"clip_model": clip, "clip_weights": weights, "rows": len(keys), "keys_sha256": khash}
    )
    return table


def diversity_metrics(
    src: Source, df: pd.DataFrame, group_by, seed: int = 0, B: int = REPLICATES, **probe_args
) -> dict:
    """{"per_prompt": [...], "per_group": [...]} over the ok rows of ``df`` (after --where)."""
    ok = df[df["status"] == "ok"].reset_index(drop=True)
    if ok.empty:
        raise AuditError("diversity: no ok rows")
    args = {k: probe_args.get(k) for k in ("clip_model", "clip_weights")}
    x = embeddings(src, ok, device=probe_args.get("device") or "auto", **args)
    good = np.isfinite(x).all(1)
    ok, x = ok[good].reset_index(drop=True), x[good]
    rng = np.random.default_rng(seed)
    # each column's values as the audit's group keys (text, "<NA>" for missing): a column of lists or
    # arrays groups like any other instead of failing in pandas, and groups match the share tables'
    keys = pd.DataFrame({c: group_keys(ok, [c]) for c in group_by})
    prompts = []
    for pid, idx in ok.groupby("prompt_id", sort=True).indices.items():
        if len(idx) >= 2:
            row = ok.iloc[idx[0]]
            prompts.append(
                {
                    "prompt_id": pid,
                    "prompt": row.get("prompt"),
                    **{g: keys[g].iloc[idx[0]] for g in group_by},
                    **per_prompt(x[idx], rng, B),
                }
            )
    groups = []
    for key, idx in keys.groupby(list(group_by), sort=True).indices.items():
        key = key if isinstance(key, tuple) else (key,)
        codes = pd.factorize(ok["prompt_id"].to_numpy()[idx])[0]
        groups.append(
            {
                "group": " / ".join(map(str, key)),
                **dict(zip(group_by, key)),
                **per_group(x[idx], codes, rng, B),
            }
        )
    return {
        "group_by": list(group_by),
        "replicates": B,
        "embedding": "clip_image_embedding" if "clip_image_embedding" in df.columns else "posthoc",
        "per_prompt": prompts,
        "per_group": groups,
    }
