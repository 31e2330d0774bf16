"""The `ddpm-lite` command: train, sample, evaluate, experiments, demo.

Plumbing module (hand-written). Every problem a user can fix is printed as one line
starting with `error:` (exit status 2), never as a traceback.

    ddpm-lite train --preset quick --name mymodel iterations=2000 lr=1e-3
    ddpm-lite sample runs/mymodel --n 100 --w 2 --sampler ddim --steps 50
    ddpm-lite evaluate runs/mymodel/samples/<file>.npz
    ddpm-lite experiments plans/cpu.json --dry-run
    ddpm-lite demo
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .book import SHIPPED_MODELS

__all__ = ["main", "train_command", "sample_command"]

DEFAULT_RUNS = Path("runs")
GRID_PER_LABEL = 20          # the .png grid beside a sample file shows at most this many images of each label


def _add_device(p):
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")


def build_parser() -> argparse.ArgumentParser:
    from .config import PRESETS
    ap = argparse.ArgumentParser(prog="ddpm-lite", description="A conditional DDPM on MNIST, from the ddpm_lite book.")
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (resumes from the run folder's last checkpoint)")
    t.add_argument("--preset", default="quick", choices=list(PRESETS))
    t.add_argument("--name", help="run name: files go to runs/NAME (default: the preset's name)")
    t.add_argument("--run-dir", type=Path, help="run folder (overrides --name)")
    t.add_argument("--no-progress", action="store_true")
    _add_device(t)
    t.add_argument("overrides", nargs="*", metavar="field=value", help="override any config field")

    s = sub.add_parser("sample", help="draw a grid (PNG) and a sample file (.npz) from a trained model")
    s.add_argument("model", help="a run folder, a checkpoint file, or a model shipped with the package: "
                   "'best' or 'pretrained' (chapter 12's recipe, 2 hours of CPU training), 'quick' (15 minutes) "
                   "or 'chapter5' (chapter 5's recipe, the model chapters 6, 7 and 10 sample)")
    s.add_argument("--n", type=int, default=100, help="number of images, spread evenly over the labels (default 100)")
    s.add_argument("--labels", default="0-9", help="labels to draw, e.g. 0-9 (default), 3, or 1,7")
    s.add_argument("--w", type=float, help="guidance weight (default: the model's config)")
    s.add_argument("--sampler", choices=["ancestral", "ddim", "dpm++"],
                   help="ancestral (Algorithm 2, all T steps), ddim or dpm++ (DPM-Solver++(2M)); default: the model's config")
    s.add_argument("--steps", type=int, help="DDIM / DPM-Solver++ steps = model evaluations per image (default: the model's config)")
    s.add_argument("--clip-x0", action=argparse.BooleanOptionalAction, default=None,
                   help="clip the predicted x_0 to [-1, 1] at every step (default: on for ddim and dpm++, off for ancestral)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=500)
    s.add_argument("--out", type=Path, help="output .npz path (a .png grid is written beside it)")
    s.add_argument("--null-at-sampling", choices=["learned", "omitted"],
                   help="'omitted' reproduces a slip of the paper's code (chapter 10); default: learned")
    s.add_argument("--no-progress", action="store_true")
    _add_device(s)

    e = sub.add_parser("evaluate", help="FID, Inception Score and conditional accuracy of a sample file")
    e.add_argument("path", help="a .npz written by `ddpm-lite sample`, or a run folder (its newest sample file)")
    e.add_argument("--out", type=Path, help="results JSON (default: beside the sample file)")
    e.add_argument("--dataset", choices=["mnist", "fashion"],
                   help="the data set to score against (default: the one the sample file's .json records, else mnist)")
    _add_device(e)

    d = sub.add_parser("demo", help="train the quick preset on this machine and draw a guided class grid")
    d.add_argument("--run-dir", type=Path, default=DEFAULT_RUNS / "demo")
    _add_device(d)

    x = sub.add_parser("experiments", help="run an experiment plan (plans/*.json): train, sample, evaluate; resumable")
    x.add_argument("plan", type=Path, help="a plan file, e.g. plans/cpu.json")
    x.add_argument("--only", choices=["train", "sample", "evaluate"], help="run only the units of this kind")
    x.add_argument("--budget-minutes", type=float, help="stop starting work that cannot finish in this time")
    x.add_argument("--dry-run", action="store_true", help="print every unit with its state and estimated cost")
    x.add_argument("--root", type=Path, default=Path("."), help="folder holding runs/ and results/ (default: .)")
    x.add_argument("--import", dest="import_dir", type=Path, metavar="DIR",
                   help="unpack a folder written by scripts/gpu_run.py, then show the plan's state")
    x.add_argument("--no-progress", action="store_true")
    _add_device(x)
    return ap


def train_command(preset: str, run_dir: Path, overrides: dict, device="auto", progress=True) -> Path:
    """Train (or resume) a run; write model.pt, losses.csv and train.json into run_dir."""
    from .checkpoint import save_model_file
    from .config import get_config
    from .distributed import barrier, init_from_env, shutdown
    from .io import atomic_write_bytes, provenance, write_json
    from .runlock import run_folder_lock
    from .training import train
    cfg = get_config(preset, **overrides)            # validated before any work starts
    ctx = init_from_env(device, cfg.batch_size)      # one process, or this rank's share of a torchrun job
    dev = ctx.device
    # one writer per run folder: a second command into it stops here, naming the process that writes it
    with run_folder_lock(run_dir, ctx, "Wait for that run to finish (or stop it), or train into another "
                         "folder with --name NAME or --run-dir DIR."):
        if ctx.is_main:
            print(f"training preset '{preset}' on {dev} into {run_dir}"
                  + (f" ({ctx.world_size} processes)" if ctx.enabled else ""))
        t0 = time.time()
        try:
            state = train(cfg, run_dir, device=dev, progress=progress)
        except KeyboardInterrupt as e:
            if ctx.is_main:
                print(f"\ninterrupted: {e or 'stopped'}. Run the same command again to resume.", file=sys.stderr)
            raise SystemExit(130)
        seconds = time.time() - t0
        model_path = run_dir / "model.pt"
        if ctx.is_main:                                  # every rank holds the same weights; rank 0 writes them
            save_model_file(model_path, cfg, state.ema.model.state_dict(), state.step)
            csv = "step,loss\n" + "".join(f"{i + 1},{v:.6f}\n" for i, v in enumerate(state.losses))
            atomic_write_bytes(run_dir / "losses.csv", csv.encode())
            write_json(run_dir / "train.json", {
                "preset": preset, "overrides": {k: str(v) for k, v in overrides.items()}, "config": cfg.to_dict(),
                "steps": state.step,
                "final_loss_mean_last_100": sum(state.losses[-100:]) / max(1, len(state.losses[-100:])),
                "seconds_this_call": round(seconds, 1), "provenance": provenance(str(dev)),
                **({"processes": ctx.world_size} if ctx.enabled else {})})
            print(f"model: {model_path}")
        barrier(ctx)                                     # the other ranks leave only once the run is written
    shutdown(ctx)
    return model_path


def parse_labels(spec: str) -> list[int]:
    from .errors import ConfigError
    out = []
    try:
        for part in spec.split(","):
            if "-" in part:
                a, b = part.split("-")
                out += list(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise ConfigError(f"cannot read labels {spec!r}: write digits like 0-9, 3 or 1,7.") from None
    if not out or any(not 0 <= v <= 9 for v in out):
        raise ConfigError(f"labels {spec!r} must be digits between 0 and 9.")
    return out


def sample_command(model: str, n=100, labels="0-9", w=None, sampler=None, steps=None, seed=0,
                   batch_size=500, out=None, device="auto", progress=True, null_at_sampling=None,
                   clip_x0=None) -> Path:
    """Draw n images (labels cycling through the digits asked for), write .npz + .png grid + .json; return the .npz path.

    The images are those of `ddpm_lite.sampling.generate` with `balanced_labels`, the same as a plan's
    sample unit with the same model, n, seed and settings draws; the .npz bytes depend on the images alone."""
    import numpy as np
    from .checkpoint import load_model, resolve_model_file
    from .data import to_uint8
    from .device import pick_device
    from .errors import ConfigError
    from .forward import make_schedule
    from .io import atomic_write_bytes, npz_bytes, provenance, sha256_file, write_json
    from .plotting import save_grid
    from .sampling import CLIP_X0_DEFAULT, balanced_labels, generate
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}.")
    if seed < 0:
        raise ConfigError(f"--seed must be 0 or more, got {seed}.")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}.")
    if w is not None and not w >= 0:
        raise ConfigError(f"config field 'w' = {w} is invalid: guidance weight must be 0 or more.")
    if steps is not None and steps < 1:
        raise ConfigError(f"config field 'sample_steps' = {steps} is invalid: DDIM needs at least 1 step.")
    digits = parse_labels(labels)
    dev = pick_device(device)
    path = resolve_model_file(model)
    net, cfg = load_model(path, dev)
    overrides = {k: v for k, v in dict(w=w, sampler=sampler, sample_steps=steps,
                                        null_at_sampling=null_at_sampling).items() if v is not None}
    cfg = cfg.replace(**overrides)                   # validates w, 1 <= steps <= T, sampler name
    from .errata import sampling_model
    net = sampling_model(net, cfg)                   # the model itself unless a chapter-10 slip is asked for
    y = balanced_labels(n, digits)                   # cycling: 0, 1, ..., 9, 0, 1, ...
    sched = make_schedule(cfg.schedule, cfg.T)
    steps_used = cfg.T if cfg.sampler == "ancestral" else cfg.sample_steps
    t0 = time.time()
    clip = CLIP_X0_DEFAULT[cfg.sampler] if clip_x0 is None else bool(clip_x0)
    x = generate(net, sched, y, cfg.w, cfg.sampler, cfg.sample_steps, seed, batch_size, progress, clip_x0=clip)
    seconds = time.time() - t0
    images = to_uint8(x)[:, 0].numpy()
    if out is None:
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        if str(model) in SHIPPED_MODELS:
            run_dir = DEFAULT_RUNS / str(model)
        noclip = "" if clip == CLIP_X0_DEFAULT[cfg.sampler] else ("_clip" if clip else "_noclip")
        out = run_dir / "samples" / f"{cfg.sampler}{steps_used}_w{cfg.w:g}{noclip}_n{n}_seed{seed}.npz"
    out = Path(out).with_suffix(".npz")
    atomic_write_bytes(out, npz_bytes(images=images, labels=y.numpy().astype(np.int64)))
    show = np.concatenate([np.flatnonzero(y.numpy() == d)[:GRID_PER_LABEL] for d in sorted(set(digits))])
    grid = save_grid(images[np.sort(show)], y.numpy()[np.sort(show)], out.with_suffix(".png"))
    write_json(out.with_suffix(".json"), {
        "model": str(path), "model_sha256": sha256_file(path), "n": n, "labels": labels, "w": cfg.w,
        "sampler": cfg.sampler, "steps": steps_used, "clip_x0": clip, "seed": seed, "batch_size": batch_size,
        "nfe": steps_used, "label_order": "cycling through the labels asked for (ddpm_lite.sampling.balanced_labels)",
        "seconds": round(seconds, 2), "images_per_second": round(n / seconds, 2), "config": cfg.to_dict(),
        "samples_sha256": sha256_file(out), "provenance": provenance(str(dev))})
    print(f"samples: {out}\ngrid: {grid}")
    return out


def experiments_command(args) -> int:
    """`ddpm-lite experiments PLAN ...` (ddpm_lite.experiments does the work)."""
    from .experiments import run_experiments
    return run_experiments(args.plan, args.only, args.budget_minutes, args.dry_run, args.device, args.root,
                           args.import_dir, not args.no_progress)


def _compare_with_shipped(out: Path, run_dir: Path, device) -> None:
    """The demo's grid beside the shipped `best` model's (else `chapter5`), same sampler, w and seed."""
    import numpy as np
    from .book import pretrained_path
    from .io import read_json
    from .plotting import save_side_by_side
    name = next((m for m in ("best", "chapter5") if pretrained_path(m) is not None), None)
    if name is None:
        return
    mine = read_json(out.with_suffix(".json"))
    theirs = sample_command(name, n=100, w=mine["w"], sampler=mine["sampler"], steps=mine["steps"],
                            seed=mine["seed"], out=run_dir / "samples" / "shipped_grid.npz", device=device)
    grids = []
    for f in (out, theirs):
        with np.load(f.with_suffix(".npz")) as z:
            grids.append((z["images"], z["labels"]))
    png = save_side_by_side(grids, run_dir / "compare_with_shipped.png")
    print(f"Your model (left) beside the shipped {name} model (right), same sampler and seed: {png.resolve()}")


def main(argv=None) -> int:
    from .errors import DDPMLiteError
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            from .config import parse_overrides
            overrides = parse_overrides(args.overrides)
            run_dir = args.run_dir or DEFAULT_RUNS / (args.name or args.preset)
            train_command(args.preset, Path(run_dir), overrides, args.device, not args.no_progress)
        elif args.command == "sample":
            sample_command(args.model, args.n, args.labels, args.w, args.sampler, args.steps, args.seed,
                           args.batch_size, args.out, args.device, not args.no_progress, args.null_at_sampling,
                           args.clip_x0)
        elif args.command == "evaluate":
            from .evaluation import evaluate_path, format_summary
            result = evaluate_path(args.path, args.out, device=args.device, dataset=args.dataset)
            print(format_summary(result))
        elif args.command == "experiments":
            return experiments_command(args)
        elif args.command == "demo":
            train_command("quick", args.run_dir, {}, args.device)
            out = sample_command(str(args.run_dir), n=100, device=args.device)
            print(f"\nDone. Open the class grid (one row per digit 0-9): {out.with_suffix('.png').resolve()}")
            _compare_with_shipped(out, args.run_dir, args.device)
    except (DDPMLiteError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
