"""`ddpm-lite experiments` and scripts/gpu_run.py on the miniature plan (plans/mini.json): run, resume,
skip, repair, pack within limits, import, stop on a budget; and bad plans as one-line errors."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm_lite import experiments as xp
from ddpm_lite.checkpoint import load_checkpoint, step_checkpoints
from ddpm_lite.cli import main
from ddpm_lite.config import get_config
from ddpm_lite.errors import ConfigError, DataError
from ddpm_lite.experiments.gpu_backend import FastBackend
from ddpm_lite.forward import make_schedule
from ddpm_lite.io import sha256_file
from ddpm_lite.sampling import generate
from ddpm_lite.unet import build_model


ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "plans" / "mini.json"
# the script's command line (its backend, FastBackend, is imported from the package above)
_spec = importlib.util.spec_from_file_location("ddpm_lite_gpu_run", ROOT / "scripts" / "gpu_run.py")
gpu_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_run)


def files_under(root: Path) -> dict:
    """{relative path: (mtime_ns, sha256)} of every file except the status summary."""
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, sha256_file(p))
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "status.json"}


def status(root: Path, plan="mini") -> dict:
    st = json.loads((root / "results" / "experiments" / plan / "status.json").read_text())
    return {u["name"]: u["state"] for u in st["units"]}


def cli(*args) -> int:
    return main(["experiments", str(MINI), "--no-progress", *map(str, args)])


def gpu(*args) -> int:
    return gpu_run.main([str(MINI), "--device", "cpu", *map(str, args)])


# --- the plan file ------------------------------------------------------------------------------
def mini_plan():
    return json.loads(MINI.read_text())


def broken(change):
    plan = mini_plan()
    change(plan)
    return plan


BAD_PLANS = {
    "unknown unit kind": lambda p: p["units"][1].update(kind="draw"),
    "needs train unit 'nope'": lambda p: p["units"][1].update(model="nope"),
    "needs sample unit": lambda p: p["units"].insert(1, p["units"].pop(2)),        # evaluate before its samples
    "unknown field 'weight'": lambda p: p["units"][1].update(weight=2),
    "unknown preset": lambda p: p["units"][0].update(preset="fast"),
    "unknown config field 'iters'": lambda p: p["units"][0]["overrides"].update(iters=5),
    "multiple of 10": lambda p: p["units"][1].update(n=25),
    "ancestral sampling takes all T": lambda p: p["units"][3].update(steps=5),
    "used twice": lambda p: p["units"][2].update(name="tiny"),
    "'scale'": lambda p: p.pop("scale"),
    "scale_note": lambda p: p.pop("scale_note"),
    "unknown table": lambda p: p["units"][0].update(tables=[5]),
    "checkpoint = 10 is not among the 'snapshots'": lambda p: p["units"][1].update(checkpoint=10),
    "snapshot step 30 must be below iterations": lambda p: p["units"][0].update(snapshots=[10, 30]),
    "'snapshots' must be a list": lambda p: p["units"][0].update(snapshots=10),
}


@pytest.mark.parametrize("expected", list(BAD_PLANS))
def test_bad_plan_is_a_config_error_naming_the_problem(tmp_path, expected):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(broken(BAD_PLANS[expected])))
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        xp.load_plan(path)


def test_bad_plan_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(broken(BAD_PLANS["unknown unit kind"])))
    (tmp_path / "torn.json").write_text('{"units": [')
    for plan, message in ((path, "unknown unit kind 'draw'"), (tmp_path / "torn.json", "not valid JSON"),
                          (tmp_path / "absent.json", "no plan file")):
        r = subprocess.run([sys.executable, "-m", "ddpm_lite", "experiments", str(plan), "--root", str(tmp_path)],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("error:") and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert "Traceback" not in r.stderr


def test_shipped_plans_load_and_feed_every_table():
    for name in ("paper", "cpu", "mini"):
        plan = xp.load_plan(ROOT / "plans" / f"{name}.json")
        assert plan.name == name and (plan.scale == "paper") == (name == "paper")
        assert plan.scale == "paper" or len(plan.scale_note) > 40
    paper = xp.load_plan(ROOT / "plans" / "paper.json")
    evaluated = {u.name: u for u in paper.units if u.kind == "evaluate"}
    by_table = {t: [paper.unit(u.needs) for u in evaluated.values() if t in u.tables] for t in xp.TABLES}
    # Table 1: five sample sets (seeds 0-4) of one linear T = 1000 model at w = 0.2
    assert sorted(s.spec["seed"] for s in by_table["1"]) == [0, 1, 2, 3, 4]
    assert {(s.spec["model"], s.spec["w"], s.spec["n"]) for s in by_table["1"]} == {("linear_T1000", 0.2, 10000)}
    # Table 2: linear and cosine at T = 1000 and 4000, ancestral with all T steps
    assert sorted((s.config.schedule, s.config.T, s.spec["steps"]) for s in by_table["2"]) == \
        [("cosine", 1000, 1000), ("cosine", 4000, 4000), ("linear", 1000, 1000), ("linear", 4000, 4000)]
    assert {0.0, 0.2, 0.5} <= {s.spec["w"] for s in by_table["3"]} and len(by_table["3"]) >= 8
    assert sorted((s.spec["sampler"], s.spec["steps"]) for s in by_table["best"]) == \
        [("ancestral", 1000), ("ddim", 20), ("ddim", 50)]
    assert all(u.config.iterations == 100_000 and u.config.batch_size == 32 and u.config.loss == "l1"
               for u in paper.units if u.kind == "train" and u.spec["preset"] == "paper")
    assert paper.units[0].name == "linear_T1000"          # the model that Tables 1 and 3 share comes first


def test_committed_results_belong_to_units_of_their_plan():
    """A unit dropped from a plan takes its files with it: the tables read every file of the folder."""
    for folder in sorted((ROOT / "results" / "experiments").glob("*")):
        if not (ROOT / "plans" / f"{folder.name}.json").is_file():
            continue
        names = {u.name for u in xp.load_plan(ROOT / "plans" / f"{folder.name}.json").units}
        stale = [p.name for p in folder.iterdir() if p.name != "status.json"
                 and p.name.removesuffix(".preview.npz").removesuffix(".json") not in names]
        assert not stale, f"results/experiments/{folder.name}/ holds files of no unit of its plan: {stale}"


def test_cpu_plan_keeps_the_papers_recipe_and_sampler_and_measures_both_spreads():
    cpu = xp.load_plan(ROOT / "plans" / "cpu.json")
    trains = [u for u in cpu.units if u.kind == "train"]
    for u in trains:                                    # only width and length shrink
        c = u.config
        assert (c.model, c.loss, c.batch_size, c.optimizer, c.ema_decay, c.p_uncond) == \
            ("paper", "l1", 32, "adam", 0.0, 0.1)
        assert u.spec["snapshots"]
    samples = [u for u in cpu.units if u.kind == "sample"]
    evaluated = {u.needs for u in cpu.units if u.kind == "evaluate"}
    assert {u.name for u in samples} == evaluated       # every set is scored
    table_sets = [u for u in samples if u.spec["sampler"] != "dpm++"]
    assert all(u.spec["sampler"] == "ancestral" and u.spec["steps"] == u.config.T for u in table_sets)
    # plateau evidence: a set at every snapshot and at the end, and a second seed of the final model
    for t in trains:
        checks = [u for u in samples if u.spec["model"] == t.name and u.spec["sampler"] == "dpm++"]
        assert sorted(u.spec.get("checkpoint", t.config.iterations) for u in checks if u.spec["seed"] == 0) == \
            t.spec["snapshots"] + [t.config.iterations]
        assert any(u.spec["seed"] == 1 and "checkpoint" not in u.spec for u in checks)
    # Table 1: five sets of one model, and three trainings of its cell
    t1 = [u for u in table_sets if "1" in u.tables and u.spec["model"] == "linear_T1000"]
    assert sorted(u.spec["seed"] for u in t1) == [0, 1, 2, 3, 4] and {u.spec["w"] for u in t1} == {0.2}
    cell = [t for t in trains if (t.config.schedule, t.config.T) == ("linear", 1000)]
    assert sorted(t.config.seed for t in cell) == [0, 1, 2]
    assert all(any(u.spec["model"] == t.name and u.spec["w"] == 0.2 for u in table_sets) for t in cell)
    # Tables 2 and 3
    t2 = {(u.config.schedule, u.config.T) for u in table_sets if "2" in u.tables}
    assert t2 == {("linear", 1000), ("linear", 4000), ("cosine", 1000), ("cosine", 4000)}
    assert {u.spec["w"] for u in table_sets if "3" in u.tables} == {0.0, 0.2, 0.5}
    # one sitting per model: a model's units follow its train unit before the next model's start
    owner = {}
    for u in cpu.units:
        owner[u.name] = u.name if u.kind == "train" else owner[u.needs]
    order = [owner[u.name] for u in cpu.units]
    assert order == sorted(order, key=[t.name for t in trains].index)


def test_fashion_plan_trains_both_recipes_on_fashion_and_scores_each_at_the_protocols_n():
    plan = xp.load_plan(ROOT / "plans" / "fashion.json")
    trains = {u.name: u for u in plan.units if u.kind == "train"}
    assert {u.config.dataset for u in trains.values()} == {"fashion"}
    assert trains["fashion_ours"].config == get_config("quick", dataset="fashion")      # chapter 12's recipe as shipped
    paper = trains["fashion_paper"].config
    assert (paper.model, paper.loss, paper.batch_size, paper.optimizer, paper.ema_decay) == ("paper", "l1", 32, "adam", 0.0)
    samples = [u for u in plan.units if u.kind == "sample"]
    assert {u.name for u in samples} == {u.needs for u in plan.units if u.kind == "evaluate"}
    for name in trains:                    # each recipe: a guidance sweep at n = 1,000 and a set at n = 10,000
        mine = [u for u in samples if u.spec["model"] == name and "checkpoint" not in u.spec]
        assert 10_000 in {u.spec["n"] for u in mine}
        assert {0.0, 0.5, 2.0} <= {u.spec["w"] for u in mine if u.spec["n"] == 1000}
    owner = {}
    for u in plan.units:                   # model by model, as in plans/cpu.json
        owner[u.name] = u.name if u.kind == "train" else owner[u.needs]
    assert [owner[u.name] for u in plan.units] == sorted((owner[u.name] for u in plan.units), key=list(trains).index)


def test_loss_curve_averages_windows_and_keeps_the_last_step():
    c = xp.loss_curve([1.0, 3.0, 5.0, 7.0, 9.0], points=2)
    assert c == {"every": 3, "step": [3, 5], "loss": [3.0, 8.0]}
    assert xp.loss_curve([2.0] * 7, points=100) == {"every": 1, "step": list(range(1, 8)), "loss": [2.0] * 7}
    assert len(xp.loss_curve(list(range(100_000)))["loss"]) == 100


# --- the CPU runner ----------------------------------------------------------------------------
def test_run_resume_skip_and_repair(tmp_path, one_thread):
    root = tmp_path / "xp"
    assert cli("--root", root, "--budget-minutes", 0) == 0          # no time: nothing starts
    assert set(status(root).values()) == {"pending"} and not (root / "runs").exists()

    assert cli("--root", root, "--only", "train") == 0              # stop after the first unit...
    assert status(root)["tiny"] == "done" and status(root)["tiny_w0_ddim5"] == "pending"
    trained = files_under(root)
    record = root / "results/experiments/mini/tiny.json"
    before = json.loads(record.read_text())
    assert cli("--root", root) == 0                                 # ...then the rest: training is not redone
    after = files_under(root)
    model_record = "results/experiments/mini/tiny.json"             # gains the scores of the sets drawn from it
    assert {k: after[k] for k in trained if k != model_record} == {k: v for k, v in trained.items() if k != model_record}
    now = json.loads(record.read_text())
    assert {k: v for k, v in now.items() if k != "evaluations"} == before and len(now["evaluations"]) == 2
    assert set(status(root).values()) == {"done"}
    results = json.loads((root / "results/experiments/mini/tiny_w2_ancestral.json").read_text())
    assert results["plan"]["scale"] == "cpu-scale" and results["seed"] == 0 and "commit" in results["provenance"]
    with np.load(root / results["samples"]) as z:
        assert z["images"].dtype == np.uint8 and z["images"].shape == (20, 28, 28)
        assert z["labels"].dtype == np.int64 and np.bincount(z["labels"]).tolist() == [2] * 10
        images = z["images"]
    with np.load(root / results["preview"]["file"]) as z:       # the figures' copy: the set's first images
        assert np.array_equal(z["images"], images[:xp.PREVIEW]) and sha256_file(root / results["preview"]["file"]) \
            == results["preview"]["sha256"]
    trained_result = json.loads((root / "results/experiments/mini/tiny.json").read_text())
    curve = trained_result["loss_curve"]
    losses = [float(line.split(",")[1]) for line in
              (root / "runs/experiments/mini/train/tiny/losses.csv").read_text().splitlines()[1:]]
    assert curve["step"][-1] == len(losses) == 30
    assert curve["loss"][0] == pytest.approx(np.mean(losses[:curve["every"]]), abs=1e-5)

    assert cli("--root", root) == 0                                 # all done: nothing is touched
    assert files_under(root) == after

    npz = root / results["samples"]                                 # a damaged sample set is found and redrawn
    npz.write_bytes(npz.read_bytes()[:100])
    plan = xp.load_plan(MINI)
    state = xp.unit_state(plan, xp.Layout(root, "mini"), plan.unit("tiny_w2_ancestral"))
    assert state.state == "pending" and "does not match" in state.message
    assert cli("--root", root) == 0
    repaired = files_under(root)
    assert sha256_file(npz) == results["samples_sha256"]            # the same seeds give the same bytes
    unchanged = [k for k in after if "tiny_w2_ancestral" not in k]
    assert {k: repaired[k] for k in unchanged} == {k: after[k] for k in unchanged}
    assert repaired["results/experiments/mini/eval_tiny_w2_ancestral.json"] == \
        after["results/experiments/mini/eval_tiny_w2_ancestral.json"]   # same images: evaluation stands


def snapshot_plan(tmp_path) -> Path:
    """The mini plan with snapshots at steps 10 and 20 and one set drawn from the step-10 model."""
    plan = mini_plan()
    plan["units"][0]["snapshots"] = [20, 10]
    early = {**plan["units"][1], "name": "tiny_step10", "checkpoint": 10}
    plan["units"][3:3] = [early, {"kind": "evaluate", "name": "eval_tiny_step10", "samples": "tiny_step10",
                                  "tables": [3]}]
    path = tmp_path / "mini.json"
    path.write_text(json.dumps(plan))
    return path


def test_snapshots_keep_the_weights_of_earlier_steps_and_sets_draw_from_them(tmp_path, one_thread):
    path, root = snapshot_plan(tmp_path), tmp_path / "xp"
    assert main(["experiments", str(path), "--no-progress", "--root", str(root)]) == 0
    assert set(status(root).values()) == {"done"}
    layout = xp.Layout(root, "mini")
    trained = json.loads(layout.result_file("tiny").read_text())
    assert sorted(trained["snapshots"], key=int) == ["10", "20"]
    for step, rec in trained["snapshots"].items():
        assert sha256_file(root / rec["model"]) == rec["model_sha256"]
        assert load_checkpoint(root / rec["model"])["step"] == int(step)
    # the snapshot is the model a run stopped at that step would have: train another to step 10 and compare
    plan = xp.load_plan(path)
    from ddpm_lite.training import train
    other = train(plan.unit("tiny").config, tmp_path / "other", progress=False, stop_after=10)
    snap = load_checkpoint(layout.snapshot_file("tiny", 10))["ema"]
    assert all(torch.equal(snap[k], v) for k, v in other.ema.model.state_dict().items())
    early = json.loads(layout.result_file("tiny_step10").read_text())
    final = json.loads(layout.result_file("tiny_w0_ddim5").read_text())
    assert early["model_sha256"] == trained["snapshots"]["10"]["model_sha256"] != final["model_sha256"]
    assert early["samples_sha256"] != final["samples_sha256"]     # same seed, other weights: other images
    row = json.loads(layout.result_file("eval_tiny_step10").read_text())["row"]
    assert (row["checkpoint"], row["train_seed"]) == (10, 0)
    assert json.loads(layout.result_file("eval_tiny_w0_ddim5").read_text())["row"]["checkpoint"] == 30
    # the model's own results file gathers the scores of every set drawn from it, snapshots included
    evals = {e["samples"]: e for e in trained["evaluations"]}
    assert set(evals) == {"tiny_w0_ddim5", "tiny_step10", "tiny_w2_ancestral"}
    assert (evals["tiny_step10"]["checkpoint"], evals["tiny_w0_ddim5"]["checkpoint"]) == (10, 30)
    assert evals["tiny_step10"]["conditional_accuracy"] == \
        json.loads(layout.result_file("eval_tiny_step10").read_text())["conditional_accuracy"]["overall"]
    # a run whose snapshot files were lost but whose checkpoint at that step remains writes them again
    layout.snapshot_file("tiny", 20).unlink()
    state = xp.unit_state(plan, layout, plan.unit("tiny_step10"))
    assert state.state == "done"
    assert main(["experiments", str(path), "--no-progress", "--root", str(root)]) == 0
    assert sha256_file(layout.snapshot_file("tiny", 20)) == trained["snapshots"]["20"]["model_sha256"]


def test_dry_run_lists_states_and_costs(tmp_path, capsys):
    assert cli("--root", tmp_path, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "cpu-scale" in out and out.count("pending") >= 5 and "estimated time left" in out
    assert not (tmp_path / "results").exists()


def test_batches_equal_generate(one_thread):
    """The runner draws a set batch by batch (resumable); the result is generate()'s, bit for bit,
    also with the GPU script's noise drawn ahead in a thread."""
    cfg = get_config("quick", channels=(8, 8, 8), time_dim=16, T=12, sample_steps=4)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    sched = make_schedule(cfg.schedule, cfg.T)
    labels = xp.balanced_labels(30)
    fast = FastBackend("cpu", None, fast_paths=True, cuda_graphs=False, weights_dtype="float16")
    for sampler, w in (("ancestral", 1.5), ("ddim", 0.0)):
        ref = generate(model, sched, labels, w, sampler, 4, seed=3, batch_size=20, progress=False)
        for backend in (xp.Backend("cpu", progress=False), fast):
            got = torch.cat([backend.sample_batch(model, sched, y, w, sampler, 4, 3, b)
                             for b, y in enumerate(labels.split(20))])
            assert torch.equal(got, ref), (sampler, type(backend).__name__)


