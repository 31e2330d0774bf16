"""Data-parallel training: two CPU processes (gloo) train like one process with the same global batch."""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddpm_lite import distributed
from ddpm_lite.checkpoint import load_checkpoint, step_checkpoints
from ddpm_lite.config import get_config, parse_overrides
from ddpm_lite.errors import ConfigError
from ddpm_lite.training import train

from conftest import one_torch_thread

# channels of 16 (two per GroupNorm group): with one channel per group, the biases in front of a
# norm have a gradient of exactly zero in theory, and Adam turns its rounding noise into full steps,
# so two correct runs would differ by ~lr there.
# chapter 5's recipe: a constant rate, so that changing `iterations` on resume leaves the steps as they were
TINY = ["prediction=eps", "lr_schedule=constant", "warmup=0", "channels=16,16,16", "time_dim=16", "batch_size=8", "iterations=3", "checkpoint_every=2", "T=50",
        "sample_steps=5"]
ATOL = 1e-5
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(run_dir, *overrides, nproc=2):
    """`torchrun --standalone --nproc_per_node=2 -m ddpm_lite train ...` (a free local port, no network)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "ddpm_lite", "train", "--preset", "quick", "--run-dir", str(run_dir), "--no-progress",
           *TINY, *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=ONE_THREAD)


def one_process(run_dir, *overrides):
    cfg = get_config("quick", **parse_overrides([*TINY, *overrides]))
    with one_torch_thread():
        return train(cfg, run_dir, device="cpu", progress=False)


def assert_same_run(ckpt, state):
    """Same loss history and same weights (model and EMA) as a one-process state, within float rounding."""
    assert ckpt["step"] == state.step and len(ckpt["losses"]) == state.step
    assert torch.allclose(ckpt["losses"], torch.tensor(state.losses, dtype=torch.float64), rtol=0, atol=ATOL)
    for name, ref in (("model", state.model.state_dict()), ("ema", state.ema.model.state_dict())):
        assert ckpt[name].keys() == ref.keys()                        # no "module." prefixes from DDP
        for k, v in ref.items():
            assert torch.allclose(ckpt[name][k], v, rtol=0, atol=ATOL), (name, k)


def run_files(run_dir):
    return sorted(str(p.relative_to(run_dir)) for p in Path(run_dir).rglob("*") if p.is_file())


@pytest.mark.slow
def test_torchrun_two_processes_train_like_one_and_resume(tmp_path):
    run_dir = tmp_path / "ddp"
    done = torchrun(run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("model:") == 1 and "(2 processes)" in done.stdout     # rank 0 alone reports
    # rank 0 alone wrote: the usual files, no temporary leftovers
    assert run_files(run_dir) == ["checkpoints/step_00000002.pt", "checkpoints/step_00000003.pt", "config.json",
                                  "losses.csv", "model.pt", "train.json"]
    three = one_process(tmp_path / "one3")
    ckpt = load_checkpoint(step_checkpoints(run_dir)[-1])
    assert_same_run(ckpt, three)
    assert all(torch.equal(v, ckpt["ema"][k]) for k, v in load_checkpoint(run_dir / "model.pt")["ema"].items())

    # a DDP checkpoint resumes in one process, and the run resumes under two: both equal five straight steps
    shutil.copytree(run_dir, tmp_path / "copy")
    five = one_process(tmp_path / "one5", "iterations=5")
    one_process(tmp_path / "copy", "iterations=5")
    again = torchrun(run_dir, "iterations=5")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [p.name for p in step_checkpoints(run_dir)] == ["step_00000004.pt", "step_00000005.pt"]
    assert_same_run(load_checkpoint(step_checkpoints(run_dir)[-1]), five)
    assert_same_run(load_checkpoint(step_checkpoints(tmp_path / "copy")[-1]), five)


def _spawned_rank(rank, port, run_dir, out_dir):
    """One rank of a two-process run started without torchrun. Rank 1 fails on any file it would write."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    if rank == 1:
        import pathlib
        import ddpm_lite.io

        def refuse(path, *a, **k):
            raise AssertionError(f"rank 1 wrote {path}")
        ddpm_lite.io.atomic_write_bytes = refuse
        pathlib.Path.unlink = lambda self, *a, **k: refuse(self)
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(64, 1, 28, 28, generator=g) * 2 - 1, torch.randint(10, (64,), generator=g))
    state = train(get_config("quick", **parse_overrides(TINY)), run_dir, device="cpu", data=data, progress=False)
    torch.save(state.model.state_dict(), Path(out_dir) / f"rank{rank}.pt")     # the test's own record
    distributed.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_every_rank_ends_with_the_same_weights_and_only_rank_0_writes(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_spawned_rank, args=(free_port(), tmp_path / "run", tmp_path), nprocs=2, join=True)
    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert run_files(tmp_path / "run") == ["checkpoints/step_00000002.pt", "checkpoints/step_00000003.pt",
                                           "config.json"]


def test_batch_size_not_divisible_by_the_processes_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from ddpm_lite.cli import main
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["train", "--run-dir", str(tmp_path / "r"), "--device", "cpu", "batch_size=30"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "batch_size 30 is not divisible by the 4 processes" in err
    assert not (tmp_path / "r").exists() and not torch.distributed.is_initialized()    # before any work
    with pytest.raises(ConfigError, match="batch_size 30"):
        train(get_config("quick", batch_size=30), tmp_path / "r", device="cpu", progress=False)


@pytest.mark.parametrize("world", [None, "1"])
def test_one_process_makes_no_group_and_no_wrapper(world, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    if world:
        monkeypatch.setenv("WORLD_SIZE", world)
    ctx = distributed.init_from_env("cpu", batch_size=7)             # any batch size splits over one process
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.enabled) == (0, 1, True, False)
    model = torch.nn.Linear(2, 2)
    loss = torch.tensor(1.5)
    assert distributed.wrap_model(model, ctx) is model and distributed.all_reduce_mean(loss, ctx) is loss
    assert distributed.any_true(True, ctx) is True and not torch.distributed.is_initialized()
