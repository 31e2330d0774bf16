"""Ship a trained run as the package's pretrained model, with its record in results/.

    python scripts/package_pretrained.py runs/pretrained

Copies RUN/model.pt (EMA weights + config) to ddpm_lite/assets/pretrained.pt, and writes
results/pretrained.json (how it was trained: config, steps, time, hardware, commit, sha256),
results/pretrained_losses.csv and a class grid results/pretrained_grid.png drawn from it.
"""
import shutil
import sys
from pathlib import Path

from ddpm_lite.book import assets_dir, results_dir
from ddpm_lite.checkpoint import load_model
from ddpm_lite.cli import sample_command
from ddpm_lite.io import read_json, sha256_file, write_json

run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/pretrained")
history = run / "history.txt"                            # optional free-text notes on how the run went
model_file = run / "model.pt"
load_model(model_file)                                   # refuses a damaged or foreign file
target = assets_dir() / "pretrained.pt"
target.parent.mkdir(parents=True, exist_ok=True)
shutil.copyfile(model_file, target)
shutil.copyfile(run / "losses.csv", results_dir() / "pretrained_losses.csv")
grid_npz = sample_command("pretrained", n=100, seed=0, out=results_dir() / "pretrained_grid.npz", progress=False)
grid_json = read_json(grid_npz.with_suffix(".json"))
write_json(results_dir() / "pretrained.json", {
    "what": "the pretrained model shipped in ddpm_lite/assets/pretrained.pt (EMA weights)",
    "file_sha256": sha256_file(target), "size_bytes": target.stat().st_size,
    "training": read_json(run / "train.json"),
    "history": history.read_text().strip().splitlines() if history.is_file() else [],
    "losses_csv": "results/pretrained_losses.csv",
    "grid": {"png": "results/pretrained_grid.png", "w": grid_json["w"], "sampler": grid_json["sampler"],
             "steps": grid_json["steps"], "seed": grid_json["seed"], "seconds": grid_json["seconds"]},
})
grid_npz.unlink()                                        # the PNG and JSON stay; the npz is regenerable
print(f"shipped {target} ({target.stat().st_size / 1e6:.2f} MB); record in results/pretrained.json")
