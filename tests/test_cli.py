"""The `ddpm-lite` command as a user runs it: real processes, killed and resumed; bad input."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from ddpm_lite.checkpoint import load_checkpoint, load_model, step_checkpoints
from ddpm_lite.config import get_config, parse_overrides
from ddpm_lite.training import train

from conftest import one_torch_thread

TINY = ["channels=8,8,8", "time_dim=16", "batch_size=8", "iterations=40", "checkpoint_every=4", "T=50",
        "sample_steps=5"]


def cli(*args, **kw):
    return [sys.executable, "-m", "ddpm_lite", *args]


# Bit-identical comparisons run every process on one thread: a multi-threaded CPU convolution may
# sum its partial gradients in a different order on a busy machine, which changes the last bits.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(*args, timeout=120):
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout, env=ONE_THREAD)


def start_train(run_dir):
    return subprocess.Popen(cli("train", "--preset", "quick", "--run-dir", str(run_dir), "--no-progress", *TINY),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)


def wait_for_checkpoint(proc, run_dir, newer_than=0, limit=60):
    t0 = time.time()
    while time.time() - t0 < limit and proc.poll() is None:
        found = step_checkpoints(run_dir)
        if found and int(found[-1].stem.split("_")[1]) > newer_than:
            return
        time.sleep(0.05)


def reference_losses(tmp_path):
    cfg = get_config("quick", **parse_overrides(TINY))
    with one_torch_thread():
        return train(cfg, tmp_path / "reference", device="cpu", progress=False).losses


@pytest.mark.slow
def test_sigkill_three_times_then_resume_finishes_with_a_clean_history(tmp_path):
    run_dir = tmp_path / "run"
    rng = random.Random(1234)
    last = 0
    for _ in range(3):
        proc = start_train(run_dir)
        wait_for_checkpoint(proc, run_dir, newer_than=last)
        time.sleep(rng.uniform(0, 0.5))                      # a random moment after a checkpoint
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if step_checkpoints(run_dir):
            last = int(step_checkpoints(run_dir)[-1].stem.split("_")[1])
    assert last > 0, "no checkpoint was written before the kills"
    done = run("train", "--preset", "quick", "--run-dir", str(run_dir), "--no-progress", *TINY)
    assert done.returncode == 0, done.stderr
    ckpt = load_checkpoint(step_checkpoints(run_dir)[-1])
    assert ckpt["step"] == 40 and len(ckpt["losses"]) == 40           # no gap, no duplicate step
    load_model(run_dir / "model.pt")                                    # the final model loads
    assert ckpt["losses"].tolist() == reference_losses(tmp_path)       # and equals an uninterrupted run
    assert not list(run_dir.rglob("*.tmp"))                             # no half-written file is left


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_the_same_command_resumes(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_train(run_dir)
    wait_for_checkpoint(proc, run_dir)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Run the same command again to resume" in err and "Traceback" not in err
    stopped = load_checkpoint(step_checkpoints(run_dir)[-1])["step"]
    assert 0 < stopped < 40
    done = run("train", "--preset", "quick", "--run-dir", str(run_dir), "--no-progress", *TINY)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(step_checkpoints(run_dir)[-1])["losses"].tolist() == reference_losses(tmp_path)


@pytest.mark.slow
def test_train_then_sample_writes_grid_npz_and_json(tmp_path):
    run_dir = tmp_path / "run"
    assert run("train", "--preset", "quick", "--run-dir", str(run_dir), "--no-progress", *TINY).returncode == 0
    out = run("sample", str(run_dir), "--n", "20", "--w", "1", "--no-progress", "--seed", "3")
    assert out.returncode == 0, out.stderr
    npz = next((run_dir / "samples").glob("*.npz"))
    with np.load(npz) as z:
        assert z["images"].shape == (20, 28, 28) and z["images"].dtype == np.uint8
        assert z["labels"].tolist() == [d for _ in range(2) for d in range(10)]   # cycling, as a plan draws them
    assert npz.with_suffix(".png").is_file() and npz.with_suffix(".json").is_file()
    again = run("sample", str(run_dir), "--n", "20", "--w", "1", "--no-progress", "--seed", "3",
                "--out", str(tmp_path / "again.npz"))
    with np.load(npz) as a, np.load(tmp_path / "again.npz") as b:
        assert np.array_equal(a["images"], b["images"])                  # same seed, same images
    assert npz.read_bytes() == (tmp_path / "again.npz").read_bytes()   # the file's bytes depend on the images alone


def test_the_demo_sets_its_grid_beside_the_shipped_models(tmp_path):
    from PIL import Image
    from ddpm_lite.cli import _compare_with_shipped, sample_command
    from ddpm_lite.plotting import grid_image
    run_dir = tmp_path / "run"
    assert run("train", "--preset", "quick", "--run-dir", str(run_dir), "--no-progress", *TINY).returncode == 0
    with one_torch_thread():
        out = sample_command(str(run_dir), n=100, progress=False, device="cpu")
        _compare_with_shipped(out, run_dir, "cpu")
    png = Image.open(run_dir / "compare_with_shipped.png")
    with np.load(out) as z:
        one = grid_image(z["images"], z["labels"])
    assert png.size == ((2 * one.shape[1] + 8) * 2, one.shape[0] * 2)          # two grids, 8 pixels apart, x2
    shipped = (run_dir / "samples" / "shipped_grid.json").read_text()
    assert '"steps": 5' in shipped and '"seed": 0' in shipped                     # the demo's own sampler settings


@pytest.mark.parametrize("args, message", [
    (["train", "T=0"], "'T'"),
    (["train", "p_uncond=2"], "'p_uncond'"),
    (["train", "batch_size=0"], "'batch_size'"),
    (["train", "w=-1"], "'w'"),
    (["train", "learning_rate=1"], "unknown config field 'learning_rate'"),
    (["train", "iterations"], "field=value"),
    (["train", "sample_steps=5000"], "'sample_steps'"),
    (["train", "--device", "cuda:7"], "cuda"),
    (["train", "--device", "tpu"], "device"),
    (["sample", "/nonexistent/run"], "no checkpoint at"),
    (["sample", "pretrained", "--n", "0"], "--n"),
    (["sample", "pretrained", "--w", "-2"], "'w'"),
    (["sample", "pretrained", "--steps", "0"], "'sample_steps'"),
    (["sample", "pretrained", "--labels", "3-12"], "labels"),
    (["sample", "pretrained", "--seed", "-1"], "--seed"),
    (["sample", "pretrained", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "/nonexistent/samples.npz"], "samples.npz"),
])
def test_bad_input_is_one_clear_line_not_a_traceback(args, message, tmp_path, capsys):
    """In-process (fast): main() returns 2 and prints one `error:` line naming the problem."""
    from ddpm_lite.cli import main
    if args[0] == "train":
        args = [args[0], "--run-dir", str(tmp_path / "r"), *args[1:]]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "r" / "checkpoints").exists()        # nothing started


def test_the_installed_command_reports_errors_without_a_traceback(tmp_path):
    res = run("train", "--run-dir", str(tmp_path / "r"), "T=0")
    assert res.returncode == 2 and res.stderr.startswith("error:") and "Traceback" not in res.stderr
