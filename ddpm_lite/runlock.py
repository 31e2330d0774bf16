"""One writer at a time for a run folder or an experiment plan's folders.

Plumbing module (hand-written). `ddpm-lite train` holds a lock on its run folder and
`ddpm-lite experiments` one on its plan's folder for as long as they write there, so a second
command pointed at the same folder stops at once with a FolderLocked error that names the folder
and the process holding it (pid, host, start time, command) instead of mixing its checkpoints
with the first one's:

    with folder_lock(run_dir, "run folder"):
        ...                                   # write checkpoints, model.pt, results

The lock is the file `.ddpm-lite.lock` in the folder, held with an advisory `flock` and holding
a JSON record of its owner. The operating system drops a `flock` when its process ends however
it ends (SIGKILL, a crash, power loss), so a lock file left behind by a killed process is
recognised as stale by the next writer, which says so and takes the lock over; no one has to
delete anything. A lock released normally removes its file (and the folder, when the lock
made it and nothing else was written there). Within one process the lock is re-entrant: code
that holds a folder's lock may call code that takes it again.

Where `fcntl` is missing (Windows), the lock file is created exclusively instead; a stale one
is then not detected, and the error says which file to delete once its process is gone.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from .errors import DDPMLiteError, FolderLocked

try:
    import fcntl
except ImportError:                       # Windows: exclusive creation, no stale-lock detection
    fcntl = None

__all__ = ["LOCK_NAME", "FolderLock", "folder_lock", "rank0_folder_lock", "run_folder_lock", "read_lock",
           "FolderLocked"]

LOCK_NAME = ".ddpm-lite.lock"

_held: dict[str, "_Held"] = {}            # lock file (resolved) -> this process's hold on it
_guard = threading.Lock()


class _Held:
    def __init__(self, fd: int | None, record: dict, created: list):
        self.fd, self.record, self.count = fd, record, 1
        self.created = created            # folders the lock created, deepest first (removed again if left empty)


def _command() -> str:
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    cmd = " ".join(argv)
    return cmd if len(cmd) <= 400 else cmd[:397] + "..."


def _record() -> dict:
    return {"what": "ddpm_lite folder lock: the process writing this folder", "pid": os.getpid(),
            "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": _command()}


def _parse(raw: bytes) -> dict | None:
    """A lock file's record, or None when it is empty or unreadable (its writer may be starting)."""
    try:
        d = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def read_lock(folder) -> dict | None:
    """The record of the process that holds (or last held) `folder`'s lock; None when there is none."""
    try:
        return _parse((Path(folder) / LOCK_NAME).read_bytes())
    except OSError:
        return None


def _describe(rec: dict | None) -> str:
    if not rec:
        return "process (one that is still starting: its lock file is empty)"
    return (f"process (pid {rec.get('pid', '?')} on host {rec.get('host', '?')}, started {rec.get('started', '?')}, "
            f"command: {rec.get('command', '?')})")


