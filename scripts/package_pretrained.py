"""Ship a trained run as one of the package's models, with its record in results/.

    python scripts/package_pretrained.py runs/chapter5                # ships ddpm_lite/assets/chapter5.pt
    python scripts/package_pretrained.py runs/quick --as quick        # ships ddpm_lite/assets/quick.pt

Copies RUN/model.pt (EMA weights + config) to ddpm_lite/assets/NAME.pt, and writes
results/NAME.json (how it was trained: config, steps, time, hardware, commit, sha256),
results/NAME_losses.csv and a class grid results/NAME_grid.png drawn from it.
"""
import argparse
import shutil
from pathlib import Path

from ddpm_lite.book import SHIPPED_MODELS, assets_dir, results_dir
from ddpm_lite.checkpoint import load_model
from ddpm_lite.cli import sample_command
from ddpm_lite.io import read_json, sha256_file, write_json

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("run", type=Path, nargs="?", default=Path("runs/chapter5"))
ap.add_argument("--as", dest="name", choices=SHIPPED_MODELS, default="chapter5")
args = ap.parse_args()
run, name = args.run, args.name
history = run / "history.txt"                            # optional free-text notes on how the run went
model_file = run / "model.pt"
load_model(model_file)                                   # refuses a damaged or foreign file
target = assets_dir() / f"{name}.pt"
target.parent.mkdir(parents=True, exist_ok=True)
shutil.copyfile(model_file, target)
shutil.copyfile(run / "losses.csv", results_dir() / f"{name}_losses.csv")
grid_npz = sample_command(name, n=100, seed=0, out=results_dir() / f"{name}_grid.npz", progress=False)
grid_json = read_json(grid_npz.with_suffix(".json"))
write_json(results_dir() / f"{name}.json", {
    "what": f"the model shipped in ddpm_lite/assets/{name}.pt (EMA weights)",
    "file_sha256": sha256_file(target), "size_bytes": target.stat().st_size,
    "training": read_json(run / "train.json"),
    "history": history.read_text().strip().splitlines() if history.is_file() else [],
    "losses_csv": f"results/{name}_losses.csv",
    "grid": {"png": f"results/{name}_grid.png", "w": grid_json["w"], "sampler": grid_json["sampler"],
             "steps": grid_json["steps"], "seed": grid_json["seed"], "seconds": grid_json["seconds"]},
})
grid_npz.unlink()                                        # the PNG and JSON stay; the npz is regenerable
print(f"shipped {target} ({target.stat().st_size / 1e6:.2f} MB); record in results/{name}.json")
