"""The only module that writes: output layout, atomic part publish, commit markers, run.json.

Layout (docs/DESIGN.md §4):
    OUTPUT/run.json                 resolved config (secrets redacted), fingerprint, versions
    OUTPUT/data/part-<shard>.parquet one row per image
    OUTPUT/_commits/<shard>.json    commit marker: rows, sha256 and size of the part, timings
    OUTPUT/_SUCCESS                 written once every planned shard is committed
A part is written completely under a temporary name and published atomically (local: os.replace;
object stores: a single PUT / multipart complete). Only then is its marker written, so a shard is
done iff its marker exists and the part matches the marker's checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import layout, retry


class OutputError(ValueError):
    """The output location holds something incompatible with this job (e.g. another config)."""


def storage_options(storage, url: str) -> dict:
    """fsspec options for `url` from the config's storage section (None = environment)."""
    protocol = fsspec.core.split_protocol(url)[0]
    if protocol not in ("s3", "s3a"):
        return dict(storage.options) if storage is not None else {}
    opts = dict(storage.options) if storage is not None else {}
    endpoint = (storage.endpoint_url if storage else None) or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["endpoint_url"] = endpoint
    if storage is not None and storage.key:
        opts["key"] = storage.key
    if storage is not None and storage.secret:
        opts["secret"] = storage.secret
    if storage is not None and storage.region:
        opts.setdefault("client_kwargs", {})["region_name"] = storage.region
    opts.setdefault(
        "use_listings_cache", False
    )  # resume must see new inputs and markers, never a stale listing
    # one retry policy (the config's retry: section, core/retry.py): botocore's own retries off, so that
    # retry.attempts counts every try of a call (botocore's 5 × ours was 46 s to fail at attempts=2)
    opts.setdefault("config_kwargs", {}).setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})
    return opts


