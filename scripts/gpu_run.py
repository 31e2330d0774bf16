#!/usr/bin/env python3
"""Run an experiment plan's train and sample units on one GPU within a time budget, and pack the
outputs into a few size-limited files for the trip back. FID is computed elsewhere (on the CPU).

    # here, once: MNIST's training set as one compressed file that travels with the working tree
    python3 scripts/gpu_run.py --write-data runs/gpu_data/mnist_train.npz
    # on the GPU machine (runs/gpu_data carried along; 540 s of a 600 s call):
    python3 scripts/gpu_run.py plans/paper.json --budget-seconds 540 --out "$OUT"
    # here, after: unpack, then evaluate one sample set at a time (resumable)
    ddpm-lite experiments plans/paper.json --import OUT_FOLDER
    ddpm-lite experiments plans/paper.json --only evaluate

What it does. The plan's train and sample units run in priority order through the same runner as
`ddpm-lite experiments` (ddpm_lite.experiments.Runner): the same files, the same results JSON,
the same skipping of finished units and resuming of unfinished ones. A unit that cannot finish
in the time left (estimated from measured step times) is passed over for later ones that can; the
training left unfinished then uses whatever time remains and is checkpointed (full fp32 state, so
a later call that carries `runs/experiments/PLAN/train/NAME` back resumes it exactly). Everything
finished is packed at once (so a kill loses only the unit in progress) into --out: at most
`--max-files` files (the manifest included) of at most `--max-file-mib` MiB each: `part_K.bin`
holding the files back to back, and `manifest.json` with each file's path, sha256 and place,
the timings, the hardware, the torch version and the commit.

Speed (one H200; the same code runs on a CPU for the tests, without the CUDA-only parts):
- Training is the package's own loop, `ddpm_lite.training.train`, with the GPU fast paths that it
  uses on CUDA by default (`ddpm_lite.training.FastPaths`, explained in chapter 11): bf16 autocast
  (fp16 with a gradient scaler where the GPU has no bf16), fp32 weights, optimizer and loss;
  channels_last; TF32; no host syncs for input checks; the whole step captured once as a CUDA
  graph and replayed (`--cuda-graphs`, checked against an eager step first; any error or mismatch
  falls back to eager steps). This script only chooses the units and gives the loop its deadline;
  the backend with these speed-ups is ddpm_lite.experiments.gpu_backend.FastBackend.
  At the paper's batch of 32 a step is launch-bound (a few hundred small kernels), which the graph
  removes; several trainings at once (CUDA streams) could fill the GPU further but would finish
  every model late, and the plan's priority order favours finishing one model and its sample sets.
- For sampling, the network runs under bf16 autocast, channels_last.
- Sampling is compute-bound at large batches (5,000 images, guidance batched to 10,000 network
  inputs): ~10-25 ms a step for the paper's U-Net. The sampler's Gaussian noise is drawn on the
  CPU from the seeded generator (so samples do not depend on the device) in a background thread,
  ahead of time, into pinned memory, so it overlaps the GPU's work instead of adding to it.
- torch.compile is not used: compiling the U-Net takes minutes of a 9-minute budget, and the
  graph capture of the training step already removes the launch overhead that compiling would.
Data and noise are functions of the plan's seeds (`draw_batch` and the samplers' generators);
GPU kernels may still sum in a different order from run to run (cudnn.benchmark, bf16), so
results agree with a CPU run up to rounding, not bit for bit.

Nothing here imports pytorch-fid or scipy: the GPU machine has only torch, torchvision, numpy,
tqdm and matplotlib.
"""
from __future__ import annotations

import time

T_START = time.monotonic()   # the budget counts from here, before the slow imports

import argparse
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # run from the working tree without installing

import numpy as np
import torch

from ddpm_lite import experiments as xp
from ddpm_lite.checkpoint import step_checkpoints
from ddpm_lite.errors import DataError, DDPMLiteError
from ddpm_lite.experiments import gpu_backend
from ddpm_lite.experiments.gpu_backend import FastBackend
from ddpm_lite.io import atomic_write_bytes, git_commit, provenance

MiB = 1 << 20


