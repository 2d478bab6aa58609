"""Probe calibration (`sdgen audit ... --calibrate LABELS.parquet`): the probe's confusion matrix from a
labelled subset, and error-corrected shares with intervals that carry the labelled set's uncertainty.

LABELS holds prompt_id, sample_idx, label (the true class) for some audited images. For true class k
and predicted j (a class, or abstain) A[k, j] = P(probe says j | truth k); a group whose probe output
shares are q satisfies q = πA, π the true shares. The corrected π̂ is the maximum-likelihood π on the
simplex given the group's predicted counts and A, found by EM (Saerens et al. 2002): it never leaves
the simplex, needs no solver, and weights each predicted class by its counts (a least-squares fit
weights them equally). A is estimated per group, row by row: true class k uses the group's own
labelled rows of class k when there are at least ``min_row`` of them, else the pooled rows (so a
probe whose errors differ by group is corrected with that group's errors where the labels allow).

Labelled rows are post-stratified: ``sdgen label`` samples evenly per (group, predicted class)
stratum, so a rare predicted class is over-represented among the labels and the raw confusion
counts would misstate P(pred | truth). Each labelled row of stratum (g, j) counts N_gj / n_gj times
(its stratum's images over its labelled images; scaled so all weights average to one), which makes
the weighted counts estimate the population's (truth, prediction) table; with a group's own rows EM
then returns the post-stratified estimate Σ_j q_j P̂(truth | pred j). A uniform random label sample
gets weights near one. A stratum with images but no labels gets a warning: nothing says what its
images really are.

Intervals: B bootstrap replicates resample the group's prompts then seeds, each image carrying its
prediction and (if labelled) its true class, so the group's confusion rows and predicted counts are
re-drawn together (the labelled images are among the audited ones: resampling them apart would count
their noise twice), the stratum weights recomputed from each replicate's counts; pooled fallback rows
come from a resample of the whole labelled set with its weights as drawn. EM on each
replicate; percentile intervals. Corrected D² = Σ(π̂ − t)² − Σ Var*(π̂_k), the bootstrap variance standing
in for
the sampling variance the plug-in adds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as st

from pipeline.audit import bootstrap as BS
from pipeline.audit import stats as S
from pipeline.audit.spec import CALIBRATION_BOOTSTRAP

CORRECTED_COLUMNS = ["proportion_corrected", "ci_low_corrected", "ci_high_corrected"]
SMOOTH = 0.1  # pseudo-count per confusion cell: a predicted class never seen for a truth keeps P > 0
MIN_LABELS = 100  # below this many labelled rows the corrected intervals are wide: warn
MIN_ROW = 20  # labelled rows of a true class a group needs to use its own confusion row
MAX_COND = 10.0  # condition number of A above which the correction amplifies noise: warn


class CalibrationError(ValueError):
    pass


def read_labels(path, classes) -> pd.DataFrame:
    """LABELS file (Parquet or CSV) → prompt_id (str), sample_idx (int), label; errors name row and value."""
    df = pd.read_csv(path) if str(path).endswith(".csv") else pd.read_parquet(path)
    missing = [c for c in ("prompt_id", "sample_idx", "label") if c not in df.columns]
    if missing:
        raise CalibrationError(f"--calibrate {path}: column {missing[0]!r} missing (has {list(df.columns)})")
    df = df[["prompt_id", "sample_idx", "label"]].copy()
    blank = df["label"].isna() | (df["label"].astype(str).str.strip() == "")
    df = df[~blank]
    bad = df[~df["label"].isin(list(classes))]
    if len(bad):
        i = bad.index[0]
        raise CalibrationError(
            f"--calibrate {path}: row {i}, column 'label': {bad.loc[i, 'label']!r} is not "
            f"one of {list(classes)}"
        )
    df["prompt_id"] = df["prompt_id"].astype(str)
    df["sample_idx"] = pd.to_numeric(df["sample_idx"], errors="raise").astype(np.int64)
    if df.duplicated(["prompt_id", "sample_idx"]).any():
        k = df[df.duplicated(["prompt_id", "sample_idx"])].iloc[0]
        raise CalibrationError(f"--calibrate {path}: image ({k.prompt_id!r}, {k.sample_idx}) labelled twice")
    return df.reset_index(drop=True)


def confusion_counts(true_codes, pred_codes, K, groups=None, G=1, weights=None):
    """Counts G × K × (K+1) (pred K = abstain) of (group, truth, prediction) triples, each counted
    ``weights`` times when given (float counts then)."""
    t, p = np.asarray(true_codes), np.asarray(pred_codes)
    p = np.where(p < 0, K, p)
    g = np.zeros_like(t) if groups is None else np.asarray(groups)
    flat = np.bincount((g * K + t) * (K + 1) + p, weights=weights, minlength=G * K * (K + 1))
    return flat.reshape(G, K, K + 1)


def stratum_weights(all_groups, all_codes, lab_groups, lab_codes, G, K):
    """Post-stratification weight of each labelled row: N_gj / n_gj of its (group g, predicted code j)
    stratum (codes 0..K, K = abstain), times n / N so the weights average to one over the labels;
    also the strata (g, j) that hold images but no labels."""
    N = np.bincount(np.asarray(all_groups) * (K + 1) + all_codes, minlength=G * (K + 1)).astype(float)
    lab = np.asarray(lab_groups) * (K + 1) + lab_codes
    n = np.bincount(lab, minlength=G * (K + 1)).astype(float)
    w = N[lab] / n[lab] * (len(lab) / N.sum())
    unlabelled = [divmod(int(i), K + 1) for i in np.flatnonzero((N > 0) & (n == 0))]
    return w, unlabelled


def confusion_probs(counts, pooled=None, min_row=MIN_ROW):
    """Row-normalised confusion (smoothed); rows with < min_row labels come from ``pooled`` (same shape)."""
    c = np.asarray(counts, float)
    if pooled is not None:
        c = np.where(c.sum(-1, keepdims=True) >= min_row, c, pooled)
    c = c + SMOOTH
    return c / c.sum(-1, keepdims=True)


def em_correct(q_counts, A, iters=2000, tol=1e-10):
    """ML true shares π (…, K) on the simplex from predicted counts (…, K+1) and A (…, K, K+1); vectorised."""
    q = np.asarray(q_counts, float)
    A = np.asarray(A, float)
    K = A.shape[-2]
    pi = np.full(q.shape[:-1] + (K,), 1.0 / K)
    n = q.sum(-1, keepdims=True)
    for _ in range(iters):
        joint = pi[..., :, None] * A  # (…, K, K+1): P(truth k, pred j)
        post = joint / joint.sum(-2, keepdims=True)
        new = (post * q[..., None, :]).sum(-1) / n
        if np.max(np.abs(new - pi)) < tol:
            return new
        pi = new
    return pi


def accuracy_table(counts, classes, level=S.LEVEL):
    """Per true class: labelled n, correct, accuracy with a Wilson interval (scipy), abstain rate."""
    out = {}
    for k, c in enumerate(classes):
        n, ok = int(counts[k].sum()), int(counts[k, k])
        ci = st.binomtest(ok, n).proportion_ci(level, method="wilson") if n else None
        out[c] = {
            "n": n,
            "correct": ok,
            "accuracy": ok / n if n else None,
            "ci": (float(ci.low), float(ci.high)) if ci else None,
            "abstain_rate": float(counts[k, -1] / n) if n else None,
        }
    return out


def _warnings(counts, A, classes):
    w = []
    L = int(counts.sum())
    if L < MIN_LABELS:
        w.append(f"only {L} labelled images (< {MIN_LABELS}): corrected intervals are wide")
    for k, c in enumerate(classes):
        if counts[k].sum() < 10:
            w.append(
                f"class {c!r} has {int(counts[k].sum())} labelled images (< 10): its confusion row is a guess"
            )
    cond = float(np.linalg.cond(A))
    if not np.isfinite(cond) or cond > MAX_COND:
        w.append(
            f"confusion matrix is near-singular (condition number {cond:.1f} > {MAX_COND:g}): the "
            f"probe confuses classes so much that correction amplifies noise"
        )
    return w, cond


def _unlabelled_warnings(unlabelled, groups, g_all, codes, classes):
    names = [*classes, S.ABSTAIN]
    return [
        f"group {groups[a]!r}: {int(np.sum((g_all == a) & (codes == j)))} images predicted {names[j]!r} but "
        f"none labelled: their truth is guessed from the other strata"
        for a, j in unlabelled
    ]


def _pooled_row_warnings(counts, pooled, use_own, groups, classes, level=S.LEVEL, min_seen=5):
    """Groups that fall back to the pooled row of true class k although the Wilson interval of their
    own accuracy on k (from ≥ ``min_seen`` labels) excludes the pooled accuracy: the probe errs
    differently there, and the pooled row then biases that group's corrected shares."""
    out = []
    for a, g in enumerate(groups):
        for k, c in enumerate(classes):
            n, ok = int(counts[a, k].sum()), int(counts[a, k, k])
            if use_own[a, k, 0] or n < min_seen or not pooled[k].sum():
                continue
            ci = st.binomtest(ok, n).proportion_ci(level, method="wilson")
            p = float(pooled[k, k] / pooled[k].sum())
            if not ci.low <= p <= ci.high:
                out.append(
                    f"group {g!r}: true {c!r} uses the pooled confusion row (accuracy {p:.2f}) but its own "
                    f"{n} labels give {ok / n:.2f} [{ci.low:.2f},{ci.high:.2f}]: label more of it "
                    f"(>= {MIN_ROW} for its own row)"
                )
    return out


