"""The shipped models can be trained again from their records: the same config and seed give the
same first losses (results/NAME.json and results/NAME_losses.csv, written by scripts/package_pretrained.py)."""
import csv

import pytest
import torch

from ddpm_lite.book import SHIPPED_MODELS, load_result, pretrained_path, result_bytes
from ddpm_lite.checkpoint import load_model
from ddpm_lite.io import sha256_file
from ddpm_lite.config import Config, get_config
from ddpm_lite.data import load_mnist_float
from ddpm_lite.training import train

pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.py
STEPS = 30


def recorded_losses(name: str) -> list[float]:
    rows = csv.DictReader(result_bytes(f"{name}_losses.csv").decode().splitlines())
    return [float(r["loss"]) for r in rows]


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_a_shipped_model_matches_its_record(name):
    record = load_result(f"{name}.json")
    path = pretrained_path(name)
    assert path is not None, f"ddpm_lite/assets/{name}.pt is missing but results/{name}.json describes it"
    assert sha256_file(path) == record["file_sha256"]
    model, cfg = load_model(name)
    assert cfg.to_dict() == {**Config().to_dict(), **record["training"]["config"]}
    assert path.stat().st_size <= 20e6
    assert len(recorded_losses(name)) == record["training"]["steps"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_retraining_from_the_record_repeats_the_first_losses(name):
    record = load_result(f"{name}.json")
    cfg = get_config(Config(), **record["training"]["config"])
    data = load_mnist_float("train")
    state = train(cfg, None, device="cpu", data=data, progress=False, stop_after=STEPS)
    again = torch.tensor(state.losses)
    shipped = torch.tensor(recorded_losses(name)[:STEPS])
    # thread counts change float sums, not the batches: equal to about 1e-4 after 30 steps
    assert torch.allclose(again, shipped, rtol=2e-3), (again - shipped).abs().max()
    other = train(cfg.replace(seed=cfg.seed + 1), None, device="cpu", data=data, progress=False, stop_after=STEPS)
    assert not torch.allclose(torch.tensor(other.losses), shipped, rtol=2e-3)   # the test can tell seeds apart


def test_pretrained_names_the_best_shipped_model():
    from ddpm_lite.book import shipped_name
    from ddpm_lite.checkpoint import resolve_model_file
    assert shipped_name("pretrained") == "best" and shipped_name("chapter5") == "chapter5"
    assert shipped_name("runs/best") is None
    assert resolve_model_file("pretrained") == resolve_model_file("best") == pretrained_path("best")
    assert pretrained_path() == pretrained_path("best")
    with pytest.raises(ValueError, match="chapter5.*pretrained"):
        pretrained_path("chapter_5")
