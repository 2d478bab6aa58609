"""Class 4/8, everything around the rows (issue 26): moto behind a fault proxy (503 SlowDown, 500 and dropped
connections) at 20%, 55% and 90% of requests, for every command that touches an output. Each either
succeeds or ends with exactly one `sdgen: storage error: ...` line and exit 1, never a traceback; run
again on a healthy endpoint, it finishes with the same bytes a clean run made. Also: a conditional
`_lock` PUT whose reply is lost, and two runs of one config into two prefixes at once.

Set SDGEN_FAULT_TABLE=FILE to append each case's (command, rate, exit code, first line) as JSON lines."""

import io
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from conftest import PROMPTS, _free_port, tiny_config, write_job
from s3proxy import FaultProxy

from pipeline.cli import main
from pipeline.core import retry

pytestmark = pytest.mark.slow

BUCKET = "sdgen-storage-faults"
FAST_RETRY = {"attempts": 3, "base_s": 0.005, "max_s": 0.02}  # 3 tries, milliseconds apart: a fast suite
RATES = (0.2, 0.55, 0.9)
AUDIT = [
    "--attribute",
    "colour",
    "--attribute-set",
    "toyworld",
    "--clip-model",
    "tiny",
    "--group-by",
    "group",
    "--bootstrap",
    "200",
    "--device",
    "cpu",
    "--no-diversity",
]


def _split(total: float) -> dict:
    return {"slowdown": total / 2, "internal": total / 4, "drop": total / 4}


def _job(tmp, name, endpoint, output=f"s3://{BUCKET}/ref") -> str:
    storage = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    cfg = tiny_config(
        f"s3://{BUCKET}/in/p.parquet",
        output,
        storage=storage,
        retry=FAST_RETRY,
        write={"timing_columns": False, "contact_sheet": False},
        generation={"images_per_prompt": 1},
        shards={"rows_per_shard": 2},
    )
    return write_job(tmp / f"{name}.yaml", cfg)


def _run(job, *extra) -> subprocess.CompletedProcess:
    """`sdgen run` in its own process: a lease left by a faulted run belongs to a dead pid, as in life."""
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", job, "--no-progress", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def world(s3_server, tmp_path_factory):
    """A clean run at s3://BUCKET/ref and every product of the read-side commands made from it cleanly."""
    tmp = tmp_path_factory.mktemp("faults")
    fs = s3fs.S3FileSystem(endpoint_url=s3_server, key="testing", secret="testing", skip_instance_cache=True)
    fs.mkdir(BUCKET)
    buf = io.BytesIO()
    pq.write_table(pa.table({"prompt": PROMPTS, "group": list("abcabca")}), buf)
    fs.pipe(f"{BUCKET}/in/p.parquet", buf.getvalue())
    clean = _job(tmp, "clean", s3_server)
    r = _run(clean)
    assert r.returncode == 0, r.stderr[-3000:]
    policy = tmp / "policy.yaml"
    policy.write_text("name: low\nrules:\n  - {name: low, when: 'clip_score < 100', action: flag}\n")
    w = {"fs": fs, "tmp": tmp, "clean": clean, "policy": str(policy), "endpoint": s3_server}
    ref = f"s3://{BUCKET}/ref"
    for argv in (
        ["audit", ref, *AUDIT],
        ["filter", ref, "--policy", str(policy), "--name", "low"],
        ["dedup", ref, "--name", "phash"],
        ["export", ref, "--format", "webdataset", "-o", f"s3://{BUCKET}/ref-export/export"],
        ["contact-sheet", ref, "-o", str(tmp / "ref-sheet.png")],
        [
            "label",
            ref,
            "--attribute",
            "colour",
            "-n",
            "4",
            "-o",
            str(tmp / "ref-label"),
            "--group-by",
            "group",
            "--clip-model",
            "tiny",
            "--device",
            "cpu",
        ],
    ):
        assert main([*argv, "--config", clean]) == 0, argv
    yield w
    retry.configure(retry.Policy())


def _objects(fs, prefix) -> dict:
    fs.invalidate_cache()
    return {p[len(prefix) :]: fs.cat_file(p) for p in fs.find(prefix)}


def _exported(fs, prefix) -> dict:
    """An export's objects; the card (README.md, which names its source output) by its presence only."""
    objs = _objects(fs, prefix)
    return {k: (v if not k.endswith("README.md") else b"card") for k, v in objs.items()}


def _files(root) -> dict:
    return {
        os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
        for d, _, fs in os.walk(root)
        for f in fs
    }


