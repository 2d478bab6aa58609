"""Submit an sdgen job to a Ray cluster through the Ray Jobs API (what a scheduler or CI calls).

    python jobs/submit.py --address http://HEAD:8265 configs/my_job.yaml [--set k=v ...] [--wait]

The job runs `sdgen run CONFIG --set ray.address=auto` on the cluster, with this repository as its
working directory. Re-submitting the same config resumes: committed shards are skipped, and new
input files under the same prefix become new shards, so a cron entry re-running this command
processes only what is new.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://head:8265")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--pip", action="append", default=[], help="extra pip packages for the runtime env")
    p.add_argument("--wait", action="store_true", help="follow the logs until the job ends")
    args = p.parse_args(argv)

    from ray.job_submission import JobStatus, JobSubmissionClient

    sets = " ".join(f"--set {shlex.quote(s)}" for s in [*args.set, "ray.address=auto"])
    entry = f"sdgen run {shlex.quote(args.config)} {sets} --no-progress"
    env = {"working_dir": ".", "env_vars": {"HF_HUB_OFFLINE": "1"}}
    if args.pip:
        env["pip"] = args.pip
    client = JobSubmissionClient(args.address)
    job_id = client.submit_job(entrypoint=entry, runtime_env=env)
    print(f"submitted {job_id}: {entry}")
    if not args.wait:
        return 0
    while (status := client.get_job_status(job_id)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        time.sleep(5)
    print(client.get_job_logs(job_id))
    print(f"job {job_id}: {status}")
    return 0 if status == JobStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
