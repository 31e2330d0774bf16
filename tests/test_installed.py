"""Every chapter runs as a Colab reader runs it: from the installed package, without a clone.

The wheel is built (`python -m build`, from a copy of the working tree's files), installed with
`pip install --no-deps --target` into a temporary folder, and only `notebooks/` is copied into a
temporary working folder. Each chapter then runs there under nbval at small settings, with the
temporary install first on the path. Committed results are fetched through the same code path as
in Colab (`ddpm_lite.book.result_bytes`, urllib), from a local stand-in for the repository: the
tracked files of `results/`, served by a `file://` URL given in DDPM_LITE_RESULTS_URL. Nothing may
be written into the installed package.

Costs one more run of every chapter at small settings (see the README's table of make targets).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))   # chapters, quick start, appendix

pytestmark = pytest.mark.slow


def _tracked(*paths) -> list[str]:
    """Files git would put in a clone (tracked, or new and not ignored), relative to ROOT."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *paths],
                         cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def _copy(files, dest: Path):
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / f, dest / f)


def _package_files(site: Path) -> dict:
    """Every file of the installed package with its size and mtime (byte-code caches aside)."""
    return {str(p.relative_to(site)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in site.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout (the stand-in repository is the tracked files of results/)")
    base = tmp_path_factory.mktemp("colab")
    src, dist, site, work, repo = (base / n for n in ("src", "dist", "site", "work", "repo"))
    _copy(_tracked(), src)                       # the build never writes into the working tree
    build = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
                           capture_output=True, text=True)
    assert build.returncode == 0, "python -m build failed:\n" + build.stdout[-3000:] + build.stderr[-3000:]
    wheel = next(dist.glob("ddpm_lite-*.whl"))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                         capture_output=True, text=True)
    assert pip.returncode == 0, "pip install --target failed:\n" + pip.stdout[-3000:] + pip.stderr[-3000:]
    _copy([f for f in _tracked("notebooks") if f.endswith(".ipynb")], work)
    _copy(_tracked("results"), repo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DDPM_LITE_") and k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), DDPM_LITE_SMALL="1", DDPM_LITE_RESULTS_URL=(repo / "results").as_uri() + "/",
               MPLBACKEND="agg", PYTHONDONTWRITEBYTECODE="1")
    # the kernel must import the temporary install, not the clone (the venv may hold an editable install)
    probe = subprocess.run([sys.executable, "-c", "import json, ddpm_lite, ddpm_lite.book as b; print(json.dumps("
                            "[ddpm_lite.__file__, b.in_clone(), str(b.results_dir()), str(b.plan_file('mini'))]))"],
                           cwd=work / "notebooks", env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr[-2000:]
    where, in_clone, results, plan = json.loads(probe.stdout)
    assert Path(where).resolve().is_relative_to(site.resolve()), f"the chapters would import {where}, not the install"
    assert not in_clone and Path(results).is_relative_to(work) and Path(plan).is_relative_to(work)
    shutil.rmtree(work / "notebooks" / "plans")   # the probe's copy: the chapters must write their own
    return {"site": site, "work": work / "notebooks", "env": env, "before": _package_files(site)}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_runs_from_the_installed_package(installed, chapter):
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                          "--nbval-cell-timeout=1200", chapter],
                         cwd=installed["work"], env=installed["env"], capture_output=True, text=True)
    assert run.returncode == 0, f"{chapter} fails without a clone:\n" + run.stdout[-6000:] + run.stderr[-2000:]
    after = _package_files(installed["site"])
    changed = sorted(k for k in set(after) | set(installed["before"]) if after.get(k) != installed["before"].get(k))
    assert not changed, f"{chapter} wrote into the installed package: {changed[:10]}"
