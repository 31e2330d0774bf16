"""The course assignments: generated from the chapters, graded offline, checks that teach.

Grading runs each notebook in a kernel (a few seconds each), so the graded notebooks are cut down to
what the scores depend on: the imports, the definitions and the check cells."""
import ast
import csv
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from ddpm_lite import checks

ROOT = Path(__file__).resolve().parent.parent
MODULES = {"01_forward_process": "forward", "02_reverse_process": "reverse", "03_unet": "unet",
           "04_guidance": "guidance", "05_training": "training", "06_sampling": "sampling", "07_evaluation": "metrics"}
WRONG_PREDICT_X0 = ("    abar = extract(sched.alpha_bars, t, xt)\n"
                    "    return (xt - (1 - abar) * eps) / abar.sqrt()   # a slip: sqrt(1 - abar) is missing")


def reference(ex):
    return getattr(importlib.import_module(f"ddpm_lite.{MODULES[ex.chapter]}"), ex.function)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("assignments")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "assignments.py"), str(out)], check=True,
                   capture_output=True, text=True)
    return out


# --- the checks themselves (one source of truth with the unit tests) ------------------------------

@pytest.mark.parametrize("ex", checks.EXERCISES, ids=lambda e: e.function)
def test_every_check_passes_on_the_package(ex):
    for check in ex.public + ex.hidden:
        check(reference(ex))


def test_every_chapter_function_has_a_public_and_a_hidden_check():
    assert checks.chapters() == sorted(MODULES)
    for ex in checks.EXERCISES:
        assert ex.public and ex.hidden and ex.points > 0, ex.function


@pytest.mark.parametrize("ex", checks.EXERCISES, ids=lambda e: e.function)
def test_an_unwritten_function_fails_every_check_with_its_name(ex):
    def unwritten(*args, **kwargs):
        ...
    for check in ex.public + ex.hidden:
        with pytest.raises(checks.CheckFailed, match=f"^{ex.function} "):
            check(unwritten)


def test_a_slip_is_caught_and_the_message_teaches():
    from ddpm_lite.forward import extract

    def q_sample_without_sqrt(sched, x0, t, eps=None):
        abar = extract(sched.alpha_bars, t, x0)
        return abar * x0 + (1 - abar) * eps
    with pytest.raises(checks.CheckFailed) as e:
        checks.q_sample_is_eq4(q_sample_without_sqrt)
    text = str(e.value)
    assert text.startswith("q_sample is not right yet")
    assert "expected: x_t = sqrt(abar_t) x_0" in text and "on input:" in text and "got:" in text
    with pytest.raises(checks.CheckFailed, match="guided_eps"):
        checks.guided_eps_is_eq6(lambda model, x, t, y, w: (1 - w) * model(x, t, y))   # sign slip
    with pytest.raises(checks.CheckFailed, match="drop_labels is not right yet"):
        checks.drop_labels_drops_with_probability_p(lambda y, p, generator=None: y)   # never drops
    per_batch = lambda y, p, generator=None: y if float(torch.rand((), generator=generator)) >= p else y * 0 + 10
    with pytest.raises(checks.CheckFailed, match="drop_labels is not right yet"):
        checks.drop_labels_drops_with_probability_p(per_batch)


# --- the generated assignments --------------------------------------------------------------------

def test_each_chapter_has_an_assignment_with_blanked_bodies(built):
    for chapter in MODULES:
        student = nbformat.read(built / "student" / chapter / f"{chapter}.ipynb", as_version=4)
        assert student.metadata["otter"]["assignment_name"] == chapter
        text = "\n".join(c.source for c in student.cells)
        assert "#| export" not in text and "#| default_exp" not in text
        assert not any("solution" in c.metadata.get("tags", []) for c in student.cells)
        for ex in checks.exercises(chapter):
            answer = [c for c in student.cells if f"def {ex.function}(" in c.source]
            assert len(answer) == 1, ex.function
            tree = ast.parse("\n".join(line for line in answer[0].source.splitlines() if not line.startswith("@")))
            fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
            assert ast.get_docstring(fn), f"{ex.function} lost its docstring"
            assert f'grader.check("{ex.function}")' in text
            assert (built / "student" / chapter / "tests" / f"{ex.function}.py").read_text() == checks.public_test_file(ex)
        for ex in checks.exercises(chapter):
            assert "hidden=True" not in (built / "student" / chapter / "tests" / f"{ex.function}.py").read_text()
        assert (built / "autograder" / f"{chapter}.zip").is_file() and (built / "handout" / f"{chapter}.zip").is_file()