def filesystem(url: str, storage=None):
    """(filesystem, path within it) for a local path or URL: an fsspec filesystem behind
    retry.RetryingFS, so that every call to the store is retried by the one policy."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options(storage, url))
    if hasattr(fs, "retries") and not is_local(fs):
        fs.retries = 1  # s3fs's own retry loop off, as botocore's above
    return retry.RetryingFS(fs, remote=not is_local(fs)), path.rstrip("/") if path not in ("/", "") else path


def is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def read_parquet(fs, path: str, columns=None) -> pa.Table:
    """A Parquet file through ``fs`` (its reads retried when ``fs`` is a RetryingFS): the one way sdgen
    reads a small Parquet file or a part whole. pyarrow gets a file handle, never the filesystem."""
    with fs.open(path, "rb") as f:
        # ParquetFile, not read_table/pd.read_parquet: pyarrow 25-26's dataset reader over a Python file
        # object can abort the interpreter at exit ("terminate called without an active exception")
        return pq.ParquetFile(f).read(columns=columns)


def read_frame(fs, path: str, columns=None):
    """read_parquet as a pandas DataFrame (the same frame pd.read_parquet gives)."""
    return read_parquet(fs, path, columns).to_pandas()


def read_decisions(out: "Output", folder: str, missing: Exception):
    """FOLDER/decisions.parquet of a policy or dedup run as a DataFrame; ``missing`` is raised when that
    run was never made (its message says which command makes it)."""
    path = f"{folder}/decisions.parquet"
    if not out.exists(path):
        raise missing
    return read_frame(out.fs, path)


def read_schema(fs, path: str) -> pa.Schema:
    with fs.open(path, "rb") as f:
        return pq.ParquetFile(f).schema_arrow


def sha256_file(fs, path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Output:
    """An output location: paths of its parts and markers, and atomic writes into it."""

    def __init__(self, url: str, storage=None):
        self.url = url
        self.fs, self.root = filesystem(url, storage)
        self.local = is_local(self.fs)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def part_path(self, shard: str) -> str:
        return self.path(layout.part(shard))

    def marker_path(self, shard: str) -> str:
        return self.path(layout.marker(shard))

    # ---- small files ------------------------------------------------------------------------------
    def write_bytes_atomic(self, path: str, data: bytes, sync: bool = True) -> None:
        """Local: temp file in the same directory + os.replace. Object store: one PUT (atomic).
        ``sync=False`` skips the fsync (export's many small images: a crash redoes the part anyway)."""
        if self.local:
            d = os.path.dirname(path)
            os.makedirs(d, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; follow the umask like the parts
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    if sync:
                        f.flush()
                        os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):  # disk full, interrupted: no .tmp-* left behind
                    os.remove(tmp)
                raise
        else:
            self.fs.pipe_file(path, data)  # one PUT: atomic on an object store

    def write_table(self, path: str, table) -> None:
        """A small Parquet file (a pyarrow Table or a pandas DataFrame) written atomically, like every
        file sdgen writes beside the data (audit tables, decisions, probes, prompt sets)."""
        if not isinstance(table, pa.Table):
            table = pa.Table.from_pandas(table, preserve_index=False)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self.write_bytes_atomic(path, sink.getvalue().to_pybytes())

    def read_json(self, path: str):
        try:
            return json.loads(self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    def write_json(self, path: str, obj) -> None:
        self.write_bytes_atomic(path, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    # ---- run.json and fingerprint ---------------------------------------------------------------------
    def check_or_write_run(self, run_info: dict) -> bool:
        """Write run.json on the first run; on later runs require the same fingerprint.
        Returns True when run.json was newly written."""
        existing = self.read_json(self.path(layout.RUN))
        if existing is None:
            self.write_json(self.path(layout.RUN), run_info)
            return True
        if existing.get("fingerprint") != run_info["fingerprint"] and not self.committed_markers():
            # only committed work locks the fingerprint: a failed start (model did not load) must not
            import warnings

            warnings.warn(
                f"output {self.url!r}: run.json of an earlier run with no committed shard "
                "(another config) is replaced by this run's",
                stacklevel=2,
            )
            self.write_json(self.path(layout.RUN), run_info)
            return True
        if existing.get("fingerprint") != run_info["fingerprint"]:
            diff = _diff_keys(existing.get("fingerprint_fields", {}), run_info["fingerprint_fields"])
            raise OutputError(
                f"output {self.url!r} holds a run with a different config (fingerprint "
                f"{str(existing.get('fingerprint'))[:12]} != {run_info['fingerprint'][:12]}); "
                f"differing keys: "
                f"{', '.join(diff) or '(unknown)'}. Use a new output location, or the original config."
            )
        return False

    # ---- commits ------------------------------------------------------------------------------------
    def committed_markers(self) -> dict[str, dict]:
        """Markers present, by shard name (one listing call, then small reads)."""
        d = self.path(layout.COMMITS)
        try:
            names = [p for p in self.fs.ls(d, detail=False) if p.endswith(".json")]
        except FileNotFoundError:
            return {}
        out = {}
        for p in names:
            m = self.read_json(p)
            if m and "shard" in m:
                out[m["shard"]] = m
        return out

    def marker_valid(self, marker: dict, check: str = "sha256") -> bool:
        """A marker counts only if its part exists with the recorded size (and checksum)."""
        part = self.part_path(marker["shard"])
        try:
            size = self.fs.size(part)
        except FileNotFoundError:
            return False
        if size != marker.get("size"):
            return False
        return check == "size" or sha256_file(self.fs, part) == marker.get("sha256")

    def valid_commits(self, check: str = "sha256", names=None) -> dict[str, dict]:
        """The committed shards: markers whose part matches them (``check``: sha256 | size), by shard
        name, optionally only those in ``names``. What resume skips and what readers read."""
        markers = self.committed_markers()
        return {
            n: m
            for n, m in sorted(markers.items())
            if (names is None or n in names) and self.marker_valid(m, check)
        }

    @property
    def spool_tag(self) -> str:
        """12 hex digits of the output's URL: spools in the shared temp dir name their output, so two runs
        of one config into two outputs never touch each other's spools."""
        return hashlib.sha256(self.url.rstrip("/").encode()).hexdigest()[:12]

    def spool_path(self, shard: str) -> str:
        """Where a part is written before commit: beside the final file locally (so publishing is a
        rename), a local temp dir for object stores. The name carries the output and this process's pid
        (``.tmp-part-<output>-<pid>-<shard>-<random>.parquet``), so runs of other outputs never touch it.
        An earlier spool of the same output and shard belongs to an earlier attempt of this shard, which
        the driver gave up on (one attempt of a shard is live at a time): it is removed, whichever process
        (a killed actor, another node's) wrote it."""
        d = self.path(layout.DATA) if self.local else tempfile.gettempdir()
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):
            m = SPOOL_NAME.match(name)
            if m and m["tag"] == self.spool_tag and m["shard"] == shard:
                _remove_quietly(os.path.join(d, name))
        return os.path.join(
            d, f".tmp-part-{self.spool_tag}-{os.getpid()}-{shard}-{uuid.uuid4().hex[:8]}.parquet"
        )

    def commit_part(self, shard: str, spool: str, fields: dict) -> dict:
        """The one commit path (docs/DESIGN.md §5): publish the finished spool file as the shard's
        part atomically, then write its marker {shard, sha256, size, **fields}; returns the marker.

        A crash between the two steps leaves a part without a marker: not committed, redone by the
        next run, whose publish replaces it. The spool is gone afterwards, whatever happened."""
        import time

        t0 = time.perf_counter()
        try:
            digest, size = self._publish(spool, shard)
        finally:
            if os.path.exists(spool):
                os.remove(spool)
        timings = {**fields.get("timings", {}), "publish": round(time.perf_counter() - t0, 4)}
        marker = {"shard": shard, **fields, "sha256": digest, "size": size, "timings": timings}
        self._write_marker(shard, marker)
        return marker

    def _publish(self, local_tmp: str, shard: str) -> tuple[str, int]:
        digest = sha256_file(fsspec.filesystem("file"), local_tmp)
        size = os.path.getsize(local_tmp)
        self.publish_file(local_tmp, self.part_path(shard))
        return digest, size

    def publish_file(self, local_tmp: str, final: str) -> None:
        """Move a finished local file to ``final`` atomically: a rename locally (the temp file must be
        on the same filesystem, e.g. beside ``final``), one upload on an object store (a PUT or a
        multipart upload only appears when complete)."""
        if self.local:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(local_tmp, final)
        else:
            self.fs.put_file(local_tmp, final)
            os.remove(local_tmp)

    def temp_path(self, final: str) -> str:
        """A local temp file to write ``final``'s bytes into before publish_file: beside it locally
        (so publishing is a rename), in the system temp dir for object stores."""
        d = os.path.dirname(final) if self.local else tempfile.gettempdir()
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, f".tmp-{uuid.uuid4().hex[:8]}-{os.path.basename(final)}")

    def _write_marker(self, shard: str, marker: dict) -> None:
        self.write_json(self.marker_path(shard), marker)

    def data_files(self) -> list[str]:
        try:
            files = self.fs.ls(self.path(layout.DATA), detail=False)
        except FileNotFoundError:
            return []
        return sorted(p for p in files if p.rsplit("/", 1)[-1].startswith("part-") and p.endswith(".parquet"))

    def read_table(self, columns=None) -> pa.Table:
        """All committed parts as one table (parts without a marker, or whose size differs from their
        marker's, are ignored)."""
        files = [self.part_path(s) for s in self.valid_commits("size")]
        tables = [read_parquet(self.fs, f, columns) for f in files]
        return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def _diff_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k} ({va!r} -> {vb!r})")
    return keys


