"""Safety policy: keep / flag / blur / drop decisions from the raw score columns, as new data.

docs/AUDIT.md ("Per-image columns"): detectors store raw numbers; the policy is a separate step that can
be re-run with other thresholds without regenerating. `sdgen filter OUTPUT --policy POLICY.yaml`
never rewrites a committed part; it writes

    OUTPUT/policy/<name>/decisions.parquet  prompt_id, sample_idx, decision, rule, threshold, score
    OUTPUT/policy/<name>/policy.yaml        the policy as applied (after --threshold overrides)
    OUTPUT/policy/<name>/policy.json        fingerprint, counts, the run it was applied to

A policy file:

    name: toyworld
    default: keep                 # decision when no rule matches
    blur_radius: 8                # PIL GaussianBlur radius for `blur` (materialised datasets, reports)
    rules:                        # every rule is tested; the most severe matching action wins
      - {name: x_mark, when: "safety_x_mark > 0.25", action: drop}
      - {name: concept, when: safety_flagged, action: blur}        # a bare column: true = match
      - {name: unsure, when: "attr_colour == abstain", action: flag}
    dedup: phash                  # optional: join OUTPUT/dedup/<name>/decisions.parquet (sdgen dedup),
                                  # so rules can read `duplicate` (bool) and `distance`, e.g.
                                  # {name: near_duplicate, when: duplicate, action: drop}

Severity: keep < flag < blur < drop (ties: the earlier rule). A comparison with a missing value
never matches. Rows the prompt screen blocked stay `blocked` whatever the rules say; failed and
invalid rows (no image) are `drop` with rule "status:<status>".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import layout
from pipeline.core.schema import BLOCKED, OK

ACTIONS = ("keep", "flag", "blur", "drop")  # in increasing severity
OPS = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
WHEN = re.compile(r"^\s*([A-Za-z_][\w]*)\s*(?:(>=|<=|==|!=|>|<)\s*(\S.*?))?\s*$")
DECISION_COLUMNS = ["prompt_id", "sample_idx", "decision", "rule", "threshold", "score"]


class PolicyError(ValueError):
    """A bad policy file or a rule that does not fit the output; the message echoes the value."""


@dataclass
class Rule:
    name: str
    column: str
    op: str | None  # None: the column itself is the condition (bool)
    value: object
    action: str
    if_missing: str = "error"  # the output lacks the column: error (default) | skip this rule

    @property
    def when(self) -> str:
        return self.column if self.op is None else f"{self.column} {self.op} {self.value}"

    def evaluate(self, col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """(match mask, score per row) for this rule over one column; missing values never match."""
        present = col.notna().to_numpy()
        if self.op is None:
            if not (pd.api.types.is_bool_dtype(col) or col.dropna().isin([True, False]).all()):
                raise PolicyError(
                    f"rule {self.name!r}: when {self.column!r} alone needs a bool column; "
                    f"got values like {col.dropna().iloc[0]!r}; write a comparison instead"
                )
            match = present & col.fillna(False).astype(bool).to_numpy()
        else:
            numeric = isinstance(self.value, (int, float)) and not isinstance(self.value, bool)
            values = col.dropna().infer_objects()
            if numeric and len(values) and not pd.api.types.is_numeric_dtype(values):
                raise PolicyError(
                    f"rule {self.name!r}: {self.column!r} is not numeric "
                    f"(values like {col.dropna().iloc[0]!r}), cannot test {self.when!r}"
                )
            filled = col.where(col.notna(), other=np.nan if numeric else None)
            match = present & np.asarray(OPS[self.op](filled, self.value), bool)
        numeric_rule = self.op is None or (
            isinstance(self.value, (int, float)) and not isinstance(self.value, bool)
        )
        score = (
            pd.to_numeric(col, errors="coerce").to_numpy(float) if numeric_rule else np.full(len(col), np.nan)
        )
        return match, score  # bools score 1.0 / 0.0; a text comparison has no score


@dataclass
class Policy:
    name: str
    rules: list[Rule]
    default: str = "keep"
    blur_radius: float = 8.0
    description: str = ""
    source: str = ""
    overrides: dict = field(default_factory=dict)
    dedup: str | None = None  # name of the sdgen dedup decisions joined before deciding

    def as_dict(self) -> dict:
        """The effective policy (what policy.yaml holds); parse(as_dict()) gives the same policy."""
        rules = [
            {
                "name": r.name,
                "when": r.when,
                "action": r.action,
                **({"if_missing": "skip"} if r.if_missing == "skip" else {}),
            }
            for r in self.rules
        ]
        return {
            "name": self.name,
            "description": self.description,
            "default": self.default,
            "blur_radius": self.blur_radius,
            "rules": rules,
            **({"dedup": self.dedup} if self.dedup else {}),
        }

    def fingerprint(self) -> str:
        """sha256 of what decides (rules, default, blur radius): equal fingerprints, equal decisions."""
        d = {k: v for k, v in self.as_dict().items() if k not in ("description", "name")}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def columns(self) -> list[str]:
        return list(dict.fromkeys(r.column for r in self.rules))


def _parse_rule(i: int, r) -> Rule:
    if (
        not isinstance(r, dict)
        or set(r) - {"name", "when", "action", "if_missing"}
        or not {"when", "action"} <= set(r)
    ):
        raise PolicyError(
            f"rules[{i}] must be a mapping with keys name, when, action (and if_missing); got {r!r}"
        )
    name = str(r.get("name") or f"rule{i}")
    m = WHEN.match(str(r["when"]))
    if not m:
        raise PolicyError(
            f"rule {name!r}: when must be 'COLUMN OP VALUE' (OP one of {' '.join(OPS)}) "
            f"or a bool COLUMN, got {r['when']!r}"
        )
    if r["action"] not in ACTIONS:
        raise PolicyError(f"rule {name!r}: action must be one of {', '.join(ACTIONS)}, got {r['action']!r}")
    import yaml

    value = None if m.group(2) is None else yaml.safe_load(m.group(3))
    if m.group(2) in (">", ">=", "<", "<=") and (
        isinstance(value, bool) or not isinstance(value, (int, float))
    ):
        raise PolicyError(f"rule {name!r}: {m.group(2)} needs a number, got {m.group(3)!r}")
    if r.get("if_missing", "error") not in ("error", "skip"):
        raise PolicyError(f"rule {name!r}: if_missing must be error or skip, got {r['if_missing']!r}")
    return Rule(name, m.group(1), m.group(2), value, r["action"], r.get("if_missing", "error"))


def parse_policy(raw: dict, source: str = "<dict>", overrides=()) -> Policy:
    """Validate a policy mapping; overrides "RULE=VALUE" replace a rule's threshold."""
    if not isinstance(raw, dict):
        raise PolicyError(f"policy {source} must be a YAML mapping, got {type(raw).__name__}")
    unknown = set(raw) - {"name", "description", "default", "blur_radius", "rules", "dedup"}
    if unknown:
        raise PolicyError(f"policy {source}: unknown keys {sorted(unknown)}")
    rules = raw.get("rules")
    if not isinstance(rules, list) or not rules:
        raise PolicyError(f"policy {source}: 'rules' must be a non-empty list, got {rules!r}")
    parsed = [_parse_rule(i, r) for i, r in enumerate(rules)]
    names = [r.name for r in parsed]
    if len(set(names)) != len(names):
        raise PolicyError(f"policy {source}: rule names must be unique, got {names}")
    default = raw.get("default", "keep")
    if default not in ACTIONS:
        raise PolicyError(f"policy {source}: default must be one of {', '.join(ACTIONS)}, got {default!r}")
    radius = raw.get("blur_radius", 8.0)
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or radius <= 0:
        raise PolicyError(f"policy {source}: blur_radius must be a number > 0, got {radius!r}")
    pol = Policy(
        str(raw.get("name") or Path(source).stem),
        parsed,
        default,
        float(radius),
        str(raw.get("description", "")).strip(),
        source,
    )
    pol.dedup = str(raw["dedup"]) if raw.get("dedup") else None
    _apply_overrides(pol, overrides)
    return pol