def log(*args):
    print(*args, flush=True)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def source_digest() -> str:
    """sha256 over the package sources, its GPU backend and this script: names the code when git is not at hand."""
    h = hashlib.sha256()
    for p in sorted((ROOT / "ddpm_lite").glob("*.py")) + [Path(gpu_backend.__file__), Path(__file__).resolve()]:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def load_data(path: Path | None):
    """MNIST's training set as (float images [N, 1, 28, 28] in [-1, 1], labels): from --data, else the usual sources."""
    from ddpm_lite.data import load_mnist_float, to_float
    if path is None:
        try:
            return load_mnist_float("train")
        except DataError as e:
            raise DataError(f"{e} On a machine without the MNIST wheel, pass --data FILE, a file made here "
                            "with `python3 scripts/gpu_run.py --write-data FILE`.") from None
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"cannot read training data {path} ({type(e).__name__}: {e}); make it with "
                        "`python3 scripts/gpu_run.py --write-data FILE`.") from None
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28) or len(labels) != len(images):
        raise DataError(f"{path}: expected uint8 images [N, 28, 28] and N labels.")
    return to_float(torch.from_numpy(images)), torch.from_numpy(labels.astype(np.int64))


def write_data(path: Path) -> Path:
    from ddpm_lite.data import load_mnist
    images, labels = load_mnist("train")
    data = xp.npz_bytes(images=images.numpy(), labels=labels.numpy().astype(np.int64))
    atomic_write_bytes(path, data)
    log(f"wrote {path}: {len(images)} MNIST training images, {len(data) / MiB:.1f} MiB, "
        f"sha256 {hashlib.sha256(data).hexdigest()}")
    return path


def setup_cuda(deterministic: bool):
    if not torch.cuda.is_available():
        return
    torch.set_float32_matmul_precision("high")      # TF32 for fp32 matrix multiplies
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        torch.backends.cudnn.deterministic = True


def hardware(dev) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else provenance("cpu")["hardware"]


