"""Rewrite each chapter's first cell (the Colab install cell) from the repository URL in _config.yml.

_config.yml is the one place that names the repository; run this after changing it.
"""
import re
from pathlib import Path

import nbformat

root = Path(__file__).resolve().parent.parent


def repository_url() -> str:
    text = (root / "_config.yml").read_text()
    m = re.search(r"^repository:\s*\n\s+url:\s*(\S+)", text, re.M)
    if not m:
        raise SystemExit("_config.yml has no repository.url")
    return m.group(1).rstrip("/")


def colab_cell_source(url: str) -> str:
    return ("# Running in Colab? Install ddpm_lite first (this cell does nothing elsewhere).\n"
            "import sys\n"
            "if \"google.colab\" in sys.modules:\n"
            f"    %pip install -q \"ddpm_lite @ git+{url}@main\"")


if __name__ == "__main__":
    src = colab_cell_source(repository_url())
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        first = nb.cells[0]
        if first.cell_type == "code" and "google.colab" in first.source and first.source != src:
            first.source = src
            nbformat.write(nb, path)
            print(f"updated {path.name}")