# command -> (argv for an output OUT and a case tag T, check of the finished product against the clean one)
def _cases(w, out, tag):
    fs, tmp, b = w["fs"], w["tmp"], BUCKET
    ref = f"{b}/ref"
    return {
        "status": (["status", out], None),
        "verify": (["verify", out, "--n", "2"], None),
        "audit": (
            ["audit", out, *AUDIT],
            lambda: (
                fs.cat_file(f"{out[5:]}/audit/summary.parquet") == fs.cat_file(f"{ref}/audit/summary.parquet")
            ),
        ),
        "report": (
            ["report", out, "-o", str(tmp / f"{tag}.html"), "--bootstrap", "200"],
            lambda: "colour" in (tmp / f"{tag}.html").read_text(),
        ),
        "filter": (
            ["filter", out, "--policy", w["policy"], "--name", f"f{tag}"],
            lambda: (
                fs.cat_file(f"{out[5:]}/policy/f{tag}/decisions.parquet")
                == fs.cat_file(f"{ref}/policy/low/decisions.parquet")
            ),
        ),
        "dedup": (
            ["dedup", out, "--name", f"d{tag}"],
            lambda: (
                fs.cat_file(f"{out[5:]}/dedup/d{tag}/decisions.parquet")
                == fs.cat_file(f"{ref}/dedup/phash/decisions.parquet")
            ),
        ),
        "export": (
            ["export", out, "--format", "webdataset", "-o", f"s3://{b}/{tag}-export/export"],
            lambda: _exported(fs, f"{b}/{tag}-export/export") == _exported(fs, f"{b}/ref-export/export"),
        ),
        "contact-sheet": (
            ["contact-sheet", out, "-o", str(tmp / f"{tag}-sheet.png")],
            lambda: (tmp / f"{tag}-sheet.png").read_bytes() == (tmp / "ref-sheet.png").read_bytes(),
        ),
        "label": (
            [
                "label",
                out,
                "--attribute",
                "colour",
                "-n",
                "4",
                "-o",
                str(tmp / f"{tag}-label"),
                "--group-by",
                "group",
                "--clip-model",
                "tiny",
                "--device",
                "cpu",
            ],
            lambda: _files(tmp / f"{tag}-label") == _files(tmp / "ref-label"),
        ),
    }


def _record(command, rate, code, err) -> None:
    line = next(
        (ln for ln in err.splitlines() if ln.startswith(("sdgen: storage error", "sdgen: error"))), ""
    )
    if os.environ.get("SDGEN_FAULT_TABLE"):
        with open(os.environ["SDGEN_FAULT_TABLE"], "a") as f:
            f.write(json.dumps({"command": command, "rate": rate, "exit": code, "line": line}) + "\n")


def assert_one_storage_line(code: int, err: str) -> None:
    """Exit 0, or exit 1 with one `sdgen: storage error:` line (the last), and never a traceback."""
    assert "Traceback" not in err, err[-3000:]
    assert code in (0, 1), (code, err[-2000:])
    if code == 1:
        said = [ln for ln in err.splitlines() if ln.startswith(("sdgen: storage error", "sdgen: error"))]
        assert len(said) == 1 and said[0] == err.strip().splitlines()[-1], err[-2000:]
        assert said[0].startswith("sdgen: storage error: ") and (
            "time(s) with transient errors" in said[0] or "refused" in said[0]
        ), said[0]


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize(
    "command", ["status", "verify", "audit", "report", "filter", "dedup", "export", "contact-sheet", "label"]
)
def test_read_side_command_under_faults(world, command, rate, capsys):
    fs, tag = world["fs"], f"{command}-{int(rate * 100)}"
    out = f"s3://{BUCKET}/{tag}"
    fs.copy(f"{BUCKET}/ref", f"{BUCKET}/{tag}", recursive=True)  # its own copy: writes beside it stay apart
    argv, check = _cases(world, out, tag)[command]
    seed = sum(map(ord, tag))
    with FaultProxy(world["endpoint"], seed=seed, **_split(rate)) as proxy:
        code = main([*argv, "--config", _job(world["tmp"], f"faulty-{tag}", proxy.url)])
    err = capsys.readouterr().err
    _record(command, rate, code, err)
    assert_one_storage_line(code, err)
    assert proxy.counts["requests"] > 0
    if code == 1:  # the same command on a healthy endpoint finishes the job
        assert main([*argv, "--config", world["clean"]]) == 0
    assert check is None or check(), (
        f"{command} at {rate:.0%}: the finished product differs from the clean one"
    )