def _corrected_group(g, i, ctx, t, target, classes, B, seed, level):
    """Corrected shares of group ``g`` (index ``i``) with their joint hierarchical bootstrap CIs."""
    keys, pred, prompts, truth, counts, wcounts, pooled, use_own, bc, scale = (
        ctx[k]
        for k in ("keys", "pred", "prompts", "truth", "counts", "wcounts", "pooled", "use_own", "bc", "scale")
    )
    K = len(classes)
    sel = (keys == g).to_numpy()
    codes = np.where(pred[sel] < 0, K, pred[sel])
    q = np.bincount(codes, minlength=K + 1)
    A = confusion_probs(np.where(use_own[i], wcounts[i], pooled))
    pi = em_correct(q, A)
    # one hierarchical bootstrap of the group's images (prompts, then seeds) with each image's
    # (truth or unlabelled, prediction) as its category: the labelled rows move with their images
    joint = S.prompt_table(prompts[sel], truth[sel] * (K + 1) + codes, (K + 1) ** 2)
    jb = BS.bootstrap_tables(np.random.default_rng(np.random.SeedSequence([int(seed), i, 13])), [joint], B)[0]
    jb = jb.reshape(B, K + 1, K + 1).astype(float)
    qb, own_b = jb.sum(1), jb[:, :K]
    # the replicate's stratum weights: its images over its labelled images per predicted class
    own_b = own_b * (qb / np.maximum(own_b.sum(1), 1) * scale)[:, None, :]
    Ab = confusion_probs(np.where(use_own[i], own_b, bc.sum(1)))
    pib = em_correct(qb, Ab)
    lo, hi = BS.percentile_ci(pib, level)
    tg = t if t is not None else S.resolve_target(target["groups"].get(g, target["default"]), classes)
    var = pib.var(0, ddof=1)
    d2 = float(((pi - tg) ** 2).sum() - var.sum())
    d2b = ((pib - tg) ** 2).sum(1) - var.sum()
    dlo, dhi = BS.percentile_ci(d2b, level)
    rows = [(g, c, float(pi[k]), float(lo[k]), float(hi[k])) for k, c in enumerate(classes)]
    entry = {
        "proportions_corrected": dict(zip(classes, pi.tolist())),
        "ci_low_corrected": dict(zip(classes, lo.tolist())),
        "ci_high_corrected": dict(zip(classes, hi.tolist())),
        "mad_corrected": float(S.mad(pi, tg)),
        "d2_corrected": d2,
        "d2_ci_corrected": (float(dlo), float(dhi)),
        "labelled": int(counts[i].sum()),
        "own_confusion_rows": [c for k, c in enumerate(classes) if use_own[i, k, 0]],
        "confusion": counts[i].astype(int).tolist(),
        "accuracy": accuracy_table(counts[i], classes, level),
    }
    return rows, entry


