"""Write student copies of the chapters: every cell tagged "solution" removed, outputs cleared.

Usage: python scripts/student_copies.py [OUT_DIR]   (default: students/, which git and the site ignore)
"""
import sys
from pathlib import Path

import nbformat

root = Path(__file__).resolve().parent.parent
out = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "students"
out.mkdir(parents=True, exist_ok=True)
for src in sorted((root / "notebooks").glob("[0-9]*.ipynb")):
    nb = nbformat.read(src, as_version=4)
    kept = [c for c in nb.cells if "solution" not in c.get("metadata", {}).get("tags", [])]
    removed = len(nb.cells) - len(kept)
    for c in kept:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nb.cells = kept
    nbformat.write(nb, out / src.name)
    print(f"{src.name}: {removed} solution cell(s) removed")