# --- the GPU script, on the CPU -------------------------------------------------------------------
def test_gpu_run_then_import_then_evaluate(tmp_path, one_thread):
    out, local = tmp_path / "out", tmp_path / "here"
    # small parts (40 KiB) so that files span parts; 8 files in all
    assert gpu("--budget-seconds", 120, "--out", out, "--root", tmp_path / "gpu", "--max-file-mib", 0.04) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["state"] == "finished" and man["done_train_and_sample"] == "3 of 3" and not man["left_out"]
    written = list(out.iterdir())
    assert len(written) <= 8 and all(p.stat().st_size <= 0.04 * 2**20 for p in written if p.suffix == ".bin")
    assert any(len(f["segments"]) > 1 for f in man["files"])
    assert {"hardware", "torch", "commit", "source_sha256", "units"} <= set(man)

    assert cli("--root", local, "--import", out) == 0
    assert status(local) == {"tiny": "done", "tiny_w0_ddim5": "done", "eval_tiny_w0_ddim5": "pending",
                             "tiny_w2_ancestral": "done", "eval_tiny_w2_ancestral": "pending"}
    model = load_checkpoint(local / "runs/experiments/mini/train/tiny/model.pt")
    assert all(v.dtype == torch.float16 for v in model["ema"].values() if v.is_floating_point())
    before = files_under(local)
    assert cli("--root", local, "--only", "evaluate") == 0
    assert set(status(local).values()) == {"done"}
    # evaluating changed none of the imports (the model's record only gains the scores of its sets)
    changed = {k for k in before if files_under(local)[k] != before[k]}
    assert changed == {"results/experiments/mini/tiny.json"}
    assert len(json.loads((local / "results/experiments/mini/tiny.json").read_text())["evaluations"]) == 2

    (out / "part_1.bin").write_bytes(b"\0" * (out / "part_1.bin").stat().st_size)   # a damaged part is refused
    with pytest.raises(DataError, match="does not match its sha256"):
        xp.import_pack(out, xp.load_plan(MINI), xp.Layout(tmp_path / "elsewhere", "mini"), log=lambda *a: None)