def test_generation_is_reproducible(built, tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "assignments.py"), str(tmp_path), "--only", "01_forward_process",
                    "06_sampling"], check=True, capture_output=True)
    for chapter in ("01_forward_process", "06_sampling"):
        a = (built / "student" / chapter / f"{chapter}.ipynb").read_bytes()
        assert a == (tmp_path / "student" / chapter / f"{chapter}.ipynb").read_bytes(), chapter
        assert (built / "handout" / f"{chapter}.zip").read_bytes() == (tmp_path / "handout" / f"{chapter}.zip").read_bytes()


# --- grading ---------------------------------------------------------------------------------------

def _kept(node) -> bool:
    "Imports, definitions and module constants (UPPER_CASE or _private names): what a score depends on."
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
        return True
    if isinstance(node, ast.Assign):
        names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        return len(names) == len(node.targets) and all(n.isupper() or n.startswith("_") for n in names)
    return False


def tiny(nb):
    "The notebook cut down to its imports, definitions and checks (running it takes seconds)."
    nb = nbformat.from_dict(nb)
    cells = []
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        if "grader" in c.source:
            cells.append(c)
            continue
        lines = c.source.splitlines()
        try:
            tree = ast.parse("\n".join("" if line.lstrip().startswith("%") else line for line in lines))
        except SyntaxError:
            continue
        keep = []
        for node in tree.body:
            if _kept(node):
                first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
                keep += lines[first - 1:node.end_lineno]
        if keep:
            cells.append(nbformat.v4.new_code_cell("\n".join(keep)))
    nb.cells = cells
    return nb


def with_body(nb, function, body):
    "The notebook with the solution part of `function` replaced by `body`."
    nb = nbformat.from_dict(nb)
    cell = next(c for c in nb.cells if f"def {function}(" in c.source)
    lines = cell.source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# BEGIN SOLUTION")
    end = next(i for i, line in enumerate(lines) if line.strip() == "# END SOLUTION")
    cell.source = "\n".join(lines[:start] + [body] + lines[end + 1:])
    return nb


@pytest.fixture(scope="module")
def graded(built, tmp_path_factory):
    subs = tmp_path_factory.mktemp("submissions")
    solution = nbformat.read(built / "solutions" / "01_forward_process.ipynb", as_version=4)
    nbformat.write(tiny(solution), subs / "reference_01_forward_process.ipynb")
    solution = nbformat.read(built / "solutions" / "02_reverse_process.ipynb", as_version=4)
    nbformat.write(tiny(with_body(solution, "predict_x0", WRONG_PREDICT_X0)), subs / "slip_02.ipynb")
    # an untouched assignment, whole, renamed as a student might: found by its metadata
    shutil.copy(built / "student" / "01_forward_process" / "01_forward_process.ipynb", subs / "untouched.ipynb")
    (subs / "notes.ipynb").write_text("not a notebook")
    out = subs / "grades.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "grade.py"), str(subs), "--assignments", str(built),
                          "--out", str(out)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows


def _by_submission(rows):
    out = {}
    for r in rows:
        out.setdefault(Path(r["submission"]).stem, []).append(r)
    return out


class _Grader:
    "Stands in for otter's grader when a solution notebook's code is run in this process."
    def check(self, name):
        for c in checks.exercise(name).public + checks.exercise(name).hidden:
            c(self.env[name])