def _apply_overrides(pol: Policy, overrides) -> None:
    import yaml

    by_name = {r.name: r for r in pol.rules}
    for item in overrides:
        name, sep, value = str(item).partition("=")
        rule = by_name.get(name.strip())
        if not sep or rule is None or rule.op is None:
            raise PolicyError(
                f"--threshold expects RULE=VALUE for a rule with a comparison "
                f"({[r.name for r in pol.rules if r.op]}), got {item!r}"
            )
        new = yaml.safe_load(value)
        if rule.op in (">", ">=", "<", "<=") and (isinstance(new, bool) or not isinstance(new, (int, float))):
            raise PolicyError(
                f"--threshold {item!r}: rule {rule.name!r} compares with {rule.op}, needs a number"
            )
        rule.value = new
        pol.overrides[rule.name] = new


def load_policy(path, overrides=()) -> Policy:
    from pipeline.core.config import read_yaml

    raw = read_yaml(str(path), "policy", PolicyError)
    return parse_policy(raw, str(path), overrides)


# ---------------------------------------------------------------- decisions
def active_rules(columns, policy: Policy) -> list[Rule]:
    """The rules whose column exists; a missing column is an error unless the rule says skip."""
    scores = [c for c in columns if c.startswith(("safety_", "attr_", "sd_checker", "subject_"))]
    for r in policy.rules:
        if r.column not in columns and r.if_missing == "error":
            raise PolicyError(
                f"rule {r.name!r} reads column {r.column!r}, which this output does not have "
                f"(score columns present: {scores}); add if_missing: skip to the rule to allow that"
            )
    active = [r for r in policy.rules if r.column in columns]
    if not active:
        raise PolicyError(
            f"no rule of policy {policy.name!r} applies: none of {policy.columns()} is a column "
            f"of this output (score columns present: {scores})"
        )
    return active


