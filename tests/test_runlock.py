"""One writer per run folder and per plan folder, tried with real processes: a second writer stops at
once naming the holder; a SIGKILLed holder's stale lock is cleared by the next writer."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ddpm_lite import experiments as xp
from ddpm_lite.distributed import DistContext
from ddpm_lite.errors import FolderLocked
from ddpm_lite.runlock import LOCK_NAME, FolderLock, folder_lock, rank0_folder_lock, read_lock

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "plans" / "mini.json"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

HOLDER = """\
import sys
from ddpm_lite.runlock import FolderLock
lock = FolderLock(sys.argv[1], "run folder").acquire()
print("held", flush=True)
sys.stdin.read()              # hold until the test closes stdin (or kills this process)
lock.release()
"""


@pytest.fixture
def holder_script(tmp_path):
    path = tmp_path / "holder.py"
    path.write_text(HOLDER)
    return path


def start_holder(script, folder) -> subprocess.Popen:
    """A process that holds `folder`'s lock until its stdin is closed."""
    proc = subprocess.Popen([sys.executable, str(script), str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    line = proc.stdout.readline()
    assert line.strip() == "held", proc.stderr.read()
    return proc


def stop_holder(proc) -> None:
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0, proc.stderr.read()


def ddpm_lite(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "ddpm_lite", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def names_the_holder(message: str, proc, folder) -> bool:
    return (str(folder) in message and f"pid {proc.pid} " in message and f"on host {socket.gethostname()}" in message
            and "started 20" in message and "holder.py" in message)


def test_a_second_train_into_a_held_run_folder_stops_at_once_naming_the_holder(tmp_path, holder_script):
    run_dir = tmp_path / "run"
    holder = start_holder(holder_script, run_dir)
    try:
        t0 = time.monotonic()
        second = ddpm_lite("train", "--preset", "quick", "--run-dir", run_dir, "--no-progress", "iterations=2")
        seconds = time.monotonic() - t0
    finally:
        stop_holder(holder)
    assert second.returncode == 2, second.stderr
    err = second.stderr.strip()
    assert err.startswith(f"error: run folder {run_dir} is being written by another process") and \
        names_the_holder(err, holder, run_dir), err
    assert "Traceback" not in err and "--run-dir" in err          # says how to get on
    assert seconds < 60                                          # it did not wait for the holder
    # nothing was written, not even config.json, so the holder's release removed the folder it made
    assert not run_dir.exists()


def test_a_sigkilled_holder_leaves_a_stale_lock_that_the_next_writer_clears(tmp_path, holder_script):
    folder = tmp_path / "run"
    holder = start_holder(holder_script, folder)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert (folder / LOCK_NAME).is_file() and read_lock(folder)["pid"] == holder.pid    # left behind
    notes = []
    with FolderLock(folder, "run folder", log=notes.append) as lock:
        assert lock.cleared["pid"] == holder.pid
        assert read_lock(folder)["pid"] == os.getpid()
    assert len(notes) == 1 and f"pid {holder.pid} " in notes[0] and "stale lock" in notes[0]
    assert not (folder / LOCK_NAME).exists() and folder.is_dir()   # a folder this lock did not make stays


def test_a_plan_folder_is_locked_and_a_killed_holder_does_not_block_the_next_run(tmp_path, holder_script):
    plan = xp.load_plan(MINI)
    layout = xp.Layout(tmp_path, plan.name)
    empty = tmp_path / "from_gpu"
    empty.mkdir()
    holder = start_holder(holder_script, layout.runs)
    held = ddpm_lite("experiments", MINI, "--root", tmp_path, "--import", empty)
    assert held.returncode == 2
    assert held.stderr.startswith(f"error: plan 'mini' folder {layout.runs} is being written by another process")
    assert names_the_holder(held.stderr, holder, layout.runs) and "--dry-run" in held.stderr, held.stderr
    with pytest.raises(FolderLocked) as e:                       # the runner itself (scripts/gpu_run.py uses it)
        xp.Runner(plan, layout, xp.Backend("cpu", progress=False), log=lambda m: None).run()
    assert e.value.holder["pid"] == holder.pid and e.value.folder == layout.runs
    assert not layout.results.exists()                           # no unit ran, no status was written
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    after = ddpm_lite("experiments", MINI, "--root", tmp_path, "--import", empty)
    # the lock was taken this time: the import itself runs (and finds no manifest in the empty folder)
    assert after.returncode == 2 and "no readable manifest.json" in after.stderr, after.stderr
    assert f"stale lock left by a process (pid {holder.pid} " in after.stderr
    assert not (layout.runs / LOCK_NAME).exists()


def test_a_train_unit_of_a_plan_locks_its_run_folder(tmp_path, holder_script):
    plan = xp.load_plan(MINI)
    layout = xp.Layout(tmp_path, plan.name)
    first = next(u for u in plan.units if u.kind == "train")
    holder = start_holder(holder_script, layout.train_dir(first.name))   # e.g. `ddpm-lite train --run-dir` into it
    try:
        runner = xp.Runner(plan, layout, xp.Backend("cpu", progress=False), only=["train"], log=lambda m: None)
        runner._run_one(first, 1, 1, must_finish=False)
    finally:
        stop_holder(holder)
    out = runner.outcomes[first.name]
    assert out.state == "failed" and "FolderLocked" in out.message and f"pid {holder.pid} " in out.message
    assert not list(layout.train_dir(first.name).rglob("*.pt"))


def test_train_called_directly_locks_its_run_folder(tmp_path, holder_script):
    """A notebook or script that calls training.train(cfg, run_dir) takes the same lock as the CLI."""
    import torch
    from ddpm_lite.config import get_config
    from ddpm_lite.training import train
    run_dir = tmp_path / "run"
    cfg = get_config("quick", iterations=2, batch_size=4, channels=(8, 16, 32))
    data = (torch.zeros(8, 1, 28, 28), torch.arange(8) % 10)
    holder = start_holder(holder_script, run_dir)
    try:
        with pytest.raises(FolderLocked, match=f"pid {holder.pid} "):
            train(cfg, run_dir, device="cpu", data=data, progress=False)
    finally:
        stop_holder(holder)
    assert not run_dir.exists()                                  # nothing written, not even config.json
    state = train(cfg, run_dir, device="cpu", data=data, progress=False)      # free again: it trains
    assert state.step == 2 and not (run_dir / LOCK_NAME).exists() and (run_dir / "config.json").exists()


RACER = """\
import sys, time
from pathlib import Path
from ddpm_lite.errors import FolderLocked
from ddpm_lite.runlock import FolderLock
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
try:
    with FolderLock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(3)
except FolderLocked:
    print("refused", flush=True)
"""


def test_of_writers_starting_together_exactly_one_gets_the_folder(tmp_path):
    script, go, folder = tmp_path / "racer.py", tmp_path / "go", tmp_path / "run"
    script.write_text(RACER)
    procs = [subprocess.Popen([sys.executable, str(script), str(folder), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(6)]
    time.sleep(3)                                                 # let them import and wait at the start line
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    said = sorted(o.strip() for o, _ in outs)
    assert said == ["held"] + ["refused"] * 5, outs
    assert not (folder / LOCK_NAME).exists()


def test_the_lock_is_reentrant_within_a_process_and_held_until_the_last_release(tmp_path, holder_script):
    folder = tmp_path / "run"
    outer = FolderLock(folder).acquire()
    inner = FolderLock(folder).acquire()                          # e.g. the runner inside the experiments command
    inner.release()
    probe = subprocess.run([sys.executable, str(holder_script), str(folder)], input="", capture_output=True,
                           text=True, env=ENV, timeout=60)
    assert probe.returncode != 0 and "FolderLocked" in probe.stderr   # still held by this process
    outer.release()
    assert not (folder / LOCK_NAME).exists()
    probe = subprocess.run([sys.executable, str(holder_script), str(folder)], input="", capture_output=True,
                           text=True, env=ENV, timeout=60)
    assert probe.returncode == 0 and probe.stdout.strip() == "held", probe.stderr


def test_only_rank_0_of_a_data_parallel_run_takes_the_lock(tmp_path):
    with rank0_folder_lock(tmp_path / "r1", DistContext(rank=1)) as lock:
        assert lock is None and not (tmp_path / "r1" / LOCK_NAME).exists()
    with rank0_folder_lock(tmp_path / "r0", DistContext(rank=0)) as lock:
        assert lock is not None and read_lock(tmp_path / "r0")["pid"] == os.getpid()
    with folder_lock(tmp_path / "off", enabled=False):
        assert not (tmp_path / "off").exists()


@pytest.mark.slow
def test_under_torchrun_every_rank_stops_when_the_run_folder_is_held(tmp_path, holder_script):
    run_dir = tmp_path / "ddp"
    holder = start_holder(holder_script, run_dir)
    try:
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "ddpm_lite", "train", "--preset", "quick", "--run-dir", str(run_dir),
                               "--no-progress", "batch_size=8", "iterations=2"],
                              capture_output=True, text=True, timeout=300, env=ENV)
    finally:
        stop_holder(holder)
    assert done.returncode != 0
    assert f"error: run folder {run_dir} is being written by another process (pid {holder.pid} " in done.stderr, \
        done.stderr[-3000:]
    assert "process 0 of this torchrun job could not lock" in done.stderr      # rank 1 stopped too, not hung
    assert not run_dir.exists()                                  # nothing written (the holder made it, and removed it)