@pytest.mark.parametrize("rate", RATES)
def test_run_under_faults_then_resume_byte_identical(world, rate):
    fs, tag = world["fs"], f"run-{int(rate * 100)}"
    out = f"s3://{BUCKET}/{tag}"
    with FaultProxy(world["endpoint"], seed=int(rate * 100), **_split(rate)) as proxy:
        r = _run(_job(world["tmp"], f"faulty-{tag}", proxy.url, out))
    _record("run", rate, r.returncode, r.stderr)
    assert_one_storage_line(r.returncode, r.stderr)
    if r.returncode:
        again = _run(_job(world["tmp"], f"resume-{tag}", world["endpoint"], out))
        assert again.returncode == 0, again.stderr[-3000:]
    got, want = _objects(fs, f"{BUCKET}/{tag}/data"), _objects(fs, f"{BUCKET}/ref/data")
    assert got == want and len(want) == 4
    assert fs.exists(f"{BUCKET}/{tag}/_SUCCESS") and not fs.exists(f"{BUCKET}/{tag}/_lock")


def test_lost_reply_to_the_conditional_lock_put(world):
    """The `_lock` PUT (If-None-Match) reaches the store but its reply is lost: the retry meets 412, and the
    run recognises the lock as its own instead of reporting another holder."""
    out = f"s3://{BUCKET}/lost-reply"
    lose = lambda method, path, headers: method == "PUT" and path.split("?")[0].endswith("/_lock")  # noqa: E731
    with FaultProxy(world["endpoint"], lose_reply=lose) as proxy:
        r = _run(_job(world["tmp"], "lost-reply", proxy.url, out))
    assert proxy.lost, "no _lock PUT passed the proxy"
    assert r.returncode == 0, r.stderr[-3000:]
    assert "another run holds the lease" not in r.stderr
    assert _objects(world["fs"], f"{BUCKET}/lost-reply/data") == _objects(world["fs"], f"{BUCKET}/ref/data")


def test_two_runs_of_one_config_into_two_prefixes_at_once(world):
    """Spools live in the shared temp dir for an object store: named by their output, neither run
    touches the other's (they used to delete each other's, by shard name)."""
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "HF_HUB_OFFLINE": "1"}
    job = _job(world["tmp"], "twins", world["endpoint"], f"s3://{BUCKET}/twin-a")
    cmds = [
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "run",
            job,
            "--no-progress",
            "--set",
            f"output=s3://{BUCKET}/twin-{x}",
            "--set",
            "shards.rows_per_shard=1",
        ]
        for x in "ab"
    ]
    procs = [
        subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds
    ]
    results = [(p.wait(600), p.stderr.read()) for p in procs]
    for code, err in results:
        assert code == 0 and "FileNotFoundError" not in err, err[-3000:]
    a, b = (_objects(world["fs"], f"{BUCKET}/twin-{x}/data") for x in "ab")
    assert a == b and len(a) == 7


def test_finishing_fault_says_so_and_the_next_run_only_finishes(world):
    """Every shard commits, then `_SUCCESS` cannot be written: exit 1 with one line that says exactly that;
    the next run plans nothing, redoes no shard, and writes `_SUCCESS`."""
    fs, out = world["fs"], f"s3://{BUCKET}/finish"
    with FaultProxy(
        world["endpoint"], fail=lambda method, path: method == "PUT" and "/_SUCCESS" in path
    ) as proxy:
        r = _run(_job(world["tmp"], "finish-faulty", proxy.url, out))
    assert_one_storage_line(r.returncode, r.stderr)
    assert (
        r.returncode == 1 and "only writing _SUCCESS failed" in r.stderr and "no shard is redone" in r.stderr
    )
    assert len(fs.ls(f"{BUCKET}/finish/_commits")) == 4 and not fs.exists(f"{BUCKET}/finish/_SUCCESS")
    before = _objects(fs, f"{BUCKET}/finish/data")
    again = _run(_job(world["tmp"], "finish-clean", world["endpoint"], out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "pending_shards=0" in again.stderr and fs.exists(f"{BUCKET}/finish/_SUCCESS")
    assert _objects(fs, f"{BUCKET}/finish/data") == before == _objects(fs, f"{BUCKET}/ref/data")


@pytest.mark.parametrize(
    "command", ["status", "verify", "audit", "report", "filter", "dedup", "export", "contact-sheet", "label"]
)
def test_unreachable_endpoint_exits_1_after_the_configured_tries(world, command, capsys):
    """Nothing listens at the endpoint: one `sdgen: storage error` line naming the config's 3 tries
    (retry.attempts of --config), exit 1, for every read-side command."""
    dead = f"http://127.0.0.1:{_free_port()}"
    argv, _ = _cases(world, f"s3://{BUCKET}/ref", f"dead-{command}")[command]
    code = main([*argv, "--config", _job(world["tmp"], f"dead-{command}", dead)])
    err = capsys.readouterr().err
    assert_one_storage_line(code, err)
    assert code == 1 and "failed 3 time(s) with transient errors" in err, err
