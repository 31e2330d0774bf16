"""The built site in a real browser: pages load, MathJax renders, images load, no broken internal link,
and every solution (code with its output, or text) stays folded under its exercise.

Needs the site (`make book` writes _build/html), Debian's `chromium`, and a local MathJax 3 copy
(`.ci/run` unpacks npm's mathjax@3 into .ci/cache/mathjax; or set DDPM_LITE_MATHJAX to its folder),
so that no network is needed. Screenshots land in _build/screenshots/.
"""
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from functools import partial
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
MATHJAX = Path(os.environ.get("DDPM_LITE_MATHJAX", ROOT / ".ci" / "cache" / "mathjax"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars"]

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium); "
                                                ".ci/run installs it"),
    pytest.mark.skipif(not (SITE / "index.html").is_file(), reason="the site is not built: run `make book` first"),
    pytest.mark.skipif(not (MATHJAX / "es5" / "tex-mml-chtml.js").is_file(),
                       reason=f"no local MathJax 3 at {MATHJAX} (npm pack mathjax@3; .ci/run does it)"),
]


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "img" and a.get("src"):
            self.images.append(a["src"])


def _parse(html: str) -> _Links:
    p = _Links()
    p.feed(html)
    return p


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A copy of the site whose pages load MathJax from the local copy, served on localhost."""
    root = tmp_path_factory.mktemp("site")
    shutil.copytree(SITE, root, dirs_exist_ok=True)
    shutil.copytree(MATHJAX / "es5", root / "_mathjax" / "es5")
    for page in root.rglob("*.html"):
        text = page.read_text()
        new = re.sub(r'src="https://cdn[^"]*mathjax[^"]*"', 'src="/_mathjax/es5/tex-mml-chtml.js"', text)
        if new != text:
            page.write_text(new)
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):
            requests.append((self.path, args[1] if len(args) > 1 else ""))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, requests
    server.shutdown()


def _dom(url: str) -> str:
    res = subprocess.run([CHROMIUM, *CHROME_FLAGS, "--virtual-time-budget=15000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    return res.stdout


def _pages():
    return sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html")
                  if not p.relative_to(SITE).as_posix().startswith(("_", "genindex", "search")))


def test_no_internal_link_is_broken():
    broken = []
    for rel in _pages():
        page = SITE / rel
        parsed = _parse(page.read_text())
        for href in parsed.links + parsed.images:
            u = urlparse(href)
            if u.scheme or href.startswith(("#", "mailto:")):
                continue
            target = (page.parent / unquote(u.path)).resolve()
            if not target.exists():
                broken.append(f"{rel} -> {href}")
    assert not broken, "broken internal links:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", ["book/intro.html", "notebooks/01_forward_process.html"])
def test_page_renders_equations_and_loads_images(served, page):
    base, root, requests = served
    if not (root / page).is_file():
        pytest.fail(f"{page} is missing from the built site")
    dom = _dom(f"{base}/{page}")
    assert "<title>" in dom, "the page did not load"
    assert "<mjx-container" in dom, "MathJax did not render the equations"
    assert "<mjx-merror" not in dom, "MathJax reported a TeX error"
    for src in _parse(dom).images:
        if urlparse(src).scheme:
            continue
        path = "/" + str((Path(page).parent / src)).lstrip("/") if not src.startswith("/") else src
        path = os.path.normpath(path)
        statuses = [s for p, s in requests if os.path.normpath(unquote(p.split("?")[0])) == path]
        assert statuses and all(s == "200" for s in statuses), f"image {src} did not load ({statuses})"
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / (Path(page).stem + ".png")
    subprocess.run([CHROMIUM, *CHROME_FLAGS, "--virtual-time-budget=15000", "--window-size=1280,2400",
                    f"--screenshot={shot}", f"{base}/{page}"], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000


class _Tree(HTMLParser):
    """The page as nested dicts (tag, classes, attributes, children, text), enough to ask what encloses what."""
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
            "track", "wbr"}

    def __init__(self):
        super().__init__()
        self.root = {"tag": "#root", "cls": [], "attrs": {}, "children": [], "text": []}
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        node = {"tag": tag, "cls": (a.get("class") or "").split(), "attrs": a, "children": [], "text": []}
        self.stack[-1]["children"].append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        a = dict(attrs)
        self.stack[-1]["children"].append({"tag": tag, "cls": (a.get("class") or "").split(), "attrs": a,
                                           "children": [], "text": []})

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i]["tag"] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        self.stack[-1]["text"].append(data)


def _tree(html: str) -> dict:
    t = _Tree()
    t.feed(html)
    return t.root


def _walk(node, ancestors=()):
    yield node, ancestors
    for child in node["children"]:
        yield from _walk(child, ancestors + (node,))


def _text_of(node) -> str:
    return "".join(node["text"]) + "".join(_text_of(c) for c in node["children"])


def _unfolded_solutions(html: str, after_scripts: bool = False) -> tuple[list[str], int]:
    """(problems, number of solution code cells) of a chapter page: a solution code cell's input and
    output must both sit inside a <details> (the 'hide-cell' tag), and a solution admonition must be a
    dropdown. In a browser DOM (`after_scripts`) sphinx-togglebutton must also have folded every solution
    admonition, and nothing of a solution may be open."""
    problems, cells = [], 0
    for node, ancestors in _walk(_tree(html)):
        if node["tag"] == "div" and "tag_solution" in node["cls"]:
            cells += 1
            for inner, above in _walk(node):
                if inner["tag"] == "div" and ({"cell_input", "cell_output"} & set(inner["cls"])):
                    folds = [a for a in above if a["tag"] == "details"]
                    part = "output" if "cell_output" in inner["cls"] else "input"
                    if not folds:
                        problems.append(f"solution cell {cells}: its {part} is shown outside a folded block: "
                                        + _text_of(inner).strip()[:80])
                    elif any("open" in a["attrs"] for a in folds):
                        problems.append(f"solution cell {cells}: its {part} is folded but open")
        if node["tag"] == "div" and "admonition" in node["cls"]:
            title = next((c for c in node["children"] if "admonition-title" in c["cls"]), None)
            if title is not None and _text_of(title).strip().startswith("Solution"):
                if "dropdown" not in node["cls"] and "toggle" not in node["cls"]:
                    problems.append(f"admonition {_text_of(title).strip()!r} is not a dropdown")
                if "toggle-shown" in node["cls"] or (after_scripts and "toggle-hidden" not in node["cls"]):
                    problems.append(f"admonition {_text_of(title).strip()!r} is shown open")
    return problems, cells


@pytest.mark.parametrize("stem", sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_no_solution_shows_outside_a_folded_block(stem):
    """The built chapter: every solution (code with its printed output, or text) is folded under its
    exercise, and every solution code cell of the notebook is on the page with its tag."""
    page = SITE / "notebooks" / f"{stem}.html"
    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    in_toc = f"notebooks/{stem}" in (ROOT / "_toc.yml").read_text()
    if not in_toc:
        pytest.skip(f"notebooks/{stem} is not in _toc.yml, so the site has no page for it")
    assert page.is_file(), f"{page.relative_to(ROOT)} is missing from the built site"
    problems, cells = _unfolded_solutions(page.read_text(encoding="utf-8"))
    expected = sum(1 for c in nb["cells"] if c["cell_type"] == "code"
                   and "solution" in c.get("metadata", {}).get("tags", []))
    assert not problems, f"{page.name}:\n" + "\n".join(problems)
    assert cells == expected, f"{page.name}: {cells} solution code cells on the page, {expected} in the notebook"


def test_solutions_are_still_folded_after_the_page_scripts_run(served):
    """In the browser (sphinx-togglebutton and the theme's scripts have run) a chapter's solutions stay closed."""
    base, root, requests = served
    page = "notebooks/02_reverse_process.html"
    dom = _dom(f"{base}/{page}")
    assert "<title>" in dom, "the page did not load"
    problems, cells = _unfolded_solutions(dom, after_scripts=True)
    assert cells, "no solution code cell found in the rendered page"
    assert not problems, f"{page}:\n" + "\n".join(problems)
