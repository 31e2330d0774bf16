"""The built site in a real browser: pages load, MathJax renders, images load, no broken internal link.

Needs the site (`make book` writes _build/html), Debian's `chromium`, and a local MathJax 3 copy
(`.ci/run` unpacks npm's mathjax@3 into .ci/cache/mathjax; or set DDPM_LITE_MATHJAX to its folder),
so that no network is needed. Screenshots land in _build/screenshots/.
"""
import http.server
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
