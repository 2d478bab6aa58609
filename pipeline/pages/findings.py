"""The report's opening section: what the audit found (audit/findings.py), before any chart."""

from __future__ import annotations

from pipeline.audit.findings import Q, findings
from pipeline.core.fmt import ci, num


def findings_section(metrics: dict) -> dict:
    """{"q": Q, "attributes": [{attribute, head, rows, too_small, clear}]} with numbers as text."""
    out = []
    for f in findings(metrics):
        rows = [
            [
                s["group"],
                f"{s['class']} {num(s['share'], '.2f')} {ci(s['ci'], '.2f')}",
                num(s["target"], ".2f"),
                num(s["effect"], "+.2f"),
                f"{num(s['d2'], '.3f')} {ci(s['d2_ci'], '.3f')}",
                num(s["q"], ".2g"),
                f"{s['n']} / {s['n_prompts']}",
            ]
            for s in f["significant"]
        ]
        out.append(
            {
                "attribute": f["attribute"],
                "head": [
                    "group",
                    "class farthest from target: share [CI]",
                    "target",
                    "effect",
                    "D² [CI]",
                    "q (BH)",
                    "images / prompts",
                ],
                "rows": rows,
                "too_small": [f"{g} ({why})" for g, why in f["too_small"]],
                "n_clear": f["clear"],
            }
        )
    return {"q": Q, "attributes": out}
