"""Execute the notebooks in place and store their outputs (`make notebooks`), so a reader on a code
host sees the tables and images without running anything.
Usage: python notebooks/execute.py [NAME.ipynb ...]"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("quickstart.ipynb", "bias_audit.ipynb")
MAX_BYTES = (
    1_500_000  # stored size cap per notebook (outputs included): keeps the repo small; tests check it too
)


def drop_stderr(nb) -> None:
    """Library warnings on stderr (tqdm's IProgress, deprecations) name this machine's site-packages
    paths and say nothing to a reader: only stdout, results and images are stored."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [
                o for o in cell.outputs if not (o.output_type == "stream" and o.get("name") == "stderr")
            ]


def execute(name: str) -> int:
    """Run one notebook top to bottom in a fresh kernel (cwd = repo root) and write it back; returns its
    size."""
    import os

    path = ROOT / "notebooks" / name
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as work:
        os.environ["SDGEN_NOTEBOOK_WORK"] = work  # the notebooks write their outputs here, not into the repo
        NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
        ).execute()
    drop_stderr(nb)
    nbformat.write(nb, path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{path}: {size} bytes stored, over the {MAX_BYTES} cap: show smaller images")
    return size


if __name__ == "__main__":
    for n in sys.argv[1:] or NOTEBOOKS:
        t = time.time()
        print(f"{n}: {execute(n)} bytes in {time.time() - t:.0f} s", flush=True)