def calibrate_groups(
    rows,
    label_col,
    classes,
    labels,
    keys,
    target="uniform",
    B=CALIBRATION_BOOTSTRAP,
    seed=0,
    level=S.LEVEL,
    min_row=MIN_ROW,
):
    """Corrected shares per group → (summary additions DataFrame, calibration entry for metrics.json).

    ``rows``: the audited ok rows (prompt_id, sample_idx, ``label_col``); ``keys``: their group keys
    (a Series aligned with ``rows``); ``labels``: ``read_labels`` output.
    """
    classes, K = list(classes), len(classes)
    t = S.resolve_target(target, classes) if not isinstance(target, dict) or "groups" not in target else None
    pred = S.encode_labels(rows[label_col], classes)
    li, lt, hit = _match_labels(rows, labels, classes)
    groups = sorted(keys.unique())
    gi = {g: i for i, g in enumerate(groups)}
    g_all = np.array([gi[g] for g in keys.to_numpy()])
    lp, lg, G, L = pred[li], g_all[li], len(groups), len(li)
    codes = np.where(pred < 0, K, pred)
    w, unlabelled = stratum_weights(g_all, codes, lg, codes[li], G, K)
    counts = confusion_counts(lt, lp, K, lg, G)  # as labelled: accuracy, the own-row rule
    wcounts = confusion_counts(lt, lp, K, lg, G, weights=w)  # post-stratified: the estimates
    pooled = wcounts.sum(0)
    A_pool = confusion_probs(pooled)
    warn, cond = _warnings(counts.sum(0), A_pool, classes)
    warn += _unlabelled_warnings(unlabelled, groups, g_all, codes, classes)
    use_own = counts.sum(-1, keepdims=True) >= min_row  # G × K × 1: decided on the labelled set as drawn
    warn += _pooled_row_warnings(counts, pooled, use_own, groups, classes, level)
    truth = np.full(len(rows), K)  # K = not labelled
    truth[li] = lt
    ctx = {
        "keys": keys,
        "pred": pred,
        "prompts": S._prompt_strings(rows["prompt_id"]),
        "truth": truth,
        "counts": counts,
        "wcounts": wcounts,
        "pooled": pooled,
        "use_own": use_own,
        "bc": _replicate_confusions(lg, lt, lp, w, G, K, B, seed),
        "scale": L / len(rows),
    }
    rows_out, entry_groups = [], {}
    for g in groups:
        rows_g, entry_groups[g] = _corrected_group(g, gi[g], ctx, t, target, classes, B, seed, level)
        rows_out += rows_g
    add = pd.DataFrame(rows_out, columns=["group", "class", *CORRECTED_COLUMNS])
    entry = {
        "labels": L,
        "labels_unmatched": int((~hit).sum()),
        "bootstrap": B,
        "method": "EM (ML on the simplex)",
        "confusion_columns": [*classes, S.ABSTAIN],
        **_confusion_fields(counts.sum(0), pooled, A_pool, classes, level),
        "condition_number": cond,
        "warnings": warn,
        "groups": entry_groups,
    }
    return add, entry


