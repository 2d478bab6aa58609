"""The notebooks run end to end (tiny model unless the toy weights exist), on CPU (slow), and are
stored with their outputs (`make notebooks`) so a reader on a code host sees them (fast)."""

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("quickstart.ipynb", "bias_audit.ipynb")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_with_outputs(name):
    """Every code cell was executed (in order) and has outputs, at least one is a PNG image, and the
    file stays small: run `make notebooks` and commit when this fails."""
    path = ROOT / "notebooks" / name
    assert path.stat().st_size < 1_500_000, f"{name}: {path.stat().st_size} bytes stored"
    code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert code, name
    empty = [i for i, c in enumerate(code) if not c.get("outputs")]
    assert not empty, f"{name}: code cells {empty} have no stored outputs (run make notebooks)"
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), name
    errors = [o for c in code for o in c["outputs"] if o.get("output_type") == "error"]
    assert not errors, f"{name}: stored an error output {errors[0].get('ename')}"
    stderr = [o for c in code for o in c["outputs"] if o.get("name") == "stderr"]
    assert not stderr, (
        f"{name}: stored stderr (library warnings name this machine's paths): "
        f"{''.join(stderr[0]['text'])[:80]!r}"
    )
    assert any("image/png" in o.get("data", {}) for c in code for o in c["outputs"]), (
        f"{name}: no image/png output"
    )


def _execute(name, work):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    os.environ["SDGEN_NOTEBOOK_WORK"] = str(work)
    try:
        NotebookClient(
            nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
        ).execute()
    finally:
        os.environ.pop("SDGEN_NOTEBOOK_WORK", None)
    return nb


def _text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(
                o.get("text", "")
                + str(o.get("data", {}).get("text/plain", ""))
                + str(o.get("data", {}).get("text/html", ""))
            )
    return "\n".join(out)


@pytest.mark.slow
def test_bias_audit_notebook(tmp_path):
    nb = _execute("bias_audit.ipynb", tmp_path)
    text = _text(nb)
    assert "colour by shape" in text and "D2 [CI]" in text and "diff (B-A)" in text
    assert '<rect class="bar"' in text  # the inline charts
    for f in (
        "before/audit/summary.parquet",
        "before/audit/metrics.json",
        "after/audit/compare-before.json",
        "after/audit/report.html",
        "after/policy/toyworld/decisions.parquet",
    ):
        assert (tmp_path / f).is_file(), f
    import pandas as pd

    after = pd.read_parquet(tmp_path / "after" / "data")
    assert set(after.mitigation_variant) == {"red", "green", "blue", "yellow"} and len(after) == 96
    assert (after.groupby("prompt_id").mitigation_variant.value_counts() == 2).all()


@pytest.mark.slow
def test_quickstart_notebook(tmp_path):
    """The quickstart runs the toy model, shows rows and a contact sheet, and checks the seed promise."""
    nb = _execute("quickstart.ipynb", tmp_path)
    text = _text(nb)
    assert "16 rows;" in text and "complete: True" in text
    assert "max pixel difference" in text and "committed this run: 0" in text
    assert (tmp_path / "out" / "contact_sheet.png").is_file()
