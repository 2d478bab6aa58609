"""The event sink: JSON lines parse, text lines hold key=value, the bar hides per-shard lines; and an
inline run with --log-format json reports start, each shard and the summary."""

import io
import json

from conftest import tiny_config, write_prompts

from pipeline.cli import main
from pipeline.generate.events import EventSink


def test_json_and_text_lines():
    out = io.StringIO()
    EventSink("json", stream=out).emit("shard_committed", shard="s1", rows=6, seconds={"total": 0.5})
    rec = json.loads(out.getvalue())
    assert rec["event"] == "shard_committed" and rec["rows"] == 6 and rec["seconds"]["total"] == 0.5
    out = io.StringIO()
    EventSink("text", stream=out).emit("shard_failed", shard="s1", error="worker 1 died", requeued=True)
    assert out.getvalue() == 'sdgen: shard_failed shard=s1 error="worker 1 died" requeued=True\n'
    out = io.StringIO()
    sink = EventSink("text", stream=out, bar_shown=True)
    sink.emit("shard_committed", shard="s1")
    assert out.getvalue() == ""  # the bar shows commits; worker and failure lines still print


def test_cli_json_log_of_an_inline_run(tmp_path, capsys):
    import yaml

    src = write_prompts(tmp_path / "p.parquet", ["a", "b", "c", "d"])
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(tiny_config(src, tmp_path / "o")))
    assert main(["run", str(job), "--log-format", "json"]) == 0
    events = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished" and kinds.count("shard_committed") == 2
    assert len(events[0]["fingerprint"]) == 64
    assert sum(e["rows"] for e in events if e["event"] == "shard_committed") == 8 == events[-1]["rows_total"]


def test_tally_counts_a_retried_shard_once_and_keeps_no_marker():
    """The driver's Tally aggregates markers as they arrive: a shard whose first attempt committed but
    died before answering reports twice and counts once; nothing per shard is kept for the others."""
    from pipeline.generate.summary import Tally

    seen, t = [], Tally(on_marker=lambda m: seen.append(m["rows"]))
    t.commit("a", {"rows": 2, "status_counts": {"ok": 2}, "timings": {"total": 1.0}})
    t.fail("b", "actor died")
    t.commit("b", {"rows": 3, "status_counts": {"ok": 2, "failed": 1}, "timings": {"total": 2.0}})
    t.commit("b", {"rows": 3, "status_counts": {"ok": 2, "failed": 1}, "timings": {"total": 2.0}})  # again
    assert (t.count, t.rows, dict(t.status), t.failed) == (2, 5, {"ok": 4, "failed": 1}, {})
    assert seen == [2, 3, 3] and t.stages["total"] == 3.0 and set(t.retried) == {"b"}