def _match_labels(rows, labels, classes):
    """The labelled images among the audited rows: (their positions in ``rows``, their true class codes,
    which LABELS rows matched), matched on (prompt_id, sample_idx)."""
    key_idx = pd.MultiIndex.from_arrays([rows["prompt_id"].astype(str), rows["sample_idx"].astype(np.int64)])
    pos = pd.Series(np.arange(len(rows)), index=key_idx)
    hit = labels.set_index(["prompt_id", "sample_idx"]).index.isin(key_idx)
    lab = labels[hit]
    if lab.empty:
        raise CalibrationError(
            "--calibrate: no labelled image is among the audited rows (match on prompt_id, sample_idx)"
        )
    li = pos.loc[list(zip(lab["prompt_id"], lab["sample_idx"]))].to_numpy()
    return li, S.encode_labels(lab["label"], classes), hit


def _replicate_confusions(lg, lt, lp, w, G, K, B, seed):
    """B × G × K × (K + 1) weighted confusion counts (group, true class, predicted class or abstain) of
    the labelled rows resampled with replacement: one draw for all groups, so their errors stay joint."""
    L = len(lt)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 13]))
    draws = rng.integers(0, L, size=(B, L))
    flat = ((np.arange(B)[:, None] * G + lg[draws]) * K + lt[draws]) * (K + 1) + np.where(
        lp[draws] < 0, K, lp[draws]
    )
    return np.bincount(flat.ravel(), weights=w[draws].ravel(), minlength=B * G * K * (K + 1)).reshape(
        B, G, K, K + 1
    )


