"""What may import what: `sdgen plan` and the audit math stay torch-free, and core imports nothing
else of sdgen (ARCHITECTURE.md)."""
import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "pipeline"


def test_config_plan_and_audit_statistics_import_no_torch():
    code = ("import sys\n"
            "import pipeline, pipeline.cli\n"
            "from pipeline.core import config, job, schema, storage, dataset\n"
            "from pipeline.generate import inputs, plan\n"
            "from pipeline.audit import stats, tables\n"
            "from pipeline.probes import attributes, safety\n"
            "bad = sorted(m for m in ('torch', 'diffusers', 'open_clip', 'transformers') if m in sys.modules)\n"
            "print(','.join(bad))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "", f"imported {r.stdout.strip()}"


def test_sdgen_plan_runs_without_torch(tmp_path):
    from conftest import tiny_config, write_job, write_prompts

    cfg = tiny_config(write_prompts(tmp_path / "p.parquet"), tmp_path / "out")
    code = ("import sys, json\nfrom pipeline.cli import main\n"
            f"rc = main(['plan', {str(tmp_path / 'job.yaml')!r}, '--json'])\n"
            "assert rc == 0, rc\nprint('torch' in sys.modules)\n")
    write_job(tmp_path / "job.yaml", cfg)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "False"


def test_core_imports_nothing_else_of_sdgen():
    for path in (PKG / "core").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline."):
                allowed = node.module.startswith("pipeline.core")
                assert allowed, f"{path.name} imports {node.module}"
