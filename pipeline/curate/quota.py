"""Quotas counted after filtering (`quota:` in the job config; contract in docs/DESIGN.md, "Quotas").

    1. round 0 is the plain run (images_per_prompt per prompt), resumed like any run
    2. the policy decides every committed row; a key (a prompt_id, or a value of `quota.per`) counts
       the rows the policy keeps (decision keep or flag)
    3. a key short of N gets more samples in a round file OUT/_quota/round-NNNN.parquet: its input rows
       with `sample_start` past the prompt's last sample and `images_per_prompt` = what it still needs
       (estimated from its keep rate, at most need + one batch, at most max_oversample × N in all)
    4. the round's shards run through the driver (same fingerprint, exactly-once commits); repeat
    5. the delivered set: decisions OUT/policy/quota/ (`sdgen export --keep-only quota`): the first N
       kept rows of every key in sample order; the rest keep the policy's decision or drop as surplus.

Round files are written once, atomically, and planned only from rows of earlier rounds, all committed:
a run killed anywhere re-plans the rounds an uninterrupted run would, and its seeds are the same.
The audit reads every generated row: a quota filters what is delivered, not what is measured.
"""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import layout, schema
from pipeline.core.config import ConfigError, JobConfig
from pipeline.core.storage import Output

KEPT = ("keep", "flag")  # decisions that deliver the image as generated (blur alters it, drop removes it)
NAME = "quota"  # the decisions' folder: OUT/policy/quota/


def load_quota_policy(cfg: JobConfig):
    """The quota's policy, and the key column checked against the input's columns (exit 2 if wrong)."""
    from pipeline.curate.policy import PolicyError, load_policy
    from pipeline.generate.inputs import list_input_files, read_footer

    q = cfg.quota
    if cfg.mitigation.enabled:
        raise ConfigError(
            "quota: cannot be combined with mitigation.enabled (variants are assigned by sample "
            "index within images_per_prompt); run the mitigated job without a quota"
        )
    try:
        policy = load_policy(q.policy)
    except (PolicyError, OSError) as e:
        raise ConfigError(f"quota.policy {q.policy!r}: {e}") from None
    if q.per != schema.PROMPT_ID:
        fs, files = list_input_files(cfg.input, cfg.storage)
        names = read_footer(fs, files[0]).schema.to_arrow_schema().names if files else []
        if q.per not in names:
            raise ConfigError(
                f"quota.per {q.per!r} is not a column of the input {files[0] if files else cfg.input!r} "
                f"(columns: {names}); use prompt_id or one of them"
            )
    return policy


def committed_state(cfg: JobConfig, policy) -> pd.DataFrame:
    """Every committed row with its key, policy decision and whether it counts toward the quota."""
    from pipeline.core.dataset import Dataset
    from pipeline.curate.policy import decide

    per = cfg.quota.per
    cols = [
        "prompt_id",
        "sample_idx",
        "status",
        *([per] if per != schema.PROMPT_ID else []),
        *policy.columns(),
    ]
    ds = Dataset(cfg.output, cfg.storage)
    df = ds.table(columns=[c for c in dict.fromkeys(cols) if c in ds.columns()]).to_pandas()
    dec = decide(df, policy)
    dec["key"] = df[per].astype(str).to_numpy()
    dec["status"] = df["status"].to_numpy()
    dec["kept"] = dec["decision"].isin(KEPT)
    return dec


def plan_round(state: pd.DataFrame, q, batch: int) -> dict[str, tuple[int, int]]:
    """{prompt_id: (sample_start, count)} of the next round; empty when every key is done or stopped."""
    cap = math.floor(q.max_oversample * q.accepted)
    nxt = state.groupby("prompt_id")["sample_idx"].max() + 1
    # a prompt whose rows are all blocked (screening) or invalid can never add a kept image
    live = state[state["status"].isin([schema.OK, schema.FAILED])].groupby("prompt_id").size()
    plan: dict[str, list[int]] = {}
    for _, g in state.groupby("key", sort=True):
        kept, made = int(g["kept"].sum()), len(g)
        need, room = q.accepted - kept, cap - made
        prompts = sorted(p for p in g["prompt_id"].unique() if p in live.index)
        if need <= 0 or room <= 0 or not prompts:
            continue
        want = math.ceil(need * made / kept) if kept else need + batch  # the key's keep rate so far
        count = min(want, need + batch, room)  # kept images overshoot N by at most one batch
        made_by = g.groupby("prompt_id").size().to_dict()
        for _ in range(count):  # to the prompt of the key with the fewest samples so far (ties: id)
            p = min(prompts, key=lambda x: (made_by[x], x))
            made_by[p] += 1
            plan.setdefault(p, [int(nxt[p]), 0])[1] += 1
    return {p: (s, n) for p, (s, n) in sorted(plan.items())}


def input_rows(cfg: JobConfig, wanted: set[str]) -> dict[str, pa.Table]:
    """The input row (one-row table) of every wanted prompt id; a numbered duplicate x~2 maps to x's row."""
    from pipeline.generate.inputs import list_input_files, prompt_ids

    fs, files = list_input_files(cfg.input, cfg.storage)
    base = {p.split("~")[0]: p for p in wanted} | {p: p for p in wanted}
    found: dict[str, pa.Table] = {}
    for path in files:
        with fs.open(path, "rb") as f:
            t = pq.ParquetFile(f).read()  # not read_table: see generate/plan.py count_work
        for i, pid in enumerate(prompt_ids(t)):
            if pid in base and pid not in found:
                found[pid] = t.slice(i, 1)
    return {p: found[p] if p in found else found[p.split("~")[0]] for p in wanted}


