"""sdgen against a real `ray start --head` (a subprocess driver, as a job would run): Ray's fake
multi-node autoscaler scales up from 0 worker nodes because sdgen's actors are pending, and the
sdgen metrics reach the head's Prometheus endpoint."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from conftest import read_output, tiny_config, write_prompts
from ray_nodes import Head

PROMPTS = [f"a shape number {i}" for i in range(6)]


def _run(head: Head, tmp_path, **ray) -> tuple[int, list[dict]]:
    src = write_prompts(tmp_path / "p.parquet", PROMPTS)
    cfg = tiny_config(
        src,
        tmp_path / "o",
        shards={"rows_per_shard": 1},
        generation={"batch_size": 1},
        ray={"executor": "ray", "address": head.address, **ray},
    )
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(job), "--log-format", "json"],
        env={**head.driver_env(), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    events = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.returncode, events


def _autoscaling_config(path, gcs_port: int) -> str:
    conf = {
        "cluster_name": "sdgen-fake",
        "max_workers": 2,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": f"127.0.0.1:{gcs_port}",
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "cpu_node": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2},
        },
        "head_node_type": "ray.head.default",
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 1,
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }
    path.write_text(json.dumps(conf))
    return str(path)


@pytest.mark.slow
def test_fake_autoscaler_scales_up_for_pending_actors(tmp_path):
    from ray_nodes import free_port

    gcs = free_port()
    conf = _autoscaling_config(tmp_path / "autoscaling.json", gcs)
    head = Head(
        "--num-cpus",
        "0",
        f"--autoscaling-config={conf}",
        port=gcs,
        env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"},
    )
    try:
        _, events = _run(head, tmp_path, num_workers=2, num_cpus_per_worker=1, start_timeout_s=240)
    finally:
        head.stop()
    ready = [e for e in events if e["event"] == "worker_ready"]
    # the head has 0 CPUs and there were no worker nodes: every ready actor sits on a node the
    # autoscaler launched because sdgen's actors were pending
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    assert ready and all(e["node"] != FAKE_HEAD_NODE_ID for e in ready), ready
    finished = [e for e in events if e["event"] == "run_finished"][0]
    assert finished["complete"] and finished["rows_total"] == 2 * len(PROMPTS)
    assert len(read_output(tmp_path / "o")) == 2 * len(PROMPTS)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_metrics_reach_the_heads_prometheus_endpoint(tmp_path):
    head = Head("--num-cpus", "1", env={"RAY_metrics_report_interval_ms": "500"})
    try:
        _, events = _run(head, tmp_path, num_workers=1)
        deadline, text = time.time() + 30, ""
        while time.time() < deadline and "sdgen_shard_seconds" not in text:
            time.sleep(1)
            text = _scrape(head.metrics_port)
    finally:
        head.stop()
    lines = [x for x in text.splitlines() if "sdgen_" in x and not x.startswith("#")]
    ok = [x for x in lines if "sdgen_images" in x and 'status="ok"' in x]
    assert ok and float(ok[0].rsplit(" ", 1)[1]) > 0, lines
    assert any("sdgen_shard_seconds" in x for x in lines) and any(
        "sdgen_images_per_second" in x for x in lines
    )
    assert any(e["event"] == "shard_committed" for e in events)
