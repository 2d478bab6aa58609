"""A real Ray head (`ray start --head`) on 127.0.0.1 for the Jobs API tests: every port chosen free,
its own --temp-dir, token auth with a token of its own, stopped by the PIDs of its processes (never
`ray stop`, which kills every Ray on the host)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port(avoid: range = range(0)) -> int:
    """A free port outside `avoid` (the worker port range: Ray refuses a component port inside it)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


class RayHead:
    def __init__(self, num_cpus: int = 2):
        self.tmp = tempfile.mkdtemp(prefix="sdj", dir="/tmp")  # short: unix socket paths < 108 chars
        self.token = secrets.token_hex(16)
        lo = min(max(free_port(), 20000), 60000)  # the worker range first, every other port outside it
        workers = range(lo, lo + 201)
        self.gcs, self.dash = free_port(workers), free_port(workers)
        self.address = f"http://127.0.0.1:{self.dash}"
        # this checkout first on the path for the job drivers and workers; the head's own auth token
        self.env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            RAY_TMPDIR=self.tmp,
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.token,
            HF_HUB_OFFLINE="1",
            RAY_USAGE_STATS_ENABLED="0",
            TOKENIZERS_PARALLELISM="false",
        )
        others = (
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--metrics-export-port",
            "--node-manager-port",
            "--object-manager-port",
            "--runtime-env-agent-port",
            "--ray-client-server-port",
        )
        ports = {"--port": self.gcs, "--dashboard-port": self.dash, **{k: free_port(workers) for k in others}}
        self.cmd = [
            str(BIN / "ray"),
            "start",
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--dashboard-host",
            "127.0.0.1",
            "--include-dashboard",
            "true",
            "--num-cpus",
            str(num_cpus),
            "--num-gpus",
            "0",
            "--temp-dir",
            f"{self.tmp}/ray",
            "--disable-usage-stats",
            "--min-worker-port",
            str(lo),
            "--max-worker-port",
            str(lo + 200),
        ]
        for k, v in ports.items():
            self.cmd += [k, str(v)]

    def start(self, timeout: float = 120) -> "RayHead":
        try:
            r = subprocess.run(self.cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"ray start did not return within {timeout} s") from None
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        deadline = time.time() + timeout
        while time.time() < deadline:  # the Jobs API answers once the dashboard's job module is up
            try:
                req = urllib.request.Request(
                    f"{self.address}/api/version", headers={"Authorization": f"Bearer {self.token}"}
                )
                urllib.request.urlopen(req, timeout=2).read()
                return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the dashboard at {self.address} did not answer within {timeout} s")

    @classmethod
    def started(cls, num_cpus: int = 2, tries: int = 2) -> "RayHead":
        """A started head; a start that fails is retried with a fresh head (new ports, temp dir and
        token). Ray's raylet can miss its registration deadline on a loaded 2-core box ("GCS cannot
        find the node"; seen once in a clean-clone run, at the moment pip's setup ended), and a port
        picked free can be taken before Ray binds it: neither is what these tests check."""
        errors = []
        for _ in range(tries):
            try:
                return cls(num_cpus=num_cpus).start()
            except RuntimeError as e:  # start() has already stopped that head and removed its temp dir
                errors.append(str(e))
        raise RuntimeError(f"ray start failed {tries} times:\n" + "\n---\n".join(errors))

    def client_env(self, token: bool = True) -> dict:
        """Environment for a client process (submit.py): the token from the environment, or none."""
        env = {k: v for k, v in self.env.items() if k != "RAY_AUTH_TOKEN"}
        if token:
            env["RAY_AUTH_TOKEN"] = self.token
        else:
            env["RAY_AUTH_TOKEN_PATH"] = os.path.join(self.tmp, "no-such-token")
        return env

    def pids(self) -> list[int]:
        """Processes of this head (their command lines carry its temp dir) and their descendants
        (job drivers, workers)."""
        roots = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(self.tmp in arg for arg in p.info["cmdline"] or ()):
                    roots.append(p)
            except (psutil.Error, TypeError):
                pass
        found = {}
        for p in roots:
            found[p.pid] = p
            try:
                for c in p.children(recursive=True):
                    found[c.pid] = c
            except psutil.Error:
                pass
        found.pop(os.getpid(), None)
        return sorted(found)

    def stop(self) -> None:
        pids = self.pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            _, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=5)
            pids = [p.pid for p in alive]
            if not pids:
                break
        shutil.rmtree(self.tmp, ignore_errors=True)
