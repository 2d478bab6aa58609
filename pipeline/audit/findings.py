"""What an audit found, first (`sdgen audit` prints it before the tables; the report opens with it):
per attribute, the groups whose disparity from the target is significant after Benjamini–Hochberg
(q < Q), each with its effect (the class farthest from its target share: share − target, with the
share's interval) and D² with its interval; then the groups too small to tell (fewer than the
audit's min_n images, or fewer than 3 prompts, or no labelled image) and why; then how many groups
were tested and showed no significant disparity. Numbers only: text and pages format them."""

from __future__ import annotations

import numpy as np

from pipeline.audit.intervals import FEW_PROMPTS
from pipeline.audit.stats import resolve_target

Q = 0.05  # BH level a finding must pass


def _effect(m: dict, classes: list[str], t) -> dict:
    """The class whose share is farthest from its target share, with the share's interval."""
    shares = np.array([m["proportions"][c] for c in classes], float)
    k = int(np.nanargmax(np.abs(shares - t)))
    c = classes[k]
    return {
        "class": c,
        "share": float(shares[k]),
        "target": float(t[k]),
        "effect": float(shares[k] - t[k]),
        "ci": (m["ci_low"][c], m["ci_high"][c]),
    }


def _too_small(m: dict, min_n: int) -> str | None:
    """Why a group's disparity cannot be told apart from noise, or None."""
    n, P = m.get("n", 0), m.get("n_prompts", 0)
    if not n:
        return "no labelled image"
    if n < min_n:
        return f"{n} images (< {min_n})"
    if P < FEW_PROMPTS:
        return (
            f"{P} prompt{'s' if P != 1 else ''} (< {FEW_PROMPTS}): no estimate of the between-prompt spread"
        )
    return None


def attribute_findings(entry: dict) -> dict:
    """{attribute, significant: [...], too_small: [(group, why)], clear: n} for one audited attribute."""
    classes = list(entry["classes"])
    target = entry["target"]
    significant, small, clear = [], [], 0
    for g, m in entry["groups"].items():
        why = _too_small(m, entry.get("min_n", 0))
        if why:
            small.append((g, why))
            continue
        q = m.get("q_value")
        t = resolve_target(m.get("target", target), classes)
        if q is not None and q < Q:
            significant.append(
                {
                    "group": g,
                    "q": q,
                    "n": m["n"],
                    "n_prompts": m["n_prompts"],
                    "d2": m.get("d2"),
                    "d2_ci": m.get("d2_ci"),
                    **_effect(m, classes, t),
                }
            )
        else:
            clear += 1
    significant.sort(key=lambda f: (f["q"], -abs(f["effect"])))
    return {"attribute": entry["attribute"], "significant": significant, "too_small": small, "clear": clear}


def findings(metrics: dict) -> list[dict]:
    """attribute_findings for every attribute of an audit's metrics, in the audit's order."""
    return [attribute_findings(e) for e in ((metrics or {}).get("attributes") or {}).values()]
