"""Atomic file writes and the provenance block that every results file carries.

Plumbing module (hand-written). A file is written to a temporary name in the same folder,
flushed to disk and renamed over the target, so a crash or a full disk never leaves a
half-written file under the real name.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .errors import DDPMLiteError

__all__ = ["atomic_write_bytes", "atomic_torch_save", "remove_stale_temp_files", "write_json", "read_json", "sha256_file",
           "provenance", "git_commit", "npz_bytes", "open_parts_folder"]


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` so that `path` holds either the old content or all of the new."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise DDPMLiteError(f"cannot write to folder {path.parent}: {e.strerror}. "
                            "Choose a writable output folder (check permissions and free space).") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)          # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise DDPMLiteError(f"could not write {path}: {e.strerror}. Nothing was replaced; "
                            "free some disk space or choose another output folder.") from None
    return path


def remove_stale_temp_files(folder) -> list[Path]:
    """Delete the temporary files that a writer killed mid-write (SIGKILL, power loss) left in `folder`.

    Call it only when no other process writes there, e.g. when a run resumes. The real files
    are never touched: a temporary name is renamed over them only once it is complete.
    """
    folder = Path(folder)
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_torch_save(obj, path) -> Path:
    """`torch.save` through `atomic_write_bytes` (serialised in memory first)."""
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def write_json(path, obj) -> Path:
    """Write `obj` as indented JSON, atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path):
    with open(path) as f:
        return json.load(f)


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_commit() -> str:
    """The commit of the source tree, with `+dirty` when it has uncommitted changes; 'unknown' outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _hardware(device: str | None) -> str:
    import torch
    if device and str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core CPU ({cpu})"


def provenance(device: str | None = None, **extra) -> dict:
    """What a results file needs so that someone can repeat it: commit, versions, hardware, time."""
    import numpy
    import torch
    from . import __version__
    info = {
        "commit": git_commit(),
        "ddpm_lite": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "hardware": _hardware(device),
        "device": str(device) if device else "cpu",
        "torch_threads": torch.get_num_threads(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    info.update(extra)
    return info


def npz_bytes(compress: bool = True, **arrays) -> bytes:
    """An .npz file's bytes that depend on the arrays alone (fixed zip timestamps), so equal samples
    give an equal sha256 however often they are regenerated."""
    import zipfile

    import numpy as np
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            body = io.BytesIO()
            np.lib.format.write_array(body, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            zf.writestr(info, body.getvalue())
    return buf.getvalue()


def open_parts_folder(parts, settings: dict) -> Path:
    """A folder of resumable batch files (`batch_00000.npz`, ...) for one piece of work described by `settings`.

    Temporaries left by a killed writer are removed; when the recorded settings (`parts.json`) differ
    from `settings`, every batch is removed (they belong to other work) and the new settings recorded.
    """
    import json
    parts = Path(parts)
    info = parts / "parts.json"
    if parts.is_dir():
        remove_stale_temp_files(parts)
        try:
            same = json.loads(info.read_text()) == settings
        except (OSError, ValueError):
            same = False
        if not same:
            for p in parts.glob("*"):
                if p.is_file():
                    p.unlink()
    write_json(info, settings)
    return parts

