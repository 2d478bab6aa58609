"""What may import what (the LAYERS table below, ARCHITECTURE.md): no upward import and no import circle,
function-level imports included; `sdgen plan` and the audit math stay torch-free."""

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "pipeline"


def test_config_plan_and_audit_statistics_import_no_torch():
    code = (
        "import sys\n"
        "import pipeline, pipeline.cli\n"
        "from pipeline.core import config, job, schema, storage, dataset\n"
        "from pipeline.generate import inputs, plan\n"
        "from pipeline.audit import stats, tables\n"
        "from pipeline.probes import attributes, safety\n"
        "bad = sorted(m for m in ('torch', 'diffusers', 'open_clip', 'transformers') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "", f"imported {r.stdout.strip()}"


def test_sdgen_plan_runs_without_torch(tmp_path):
    from conftest import tiny_config, write_job, write_prompts

    cfg = tiny_config(write_prompts(tmp_path / "p.parquet"), tmp_path / "out")
    code = (
        "import sys, json\nfrom pipeline.cli import main\n"
        f"rc = main(['plan', {str(tmp_path / 'job.yaml')!r}, '--json'])\n"
        "assert rc == 0, rc\nprint('torch' in sys.modules)\n"
    )
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


# What may import what. A subpackage may import itself and the ones listed; nothing may import upward.
# core is the contracts everything shares; toyworld the shipped world and its models (it knows nothing of
# sdgen's stages); probes measure an image; generate makes and commits images; audit measures outputs
# (numbers only, never generating, never HTML); pages shows audit numbers as HTML; tools reads or checks
# outputs; curate turns outputs into training sets; launch is the one run entry; cli is the command line.
# toyworld.training is the offline trainer (`make toy-models`), which the runtime never imports: it may
# use generate's tokenizer.
LAYERS = {
    "core": set(),
    "toyworld": {"core"},
    "probes": {"core", "toyworld"},
    "generate": {"core", "toyworld", "probes"},
    "audit": {"core", "toyworld", "probes"},
    "pages": {"core", "toyworld", "probes", "audit"},
    "tools": {"core", "toyworld", "probes", "generate"},
    "curate": {"core", "toyworld", "probes", "generate", "audit"},
    "launch": {"core", "toyworld", "probes", "generate", "curate"},
    "cli": {"core", "toyworld", "probes", "generate", "audit", "pages", "tools", "curate", "launch"},
    "(package)": {"core", "launch"},  # pipeline/__init__.py: the Python API
}
EXEMPT = {"pipeline.toyworld.training": {"generate"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> set[str]:
    return {_module_name(p) for p in PKG.rglob("*.py")}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every sdgen module `path` imports, at module level or inside a function, `from pipeline import x`
    included (x a module or a name of the package)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "pipeline"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pipeline":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return "(package)" if len(parts) == 1 else parts[1]


def test_layering_table_holds_for_every_import():
    known, bad = _modules(), []
    assert {_layer(m) for m in known} <= set(LAYERS), "a new subpackage: give it a row in LAYERS"
    for path in PKG.rglob("*.py"):
        mod = _module_name(path)
        allowed = LAYERS[_layer(mod)] | {_layer(mod)}
        allowed |= next((v for k, v in EXEMPT.items() if mod.startswith(k)), set())
        bad += [f"{mod} -> {t}" for t in _imports(path, known) if _layer(t) not in allowed]
    assert not bad, "imports against the layering (tests/test_layers.py LAYERS):\n" + "\n".join(sorted(bad))


def test_no_import_circles():
    """No two modules import each other, directly or through others (function-level imports count)."""
    known = _modules()
    graph = {
        _module_name(p): {t for t in _imports(p, known) if t in known} - {_module_name(p)}
        for p in PKG.rglob("*.py")
    }
    graph = {
        m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()
    }  # a package's own __init__
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert not cycles, f"import circles: {cycles}"


def _strongly_connected(graph: dict) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    out.append(sorted(comp))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on:
                low[node] = min(low[node], index[child])
    return out


def test_audit_holds_numbers_only():
    """HTML lives in pages/ (jinja templates): no audit module imports a template engine or escapes HTML."""
    for path in (PKG / "audit").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            bad = [n for n in names if n.split(".")[0] in ("jinja2", "markupsafe", "html")]
            assert not bad, f"audit/{path.name} imports {bad}: pages belong in pipeline/pages"
