"""Every path of an output, relative to its root: the one owner of the layout (docs/DESIGN.md §4 lists
them). Code joins these with ``Output.path``; no other module spells a file or folder name of an output.

    run.json                        the resolved config (secrets redacted), fingerprint, versions
    data/part-<shard>.parquet       one row per image (the only data; parts are never rewritten)
    _commits/<shard>.json           commit marker: rows, sha256 and size of the part, timings
    _SUCCESS                        every planned shard committed (and the quota delivered)
    summary.json                    the last run that did work: planned, committed, failed, speed
    contact_sheet.png               a labelled grid of images (write.contact_sheet, sdgen contact-sheet)
    _lock, _lock.takeover-<run>     the lease of the run in progress; a stale lease's takeover
    _runs/<utc start>-<run>.json          one record per run that did work (history)
    _quota/round-NNNN.parquet       quota rounds: the input rows of each round with their sample ranges
    audit/                          sdgen audit: summary.parquet, metrics.json, report.html,
                                    compare-<name>.json|html, probes/<set>.parquet|json, embeddings.*
    policy/<name>/                  sdgen filter: decisions.parquet, policy.yaml, policy.json
    dedup/<name>/                   sdgen dedup: decisions.parquet, dedup.json
An export's destination holds _export/<shard>.json, what each part became (reused while it matches).
"""

from __future__ import annotations

RUN = "run.json"
DATA = "data"
COMMITS = "_commits"
SUCCESS = "_SUCCESS"
SUMMARY = "summary.json"
CONTACT_SHEET = "contact_sheet.png"
LOCK = "_lock"
RUNS = "_runs"
QUOTA = "_quota"
AUDIT = "audit"
POLICY = "policy"
DEDUP = "dedup"
EXPORT_RECORDS = "_export"  # in an export's destination, not the output


def part(shard: str) -> str:
    return f"{DATA}/part-{shard}.parquet"


def marker(shard: str) -> str:
    return f"{COMMITS}/{shard}.json"


def takeover(run_id: str) -> str:
    return f"{LOCK}.takeover-{run_id}"


def run_record(name: str) -> str:
    return f"{RUNS}/{name}"


def quota_round(r: int) -> str:
    return f"{QUOTA}/round-{r:04d}.parquet"


def audit_file(*parts: str) -> str:
    """audit/<parts...>: metrics.json, summary.parquet, report.html, probes/<set>.json, ..."""
    return "/".join((AUDIT, *parts))


def policy_file(name: str, *parts: str) -> str:
    """policy/<name>[/<file>]: one filter policy's decisions folder."""
    return "/".join((POLICY, name, *parts))


def dedup_file(name: str, *parts: str) -> str:
    """dedup/<name>[/<file>]: one dedup run's decisions folder."""
    return "/".join((DEDUP, name, *parts))


def export_record(shard: str) -> str:
    return f"{EXPORT_RECORDS}/{shard}.json"
