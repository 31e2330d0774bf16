"""Prose word count of the book: per page in _toc.yml order, and the total.

Counts the words a reader reads: the markdown cells of the chapters and the markdown pages in
_toc.yml. Left out: code cells, code fences (``` or ~~~ blocks without a directive, and code-like
directives such as {code-block}), math blocks ($$ ... $$, {math}, \\begin{...} environments),
directive option lines (:class: dropdown), MyST targets ((label)=), block breaks (+++), YAML front
matter and HTML comments. Inline code, inline math and a role such as {cite:p}`key` count as one
word each; a link counts its text, not its address.

Usage: python scripts/wordcount.py [--json]   (exit status 1 when a page of _toc.yml is missing)
"""
import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Directives whose body is code or math, not prose.
NON_PROSE_DIRECTIVES = {"code", "code-block", "code-cell", "sourcecode", "math", "literalinclude",
                        "raw", "bibliography", "tableofcontents", "glue:figure", "glue:math"}
# Directives whose argument is a title a reader reads (for the others it is a path or a label).
TITLED_DIRECTIVES = {"admonition", "dropdown", "topic", "sidebar", "margin", "card", "tab-item", "rubric"}

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,}|:{3,})\s*(?P<info>.*)$")
OPTION = re.compile(r"^\s*:[\w-]+:(\s.*)?$")
MATH_CLOSE = re.compile(r"\$\$\s*(\([\w:.-]+\))?$")                  # $$, or $$ (label)
WORD = re.compile(r"[^\W_]+(?:(?:['’.\-]|,(?=\d{3}))[^\W_]+)*")


def toc_files(toc_path: Path = ROOT / "_toc.yml") -> list[str]:
    """Every `root:` and `file:` entry of the table of contents, in reading order."""
    files = []
    for line in toc_path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*(?:-\s*)?(root|file)\s*:\s*(\S+)", line.split("#", 1)[0])
        if m:
            files.append(m.group(2).strip("'\""))
    return files


def resolve(entry: str) -> Path | None:
    """The file of a _toc.yml entry (written without its suffix), or None when there is none."""
    path = ROOT / entry
    candidates = [path] if path.suffix in (".ipynb", ".md") else [path.with_name(path.name + ext)
                                                                for ext in (".ipynb", ".md")]
    return next((p for p in candidates if p.is_file()), None)


def prose_lines(text: str) -> list[str]:
    """The lines of a markdown text that hold prose, with fences, math and options removed."""
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":                     # YAML front matter
        end = next((i for i, l in enumerate(lines[1:], 1) if l.strip() == "---"), None)
        if end is not None:
            lines = lines[end + 1:]
    out, stack, in_math, in_env = [], [], False, None
    opening = False                                              # just after a directive line
    for line in lines:
        s = line.strip()
        # inside a code or math fence: only its own closing fence ends it
        if stack and not stack[-1][2]:
            if re.fullmatch(re.escape(stack[-1][0][0]) + "{%d,}" % len(stack[-1][0]), s):
                stack.pop()
            continue
        if in_math:
            if MATH_CLOSE.search(s):
                in_math = False
            continue
        if in_env:
            if re.search(r"\\end\{%s\}" % re.escape(in_env), s):
                in_env = None
            continue
        m = FENCE.match(line)
        if m:
            fence, info = m.group("fence"), m.group("info").strip()
            if stack and fence[0] == stack[-1][0][0] and not info and len(fence) >= len(stack[-1][0]):
                stack.pop()                                      # closes a prose directive
                opening = False
                continue
            if info or fence[0] != ":":
                d = re.match(r"\{([\w:-]+)\}\s*(.*)", info)
                prose = bool(d) and d.group(1) not in NON_PROSE_DIRECTIVES
                stack.append((fence, info, prose))
                opening = prose
                if prose and d.group(1) in TITLED_DIRECTIVES and d.group(2):
                    out.append(d.group(2))
                continue
        if opening and OPTION.match(line):
            continue
        opening = False
        if s.startswith("$$"):
            if not (len(s) >= 4 and MATH_CLOSE.search(s[2:])):
                in_math = True                                   # a block over several lines
            continue
        env = re.match(r"\\begin\{([\w*]+)\}", s)
        if env:
            if not re.search(r"\\end\{%s\}" % re.escape(env.group(1)), s):
                in_env = env.group(1)
            continue
        if re.fullmatch(r"\([\w:.-]+\)=|\+\+\+.*|\|?[\s:|-]*-{3,}[\s:|-]*\|?", s):
            continue                                             # targets, block breaks, table rules
        out.append(line)
    return out


def count_words(text: str) -> int:
    body = "\n".join(prose_lines(text))
    body = re.sub(r"\{[\w:-]+\}`[^`]*`", " ROLE ", body)               # {cite:p}`x`, {eq}`y`
    body = re.sub(r"`+[^`]+`+", " CODE ", body)                        # inline code
    body = re.sub(r"\$\$[^$]+?\$\$", " MATH ", body)                      # inline display math
    body = re.sub(r"(?<!\\)\$[^$\n]+?(?<!\\)\$", " MATH ", body)        # inline math
    body = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r" \1 ", body)           # links and images: their text
    body = re.sub(r"<[^>\n]+>", " ", body)                             # inline HTML tags
    return len(WORD.findall(body))


def page_words(path: Path) -> int:
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        return sum(count_words("".join(c["source"]) if isinstance(c["source"], list) else c["source"])
                   for c in nb["cells"] if c["cell_type"] == "markdown")
    return count_words(path.read_text(encoding="utf-8"))


def page_title(path: Path) -> str:
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        texts = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]
    else:
        texts = [path.read_text(encoding="utf-8")]
    for t in texts:
        m = re.search(r"^#\s+(.+)$", t, flags=re.M)
        if m:
            return m.group(1).strip()
    return path.stem


def word_counts() -> dict:
    pages, missing = [], []
    for entry in toc_files():
        path = resolve(entry)
        if path is None:
            missing.append(entry)
            continue
        pages.append({"file": path.relative_to(ROOT).as_posix(), "title": page_title(path),
                      "words": page_words(path)})
    return {"pages": pages, "total": sum(p["words"] for p in pages), "missing": missing}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = ap.parse_args(argv)
    counts = word_counts()
    if args.json:
        print(json.dumps(counts, indent=2, ensure_ascii=False))
    else:
        width = max([len(p["file"]) for p in counts["pages"]] + [5])
        for p in counts["pages"]:
            print(f"{p['file']:<{width}}  {p['words']:>7,}  {p['title']}")
        print(f"{'total':<{width}}  {counts['total']:>7,}")
    for entry in counts["missing"]:
        print(f"error: {entry} is in _toc.yml but no {entry}.ipynb or {entry}.md exists", file=sys.stderr)
    return 1 if counts["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
