"""Packing a run's files into a few size-limited parts, and unpacking them here after checking each sha256.

Plumbing module (hand-written). The GPU machine returns at most 8 files of 16 MiB, so
scripts/gpu_run.py appends what it produced to part_1.bin, part_2.bin, ... with a manifest.json
listing every file's place, size and sha256; `ddpm-lite experiments PLAN --import DIR` unpacks them.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import DDPMLiteError, DataError
from ..io import atomic_write_bytes, sha256_file, write_json
from .plan import ExperimentPlan
from .state import Layout

__all__ = ["PACK_FORMAT", "MiB", "PackFull", "Packer", "import_pack"]

PACK_FORMAT = "ddpm_lite.gpu-pack/1"
MiB = 1 << 20


class PackFull(DDPMLiteError):
    """The files would not fit in the allowed number and size of pack parts."""


class Packer:
    """Appends files to `part_1.bin`, `part_2.bin`, ... (each at most max_bytes; a file may span parts)
    and keeps `manifest.json` up to date after every file, so whatever was packed survives a kill.
    The manifest counts as one of the max_files files."""

    def __init__(self, out_dir, max_files: int = 8, max_bytes: int = 16 * MiB, meta: dict | None = None):
        if max_files < 2 or max_bytes < 1:
            raise ValueError("a pack needs at least two files (one part and the manifest) and a positive size")
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.max_parts, self.max_bytes = max_files - 1, max_bytes
        self.files: list[dict] = []
        self.left_out: list[dict] = []
        self.meta = dict(meta or {})
        self._sizes: list[int] = []

    @property
    def used(self) -> int:
        return sum(self._sizes)

    @property
    def capacity_left(self) -> int:
        return self.max_parts * self.max_bytes - self.used

    def has(self, path: str) -> bool:
        return any(f["path"] == path for f in self.files)

    def add(self, relpath: str, data: bytes, **info) -> dict:
        """Append one file (its path relative to the root it will be unpacked into)."""
        if len(data) > self.capacity_left:
            raise PackFull(f"{relpath} ({len(data) / MiB:.1f} MiB) does not fit: {self.capacity_left / MiB:.1f} MiB "
                           f"left in {self.max_parts} parts of {self.max_bytes / MiB:g} MiB")
        segments, pos = [], 0
        while pos < len(data) or not segments:
            if not self._sizes or self._sizes[-1] >= self.max_bytes:
                self._sizes.append(0)
            k = len(self._sizes)
            take = min(len(data) - pos, self.max_bytes - self._sizes[-1])
            with open(self.out / f"part_{k}.bin", "ab") as f:
                f.write(data[pos:pos + take])
            segments.append({"part": f"part_{k}.bin", "offset": self._sizes[-1], "length": take})
            self._sizes[-1] += take
            pos += take
            if not data:
                break
        entry = {"path": relpath, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                 "segments": segments, **info}
        self.files.append(entry)
        self.write_manifest()
        return entry

    def write_manifest(self, **extra) -> Path:
        self.meta.update(extra)
        return write_json(self.out / "manifest.json", {"format": PACK_FORMAT, **self.meta, "files": self.files,
                                                       "left_out": self.left_out,
                                                       "parts": {f"part_{k + 1}.bin": s for k, s in enumerate(self._sizes)}})


def _unpack_file(folder: Path, entry: dict) -> bytes:
    chunks = []
    for seg in entry["segments"]:
        part = folder / seg["part"]
        if not part.is_file() or "/" in seg["part"] or "\\" in seg["part"]:
            raise DataError(f"{folder}: part {seg['part']!r} of {entry['path']} is missing.")
        with open(part, "rb") as f:
            f.seek(seg["offset"])
            chunks.append(f.read(seg["length"]))
    data = b"".join(chunks)
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise DataError(f"{folder}: {entry['path']} does not match its sha256 in manifest.json (a part is "
                        "damaged or incomplete). Nothing of this file was written.")
    return data


def import_pack(folder, plan: ExperimentPlan, layout: Layout, log=print) -> dict:
    """Unpack what scripts/gpu_run.py wrote (manifest.json + part_*.bin) into `layout`'s root.

    Every file is checked against its sha256 before it is written; only paths inside this plan's
    runs/ and results/ folders are accepted. Returns {'written': [...], 'unchanged': [...]}."""
    folder = Path(folder)
    try:
        man = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{folder} holds no readable manifest.json ({type(e).__name__}); pass the folder that "
                        "scripts/gpu_run.py wrote (--out).") from None
    if man.get("format") != PACK_FORMAT:
        raise DataError(f"{folder}/manifest.json is not a {PACK_FORMAT} manifest.")
    if man.get("plan") != plan.name:
        raise DataError(f"{folder} holds results of plan {man.get('plan')!r}, not {plan.name!r}.")
    allowed = (layout.rel(layout.runs) + "/", layout.rel(layout.results) + "/")
    written, unchanged = [], []
    for entry in man.get("files", []):
        rel = entry["path"]
        if ".." in Path(rel).parts or Path(rel).is_absolute() or not rel.startswith(allowed):
            raise DataError(f"{folder}/manifest.json names {rel!r}, outside {' and '.join(allowed)}; refused.")
        target = layout.root / rel
        if target.is_file() and sha256_file(target) == entry["sha256"]:
            unchanged.append(rel)
            continue
        atomic_write_bytes(target, _unpack_file(folder, entry))
        written.append(rel)
    log(f"imported {len(written)} file(s) from {folder} ({len(unchanged)} already here)"
        + (f"; left out on the GPU: {', '.join(x['path'] for x in man['left_out'])}" if man.get("left_out") else ""))
    return {"written": written, "unchanged": unchanged, "manifest": man}
