"""ddpm_lite.protocol: protocol-scale sample sets (resumable, byte-equal to `ddpm-lite sample`) and their records."""
import json

import numpy as np
import pytest

from ddpm_lite import protocol
from ddpm_lite.book import pretrained_path
from ddpm_lite.cli import main as cli
from ddpm_lite.errors import ConfigError, DataError

needs_model = pytest.mark.skipif(pretrained_path() is None, reason="no pretrained model shipped in this install")
pytestmark = pytest.mark.usefixtures("one_thread")


def test_settings_are_parsed_with_clear_errors():
    assert protocol.parse_setting("dpm++:20") == ("dpm++", 20)
    assert protocol.parse_setting("ancestral") == ("ancestral", 0)
    for bad, msg in [("euler:10", "unknown sampler"), ("ddim", "step count"), ("ddim:0", "at least 1")]:
        with pytest.raises(ConfigError, match=msg):
            protocol.parse_setting(bad)


def test_set_names_follow_the_cli():
    assert protocol.set_name("dpm++", 20, 2.0, 10_000, 0) == "dpm++20_w2_n10000_seed0"
    assert protocol.set_name("ddim", 50, 0.5, 100, 1, clip_x0=False) == "ddim50_w0.5_noclip_n100_seed1"
    assert protocol.set_name("ancestral", 1000, 2.0, 10, 0, clip_x0=False) == "ancestral1000_w2_n10_seed0"


@needs_model
def test_a_set_is_the_cli_set_and_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(protocol, "BATCH_SIZE", 10)
    rec_file = protocol.draw_set("pretrained", "dpm++", 3, None, 30, 0, root=tmp_path, progress=False)
    rec = json.loads(rec_file.read_text())
    npz = tmp_path / rec["samples"]
    first = npz.read_bytes()
    assert rec["n"] == 30 and rec["nfe"] == 3 and rec["w"] == 2.0 and rec["clip_x0"] is True
    with np.load(npz) as z:
        assert z["labels"].tolist() == [d for _ in range(3) for d in range(10)]
    # the command it records draws the same bytes
    cmd = rec["regenerate"].split()[1:] + ["--out", str(tmp_path / "cli.npz"), "--no-progress"]
    assert cmd[:2] == ["sample", "best"]                    # 'pretrained' is recorded as the model it names
    assert cli(cmd) == 0
    assert (tmp_path / "cli.npz").read_bytes() == first
    # cut short: one batch lost; drawing again redraws only that batch and gives the same file
    parts = npz.with_suffix(".parts")
    (parts / "batch_00001.npz").unlink()
    npz.unlink()
    protocol.draw_set("pretrained", "dpm++", 3, None, 30, 0, root=tmp_path, progress=False)
    assert npz.read_bytes() == first
    assert [r["nfe"] for r in protocol.protocol_rows("best", tmp_path)] == [3]
    summary = json.loads((tmp_path / "results" / "protocol" / "summary.json").read_text())
    assert [(r["sampler"], r["nfe"], r["fid"]) for r in summary["rows"]] == [("dpm++", 3, None)]


@needs_model
def test_evaluating_a_missing_or_changed_set_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(protocol, "BATCH_SIZE", 10)
    rec_file = protocol.draw_set("chapter5", "ddim", 2, None, 10, 0, root=tmp_path, progress=False)
    npz = tmp_path / json.loads(rec_file.read_text())["samples"]
    npz.write_bytes(npz.read_bytes()[:-1] + b"x")
    with pytest.raises(DataError, match="does not match the sha256"):
        protocol.evaluate_set(rec_file, tmp_path)
    npz.unlink()
    with pytest.raises(DataError, match="regenerate it with `ddpm-lite sample chapter5"):
        protocol.evaluate_set(rec_file, tmp_path)


def test_a_run_folder_model_records_how_to_train_it_again(tmp_path, monkeypatch):
    from ddpm_lite.cli import train_command
    monkeypatch.setattr(protocol, "BATCH_SIZE", 10)
    monkeypatch.chdir(tmp_path)
    tiny = {"channels": "[8,8,8]", "time_dim": "16", "batch_size": "8", "iterations": "6", "T": "50", "sample_steps": "5"}
    run = tmp_path / "runs" / "tiny"
    train_command("paper", run, tiny, device="cpu", progress=False)
    rec = json.loads(protocol.draw_set(str(run), "ddim", 2, None, 10, 0, root=tmp_path, progress=False).read_text())
    assert rec["model"] == str(run) and rec["training"]["steps"] == 6
    assert rec["retrain"].startswith(f"ddpm-lite train --preset paper --run-dir {run} ")
    assert "'channels=[8,8,8]'" in rec["retrain"] and " iterations=6" in rec["retrain"]
    assert (tmp_path / "results" / "protocol" / "tiny" / f"{protocol.set_name('ddim', 2, 0.2, 10, 0)}.json").is_file()
    row = next(r for r in json.loads((tmp_path / "results" / "protocol" / "summary.json").read_text())["rows"])
    assert row["model"] == "tiny" and row["training"]["steps"] == 6 and row["training"]["retrain"] == rec["retrain"]
    # the recorded command trains the same weights again
    import shlex
    args = shlex.split(rec["retrain"])[1:]
    again = tmp_path / "again"
    args[args.index("--run-dir") + 1] = str(again)
    assert cli(args + ["--no-progress", "--device", "cpu"]) == 0
    assert (again / "model.pt").read_bytes() == (run / "model.pt").read_bytes()
    # a shipped model's record has no training block: results/NAME.json holds it
    if pretrained_path() is not None:
        assert protocol.training_record(pretrained_path()) == {}