def run(args) -> int:
    plan = xp.load_plan(args.plan)
    layout = xp.Layout(args.root, plan.name)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise DDPMLiteError(f"--out {out} is not empty; give an empty or new folder.")
    elapsed = time.monotonic() - args.t_start
    packer = xp.Packer(out, args.max_files, int(args.max_file_mib * MiB), meta={
        "plan": plan.name, "plan_file": Path(args.plan).name, "scale": plan.scale, "budget_seconds": args.budget_seconds,
        "margin_seconds": args.margin_seconds, "commit": git_commit(), "source_sha256": source_digest(),
        "torch": torch.__version__, "python": sys.version.split()[0], "state": "running"})
    budget = args.budget_seconds - elapsed - args.margin_seconds
    if budget <= 0:
        packer.write_manifest(state="nothing run", stopped="budget too small: "
                              f"{args.budget_seconds} s budget, {elapsed:.1f} s spent starting, "
                              f"{args.margin_seconds} s kept for packing", elapsed_seconds=round(elapsed, 1))
        log(f"budget too small ({args.budget_seconds} s): nothing run; wrote {out / 'manifest.json'}")
        return 0
    setup_cuda(args.deterministic)
    fast = {"auto": None, "on": True, "off": False}[args.fast_paths]
    from ddpm_lite.device import pick_device
    dev = pick_device(args.device)
    fast = dev.type == "cuda" if fast is None else fast
    data = load_data(args.data)
    backend = FastBackend(dev, data, fast, args.cuda_graphs, args.weights_dtype, args.stop_after_steps,
                          progress=args.progress, log=log)
    packer.write_manifest(hardware=hardware(dev), device=str(dev))
    log(f"plan {plan.name} on {hardware(dev)} (torch {torch.__version__}), budget {args.budget_seconds} s, "
        f"{budget:.0f} s for units; fast paths {'on' if fast else 'off'}, CUDA graphs "
        f"{'on' if backend.cuda_graphs else 'off'}")

    def pack(files, why: str):
        for f in files:
            rel = layout.rel(f)
            if packer.has(rel):
                continue
            try:
                packer.add(rel, Path(f).read_bytes(), why=why)
            except xp.PackFull as e:
                packer.left_out.append({"path": rel, "why": str(e)})
                packer.write_manifest()
                log(f"  not packed: {e}")

    def on_unit_done(unit, res):
        backend.timings[unit.name] = {"state": res.state, "message": res.message, "seconds": round(res.seconds, 2)}
        if res.state == "done":
            pack(res.files, "done")          # the unit's results file comes last in res.files
        packer.write_manifest(units=backend.timings)
        reserve = min(args.reserve_mib * MiB, 0.1 * packer.max_parts * packer.max_bytes)
        if packer.capacity_left < reserve:                     # no room for more: stop starting units
            runner.deadline = time.monotonic()

    runner = xp.Runner(plan, layout, backend, only=["train", "sample"], budget_s=budget, log=log,
                       on_unit_done=on_unit_done)
    stopped = ""
    try:
        status = runner.run()
    except KeyboardInterrupt:
        stopped = "interrupted"
        status = xp.write_status(plan, layout, runner.outcomes)
    # unfinished work of this call goes last: the newest checkpoint of an unfinished training (all
    # of its state, to resume from), the batches drawn of an unfinished sample set
    wall_start = time.time() - (time.monotonic() - args.t_start)
    fresh = lambda f: f.is_file() and f.stat().st_mtime >= wall_start - 1
    for u in plan.units:
        if xp.unit_state(plan, layout, u).state != "partial":
            continue
        if u.kind == "train":
            ckpt = step_checkpoints(layout.train_dir(u.name))[-1:]
            if ckpt and fresh(ckpt[0]):
                pack(ckpt + [layout.train_dir(u.name) / "config.json"], "partial training: resume from it")
        elif u.kind == "sample":
            parts = sorted(layout.parts_dir(u.name).glob("batch_*.npz"))
            if any(fresh(f) for f in parts):
                pack([layout.parts_dir(u.name) / "parts.json"] + parts, "partial sample set")
    done = [x["name"] for x in status["units"] if x["kind"] in ("train", "sample") and x["state"] == "done"]
    total = [x["name"] for x in status["units"] if x["kind"] in ("train", "sample")]
    packer.write_manifest(
        state="finished" if not stopped else stopped, units=backend.timings,
        plan_states={x["name"]: {"state": x["state"], "message": x["message"]} for x in status["units"]},
        done_train_and_sample=f"{len(done)} of {len(total)}",
        elapsed_seconds=round(time.monotonic() - args.t_start, 1), hardware=hardware(dev), device=str(dev),
        provenance=provenance(str(dev)))
    log(f"{len(done)} of {len(total)} train and sample units done; packed {len(packer.files)} files, "
        f"{packer.used / MiB:.1f} MiB in {len(packer._sizes)} part(s) under {out}"
        + (f"; {len(packer.left_out)} left out" if packer.left_out else "")
        + f"; {time.monotonic() - args.t_start:.0f} s in all")
    return 130 if stopped else 0


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("plan", nargs="?", type=Path, help="a plan file, e.g. plans/paper.json")
    ap.add_argument("--budget-seconds", type=float, default=540.0,
                    help="wall-clock budget from the script's start, packing included (default 540)")
    ap.add_argument("--out", type=Path, help="an empty folder for the packed outputs (e.g. \"$OUT\")")
    ap.add_argument("--root", type=Path, default=ROOT, help="folder holding runs/ and results/ (default: the repository)")
    ap.add_argument("--data", type=Path, help="MNIST training set written by --write-data "
                    "(default: runs/gpu_data/mnist_train.npz when present, else the usual MNIST sources)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--fast-paths", choices=["auto", "on", "off"], default="auto",
                    help="bf16 autocast, channels_last, noise prefetch, skipped host syncs (auto: on with CUDA)")
    ap.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                    help="capture the training step as a CUDA graph (checked against eager; falls back)")
    ap.add_argument("--weights-dtype", choices=["float16", "bfloat16", "float32"], default="float16",
                    help="dtype of the EMA weights in model.pt (default float16)")
    ap.add_argument("--max-files", type=int, default=8, help="files under --out, manifest included (default 8)")
    ap.add_argument("--max-file-mib", type=float, default=16.0, help="size limit of each file in MiB (default 16)")
    ap.add_argument("--reserve-mib", type=float, default=6.0, help="stop starting units when less room is left")
    ap.add_argument("--margin-seconds", type=float, default=15.0, help="kept free at the end for packing")
    ap.add_argument("--stop-after-steps", type=int, help="train at most this many steps per unit and call (testing)")
    ap.add_argument("--deterministic", action="store_true", help="deterministic cudnn kernels (slower)")
    ap.add_argument("--progress", action="store_true", help="tqdm progress bars (off: one line per unit)")
    ap.add_argument("--write-data", type=Path, metavar="FILE",
                    help="only write MNIST's training set to FILE (run it here, before the GPU run)")
    args = ap.parse_args(argv)
    if args.write_data is None and (args.plan is None or args.out is None):
        ap.error("give a plan and --out (or --write-data FILE)")
    if args.data is None and args.write_data is None:
        default = Path(args.root) / "runs" / "gpu_data" / "mnist_train.npz"
        args.data = default if default.is_file() else None
    return args


def main(argv=None, t_start: float | None = None) -> int:
    """Run as a script, the budget counts from the script's start; called from Python, from this call."""
    args = parse_args(argv)
    args.t_start = time.monotonic() if t_start is None else t_start
    try:
        if args.write_data is not None:
            write_data(args.write_data)
            return 0
        return run(args)
    except (DDPMLiteError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main(t_start=T_START))
