"""The book's headline evaluation: 10,000 generated images per setting, scored against the MNIST test set.

Plumbing module (hand-written). Chapter 7 defines the protocol; chapter 9 reads what this writes.

    python -m ddpm_lite.protocol sample --model best --settings dpm++:10 dpm++:20 ddim:50
    python -m ddpm_lite.protocol evaluate --model best                  # every drawn set not yet scored
    python -m ddpm_lite.protocol status

A set is n images (default 10,000, 1,000 per digit, cycling 0..9) drawn batch by batch with
`ddpm_lite.sampling.sample_batch`, so it is the set that `ddpm-lite sample MODEL --n 10000 --sampler S
--steps K --w W --seed 0 --batch-size 500` draws, byte for byte. Each batch is kept as it is drawn
(runs/protocol/MODEL/NAME.parts/), so an interrupted set resumes where it stopped. The finished set
(`.npz`, uint8) stays in the ignored runs/ folder; results/protocol/MODEL/NAME.json gets its sha256,
settings, wall time, hardware and the command that regenerates it, and, once `evaluate` has run,
its FID, Inception Score and conditional accuracy (`ddpm_lite.evaluation.score`).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError
from .io import atomic_write_bytes, npz_bytes, open_parts_folder, provenance, read_json, sha256_file, write_json

__all__ = ["N_PROTOCOL", "DEFAULT_SETTINGS", "parse_setting", "set_name", "draw_set", "training_record", "evaluate_set",
           "protocol_rows", "summary_row", "write_summary", "main"]

N_PROTOCOL = 10_000
DEFAULT_SETTINGS = ("dpm++:10", "dpm++:20", "ddim:20", "ddim:50")
BATCH_SIZE = 500


def parse_setting(text: str) -> tuple[str, int]:
    """'dpm++:20' -> ('dpm++', 20); 'ancestral' -> ('ancestral', 0) (all T steps)."""
    from .sampling import SAMPLERS
    sampler, _, steps = text.partition(":")
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r} in {text!r}; use one of {', '.join(SAMPLERS)}, "
                          "e.g. dpm++:20 or ancestral.")
    if sampler == "ancestral":
        return sampler, 0
    try:
        k = int(steps)
    except ValueError:
        raise ConfigError(f"{text!r} needs a step count, e.g. {sampler}:20.") from None
    if k < 1:
        raise ConfigError(f"{text!r}: the step count must be at least 1.")
    return sampler, k


def set_name(sampler: str, steps: int, w: float, n: int, seed: int, clip_x0: bool | None = None) -> str:
    """The file stem of a set, as `ddpm-lite sample` names it: e.g. dpm++20_w2_n10000_seed0."""
    from .sampling import CLIP_X0_DEFAULT
    clip = "" if clip_x0 is None or clip_x0 == CLIP_X0_DEFAULT[sampler] else ("_clip" if clip_x0 else "_noclip")
    return f"{sampler}{steps}_w{w:g}{clip}_n{n}_seed{seed}"


def _dirs(root: Path, model: str) -> tuple[Path, Path]:
    from .book import shipped_name
    tag = shipped_name(model) or Path(model).name          # 'pretrained' is filed under 'best'
    return root / "runs" / "protocol" / tag, root / "results" / "protocol" / tag


def draw_set(model: str = "best", sampler: str = "dpm++", steps: int = 20, w: float | None = None,
             n: int = N_PROTOCOL, seed: int = 0, clip_x0: bool | None = None, root=".", device="cpu",
             progress: bool = True) -> Path:
    """Draw (or finish drawing) one set; returns the results file. Resumes from the batches already kept."""
    import torch
    from tqdm.auto import tqdm

    from .checkpoint import load_model, resolve_model_file
    from .data import to_uint8
    from .device import pick_device
    from .forward import make_schedule
    from .sampling import CLIP_X0_DEFAULT, balanced_labels, sample_batch
    from .book import shipped_name
    root = Path(root)
    dev = pick_device(device)
    model = shipped_name(model) or model               # an alias is recorded as the model it names
    path = resolve_model_file(model)
    net, cfg = load_model(path, dev)
    w = cfg.w if w is None else float(w)
    steps = cfg.T if sampler == "ancestral" else steps
    clip = CLIP_X0_DEFAULT[sampler] if clip_x0 is None else bool(clip_x0)
    name = set_name(sampler, steps, w, n, seed, clip)
    runs, results = _dirs(root, model)
    parts = runs / f"{name}.parts"
    settings = {"model_sha256": sha256_file(path), "sampler": sampler, "steps": steps, "w": w, "n": n,
                "seed": seed, "clip_x0": clip, "batch_size": BATCH_SIZE}
    open_parts_folder(parts, settings)             # batches of other settings or another model: start over
    sched = make_schedule(cfg.schedule, cfg.T)
    chunks = balanced_labels(n).split(BATCH_SIZE)
    bar = tqdm(total=len(chunks), desc=name, unit="batch", disable=not progress)
    for b, y in enumerate(chunks):
        part = parts / f"batch_{b:05d}.npz"
        if part.is_file():
            bar.update(1)
            continue
        t0 = time.monotonic()
        x = sample_batch(net, sched, y, w, sampler, steps, seed, b, clip_x0=clip)
        seconds = time.monotonic() - t0
        atomic_write_bytes(part, npz_bytes(compress=False, images=to_uint8(x)[:, 0].numpy(),
                                           labels=y.numpy().astype(np.int64), seconds=np.float64(seconds)))
        bar.update(1)
    bar.close()
    arrays = [np.load(parts / f"batch_{b:05d}.npz", allow_pickle=False) for b in range(len(chunks))]
    images = np.concatenate([a["images"] for a in arrays])
    labels = np.concatenate([a["labels"] for a in arrays])
    seconds = float(sum(a["seconds"].sum() for a in arrays))
    npz = atomic_write_bytes(runs / f"{name}.npz", npz_bytes(images=images, labels=labels))
    steps_arg = "" if sampler == "ancestral" else f" --steps {steps}"
    clip_arg = "" if clip == CLIP_X0_DEFAULT[sampler] else (" --clip-x0" if clip else " --no-clip-x0")
    record = {
        "what": f"a protocol-scale sample set (n = {n}) and, once evaluated, its scores",
        "model": model, "model_file": path.name, "model_sha256": settings["model_sha256"],
        "model_config": cfg.to_dict(), "sampler": sampler, "steps": steps, "nfe": steps,
        "nfe_note": "model evaluations per image; with w > 0 each is one batched pass over the conditional "
                    "and the unconditional input",
        "w": w, "clip_x0": clip, "n": n, "seed": seed, "batch_size": BATCH_SIZE,
        "labels": "balanced: n/10 of each digit, cycling 0..9 (ddpm_lite.sampling.balanced_labels)",
        "seeding": "batch b draws its noise from torch.Generator().manual_seed(seed * 100003 + b)",
        "samples": str(npz.relative_to(root)) if npz.is_relative_to(root) else str(npz),
        "samples_sha256": sha256_file(npz),
        "sample_seconds": round(seconds, 1), "sample_minutes": round(seconds / 60, 2),
        "sample_seconds_note": "sum of the batches' wall times, on the machine below",
        "regenerate": f"ddpm-lite sample {model} --n {n} --sampler {sampler}{steps_arg} --w {w:g} --seed {seed} "
                      f"--batch-size {BATCH_SIZE}{clip_arg} --device cpu",
        "provenance": provenance(str(dev), torch_threads=torch.get_num_threads()),
    }
    record.update(training_record(path))
    old = results / f"{name}.json"
    if old.is_file():
        prev = read_json(old)
        if prev.get("samples_sha256") == record["samples_sha256"] and "evaluation" in prev:
            record["evaluation"] = prev["evaluation"]          # the same images: the scores still hold
    write_json(npz.with_suffix(".json"), {k: v for k, v in record.items() if k != "evaluation"})
    out = write_json(old, record)
    write_summary(root)
    return out


def training_record(model_file: Path) -> dict:
    """How a model that is not shipped was trained, for its protocol record: the run folder's train.json
    and the command that trains it again ({} for a shipped model, whose record is results/NAME.json)."""
    train_json = Path(model_file).parent / "train.json"
    if not train_json.is_file() or Path(model_file).parent.name == "assets":
        return {}
    t = read_json(train_json)
    items = (f"{k}={str(v).replace(' ', '')}" for k, v in t.get("overrides", {}).items())
    args = "".join(f" '{a}'" if any(c in a for c in "[]()*?") else f" {a}" for a in items)   # quote shell globs
    return {"training": t,
            "retrain": f"ddpm-lite train --preset {t['preset']} --run-dir {Path(model_file).parent}{args}"}


def evaluate_set(result_file, root=".", device="cpu", progress: bool = True) -> dict:
    """Score the set that a results file describes (FID vs the test set, IS, accuracy) and record it there."""
    import torch

    from .evaluation import evaluate_file
    root = Path(root)
    rec = read_json(result_file)
    npz = root / rec["samples"]
    if not npz.is_file():
        raise DataError(f"the sample set {npz} is not here; regenerate it with `{rec['regenerate']}` "
                        f"--out {npz}, or with `python -m ddpm_lite.protocol sample`.")
    if sha256_file(npz) != rec["samples_sha256"]:
        raise DataError(f"{npz} does not match the sha256 in {result_file}; draw the set again.")
    t0 = time.monotonic()
    ev = evaluate_file(npz, device, progress)
    rec["evaluation"] = {"fid": ev["fid"], "inception_score": ev["inception_score"],
                         "conditional_accuracy": ev["conditional_accuracy"], "n": ev["n"],
                         "seconds": round(time.monotonic() - t0, 1),
                         "provenance": provenance(str(device), torch_threads=torch.get_num_threads())}
    write_json(result_file, rec)
    write_summary(root)
    return rec


def protocol_rows(model: str = "best", root=".") -> list[dict]:
    """Every results file of a model, evaluated or not, sorted by sampler and NFE."""
    _, results = _dirs(Path(root), model)
    order = {"ancestral": 0, "ddim": 1, "dpm++": 2}
    rows = [read_json(p) for p in sorted(results.glob("*.json"))]
    return sorted(rows, key=lambda r: (order.get(r["sampler"], 9), r["nfe"], r["w"], r.get("clip_x0", True)))


SUMMARY = "summary.json"


def summary_row(rec: dict) -> dict:
    """One small row of the summary: settings, cost and (once evaluated) scores of a set."""
    e, t = rec.get("evaluation") or {}, rec.get("training")
    trained = None if not t else {"preset": t["preset"], "steps": t["steps"], "batch_size": t["config"]["batch_size"],
                                  "channels": t["config"]["channels"], "minutes": round(t["seconds_this_call"] / 60, 1),
                                  "retrain": rec["retrain"]}
    return {"model": Path(rec["model"]).name, "sampler": rec["sampler"], "nfe": rec["nfe"], "w": rec["w"],
            "clip_x0": rec["clip_x0"], "n": rec["n"], "seed": rec["seed"],
            "sample_minutes": rec["sample_minutes"], "hardware": rec["provenance"].get("hardware"),
            "samples_sha256": rec["samples_sha256"], "regenerate": rec["regenerate"],
            "fid": (e.get("fid") or {}).get("value"), "fid_backend": (e.get("fid") or {}).get("backend"),
            "inception_score": (e.get("inception_score") or {}).get("mean"),
            "inception_score_std": (e.get("inception_score") or {}).get("std"),
            "conditional_accuracy": (e.get("conditional_accuracy") or {}).get("overall"),
            "evaluation_minutes": round(e["seconds"] / 60, 2) if e.get("seconds") is not None else None,
            "training": trained}        # a run folder's model: how it was trained (a shipped one: results/NAME.json)


def write_summary(root=".") -> Path:
    """results/protocol/summary.json: every set of every model, one row each (what chapter 9 reads)."""
    results = Path(root) / "results" / "protocol"
    rows = []
    for folder in sorted(p for p in results.glob("*") if p.is_dir()):
        rows += [summary_row(r) for r in protocol_rows(folder.name, root)]
    return write_json(results / SUMMARY, {
        "what": "protocol-scale sample sets (n images from seeded noise, balanced labels) and their FID against "
                "the 10,000 MNIST test images, Inception Score and conditional accuracy",
        "written_by": "python -m ddpm_lite.protocol", "rows": rows})


def main(argv=None) -> int:
    from .errors import DDPMLiteError
    ap = argparse.ArgumentParser(prog="python -m ddpm_lite.protocol", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["sample", "evaluate", "status"])
    ap.add_argument("--model", default="best", help="a shipped model ('best', 'quick', 'chapter5'), a run folder "
                    "or a checkpoint")
    ap.add_argument("--settings", nargs="*", default=list(DEFAULT_SETTINGS),
                    help="sampler:steps, e.g. dpm++:20 ddim:50 ancestral (default: %(default)s)")
    ap.add_argument("--w", type=float, help="guidance weight (default: the model's own)")
    ap.add_argument("--n", type=int, default=N_PROTOCOL)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clip-x0", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        if args.action == "sample":
            for text in args.settings:
                sampler, steps = parse_setting(text)
                out = draw_set(args.model, sampler, steps, args.w, args.n, args.seed, args.clip_x0, args.root,
                               args.device, not args.no_progress)
                rec = read_json(out)
                print(f"{out}: {rec['n']} images in {rec['sample_minutes']:.1f} min")
        elif args.action == "evaluate":
            for rec in protocol_rows(args.model, args.root):
                if "evaluation" in rec:
                    continue
                _, results = _dirs(args.root, args.model)
                f = results / f"{Path(rec['samples']).stem}.json"
                rec = evaluate_set(f, args.root, args.device, not args.no_progress)
                e = rec["evaluation"]
                print(f"{f.name}: FID {e['fid']['value']:.2f}, IS {e['inception_score']['mean']:.2f}, "
                      f"accuracy {e['conditional_accuracy']['overall']:.4f}")
        else:
            for rec in protocol_rows(args.model, args.root):
                e = rec.get("evaluation")
                fid = f"FID {e['fid']['value']:.2f}" if e else "not evaluated"
                print(f"{rec['sampler']:>9} NFE {rec['nfe']:>4}  w={rec['w']:g}  n={rec['n']}  {fid}")
    except DDPMLiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
