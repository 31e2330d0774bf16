"""Export every notebook's `#| export` cells to the ddpm_lite package (nbdev's nb_export)."""
import os
from pathlib import Path

from nbdev.export import nb_export

root = Path(__file__).resolve().parent.parent
os.chdir(root)  # nb_export records paths relative to the package folder
for nb in sorted((root / "notebooks").glob("*.ipynb")):
    if "#| default_exp" in nb.read_text():
        nb_export(str(nb.relative_to(root)), "ddpm_lite")
        print(f"exported {nb.name}")
