"""A worker node disappears mid-run (spot preemption): its in-flight shard is re-queued, its actor
re-requested, and the output equals an uninterrupted run byte for byte (0 rows lost, 0 twice)."""

import os
import signal
import threading
import time

import psutil
from conftest import read_output, tiny_config, tree_bytes, write_prompts
from ray_nodes import loopback_cluster, private_ray_tmp  # noqa: F401 - fixtures

import pipeline
from pipeline.core.config import from_dict
from pipeline.generate.events import EventSink
from pipeline.launch import run as run_job

PROMPTS = [f"a shape number {i}" for i in range(16)]


class Recorder(EventSink):
    def __init__(self):
        super().__init__("json", stream=open(os.devnull, "w"))
        self.seen = []

    def emit(self, event, **fields):
        self.seen.append((event, fields))


def _preempt(cluster, node) -> None:
    """Kill the node as a preempted VM dies: its raylet and every worker process under it in the
    same instant. (Killing only the raylet leaves its actor process alive for a moment, long enough
    to hand its in-flight result to the driver, so no actor error would ever surface.)"""
    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    for proc in [*raylet.children(recursive=True), raylet]:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    cluster.remove_node(node, allow_graceful=False)  # reaps the rest (plasma, agents) and tells the GCS


def _config(src, out, **ray):
    return tiny_config(
        src,
        out,
        shards={"rows_per_shard": 1},
        write={"timing_columns": False},
        generation={"batch_size": 1, "steps": 3},
        ray={"executor": "ray", **ray},
    )


def test_node_lost_mid_run_equals_uninterrupted(loopback_cluster, tmp_path):  # noqa: F811
    src = write_prompts(tmp_path / "p.parquet", PROMPTS)
    nodes = loopback_cluster.add(2)
    cfg = from_dict(
        _config(src, tmp_path / "lost", address=loopback_cluster.address, num_workers=2, min_workers=2)
    )  # both start together, so both are busy when a node goes
    events, box = Recorder(), {}
    runner = threading.Thread(target=lambda: box.update(s=run_job(cfg, progress=False, events=events)))
    runner.start()
    deadline = time.time() + 120
    while time.time() < deadline and len(ready := [f for e, f in events.seen if e == "worker_ready"]) < 2:
        time.sleep(0.02)
    assert len(ready) == 2, "the two workers never became ready"
    committed = len([e for e, _ in events.seen if e == "shard_committed"])
    while (
        time.time() < deadline and len([e for e, _ in events.seen if e == "shard_committed"]) < committed + 2
    ):
        time.sleep(0.02)  # both actors are now working shard after shard: the lost node has one in flight
    victim = next(n for n in nodes if n.node_id.startswith(ready[1]["node"]))
    _preempt(loopback_cluster, victim)
    done = len([e for e, _ in events.seen if e == "shard_committed"])
    assert done < len(PROMPTS) - 1, f"the run had committed {done} of {len(PROMPTS)} shards before the kill"
    loopback_cluster.add(1)  # the replacement node a cloud brings up; the re-requested actor lands there
    runner.join(180)
    assert not runner.is_alive()
    summary = box["s"]
    assert summary["complete"] and not summary["failed_shards"], summary
    kinds = [e for e, _ in events.seen]
    assert kinds.count("worker_died") >= 1, kinds
    requeued = [f for e, f in events.seen if e == "shard_failed"]
    assert requeued and all(f["requeued"] for f in requeued) and "died" in requeued[0]["error"]
    died = [f for e, f in events.seen if e == "worker_died"]
    assert (
        died[0]["worker"] == ready[1]["worker"] and died[0]["rerequested"]
    )  # the lost actor is asked for again

    clean = tmp_path / "clean"
    pipeline.run(_config(src, clean, executor="inline"), progress=False)
    df = read_output(tmp_path / "lost")
    assert len(df) == 2 * len(PROMPTS) and not df.duplicated(["prompt_id", "sample_idx"]).any()
    lost, ref = tree_bytes(tmp_path / "lost" / "data"), tree_bytes(clean / "data")
    assert lost.keys() == ref.keys() and len(ref) == len(PROMPTS)
    assert all(lost[k] == ref[k] for k in ref)  # every part byte-identical to the uninterrupted run
