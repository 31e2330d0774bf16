"""What a reader sees of the committed notebooks: solutions collapsed, no machine paths or warnings in
the stored outputs, nbval options as cell tags, and a prose word count for every page.

Pure JSON reading (nothing runs), so these take well under a second.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import wordcount  # noqa: E402
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Absolute locations of the machine that executed a notebook: never part of what the book shows.
MACHINE_PATH = re.compile(r"/work/|/home/|/tmp/|/root/|site-packages|\.venv")
# nbval 0.11's comment markers; as cell tags they are nbval-check-output, nbval-ignore-output, ...
NBVAL_MARKER = re.compile(r"^\s*#\s*(NBVAL_\w+|PYTEST_VALIDATE_IGNORE_OUTPUT)\s*$", re.M)
NBVAL_TAGS = {"nbval-check-output", "nbval-ignore-output", "nbval-skip", "nbval-raises-exception",
              "raises-exception"}


def _cells(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        yield i, cell, src, cell.get("metadata", {}).get("tags", [])


def _text(value):
    return value if isinstance(value, str) else "".join(value)


def _output_texts(cell):
    """(where, text) of every stored output of a code cell that a page shows as text (not images)."""
    for k, out in enumerate(cell.get("outputs", [])):
        kind = out["output_type"]
        if kind == "stream":
            yield f"output {k} ({out['name']})", _text(out["text"])
        elif kind in ("display_data", "execute_result"):
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/") or mime.endswith(("json", "+xml")):
                    yield f"output {k} ({mime})", value if isinstance(value, str) else (
                        _text(value) if isinstance(value, list) else json.dumps(value))
        elif kind == "error":
            yield f"output {k} (error)", "\n".join(out.get("traceback", []))


def _ids(paths):
    return [p.name for p in paths]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_solutions_are_collapsed_with_their_output(path):
    """A solution's code and what it prints stay folded under the exercise until the reader opens them."""
    bad = []
    for i, cell, src, tags in _cells(path):
        if "solution" not in tags:
            continue
        if cell["cell_type"] == "code":
            if "hide-cell" not in tags or {"hide-input", "hide-output"} & set(tags):
                bad.append(f"cell {i}: code solution tagged {tags}; wants 'hide-cell' (input and output "
                           "folded together), not 'hide-input'/'hide-output'")
        elif cell["cell_type"] == "markdown":
            lines = src.strip().splitlines()
            opens = bool(lines) and re.match(r"^(:{3,}|`{3,})\{(admonition|dropdown)\}", lines[0])
            folded = opens and (lines[0].split("}")[0].endswith("{dropdown") or
                                any(re.match(r"^\s*:class:.*\bdropdown\b", l) for l in lines[1:4]))
            if not (folded and lines[-1].strip() == re.match(r"^(:{3,}|`{3,})", lines[0]).group(1)):
                bad.append(f"cell {i}: markdown solution is not one folded block "
                           "(:::{admonition} ... with :class: dropdown, or :::{dropdown})")
    assert not bad, f"{path.name}:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_stored_outputs_name_no_machine_path(path):
    bad = []
    for i, cell, src, tags in _cells(path):
        for where, text in _output_texts(cell):
            for line in text.splitlines():
                if MACHINE_PATH.search(line):
                    bad.append(f"cell {i} {where}: {line.strip()[:160]}")
    assert not bad, (f"{path.name}: stored outputs show paths of the machine that ran it (print paths "
                     "relative to the repository, or file names):\n" + "\n".join(bad))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_nbval_options_are_cell_tags(path):
    bad = []
    for i, cell, src, tags in _cells(path):
        if cell["cell_type"] != "code":
            continue
        for m in NBVAL_MARKER.finditer(src):
            bad.append(f"cell {i}: comment '# {m.group(1)}' in the source; use the cell tag "
                       f"'{m.group(1).lower().replace('_', '-')}' instead")
        bad += [f"cell {i}: tag {t!r} is not an nbval 0.11 tag" for t in tags
                if t.startswith("nbval") and t not in NBVAL_TAGS]
    assert not bad, f"{path.name}:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_stored_outputs_hold_no_warnings(path):
    bad = []
    for i, cell, src, tags in _cells(path):
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream" and out["name"] == "stderr" and "Warning" in _text(out["text"]):
                bad.append(f"cell {i}: {_text(out['text']).strip().splitlines()[0][:160]}")
    assert not bad, (f"{path.name}: stored stderr holds warnings (filter a known harmless one with "
                     "warnings.filterwarnings in the chapter, or fix its cause):\n" + "\n".join(bad))


def test_wordcount_counts_every_page_of_the_toc():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "wordcount.py"), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    counts = json.loads(run.stdout)
    entries = wordcount.toc_files()
    assert entries and entries[0] == "book/intro"
    files = [p["file"] for p in counts["pages"]]
    assert [f.rsplit(".", 1)[0] for f in files] == entries, "pages missing from the count or out of _toc.yml order"
    assert all(p["words"] > 0 for p in counts["pages"]), [p for p in counts["pages"] if p["words"] <= 0]
    assert counts["total"] == sum(p["words"] for p in counts["pages"]) and not counts["missing"]


def test_the_training_chapter_stays_about_algorithm_1():
    """Chapter 5 teaches Algorithm 1, the loss, the optimiser, the EMA and the curves; the engineering that makes
    runs trustworthy lives in its appendix, so the chapter stays near 2,500 words of prose."""
    words = {p["file"]: p["words"] for p in json.loads(subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "wordcount.py"), "--json"], capture_output=True, text=True,
        timeout=60).stdout)["pages"]}
    assert words["notebooks/05_training.ipynb"] <= 2_600, words["notebooks/05_training.ipynb"]
    assert words["notebooks/appendix_runs.ipynb"] > 1_000          # the engineering moved, it did not vanish


def test_wordcount_counts_prose_only():
    text = ("# Two words\n<!-- not\ncounted -->\n(sec-x)=\nOne `code` $x$ {cite:p}`key` [link](http://a/b).\n\n"
            "$$\nx = y\n$$ (eq-x)\n\n```python\nnot counted\n```\n:::{admonition} A title\n:class: dropdown\n"
            "Inside.\n:::\n| a | b |\n|---|---|\n")
    # Two words + One CODE MATH ROLE link + A title + Inside + a b
    assert wordcount.count_words(text) == 2 + 5 + 2 + 1 + 2


def test_the_quick_start_shows_a_class_grid_within_its_first_thousand_words():
    path = ROOT / "notebooks" / "00_quickstart.ipynb"
    assert "notebooks/00_quickstart" == wordcount.toc_files()[1], "the quick start comes right after the intro"
    words, model_lines = 0, 0
    for i, cell, src, tags in _cells(path):
        if cell["cell_type"] == "markdown":
            words += wordcount.count_words(src)
        elif "imshow" in src:            # the first figure: the grid of the model trained above
            assert any(o.get("data", {}).get("image/png") for o in cell.get("outputs", [])), "the grid was not executed"
            break
        elif "google.colab" not in src:
            model_lines += sum(1 for line in src.splitlines() if line.strip() and not line.strip().startswith("#"))
    else:
        raise AssertionError("the quick start draws no grid")
    assert words <= 1000, f"{words} words of prose before the first grid"
    assert model_lines <= 80, f"the whole model should stay short: {model_lines} lines of code"
