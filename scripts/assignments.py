"""Build the course assignments from chapters 1-7: student notebooks with checks, and the grader's files.

Usage: python scripts/assignments.py [OUT_DIR] [--only CHAPTER ...]   (default: assignments/, which git ignores)

For each chapter with exercises in `ddpm_lite.checks.EXERCISES`, the chapter notebook becomes an
otter-grader master notebook: the body of each exercise function (found by name in the code cells)
is marked as its solution, its checks become the question's tests (hidden ones too), the nbdev markers
and the end-of-chapter solutions are dropped. `otter assign` then writes, under OUT_DIR:

    student/CHAPTER/CHAPTER.ipynb + tests/   what students get (bodies left as `...`, public tests)
    handout/CHAPTER.zip                      the same folder, zipped
    solutions/CHAPTER.ipynb                  the reference solutions (the chapter's own code)
    autograder/CHAPTER.zip                   what `make grade` uses: every test, hidden ones included

Nothing here is edited by hand: change a chapter or ddpm_lite/checks/ and run `make assignments`.
"""
from __future__ import annotations

import ast
import hashlib
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import nbformat

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root))

from ddpm_lite import checks  # noqa: E402

# For these functions only part of the body is left to the student: the lines from the one starting
# with the first text to the one containing the second (one DDPM step; one DDIM step). Every other
# exercise function loses its whole body after the docstring.
PARTIAL = {
    "ancestral_sample": ("eps = guided_eps(", "x = mean  "),
    "ddim_sample": ("eps = guided_eps(", "x = x + sigma"),
}

INTRO = """:::{{admonition}} This is an assignment
The chapter is complete except for the bodies of {names}: each is marked with `...` where the code
goes. Write it, then run the `grader.check(...)` cell below it: the check tests the properties the
chapter derives and, when one fails, says what was expected, on which input, and what came back. The
rest of the chapter runs on your functions. Your instructor grades with the same checks and a few more.
:::"""

INIT = """# The checks of this assignment (otter-grader). Run this cell once before the exercises.
from ddpm_lite.checks import otter_notebook
grader = otter_notebook("{chapter}")"""

PROMPT = """**Exercise: `{name}`** ({points} point{s}). Write the body of `{name}` below, following its docstring
and the equations above; then run the check cell after it."""


class GeneratorError(Exception):
    pass


def _code(source: str):
    return nbformat.v4.new_code_cell(source)


def _raw(source: str):
    return nbformat.v4.new_raw_cell(source)


def _md(source: str):
    return nbformat.v4.new_markdown_cell(source)


def _parse(source: str, where: str) -> ast.Module:
    # IPython magics (%pip) are not Python; blank them out so line numbers stay the same
    cleaned = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    try:
        return ast.parse(cleaned)
    except SyntaxError as e:
        raise GeneratorError(f"{where}: cannot parse the cell ({e})") from None


def _segments(source: str, tree: ast.Module, wanted: set[str]):
    """Split a cell's source into (function name or None, text) pieces, one piece per exercise function."""
    lines = source.splitlines()
    pieces, start = [], 0
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in wanted:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            if first > start and "\n".join(lines[start:first]).strip():
                pieces.append((None, "\n".join(lines[start:first]).strip("\n")))
            pieces.append((node.name, "\n".join(lines[first:node.end_lineno])))
            start = node.end_lineno
    if start < len(lines) and "\n".join(lines[start:]).strip():
        pieces.append((None, "\n".join(lines[start:]).strip("\n")))
    return pieces


def _mark_solution(source: str, name: str, where: str) -> str:
    """The function's source with the lines left to the student between BEGIN/END SOLUTION markers.

    Comment lines inside the blanked part (they carry the equations) are moved above it, so the
    student sees them."""
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name)
    lines = source.splitlines()
    if name in PARTIAL:
        first_text, last_text = PARTIAL[name]
        body = range(node.body[0].lineno - 1, node.end_lineno)
        first = next((i for i in body if lines[i].strip().startswith(first_text)), None)
        last = next((i for i in body if first is not None and i >= first and last_text in lines[i]), None)
        if first is None or last is None:
            raise GeneratorError(f"{where}: {name} has no line starting with {first_text!r} followed by one containing "
                                 f"{last_text!r}; update PARTIAL in scripts/assignments.py to the chapter's code.")
    else:
        doc = node.body[0]
        has_doc = isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)
        if has_doc and len(node.body) == 1:
            raise GeneratorError(f"{where}: {name} has nothing but a docstring to leave for the student.")
        first = doc.end_lineno if has_doc else node.body[0].lineno - 1
        last = node.end_lineno - 1
        while first <= last and not lines[first].strip():
            first += 1
    indent = re.match(r"\s*", lines[first]).group(0)
    blank = lines[first:last + 1]
    hints = [indent + line.strip() for line in blank if line.strip().startswith("#")]
    code = [line for line in blank if not line.strip().startswith("#")]
    marked = hints + [f"{indent}# BEGIN SOLUTION"] + code + [f"{indent}# END SOLUTION"]
    return "\n".join(lines[:first] + marked + lines[last + 1:])


def _question(ex: checks.Exercise, source: str, where: str) -> list:
    cells = [_raw(f"# BEGIN QUESTION\nname: {ex.function}\npoints: {ex.points}\nall_or_nothing: true"),
             _md(PROMPT.format(name=ex.function, points=ex.points, s="" if ex.points == 1 else "s")),
             _raw("# BEGIN SOLUTION"),
             _code(_mark_solution(source, ex.function, where)),
             _raw("# END SOLUTION"),
             _raw("# BEGIN TESTS")]
    cells += [_code(checks.test_case_source(c, ex.function)) for c in ex.public]
    cells += [_code('""" # BEGIN TEST CONFIG\nhidden: true\n""" # END TEST CONFIG\n'
                    + checks.test_case_source(c, ex.function)) for c in ex.hidden]
    return cells + [_raw("# END TESTS"), _raw("# END QUESTION")]