def _confusion_fields(counts, pooled, probs, classes, level) -> dict:
    """The pooled confusion as labelled and post-stratified, its row probabilities and the accuracies."""
    return {
        "confusion": counts.astype(int).tolist(),
        "confusion_weighted": pooled.tolist(),
        "confusion_probs": probs.tolist(),
        "accuracy": accuracy_table(counts, classes, level),
        "accuracy_weighted": {
            c: float(pooled[k, k] / pooled[k].sum()) if pooled[k].sum() else None
            for k, c in enumerate(classes)
        },
    }


def format_calibration(attribute, entry) -> str:
    """A few lines: per-class accuracy [Wilson CI], warnings, corrected shares per group."""
    acc = ", ".join(
        f"{c} {a['accuracy']:.2f} [{a['ci'][0]:.2f},{a['ci'][1]:.2f}] (n={a['n']})"
        for c, a in entry["accuracy"].items()
        if a["n"]
    )
    lines = [f"{attribute} calibration: {entry['labels']} labelled images; accuracy per true class: {acc}"]
    lines += [f"  warning: {w}" for w in entry["warnings"]]
    for g, m in entry["groups"].items():
        sh = ", ".join(
            f"{c} {p:.2f} [{m['ci_low_corrected'][c]:.2f},{m['ci_high_corrected'][c]:.2f}]"
            for c, p in m["proportions_corrected"].items()
        )
        lines.append(f"  {g}: corrected {sh}; D2 {m['d2_corrected']:.3f} ({m['labelled']} labelled)")
    return "\n".join(lines)


def apply_calibration(
    labelled, attribute, group_by, summary, entry, path, B=CALIBRATION_BOOTSTRAP, seed=0, level=S.LEVEL
):
    """Add the corrected columns to one attribute's summary rows and its ``calibration`` entry."""
    from pipeline.audit.tables import group_keys

    classes = entry["classes"]
    ok = labelled[labelled["status"] == "ok"].reset_index(drop=True)
    add, cal = calibrate_groups(
        ok,
        f"attr_{attribute}",
        classes,
        read_labels(path, classes),
        group_keys(ok, group_by),
        entry["target"],
        B=B,
        seed=seed,
        level=level,
    )
    cal["file"] = str(path)
    return summary.merge(add, on=["group", "class"], how="left"), {**entry, "calibration": cal}
