"""Multi-node Ray on loopback for the cluster tests: nodes with private ports and a private temp
dir (RAY_TMPDIR, so ray's "current cluster" file and sessions never touch another user's), every
process stopped by the test that started it, never `ray stop`."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_ray_tmp(monkeypatch):
    """A short private RAY_TMPDIR (unix socket paths must stay under ~100 characters)."""
    import ray

    if ray.is_initialized():  # a session cluster of another test module: these tests bring their own
        ray.shutdown()
    d = tempfile.mkdtemp(prefix="sdr", dir="/tmp")
    # Ray rewrites a 127.0.0.1 address to the machine's interface address before connecting (for
    # real clusters); these nodes listen on loopback only, so keep loopback (the macOS/Windows path)
    from ray._private import ray_constants

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    monkeypatch.setenv("RAY_TMPDIR", d)
    return d


@pytest.fixture
def loopback_cluster(private_ray_tmp):
    """A head with no CPUs (the driver only) plus `add(n)` worker nodes with 1 CPU each; fast
    node-death detection so a removed node's actors are reported dead within ~2 s."""
    from ray.cluster_utils import Cluster

    head = dict(
        num_cpus=0,
        node_ip_address="127.0.0.1",
        gcs_server_port=free_port(),
        include_dashboard=False,
        dashboard_agent_listen_port=free_port(),
        metrics_export_port=free_port(),
        temp_dir=os.path.join(private_ray_tmp, "ray"),
        _system_config={
            "health_check_period_ms": 500,
            "health_check_failure_threshold": 3,
            "health_check_initial_delay_ms": 0,
        },
    )
    cluster = Cluster(initialize_head=True, head_node_args=head)

    def add(n: int = 1):
        return [
            cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", metrics_export_port=free_port())
            for _ in range(n)
        ]

    cluster.add = add
    import ray

    # the driver joins here (the pool reuses a connected Ray), on loopback
    ray.init(
        address=cluster.address, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False
    )
    yield cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()  # kills the nodes' own processes (by PID), not every Ray on the host


class Head:
    """`ray start --head` on 127.0.0.1 with free ports and its own --temp-dir, stopped by the PIDs
    of the processes that carry that temp dir in their command line (never `ray stop`)."""

    def __init__(self, *args: str, env: dict | None = None, port: int | None = None):
        import subprocess
        import sys

        self.dir = tempfile.mkdtemp(prefix="sdh", dir="/tmp")
        self.port, self.metrics_port = port or free_port(), free_port()
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_TMPDIR": self.dir,
            **(env or {}),
        }
        ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
        subprocess.check_call(
            [
                ray_bin,
                "start",
                "--head",
                "--node-ip-address",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--temp-dir",
                os.path.join(self.dir, "ray"),
                "--include-dashboard",
                "false",
                "--dashboard-agent-listen-port",
                str(free_port()),
                "--dashboard-agent-grpc-port",
                str(free_port()),
                "--metrics-export-port",
                str(self.metrics_port),
                "--runtime-env-agent-port",
                str(free_port()),
                "--min-worker-port",
                "0",
                "--max-worker-port",
                "0",
                "--disable-usage-stats",
                *args,
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.address = f"127.0.0.1:{self.port}"

    def driver_env(self) -> dict:
        """For a driver subprocess: keep 127.0.0.1 (Ray otherwise swaps in the interface address)."""
        return {**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

    def stop(self) -> None:
        import signal

        me = os.getpid()
        for d in os.listdir("/proc"):
            if d.isdigit() and int(d) != me:
                try:
                    if self.dir.encode() in open(f"/proc/{d}/cmdline", "rb").read():
                        os.kill(int(d), signal.SIGKILL)
                except OSError:
                    pass