def test_gpu_run_partial_training_resumes_exactly(tmp_path, one_thread):
    """Training cut short on the 'GPU' is packed with its full state; a second call that starts from
    the imported checkpoint ends with the same model as one uninterrupted call."""
    first, here = tmp_path / "first", tmp_path / "here"
    assert gpu("--budget-seconds", 120, "--out", first, "--root", tmp_path / "gpu1", "--stop-after-steps", 12,
               "--fast-paths", "on") == 0
    man = json.loads((first / "manifest.json").read_text())
    assert man["plan_states"]["tiny"]["state"] == "partial"
    assert [f["path"] for f in man["files"] if "checkpoints" in f["path"]] == \
        ["runs/experiments/mini/train/tiny/checkpoints/step_00000024.pt"]
    assert cli("--root", here, "--import", first) == 0
    assert status(here)["tiny"] == "partial"
    ckpt = load_checkpoint(step_checkpoints(here / "runs/experiments/mini/train/tiny")[-1])
    assert not any(g.get("capturable") for g in ckpt["optimizer"]["param_groups"])

    assert gpu("--budget-seconds", 120, "--out", tmp_path / "second", "--root", here, "--fast-paths", "on") == 0
    assert gpu("--budget-seconds", 120, "--out", tmp_path / "once", "--root", tmp_path / "once_root",
               "--fast-paths", "on") == 0
    resumed = load_checkpoint(here / "runs/experiments/mini/train/tiny/model.pt")
    once = load_checkpoint(tmp_path / "once_root/runs/experiments/mini/train/tiny/model.pt")
    assert resumed["step"] == once["step"] == 30
    assert all(torch.equal(resumed["ema"][k], once["ema"][k]) for k in once["ema"])
    assert (here / "runs/experiments/mini/train/tiny/losses.csv").read_text() == \
        (tmp_path / "once_root/runs/experiments/mini/train/tiny/losses.csv").read_text()