@pytest.mark.parametrize("chapter", sorted(MODULES))
def test_reference_solutions_pass_every_check(built, chapter):
    """The generated solution notebook's functions (not the package's) pass the public and hidden checks."""
    solution = tiny(nbformat.read(built / "solutions" / f"{chapter}.ipynb", as_version=4))
    grader, env = _Grader(), {"__name__": "solution"}
    grader.env = env
    for cell in solution.cells:
        if "otter_notebook(" in cell.source:
            env["grader"] = grader
        elif "grader.check" in cell.source or any(f"def {e.function}(" in cell.source for e in checks.exercises(chapter)):
            exec(compile(cell.source, f"{chapter}.ipynb", "exec"), env)
        else:
            try:   # as when grading: a cell that fails (it needs the chapter's data) does not stop the rest
                exec(compile(cell.source, f"{chapter}.ipynb", "exec"), env)
            except Exception:
                pass
    assert {e.function for e in checks.exercises(chapter)} <= set(env)


def test_reference_solutions_score_full_marks(graded):
    rows = _by_submission(graded)["reference_01_forward_process"]
    assert [r["exercise"] for r in rows] == ["q_sample", "q_step"]
    for r in rows:
        assert float(r["score"]) == float(r["possible"]) > 0, r["message"]
        assert r["message"] == ""


def test_one_wrong_function_loses_exactly_its_points_and_is_named(graded):
    rows = {r["exercise"]: r for r in _by_submission(graded)["slip_02"]}
    assert set(rows) == {e.function for e in checks.exercises("02_reverse_process")}
    assert float(rows["predict_x0"]["score"]) == 0 and float(rows["predict_x0"]["possible"]) == 1
    assert "predict_x0 is not right yet" in rows["predict_x0"]["message"]
    for name, r in rows.items():
        if name != "predict_x0":
            assert float(r["score"]) == float(r["possible"]) > 0 and r["message"] == "", r


def test_untouched_assignment_scores_zero_without_crashing(graded):
    rows = _by_submission(graded)["untouched"]
    assert [r["exercise"] for r in rows] == ["q_sample", "q_step"]
    for r in rows:
        assert float(r["score"]) == 0 and float(r["possible"]) == 2
        assert f"{r['exercise']} is not right yet" in r["message"] or "not written" in r["message"], r


def test_a_file_that_is_no_assignment_is_reported_not_fatal(graded):
    rows = _by_submission(graded)["notes"]
    assert len(rows) == 1 and "not an assignment notebook" in rows[0]["message"]


# --- a student's view: the notebook alone, the package installed, no clone --------------------------

def test_assignment_opened_alone_runs_its_checks(built, tmp_path, monkeypatch):
    """The student notebook alone in a folder (cut to its definitions and checks), run as handed out, then q_sample written."""
    from nbclient import NotebookClient
    chapter = "01_forward_process"
    nb = tiny(nbformat.read(built / "student" / chapter / f"{chapter}.ipynb", as_version=4))
    solution = nbformat.read(built / "solutions" / f"{chapter}.ipynb", as_version=4)
    filled = next(c for c in solution.cells if "def q_sample(" in c.source).source
    nb.cells += [nbformat.v4.new_code_cell(filled), nbformat.v4.new_code_cell('grader.check("q_sample")')]
    folder = tmp_path / "student"                  # only the notebook: no tests folder, no repository
    folder.mkdir()
    monkeypatch.setenv("DDPM_LITE_SMALL", "1")
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(folder)}}).execute()

    def text(cell):
        return "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in cell.outputs)
    first_check = next(c for c in nb.cells if c.source == 'grader.check("q_sample")')
    before, after = text(first_check), text(nb.cells[-1])
    assert "q_sample is not right yet" in before and "None" in before, before
    assert "All test cases passed" in after, after
    assert (folder / "tests" / "q_sample.py").read_text() == checks.public_test_file(checks.exercise("q_sample"))