def library_versions() -> dict:
    import importlib.metadata as md

    from pipeline.core.version import __version__

    out = {"sdgen": __version__}  # from the package itself: right even for a source checkout
    for name in ("torch", "diffusers", "transformers", "open_clip_torch", "ray", "pyarrow", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _umask() -> int:
    """The process umask (read by setting it, then restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


STALE_TEMP_S = 600  # a .tmp-* file untouched this long belongs to a dead run (live spools grow every batch)
SPOOL_NAME = re.compile(r"^\.tmp-part-(?P<tag>[0-9a-f]{12})-(?P<pid>\d+)-(?P<shard>.+)-[0-9a-f]{8}\.parquet$")


def pid_alive(pid: int) -> bool:
    """Whether a process of this host still runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): os.kill's answer stands


def _remove_quietly(path: str) -> bool:
    try:
        os.remove(path)
        return True
    except OSError:  # gone already, or not ours to remove
        return False


def remove_stale_temp(output: Output, older_than_s: float = STALE_TEMP_S) -> list[str]:
    """Remove temp files of dead runs of this output: ``.tmp-*`` under a local output root untouched for
    ``older_than_s``, and this output's part spools (beside the parts, or in the local temp dir for an
    object store) whose process is gone. Spools of other outputs are never touched. Returns what was
    removed."""
    import time

    now, removed = time.time(), []
    if output.local:
        for d, _, files in os.walk(output.root):
            for f in files:
                p = os.path.join(d, f)
                try:
                    old = f.startswith(".tmp-") and now - os.path.getmtime(p) > older_than_s
                except OSError:
                    continue
                if (old or _dead_spool(f, output.spool_tag)) and _remove_quietly(p):
                    removed.append(p)
    else:
        tmp = tempfile.gettempdir()
        removed += [
            os.path.join(tmp, f)
            for f in os.listdir(tmp)
            if _dead_spool(f, output.spool_tag) and _remove_quietly(os.path.join(tmp, f))
        ]
    return removed


def _dead_spool(name: str, tag: str) -> bool:
    m = SPOOL_NAME.match(name)
    return bool(m and m["tag"] == tag and int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"])))
