"""Grade a folder of submitted assignment notebooks offline and write one CSV row per submission and exercise.

Usage: python scripts/grade.py SUBMISSIONS [--assignments assignments] [--out SUBMISSIONS/grades.csv] [--full]

Every .ipynb under SUBMISSIONS is graded with otter-grader against the autograder of its chapter
(`assignments/autograder/CHAPTER.zip`, built by `make assignments`), which runs the public and the
hidden checks. The chapter comes from the notebook's metadata (otter writes it into the assignment)
or else from a chapter name in the file name. The notebook runs at the chapters' small settings
(DDPM_LITE_SMALL=1: the checks do not depend on them) unless --full is given. A notebook that cannot
be read or run scores zero on each exercise, with the reason in the `message` column.

Columns: submission, assignment, exercise, score, possible, message (why points were lost).
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import nbformat

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root))

from ddpm_lite import checks  # noqa: E402

COLUMNS = ["submission", "assignment", "exercise", "score", "possible", "message"]


def chapter_of(path: Path) -> str | None:
    """The assignment a submitted notebook belongs to, or None if neither its metadata nor its name tell."""
    try:
        name = nbformat.read(path, as_version=4).metadata.get("otter", {}).get("assignment_name")
    except Exception:
        name = None
    if name in checks.chapters():
        return name
    found = [c for c in checks.chapters() if c in path.name]
    return found[0] if len(found) == 1 else None


def _message(test_file) -> str:
    """The failing checks' messages on one line each, joined by ' | '."""
    parts = []
    for r in test_file.test_case_results:
        if not r.passed:
            text = (r.message or "").strip()
            # otter prefixes the traceback; the check's own message starts at the error's name
            lines = text.splitlines()
            start = next((i for i, line in enumerate(lines) if "CheckFailed:" in line or "Error:" in line), 0)
            parts.append(" ".join(line.strip() for line in lines[start:]))
    return " | ".join(parts)


def grade_one(path: Path, chapter: str, autograder: Path) -> list[dict]:
    """One row per exercise of `chapter` for the submission at `path`."""
    from otter.api import grade_submission
    rows = {e.function: dict(submission=str(path), assignment=chapter, exercise=e.function, score=0,
                             possible=e.points, message="") for e in checks.exercises(chapter)}
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            results = grade_submission(str(path), str(autograder), quiet=True)
    except Exception as e:   # a broken submission must not stop the others from being graded
        for row in rows.values():
            row["message"] = f"the notebook could not be graded: {type(e).__name__}: {e}"
        return list(rows.values())
    for name, row in rows.items():
        if name not in results.results:
            row["message"] = "no result: the check did not run"
            continue
        tf = results.results[name]
        row["score"] = round(float(tf.score), 6)
        row["possible"] = round(float(tf.possible), 6)
        row["message"] = "" if tf.passed_all else _message(tf)
    return list(rows.values())


def grade_folder(submissions: Path, assignments: Path, out: Path) -> list[dict]:
    """Grade every notebook under `submissions` and write the CSV `out`; returns its rows."""
    if not submissions.is_dir():
        raise SystemExit(f"grade: {submissions} is not a folder: pass SUBMISSIONS=folder with the notebooks to grade.")
    notebooks = sorted(p for p in submissions.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not notebooks:
        raise SystemExit(f"grade: no .ipynb files under {submissions}.")
    rows = []
    for path in notebooks:
        chapter = chapter_of(path)
        if chapter is None:
            rows.append(dict(submission=str(path), assignment="", exercise="", score=0, possible=0,
                             message="not an assignment notebook: its metadata names no assignment and its file "
                                     "name contains no chapter name such as 01_forward_process"))
            print(f"{path}: skipped (not an assignment)")
            continue
        autograder = assignments / "autograder" / f"{chapter}.zip"
        if not autograder.is_file():
            raise SystemExit(f"grade: {autograder} is missing: run `make assignments` first.")
        got = grade_one(path, chapter, autograder)
        rows += got
        print(f"{path}: {chapter}, {sum(r['score'] for r in got):g} / {sum(r['possible'] for r in got):g}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    print(f"scores written to {out}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("submissions", type=Path, help="folder of submitted notebooks (searched recursively)")
    ap.add_argument("--assignments", type=Path, default=root / "assignments", help="what `make assignments` built")
    ap.add_argument("--out", type=Path, default=None, help="the CSV to write (default: SUBMISSIONS/grades.csv)")
    ap.add_argument("--full", action="store_true", help="run the notebooks at full settings (slower; same scores)")
    args = ap.parse_args(argv)
    if not args.full:
        os.environ["DDPM_LITE_SMALL"] = "1"
    grade_folder(args.submissions, args.assignments, args.out or args.submissions / "grades.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