class FolderLock:
    """The lock of one folder (see the module's docstring). `what` names the folder in messages,
    e.g. "run folder" or "plan 'cpu' folder"; `hint` is the advice added when it is taken.

    acquire() raises FolderLocked when another process holds it; `cleared` is then the record
    of a stale lock that acquire() took over (None when there was none)."""

    def __init__(self, folder, what: str = "folder", hint: str = "", log=None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what, self.hint = what, hint
        self.log = log if log is not None else (lambda msg: print(msg, file=sys.stderr))
        self.cleared: dict | None = None
        self._mine = False

    def _key(self) -> str:
        return str(self.path.resolve())

    def _locked(self, rec: dict | None) -> FolderLocked:
        fix = self.hint or "Wait for that process to finish, or stop it, or write to another folder."
        return FolderLocked(f"{self.what} {self.folder} is being written by another {_describe(rec)}. {fix}",
                            folder=self.folder, holder=rec)

    def acquire(self) -> "FolderLock":
        with _guard:
            key = self._key()
            if key in _held:                              # this process holds it already
                _held[key].count += 1
                self._mine = True
                return self
            created = self._make_folder()
            fd = self._acquire_flock() if fcntl is not None else self._acquire_exclusive()
            rec = _record()
            self._write(fd, rec)
            _held[key] = _Held(fd, rec, created)
            self._mine = True
        if self.cleared is not None:
            self.log(f"note: {self.what} {self.folder} had a stale lock left by a {_describe(self.cleared)}, "
                     "which has ended; the lock was cleared.")
        return self

    def _make_folder(self) -> list:
        created, d = [], self.folder.absolute()
        while not d.exists() and d != d.parent:
            created.append(d)
            d = d.parent
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DDPMLiteError(f"cannot create {self.what} {self.folder}: {e.strerror}. "
                                "Choose a writable folder.") from None
        return created

    def _acquire_flock(self) -> int:
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except FileNotFoundError:                     # a releasing holder removed the empty folder
                self._make_folder()
                continue
            except OSError as e:
                raise DDPMLiteError(f"cannot create the lock file {self.path}: {e.strerror}. "
                                    "Choose a writable folder.") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:                               # held by a live process
                rec = _parse(_read_fd(fd))
                os.close(fd)
                raise self._locked(rec) from None
            try:                                          # a releasing holder unlinks the file it locked:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino   # then lock the new one
            except FileNotFoundError:
                same = False
            if same:
                self.cleared = _parse(_read_fd(fd))       # a record under a free flock: its process ended
                return fd
            os.close(fd)
        raise DDPMLiteError(f"could not lock {self.what} {self.folder}: its lock file {self.path} keeps changing. "
                            "Is another program deleting files there?")

    def _acquire_exclusive(self) -> int:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            err = self._locked(read_lock(self.folder))
            err.args = (f"{err} If that process is gone, delete {self.path}.",)
            raise err from None
        except OSError as e:
            raise DDPMLiteError(f"cannot create the lock file {self.path}: {e.strerror}. "
                                "Choose a writable folder.") from None
        return fd

    @staticmethod
    def _write(fd: int, rec: dict) -> None:
        data = (json.dumps(rec, indent=2) + "\n").encode()
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, data)
        os.fsync(fd)

    def release(self) -> None:
        """Give the lock up (the last release of this process removes the lock file)."""
        with _guard:
            if not self._mine:
                return
            self._mine = False
            key = self._key()
            held = _held.get(key)
            if held is None:
                return
            held.count -= 1
            if held.count:
                return
            del _held[key]
            try:
                self.path.unlink(missing_ok=True)         # unlink while still holding the flock
            except OSError:
                pass
            if held.fd is not None:
                os.close(held.fd)
            for d in held.created:                        # a folder made for the lock alone goes again
                try:
                    d.rmdir()
                except OSError:                           # something was written there: keep it
                    break

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while block := os.read(fd, 1 << 16):
        chunks.append(block)
    return b"".join(chunks)


def folder_lock(folder, what: str = "folder", hint: str = "", enabled: bool = True, log=None):
    """A context manager holding `folder`'s lock (nothing when `enabled` is False)."""
    return FolderLock(folder, what, hint, log) if enabled else contextlib.nullcontext()


@contextlib.contextmanager
def rank0_folder_lock(folder, ctx, what: str = "run folder", hint: str = ""):
    """The lock of a folder that only rank 0 of a data-parallel run writes (ddpm_lite.distributed).

    Rank 0 takes it; every rank then learns whether that worked, so that all of them stop
    together when another process holds the folder (the others would otherwise wait for rank 0
    forever). On one process this is folder_lock(folder)."""
    from .distributed import any_true
    lock, error = None, None
    if ctx.is_main:
        try:
            lock = FolderLock(folder, what, hint).acquire()
        except DDPMLiteError as e:
            error = e
    if any_true(error is not None, ctx):
        if error is not None:
            raise error
        raise FolderLocked(f"process 0 of this torchrun job could not lock {what} {folder} (its message says "
                           "which process holds it); this process stops too.", folder=Path(folder), holder=None)
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


def run_folder_lock(run_dir, ctx, hint: str = "Wait for that run to finish (or stop it), or train into "
                    "another folder."):
    """The lock of a training run's folder (rank0_folder_lock), or nothing when the run keeps no folder
    (run_dir None). `training.train` holds it, and `ddpm-lite train` around it (with a hint naming its
    options); re-entrant, so the two are the same lock."""
    if run_dir is None:
        return contextlib.nullcontext()
    return rank0_folder_lock(run_dir, ctx, "run folder", hint)
