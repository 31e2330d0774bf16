"""The book's structure: Colab cells, GPU metadata, table of contents, exercises, equation labels."""
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from colab_cells import colab_cell_source, repository_url  # noqa: E402

CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
TRAINS = {"05_training.ipynb", "06_sampling.ipynb"}


def test_config_points_launch_buttons_at_main():
    text = (ROOT / "_config.yml").read_text()
    assert re.search(r"^\s+branch:\s*main\s*$", text, re.M)
    assert "colab_url: https://colab.research.google.com" in text
    assert "intersphinx" not in text          # would break offline builds


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_starts_with_a_hidden_colab_install_cell(path):
    first = nbformat.read(path, as_version=4).cells[0]
    assert first.cell_type == "code" and first.source == colab_cell_source(repository_url())
    assert "remove-cell" in first.metadata.get("tags", [])


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_is_in_the_toc_and_ends_with_exercises(path):
    assert f"notebooks/{path.stem}" in (ROOT / "_toc.yml").read_text()
    nb = nbformat.read(path, as_version=4)
    assert any(c.cell_type == "markdown" and "## Exercises" in c.source for c in nb.cells)
    if path.name in TRAINS:
        assert nb.metadata.get("accelerator") == "GPU", "a chapter that trains asks Colab for a GPU"


def test_paper_equations_are_each_labelled_once():
    labels = []
    for path in CHAPTERS:
        for c in nbformat.read(path, as_version=4).cells:
            if c.cell_type == "markdown":
                labels += re.findall(r"\$\$\s*\((eq-\d)\)", c.source)
    assert sorted(labels) == sorted(set(labels)), "an equation label is defined twice"
    present = set(labels)
    for n in range(1, 8):
        if any(f"{{eq}}`eq-{n}`" in p.read_text() for p in CHAPTERS):
            assert f"eq-{n}" in present, f"eq-{n} is referenced but never defined"


def test_the_package_knows_the_repository_of_config_yml():
    from ddpm_lite.book import REPOSITORY
    assert REPOSITORY == repository_url()


def test_load_result_reads_the_clone_and_explains_when_offline(monkeypatch, tmp_path):
    import urllib.request

    from ddpm_lite import book
    from ddpm_lite.errors import DDPMLiteError
    assert book.load_result("reference.json")["fid_valid_vs_test"]["n"] == 10_000
    monkeypatch.setattr(book, "results_dir", lambda: tmp_path)          # as in a pip install: no results/

    def offline(*a, **k):
        raise OSError("Name or service not known")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DDPMLiteError, match="results/reference.json is not here.*raw.githubusercontent"):
        book.load_result("reference.json")
