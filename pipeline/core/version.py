"""The one version source: the wheel's metadata (pyproject reads it), `sdgen --version`, run.json."""

__version__ = "0.2.0"
