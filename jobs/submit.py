"""Submit an sdgen job to a Ray cluster through the Ray Jobs API (what a scheduler or CI calls).

    python jobs/submit.py job.yaml [--address http://HEAD:8265] [--set k=v ...] [--wait]

The job runs `python -m pipeline.cli run job.yaml --set ray.address=auto --no-progress` on the
cluster (sdgen must be installed there, e.g. the Docker image in jobs/k8s/; `sdgen` need not be on
PATH). Only the config file is shipped: the job's working_dir is a temporary directory holding it,
so its input/output must be absolute paths every node can read, or s3:// URLs.

Runtime env: no secrets and no copied environment. Credentials (AWS_*) come from the cluster's
nodes (a Kubernetes Secret, an instance role); `--env NAME=VALUE` passes non-secret variables and
refuses secret-looking names. Token auth (Ray 2.60 turns it on by default): the Ray client reads
RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token when RAY_AUTH_MODE=token;
`--token-file` sets those two for you.

Exit code with --wait: the job's own (sdgen: 0 ok, 1 some shards failed, 2 bad config/input,
3 another run holds the output's lease, 4 a budget was reached: a re-run continues); 1 when the job
failed without one (runtime env setup, stopped); without --wait: 0 once submitted. 2 for bad
arguments here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import shutil
import sys
import tempfile
import time

SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "CREDENTIAL", "KEY")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobs/submit.py", description=__doc__.splitlines()[0])
    p.add_argument("config", help="job YAML on this machine; shipped with the job as job.yaml")
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_API_SERVER_ADDRESS") or "http://127.0.0.1:8265",
        help="Ray dashboard (Jobs API) address (default $RAY_API_SERVER_ADDRESS or http://127.0.0.1:8265)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="sdgen config override")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a non-secret environment variable for the job (e.g. HF_HUB_OFFLINE=1)",
    )
    p.add_argument("--pip", action="append", default=[], help="extra pip packages for the runtime env")
    p.add_argument("--python", default="python", help="interpreter on the cluster (default: python)")
    p.add_argument("--token-file", help="Ray auth token file (sets RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH)")
    p.add_argument("--submission-id", help="job id; Ray refuses a second job with the same id")
    p.add_argument(
        "--wait", action="store_true", help="stream the logs until the job ends; exit with its code"
    )
    return p


def _fail(msg: str) -> int:
    print(f"submit: error: {msg}", file=sys.stderr)
    return 2


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"--env expects NAME=VALUE, got {item!r}")
        if any(w in name.upper() for w in SECRET_WORDS):
            raise ValueError(
                f"--env {name}: looks like a secret; a runtime env is visible in Ray's dashboard "
                "and logs: give the cluster's nodes the secret instead (Kubernetes Secret, instance role)"
            )
        env[name] = value
    return env


def entrypoint(args) -> str:
    sets = " ".join(f"--set {shlex.quote(s)}" for s in [*args.set, "ray.address=auto"])
    return f"{args.python} -m pipeline.cli run job.yaml {sets} --no-progress"


def exit_code(status: str, driver_exit_code) -> int:
    """The job's outcome as a process exit code: the entrypoint's own code when Ray has it."""
    if status == "SUCCEEDED":
        return 0
    return driver_exit_code if driver_exit_code not in (None, 0) else 1


async def _stream(client, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        print(lines, end="", flush=True)


def follow(client, job_id: str) -> int:
    """Print the job's logs as they come, then return its exit code."""
    try:
        asyncio.run(_stream(client, job_id))
    except Exception as e:  # noqa: BLE001 - the log stream is best effort; the status below is not
        print(f"submit: log stream ended ({type(e).__name__}: {e}); polling the status", file=sys.stderr)
    while (info := client.get_job_info(job_id)).status not in TERMINAL:
        time.sleep(2)
    code = exit_code(str(info.status), info.driver_exit_code)
    why = (info.message or "").splitlines()[0] if code else ""  # its first line: the logs were streamed above
    print(f"job {job_id}: {info.status} (exit code {code}){': ' + why if why else ''}"[:2000])
    return code


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not os.path.isfile(args.config):
        return _fail(f"config file not found: {args.config!r}")
    try:
        env_vars = parse_env(args.env)
    except ValueError as e:
        return _fail(str(e))
    if args.token_file:  # before importing ray: it reads the auth mode at import
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=os.path.abspath(args.token_file))
    from ray.job_submission import JobSubmissionClient

    with tempfile.TemporaryDirectory(prefix="sdgen-job-") as wd:
        shutil.copyfile(args.config, os.path.join(wd, "job.yaml"))
        runtime_env = {"working_dir": wd}
        if env_vars:
            runtime_env["env_vars"] = env_vars
        if args.pip:
            runtime_env["pip"] = args.pip
        entry = entrypoint(args)
        try:
            client = JobSubmissionClient(args.address)
            job_id = client.submit_job(
                entrypoint=entry, runtime_env=runtime_env, submission_id=args.submission_id
            )
        except Exception as e:  # noqa: BLE001 - connection, auth, duplicate id: one line, exit 1
            print(
                f"submit: error: could not submit to {args.address}: {type(e).__name__}: {e}"[:2000],
                file=sys.stderr,
            )
            return 1
    print(f"submitted {job_id}: {entry}", flush=True)
    return follow(client, job_id) if args.wait else 0


if __name__ == "__main__":
    sys.exit(main())
