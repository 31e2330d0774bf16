"""Student copies: every solution cell removed, everything else kept."""
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def test_student_copies_drop_solutions_and_keep_exercises(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "student_copies.py"), str(tmp_path)], check=True,
                   capture_output=True)
    chapters = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    assert chapters
    for src in chapters:
        full = nbformat.read(src, as_version=4)
        copy = nbformat.read(tmp_path / src.name, as_version=4)
        solutions = [c for c in full.cells if "solution" in c.metadata.get("tags", [])]
        assert solutions, f"{src.name} has no solution cells (every chapter ends with exercises)"
        assert not [c for c in copy.cells if "solution" in c.metadata.get("tags", [])]
        assert len(copy.cells) == len(full.cells) - len(solutions)
        assert any("## Exercises" in c.source for c in copy.cells if c.cell_type == "markdown")