def test_gpu_run_budget_zero_writes_only_a_manifest(tmp_path):
    out = tmp_path / "out"
    assert gpu("--budget-seconds", 0, "--out", out, "--root", tmp_path / "gpu") == 0
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
    man = json.loads((out / "manifest.json").read_text())
    assert man["state"] == "nothing run" and "budget" in man["stopped"] and man["files"] == []
    assert not (tmp_path / "gpu").exists()


def test_packer_respects_file_count_and_size(tmp_path):
    packer = xp.Packer(tmp_path / "out", max_files=3, max_bytes=1000, meta={"plan": "mini"})
    blobs = {"runs/experiments/mini/a.bin": os.urandom(1500), "results/experiments/mini/b.json": b"{}" * 200}
    for rel, data in blobs.items():
        packer.add(rel, data)
    with pytest.raises(xp.PackFull):
        packer.add("runs/experiments/mini/c.bin", b"x" * 200)       # 2 parts x 1000 bytes: 100 left
    sizes = sorted(p.stat().st_size for p in (tmp_path / "out").glob("part_*.bin"))
    assert sizes == [900, 1000] and len(list((tmp_path / "out").iterdir())) == 3
    layout = xp.Layout(tmp_path / "root", "mini")
    xp.import_pack(tmp_path / "out", xp.load_plan(MINI), layout, log=lambda *a: None)
    assert all((layout.root / rel).read_bytes() == data for rel, data in blobs.items())
    evil = xp.Packer(tmp_path / "evil")
    evil.add("runs/experiments/mini/../../../escape.txt", b"x")
    evil.write_manifest(plan="mini")
    with pytest.raises(DataError, match="refused"):
        xp.import_pack(tmp_path / "evil", xp.load_plan(MINI), layout, log=lambda *a: None)


def test_gpu_script_imports_nothing_the_gpu_machine_lacks():
    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('g', {str(ROOT / 'scripts' / 'gpu_run.py')!r}); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "print(sorted({n.split('.')[0] for n in sys.modules} & {'pytorch_fid', 'scipy', 'matplotlib'}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