def write_round(cfg: JobConfig, out: Output, r: int, plan: dict[str, tuple[int, int]]) -> str:
    """OUT/_quota/round-NNNN.parquet: the planned prompts' input rows with their sample ranges."""
    rows = input_rows(cfg, set(plan))
    parts = []
    for pid, (start, n) in plan.items():
        t = rows[pid]
        for c in (schema.PROMPT_ID, "images_per_prompt", "sample_start"):
            if c in t.column_names:
                t = t.drop_columns([c])
        parts.append(
            t.append_column(schema.PROMPT_ID, pa.array([pid]))
            .append_column("images_per_prompt", pa.array([n], pa.int64()))
            .append_column("sample_start", pa.array([start], pa.int64()))
        )
    path = out.path(layout.quota_round(r))
    out.write_table(path, pa.concat_tables(parts, promote_options="default"))
    return path


def existing_rounds(out: Output) -> list[str]:
    d = out.path(layout.QUOTA)
    if not out.exists(d):
        return []
    return sorted(p for p in out.fs.ls(d, detail=False) if p.rsplit("/", 1)[-1].startswith("round-"))


def delivered(state: pd.DataFrame, accepted: int) -> tuple[pd.DataFrame, dict]:
    """The first `accepted` kept rows of every key in (sample_idx, prompt_id) order are delivered; kept
    rows past them drop as surplus. Returns (decisions, per-key report)."""
    from pipeline.curate.policy import DECISION_COLUMNS

    s = state.sort_values(["key", "sample_idx", "prompt_id"]).copy()
    rank = s["kept"].astype(int).groupby(s["key"]).cumsum()
    surplus = s["kept"] & (rank > accepted)
    s.loc[surplus, "decision"], s.loc[surplus, "rule"] = "drop", "quota:surplus"
    keys = {}
    for key, g in s.groupby("key", sort=True):
        kept = int(g["kept"].sum())
        keys[str(key)] = {
            "generated": len(g),
            "kept": kept,
            "delivered": min(kept, accepted),
            "shortfall": max(accepted - kept, 0),
        }
    return s[DECISION_COLUMNS].reset_index(drop=True), keys


def write_delivered(cfg: JobConfig, out: Output, policy, state: pd.DataFrame) -> dict:
    """OUT/policy/quota/{decisions.parquet, policy.yaml, policy.json} and the per-key report."""
    import yaml

    from pipeline.curate.policy import policy_dir

    q = cfg.quota
    dec, keys = delivered(state, q.accepted)
    d = policy_dir(out, NAME)
    out.write_table(f"{d}/decisions.parquet", dec)
    out.write_bytes_atomic(f"{d}/policy.yaml", yaml.safe_dump(policy.as_dict(), sort_keys=False).encode())
    short = {k: v["shortfall"] for k, v in keys.items() if v["shortfall"]}
    record = {
        "name": NAME,
        "accepted": q.accepted,
        "per": q.per,
        "policy": q.policy,
        "fingerprint": policy.fingerprint(),
        "max_oversample": q.max_oversample,
        "rows": len(dec),
        "keys": len(keys),
        "keys_short": len(short),
        "shortfall": short,
        "per_key": keys,
        "counts": {k: int(v) for k, v in dec["decision"].value_counts().items()},
        "dir": d,
    }
    out.write_json(f"{d}/policy.json", record)
    return record


def next_round(cfg: JobConfig, out: Output, policy, rounds: list[str]) -> str | None:
    """Plan the next round from the committed rows and write its file; None when every key is met or
    stopped (max_rounds, max_oversample, or no prompt can make more)."""
    if len(rounds) >= cfg.quota.max_rounds:
        return None
    plan = plan_round(committed_state(cfg, policy), cfg.quota, cfg.generation.batch_size)
    return write_round(cfg, out, len(rounds) + 1, plan) if plan else None


def deliver(cfg: JobConfig, out: Output, policy, rounds: int) -> dict:
    """The delivered set once the rounds end: decisions under OUT/policy/quota/, and the summary's
    `quota` section (rounds, keys met, per-key shortfall)."""
    q = cfg.quota
    record = write_delivered(cfg, out, policy, committed_state(cfg, policy))
    return {
        "rounds": rounds,
        "complete": True,
        "accepted": q.accepted,
        "per": q.per,
        "keys": record["keys"],
        "keys_short": record["keys_short"],
        "shortfall": record["shortfall"],
        "decisions": record["dir"],
        "rows": record["rows"],
    }


def quota_lines(q: dict | None) -> list[str]:
    """The printed quota summary: rounds, keys met, and each short key with its shortfall."""
    if not q:
        return []
    if not q["complete"]:
        return [f"quota: stopped after round {q['rounds']} with failed shards; re-run to continue"]
    lines = [
        f"quota: {q['accepted']} kept per {q['per']}: {q['keys'] - q['keys_short']} of {q['keys']} keys met "
        f"after {q['rounds']} extra round(s); delivered set in {q['decisions']} "
        f"(sdgen export --keep-only quota)"
    ]
    lines += [
        f"quota: {k!r} short by {n} (quota.max_oversample or max_rounds reached, or no prompt can make more)"
        for k, n in sorted(q["shortfall"].items())[:20]
    ]
    return lines
