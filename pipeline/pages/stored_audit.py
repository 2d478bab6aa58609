"""Which audit a report page shows: the stored one (audit/metrics.json), re-audited first where an older
audit method wrote it, or one run for the page (none stored, or `--where` picks other rows).
"""

from __future__ import annotations

from dataclasses import replace

from pipeline.audit.data import probed_attributes
from pipeline.audit.runner import default_group_by, default_where, job_attributes, read_results, run_audit
from pipeline.audit.spec import AuditSpec, older_method, stale_entries


def ensure_audit(src, spec: AuditSpec) -> tuple[dict | None, list[str]]:
    """metrics.json, running the audit first when there is none or when ``spec.where`` asks for other
    rows than it covers (its result is used directly, not read back); notes say what was done or missing.
    ``spec.group_by`` and ``spec.where`` empty: the stored audit's grouping, else the job's defaults."""
    _, metrics = read_results(src)
    every = probed_attributes(src)
    probed = {a: every[a] for a in job_attributes(src, every)}  # the job's audit.attributes, if any
    where, group_by = list(spec.where), list(spec.group_by)
    same_rows = metrics is not None and (
        not where
        or all(
            sorted(e.get("where") or []) == sorted(where) for e in (metrics.get("attributes") or {}).values()
        )
    )
    if not same_rows:  # no --where: the stored audit is used as it is, whatever rows it covered
        if not probed:
            return None, [
                "No attribute was probed in this run and none has been audited: run "
                "`sdgen audit OUTPUT --attribute A --attribute-set SET --group-by COL` first."
            ]
        stored = next(iter(((metrics or {}).get("attributes") or {}).values()), {})
        # neither --where nor --group-by: the job's audit defaults (group_by and where go together)
        rows = where or ([] if group_by else default_where(src))
        group_by = group_by or stored.get("group_by") or default_group_by(src)
        spec = replace(spec, group_by=group_by, where=rows)
        metrics = _audit_for_report(src, probed, spec, store=not where)
        done = "No audit existed; audited" if not where else f"Rows where {', '.join(where)}: audited"
        scope = f", rows where {', '.join(rows)} (the job's audit defaults)" if rows and not where else ""
        notes = [
            f"{done} {', '.join(probed)} by {', '.join(group_by)}{scope} (B={spec.bootstrap}, seed "
            f"{spec.seed}) for this report"
            + (" (not stored: audit/metrics.json is unchanged)." if where else ".")
        ]
    else:
        metrics, notes = _refresh_stale(src, metrics, every, spec) if not where else (metrics, [])
    missing = [a for a in probed if a not in metrics.get("attributes", {})]
    if missing:
        notes.append(f"Probed but not audited: {', '.join(missing)} (run sdgen audit --attribute ...).")
    return metrics, notes


def _audit_for_report(src, probed, spec: AuditSpec, store: bool) -> dict:
    """Audit every probed attribute; stored in audit/ unless a --where of the report picked the rows."""
    metrics = None
    for a in probed:  # one by one: an attribute probed after the run may come from its own set file
        set_file = probed[a].get("set_file") if probed[a]["origin"] == "posthoc" else None
        one = replace(spec, attributes=(a,), probe=replace(spec.probe, attribute_set=set_file))
        r = run_audit(src, one, write=store)
        attrs = {**((metrics or {}).get("attributes") or {}), **r.merged["attributes"]}
        metrics = {**r.merged, "attributes": attrs}
    return metrics


def _refresh_stale(src, metrics, probed, spec: AuditSpec) -> tuple[dict, list[str]]:
    """Re-audit, with its stored settings, each attribute an older audit method wrote (AUDIT_METHOD in
    pipeline/audit/spec.py), and store it as `sdgen audit` would: a page must not show intervals this
    sdgen no longer computes. One made with --calibration, or not probed in the run, is kept and named."""
    notes = []
    for a, old in stale_entries(metrics):
        e = metrics["attributes"][a]
        if a not in probed or e.get("calibration"):
            how = "--calibration LABELS" if e.get("calibration") else "--attribute-set SET"
            notes.append(
                f"The stored audit of {a} was written by {older_method(old)}: its intervals are not "
                "this sdgen's. Re-run `sdgen audit OUTPUT "
                f"--attribute {a} {how}` to refresh it."
            )
            continue
        one = replace(
            spec,
            group_by=tuple(e["group_by"]),
            where=tuple(e.get("where") or ()),
            **{k: e[k] for k in ("target", "level", "bootstrap", "seed", "min_n") if k in e},
            pool_icc=e.get("pool_icc", True),
        )
        metrics = _audit_for_report(src, {a: probed[a]}, one, store=True)
        rows = f", rows where {', '.join(one.where)}" if one.where else ""
        notes.append(
            f"The stored audit of {a} was written by {older_method(old)}; re-audited by "
            f"{', '.join(one.group_by)}{rows} with its settings and stored."
        )
    return metrics, notes