def decide(df: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """One decision per row of ``df`` (needs prompt_id, sample_idx, status and the rules' columns)."""
    rules = active_rules(df.columns, policy)
    n = len(df)
    severity = np.full(n, ACTIONS.index(policy.default))
    rule = np.full(n, None, dtype=object)
    threshold, score = np.full(n, np.nan), np.full(n, np.nan)
    for r in rules:
        match, s = r.evaluate(df[r.column].reset_index(drop=True))
        wins = match & (ACTIONS.index(r.action) > np.where(rule == None, -1, severity))  # noqa: E711
        severity[wins], rule[wins], score[wins] = ACTIONS.index(r.action), r.name, s[wins]
        if isinstance(r.value, (int, float)) and not isinstance(r.value, bool):
            threshold[wins] = r.value
    decision = np.array(ACTIONS, dtype=object)[severity]
    status = df["status"].to_numpy(object)
    blocked, no_image = status == BLOCKED, (status != OK) & (status != BLOCKED)
    decision[blocked], rule[blocked] = "blocked", "screening"
    decision[no_image], rule[no_image] = "drop", np.char.add("status:", status[no_image].astype(str))
    threshold[blocked | no_image], score[blocked | no_image] = np.nan, np.nan
    return pd.DataFrame(
        {
            "prompt_id": df["prompt_id"].to_numpy(),
            "sample_idx": df["sample_idx"].to_numpy(),
            "decision": decision,
            "rule": rule,
            "threshold": threshold,
            "score": score,
        },
        columns=DECISION_COLUMNS,
    )


def policy_dir(output, name: str) -> str:
    if not re.fullmatch(r"[\w.-]+", name):
        raise PolicyError(
            f"policy name {name!r} must use letters, digits, '.', '_' or '-' (it names a folder)"
        )
    return output.path(layout.policy_file(name))


def apply_policy(output_url: str, policy: Policy, name: str | None = None, storage=None) -> dict:
    """Decide every committed row and write the decisions beside the parts; returns the record."""
    import yaml

    from pipeline.core.dataset import Dataset

    ds = Dataset(output_url, storage)
    out, run = ds.output, ds.run
    if run is None:
        raise PolicyError(f"{output_url!r} is not an sdgen output (no run.json)")
    names = ds.columns()
    df = ds.table(columns=["prompt_id", "sample_idx", "status", *policy.columns()]).to_pandas()
    if policy.dedup:  # near-duplicate decisions (sdgen dedup) joined as columns
        df, names = _join_dedup(output_url, policy.dedup, df, names, storage)
    if df.empty:
        raise PolicyError(f"{output_url!r} has no committed rows yet")
    dec = decide(df, policy)
    d = policy_dir(out, name or policy.name)
    out.write_table(f"{d}/decisions.parquet", dec)
    out.write_bytes_atomic(f"{d}/policy.yaml", yaml.safe_dump(policy.as_dict(), sort_keys=False).encode())
    record = {
        "name": name or policy.name,
        "fingerprint": policy.fingerprint(),
        "source": policy.source,
        "overrides": policy.overrides,
        "skipped_rules": [r.name for r in policy.rules if r.column not in names],
        "run_fingerprint": run.get("fingerprint"),
        "rows": len(dec),
        "counts": {k: int(v) for k, v in dec["decision"].value_counts().items()},
        "by_rule": {k: int(v) for k, v in dec["rule"].dropna().value_counts().items()},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dir": d,
    }
    out.write_json(f"{d}/policy.json", record)
    return record


def _join_dedup(output_url: str, name: str, df: pd.DataFrame, names: list[str], storage=None):
    from pipeline.curate.dedup import DedupError, read_dedup

    try:
        dd = read_dedup(output_url, name, storage)[["prompt_id", "sample_idx", "duplicate", "distance"]]
    except DedupError as e:
        raise PolicyError(f"policy dedup: {name!r}: {e}") from None
    df = df.merge(dd, on=["prompt_id", "sample_idx"], how="left")  # rows without an image: missing
    return df, [*names, "duplicate", "distance"]


def read_decisions(output_url: str, name: str, storage=None) -> pd.DataFrame:
    from pipeline.core.storage import Output, read_decisions

    out = Output(output_url, storage)
    folder = policy_dir(out, name)
    return read_decisions(
        out,
        folder,
        PolicyError(
            f"no decisions at {folder + '/decisions.parquet'!r}; run sdgen "
            f"filter {output_url} --policy ... first"
        ),
    )


def summary_lines(record: dict) -> list[str]:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(record["counts"].items()))
    return [
        f"policy {record['name']} ({record['fingerprint'][:12]}): {record['rows']} rows: {counts}",
        f"decisions: {record['dir']}/decisions.parquet",
    ]
