"""What every `sdgen` command shares: the option groups, reading `--config` (storage *and* retry), and
the one map from an error to an exit code and a line on stderr.

Exit codes (README.md, "Exit codes"):
    0  done
    1  a fault during work: failed shards (listed), a storage fault that outlasted its retries
       (`sdgen: storage error: ...`), a local OS error such as a full disk
    2  bad config, input or arguments (`sdgen: error: ...`); nothing was written
    3  another run holds the output's lease; nothing was done
    4  `sdgen run` reached a budget (limits.max_worker_hours / max_wall_hours): what was committed is
       kept, a re-run continues
Tracebacks are for bugs only: every error class sdgen raises on purpose is in this map.
"""

from __future__ import annotations

import sys

from pipeline.audit.spec import BOOTSTRAP, ProbeSpec
from pipeline.core import config as config_mod
from pipeline.core import retry
from pipeline.core.lease import LEASE_EXIT_CODE, LeaseHeld
from pipeline.core.retry import StorageError

EXIT_FAULT, EXIT_BAD_INPUT, EXIT_BUDGET = 1, 2, 4


def exit_code(e: BaseException) -> tuple[int, str] | None:
    """(exit code, the one line for stderr) for an error sdgen reports, or None for a bug."""
    if isinstance(e, LeaseHeld):  # an overlapping (scheduled) run: not an error of this config
        return LEASE_EXIT_CODE, f"sdgen: {e}"
    if isinstance(e, StorageError):  # transient faults that outlasted the retries, or the store refused
        return EXIT_FAULT, f"sdgen: {e}"
    if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return EXIT_BAD_INPUT, f"sdgen: error: {e}"  # a path the user named that is not there or not theirs
    if isinstance(e, ValueError):  # every config, input and argument error of sdgen is a ValueError
        return EXIT_BAD_INPUT, f"sdgen: error: {e}"
    if isinstance(e, OSError):  # the machine's own fault during work (disk full, I/O error)
        return EXIT_FAULT, f"sdgen: error: {type(e).__name__}: {e}"
    return None


def report(e: BaseException) -> int:
    """Print ``e`` as its one line and return its exit code; re-raise a bug (a traceback is wanted)."""
    mapped = exit_code(e)
    if mapped is None:
        raise e
    code, line = mapped
    print(" ".join(line.split("\n")) if code != EXIT_BAD_INPUT else line, file=sys.stderr)
    return code


# ---------------------------------------------------------------- option groups
def add_store_options(sp) -> None:
    """Read-side commands take the job config whose `storage:` reaches the output and whose `retry:`
    says how often a store call is tried."""
    sp.add_argument(
        "--config",
        dest="storage_config",
        metavar="JOB.yaml",
        help="take storage settings (endpoint, keys, region) and the retry policy from this job "
        "config's storage and retry sections; default: the environment (AWS_*), 5 tries",
    )


def store_settings(args):
    """The StorageConfig named by --config (None: fsspec reads the environment); its `retry:` section
    becomes this process's retry policy."""
    path = getattr(args, "storage_config", None)
    if not path:
        return None
    storage, policy = config_mod.load_store_settings(path)
    retry.configure(policy)
    return storage


def add_group_by(sp, default_help: str = "default: the input's own columns, first one") -> None:
    sp.add_argument(
        "--group-by",
        action="append",
        metavar="COL",
        help=f"input column to group by (repeatable, or a,b: groups are value combinations; {default_help})",
    )


def add_where(sp, what: str = "only rows") -> None:
    sp.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COL=VALUE",
        help=f"{what} where COL equals VALUE (repeatable), e.g. --where neutral=true",
    )


def add_bootstrap(sp) -> None:
    sp.add_argument(
        "--bootstrap", type=int, default=BOOTSTRAP, metavar="B", help=f"bootstrap replicates (>= {BOOTSTRAP})"
    )
    sp.add_argument("--seed", type=int, default=0, help="RNG seed of bootstrap and null draws")


def add_probe_options(sp) -> None:
    """Post-hoc probing of stored images (an attribute the run did not probe)."""
    sp.add_argument(
        "--attribute-set",
        metavar="NAME_OR_PATH",
        help="probe the stored images with this attribute set (needed only when the run did not "
        "probe the attribute and no shipped set defines it; given, it replaces in-run labels)",
    )
    sp.add_argument("--clip-model", help="CLIP for post-hoc probes (default: run.json scoring.clip_model)")
    sp.add_argument("--clip-weights", help="local weights file for --clip-model")
    sp.add_argument("--device", default="auto", help="device for post-hoc probes (auto = cuda when present)")


def probe_spec(args) -> ProbeSpec:
    """The post-hoc probing options of add_probe_options."""
    return ProbeSpec(args.attribute_set, args.clip_model, args.clip_weights, args.device)


def split_group_by(values) -> list[str] | None:
    """--group-by a,b and --group-by a --group-by b both mean the intersection a × b."""
    if not values:
        return None
    cols = [c.strip() for v in values for c in str(v).split(",") if c.strip()]
    return list(dict.fromkeys(cols)) or None
