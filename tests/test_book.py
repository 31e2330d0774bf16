"""The book's structure: Colab cells, GPU metadata, table of contents, exercises, equation labels."""
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from colab_cells import colab_cell_source, repository_url  # noqa: E402

CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))   # the chapters, the quick start and the appendix
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
    with pytest.raises(DDPMLiteError, match="results/x.preview.npz is not here"):
        book.load_result_arrays("x.preview.npz")


def test_load_result_arrays_reads_npz_without_pickle(monkeypatch, tmp_path):
    import numpy as np

    from ddpm_lite import book
    from ddpm_lite.errors import DDPMLiteError
    monkeypatch.setattr(book, "results_dir", lambda: tmp_path)
    np.savez(tmp_path / "p.npz", images=np.arange(6, dtype=np.uint8).reshape(2, 3))
    assert book.load_result_arrays("p.npz")["images"].tolist() == [[0, 1, 2], [3, 4, 5]]
    np.savez(tmp_path / "bad.npz", objects=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        book.load_result_arrays("bad.npz")
    (tmp_path / "torn.json").write_text('{"a": ')
    with pytest.raises(DDPMLiteError, match="not valid JSON"):
        book.load_result("torn.json")


def test_reference_rows_for_every_sample_size_agree_with_each_other():
    from ddpm_lite.book import load_result
    ref = load_result("reference.json")
    vs_test = {r["n"]: r["fid"] for r in ref["fid_n_vs_test"]}
    n_vs_n = {r["n"]: r["fid"] for r in ref["fid_by_n"]}
    assert vs_test[10_000] == ref["fid_valid_vs_test"]["value"] == n_vs_n[10_000]
    ns = sorted(vs_test)
    assert all(vs_test[a] > vs_test[b] for a, b in zip(ns, ns[1:])), "FID must fall as n grows"
    # n real images against all 10,000 test images sit closer than n against n
    assert all(vs_test[n] < n_vs_n[n] for n in n_vs_n if n < 10_000)
    is_by_n = {r["n"]: r["mean"] for r in ref["inception_score_test_by_n"]}
    assert is_by_n[10_000] == ref["inception_score_test"]["mean"]


def test_a_fetched_result_is_downloaded_once_per_session(monkeypatch, tmp_path):
    import io
    import urllib.request

    from ddpm_lite import book
    monkeypatch.setattr(book, "results_dir", lambda: tmp_path)           # no clone: fetch from the repository
    monkeypatch.setattr(book, "_FETCHED", {})
    calls = []

    def fake_urlopen(url, timeout):
        calls.append(url)
        return io.BytesIO(b'{"fid": 1.5}')
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    assert book.load_result("reference.json") == {"fid": 1.5}
    assert book.load_result("reference.json") == {"fid": 1.5}
    assert calls == [book._raw_url("reference.json")]
    (tmp_path / "reference.json").write_text('{"fid": 2.5}')            # a local file always wins, read afresh
    assert book.load_result("reference.json") == {"fid": 2.5}


def test_without_a_clone_files_go_to_the_working_folder_and_results_come_from_the_url(monkeypatch, tmp_path):
    from ddpm_lite import book
    from ddpm_lite.errors import DDPMLiteError
    repo = tmp_path / "repo" / "results"
    repo.mkdir(parents=True)
    (repo / "x.json").write_text('{"a": 1}')
    monkeypatch.setattr(book, "in_clone", lambda: False)                  # as in a pip install
    monkeypatch.setattr(book, "_FETCHED", {})
    monkeypatch.setenv("DDPM_LITE_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("DDPM_LITE_RESULTS_URL", repo.as_uri())
    assert book.work_dir() == tmp_path / "work"
    assert book.results_dir() == tmp_path / "work" / "results"
    assert book.output_dir().is_dir() and book.output_dir() == tmp_path / "work" / "results"
    assert book.results_url("x.json") == repo.as_uri() + "/x.json"
    assert book.load_result("x.json") == {"a": 1}                        # fetched through urllib, file://
    with pytest.raises(DDPMLiteError, match="could not be fetched"):
        book.load_result("absent.json")
    monkeypatch.delenv("DDPM_LITE_WORKDIR")
    monkeypatch.chdir(tmp_path)
    assert book.work_dir() == tmp_path                                     # default: the current folder


def test_plan_file_gives_a_runnable_copy_outside_a_clone(monkeypatch, tmp_path):
    from ddpm_lite import book
    from ddpm_lite.errors import DDPMLiteError
    from ddpm_lite.experiments import load_plan
    assert book.plan_file("mini") == book.repo_root() / "plans" / "mini.json"     # in the clone: its own file
    monkeypatch.setenv("DDPM_LITE_WORKDIR", str(tmp_path))
    copy = book.plan_file("mini")
    assert copy == tmp_path / "plans" / "mini.json"
    assert copy.read_bytes() == (book.repo_root() / "plans" / "mini.json").read_bytes()
    assert load_plan(copy).name == "mini"
    with pytest.raises(DDPMLiteError, match="no plan named 'nope'.*known: .*mini"):
        book.plan_file("nope")
