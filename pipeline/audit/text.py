"""The audit's tables as text for the terminal (`sdgen audit`, notebooks): one attribute's per-group
table and a run-vs-run comparison, numbers by core.fmt with "-" where there is none."""

from __future__ import annotations

import pandas as pd

from pipeline.audit.runner import jsonable
from pipeline.core.fmt import ci as _ci
from pipeline.core.fmt import num


def _f(x, spec=".2f"):
    """A number of the terminal tables (core.fmt.num): "-" where there is none."""
    return num(x, spec, missing="-")


def _i(pair, spec=".2f"):
    """An interval of the terminal tables: "[low,high]"."""
    return _ci(pair, spec, sep=",", missing="-")


def format_attribute(entry: dict) -> str:
    """One attribute's table: group, n, abstain rate, shares [CI], D² [CI] (or the floor), p, q."""
    classes = entry["classes"]
    tgt = (
        entry["target"]
        if isinstance(entry["target"], str)
        else "per-group"
        if "groups" in entry["target"]
        else "file"
    )
    pooling = (
        "between-prompt correlation pooled over the groups that agree"
        if entry.get("pool_icc", True)
        else "each group from its own prompts"
    )
    head = (
        f"{entry['attribute']} by {' x '.join(entry['group_by'])}: target {tgt}; "
        f"{int(entry['level'] * 100)}% CIs for prompts of this kind (shares: beta-binomial, {pooling}; "
        f"D²: its range over the share intervals; null floor: B={entry['bootstrap']} draws); "
        f"ok rows only; labels from the {entry['labels']}"
    )
    cols = ["group", "n", "abstain"] + classes + ["D2 [CI]", "floor", "p", "q"]
    rows = []
    for g, m in entry["groups"].items():
        p, lo, hi = (m.get(k) or {} for k in ("proportions", "ci_low", "ci_high"))
        shares = [
            f"{_f(p.get(c))} {_i([lo.get(c), hi.get(c)])}" if p.get(c) is not None else "-" for c in classes
        ]
        d2 = (
            f"{_f(m['d2'], '.3f')} {_i(m['d2_ci'], '.3f')}"
            if m.get("d2") is not None
            else f"n<{entry['min_n']}: floor only"
        )
        rows.append(
            [
                g,
                str(m.get("n", 0)),
                _f(m.get("abstain_rate"), ".0%"),
                *shares,
                d2,
                _f(m.get("floor"), ".3f"),
                _f(m.get("p_value"), ".2g"),
                _f(m.get("q_value"), ".2g"),
            ]
        )
    across = entry.get("across") or {}
    foot = (
        f"across groups: chi2={_f(across.get('chi2'))} (dof {across.get('dof')}), "
        f"p={_f(across.get('p'), '.3g')}, "
        f"Cramer's V={_f(across.get('cramers_v'))}"
    )
    return "\n".join([head, _grid([cols, *rows]), foot, *group_notes(entry)])


def group_notes(entry) -> list[str]:
    """What a reader must know of a group's share intervals, one line each (the text and the page):
    too few prompts, and prompts that look like two kinds (the model check in audit/betabinomial.py)."""
    notes = [f"{g}: {m['few_prompts']}" for g, m in entry["groups"].items() if m.get("few_prompts")]
    notes += [
        f"{g}: the prompts look like two kinds for {', '.join(bad)} (not a Beta spread): "
        "that interval also takes in the design-based Korn-Graubard one"
        for g, m in entry["groups"].items()
        if (bad := [c for c, v in (m.get("beta_misfit") or {}).items() if v])
    ]
    return notes


def format_compare(table: pd.DataFrame) -> str:
    cols = ["group", "quantity", "class", "a", "b", "diff (B-A)", "95% CI", "q (BH)", "paired", "note"]
    rows = [
        [
            str(r["group"]),
            str(r["quantity"]),
            "" if pd.isna(r["class"]) else str(r["class"]),
            _f(r["a"], ".3f"),
            _f(r["b"], ".3f"),
            _f(r["diff"], "+.3f"),
            _i([r["ci_low"], r["ci_high"]], "+.3f"),
            _f(r.get("q_value"), ".2g") + ("*" if r.get("flag") else ""),
            str(r["paired"]),
            "" if pd.isna(r["note"]) else str(r["note"]),
        ]
        for r in jsonable(table)
    ]
    return _grid([cols, *rows])


def _grid(rows) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def format_findings(metrics: dict) -> str:
    """What the audit found, before any table: per attribute the groups with a significant disparity
    (BH q < 0.05) with effect and intervals, the groups too small to tell, and the count of the rest."""
    from pipeline.audit.findings import Q, findings

    lines = [f"Findings (disparity from the target, Benjamini-Hochberg q < {Q}):"]
    for f in findings(metrics):
        sig = f["significant"]
        verb = "group differs" if len(sig) == 1 else "groups differ"
        lines.append(f"  {f['attribute']}: {len(sig)} {verb}")
        for s in sig:
            lines.append(
                f"    {s['group']}: {s['class']} {_f(s['share'])} {_i(s['ci'])} vs target {_f(s['target'])} "
                f"({_f(s['effect'], '+.2f')}); D2 {_f(s['d2'], '.3f')} {_i(s['d2_ci'], '.3f')}; "
                f"q={_f(s['q'], '.2g')}; {s['n']} images, {s['n_prompts']} prompts"
            )
        if f["too_small"]:
            told = "; ".join(f"{g} ({why})" for g, why in f["too_small"])
            lines.append(
                f"    too small to tell (`sdgen audit-plan` says how many prompts and images): {told}"
            )
        if f["clear"]:
            lines.append(
                f"    no significant disparity in {f['clear']} group{'s' if f['clear'] != 1 else ''}"
            )
    return "\n".join(lines)
