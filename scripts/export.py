"""Export every notebook's `#| export` cells to the ddpm_lite package (nbdev's nb_export).

After nbdev writes a module, each public top-level function and class in it gets the line
"Defined in chapter N (title)." (or "Defined in the appendix (title).") at the end of its docstring, N
and the title taken from the notebook that defines it (its file name and first heading), so the line
cannot go stale. The
notebooks themselves do not carry it; private helpers (names starting with "_") get none.
"""
import ast
import json
import os
import re
from pathlib import Path

from nbdev.export import nb_export

root = Path(__file__).resolve().parent.parent
FOOTER = re.compile(r"Defined in (?:chapter \d+|the appendix) \([^)]*\)\.")


def chapter_of(nb_path: Path) -> tuple[str, str]:
    """Where a notebook sits and its short title: '06_sampling.ipynb' with '# Sampling' -> ('chapter 6',
    'sampling'); 'appendix_runs.ipynb' with '# Appendix: making a run ...' -> ('the appendix', 'making a run ...')."""
    nb = json.loads(nb_path.read_text())
    heading = next(("".join(c["source"]).splitlines()[0][2:] for c in nb["cells"]
                    if c["cell_type"] == "markdown" and "".join(c["source"]).startswith("# ")), nb_path.stem)
    if nb_path.name.startswith("appendix_"):
        title = heading.split(":", 1)[1].strip() if ":" in heading else heading
        return "the appendix", title[0].lower() + title[1:]
    title = heading.split(":")[0].strip()
    return f"chapter {int(nb_path.name.split('_')[0])}", title[0].lower() + title[1:]


def add_footers(module: Path, where: str, title: str) -> int:
    """Append the chapter line to every public top-level docstring of `module`; returns how many."""
    text = module.read_text()
    lines = text.splitlines(keepends=True)
    edits = []
    for node in ast.parse(text).body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or node.name.startswith("_"):
            continue
        doc = node.body[0] if node.body else None
        if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
            continue
        edits.append(doc)
    footer = f"Defined in {where} ({title})."
    for doc in sorted(edits, key=lambda d: d.lineno, reverse=True):
        if FOOTER.search(doc.value.value):
            raise SystemExit(f"{module}: the docstring at line {doc.lineno} already says where it is defined; "
                             "remove that line from the notebook (the export adds it).")
        first, last = doc.lineno - 1, doc.end_lineno - 1
        head, tail = lines[first][:doc.col_offset], lines[last][doc.end_col_offset:]
        literal = "".join(lines[first:last + 1])[doc.col_offset:]
        literal = literal[:len(literal) - len(tail)]
        m = re.match(r'(?s)^([rRuU]?)("""|\'\'\'|"|\')(.*)\2$', literal)
        if not m:
            raise SystemExit(f"{module}: cannot read the docstring at line {doc.lineno}.")
        prefix, _, inner = m.groups()
        indent = " " * doc.col_offset
        literal = f'{prefix}"""{inner.rstrip()}\n\n{indent}{footer}\n{indent}"""'
        lines[first:last + 1] = [head + literal + tail]
    module.write_text("".join(lines))
    return len(edits)


def main() -> None:
    os.chdir(root)  # nb_export records paths relative to the package folder
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        text = nb.read_text()
        m = re.search(r"#\| default_exp (\w+)", text)
        if not m:
            continue
        nb_export(str(nb.relative_to(root)), "ddpm_lite")
        n = add_footers(root / "ddpm_lite" / f"{m.group(1)}.py", *chapter_of(nb))
        print(f"exported {nb.name} ({n} definitions)")


if __name__ == "__main__":
    main()