def master_notebook(chapter: str) -> nbformat.NotebookNode:
    """The otter-grader master notebook of one chapter's assignment."""
    path = root / "notebooks" / f"{chapter}.ipynb"
    if not path.is_file():
        raise GeneratorError(f"{path} does not exist, but ddpm_lite/checks/assignments.py has exercises for {chapter!r}.")
    nb = nbformat.read(path, as_version=4)
    todo = {e.function: e for e in checks.exercises(chapter)}
    config = (f"# ASSIGNMENT CONFIG\nname: {chapter}\ninit_cell: false\ncheck_all_cell: false\nexport_cell: false\n"
              "run_tests: false\ngenerate: true\ntests:\n  files: true\n  ok_format: false\n")
    cells, intro_done, found = [_raw(config)], False, set()
    for i, cell in enumerate(nb.cells):
        where = f"{path.name}, cell {i}"
        tags = cell.get("metadata", {}).get("tags", [])
        if "solution" in tags or cell.source.lstrip().startswith("#| default_exp"):
            continue
        if cell.cell_type == "code" and "google.colab" in cell.source:   # the install cell: with the checks' library
            cells.append(_code(cell.source.replace('"ddpm_lite @ ', '"ddpm_lite[assignments] @ ')))
            continue
        if cell.cell_type != "code":
            cells.append(nbformat.v4.new_markdown_cell(cell.source) if cell.cell_type == "markdown"
                         else nbformat.v4.new_raw_cell(cell.source))
            if cell.cell_type == "markdown" and not intro_done and cell.source.lstrip().startswith("# "):
                names = ", ".join(f"`{n}`" for n in todo)
                cells += [_md(INTRO.format(names=names)), _code(INIT.format(chapter=chapter))]
                intro_done = True
            continue
        source = "\n".join(line for line in cell.source.splitlines() if line.strip() != "#| export")
        tree = _parse(source, where)
        for name, text in _segments(source, tree, set(todo)):
            if name is None:
                cells.append(_code(text))
            else:
                cells += _question(todo[name], text, where)
                found.add(name)
    missing = set(todo) - found
    if missing:
        raise GeneratorError(f"{path.name} defines no function named {', '.join(sorted(missing))} in a code cell; "
                             "rename the exercise in ddpm_lite/checks/assignments.py (EXERCISES) or restore the function.")
    if not intro_done:
        raise GeneratorError(f"{path.name} has no title cell ('# ...') to put the assignment's introduction under.")
    return nbformat.v4.new_notebook(cells=cells, metadata={k: nb.metadata[k] for k in ("kernelspec", "language_info")
                                                               if k in nb.metadata})


def _stable_ids(path: Path, chapter: str) -> None:
    """Give the cells of a written notebook ids that depend on their place and content only."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        cell["id"] = hashlib.sha1(f"{chapter}:{i}:{cell.source}".encode()).hexdigest()[:12]
    nbformat.write(nb, path)


def _zip_dir(folder: Path, zip_path: Path) -> None:
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                info = zipfile.ZipInfo(str(Path(folder.name) / f.relative_to(folder)), date_time=(2000, 1, 1, 0, 0, 0))
                z.writestr(info, f.read_bytes(), zipfile.ZIP_DEFLATED)


def build(out: Path, chapters: list[str] | None = None) -> list[str]:
    """Write every chapter's assignment under `out`; returns the chapters built."""
    from otter.assign import main as otter_assign
    chapters = chapters or checks.chapters()
    out = Path(out)
    for sub in ("student", "handout", "solutions", "autograder"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for chapter in chapters:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            master = tmp / f"{chapter}.ipynb"
            nbformat.write(master_notebook(chapter), master)
            otter_assign(str(master), str(tmp / "dist"), no_pdfs=True, no_run_tests=True)
            student = out / "student" / chapter
            shutil.rmtree(student, ignore_errors=True)
            shutil.copytree(tmp / "dist" / "student", student)
            _stable_ids(student / f"{chapter}.ipynb", chapter)
            for ex in checks.exercises(chapter):   # the package writes the same files where they are missing
                if (student / "tests" / f"{ex.function}.py").read_text() != checks.public_test_file(ex):
                    raise GeneratorError(f"otter's public test file for {ex.function} differs from "
                                         "ddpm_lite.checks.public_test_file: update public_test_file to otter's format.")
            shutil.copy(tmp / "dist" / "autograder" / f"{chapter}.ipynb", out / "solutions" / f"{chapter}.ipynb")
            _stable_ids(out / "solutions" / f"{chapter}.ipynb", chapter)
            zips = sorted((tmp / "dist" / "autograder").glob("*.zip"))
            if len(zips) != 1:
                raise GeneratorError(f"otter assign wrote {len(zips)} autograder zips for {chapter}, expected one.")
            shutil.copy(zips[0], out / "autograder" / f"{chapter}.zip")
            _zip_dir(student, out / "handout" / f"{chapter}.zip")
        names = ", ".join(e.function for e in checks.exercises(chapter))
        print(f"{chapter}: exercises {names}")
    return chapters


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", type=Path, default=root / "assignments", help="where to write (default: assignments/)")
    ap.add_argument("--only", nargs="+", metavar="CHAPTER", choices=checks.chapters(), help="build these chapters only")
    args = ap.parse_args()
    target = args.out
    try:
        build(target, args.only)
    except GeneratorError as e:
        sys.exit(f"assignments: {e}")
    print(f"assignments written to {target}")
