"""Chapter 8's tables (ddpm_lite.tables): the paper's numbers, row selection, Tables 1-3, the noise rule,
and the committed experiment results that chapters 8 and 9 read."""
import json
import math

import numpy as np
import pytest

from ddpm_lite import book, tables
from ddpm_lite.errors import DDPMLiteError


def row(**kw):
    base = {"model": "linear_T1000", "preset": "paper", "schedule": "linear", "T": 1000, "w": 0.2, "seed": 0,
            "sampler": "ancestral", "steps": 1000, "n": 250, "fid": 50.0, "is": 8.0, "accuracy": 0.9, "samples": "s",
            "checkpoint": 10000, "train_seed": 0}
    return {**base, **kw}


def test_the_papers_numbers_agree_with_each_other():
    # the best model of Table 2, Table 3's w = 0.2 row, Table 1's first set and Table 4's entry are one number
    t2 = {(r["schedule"], r["T"]): r for r in tables.PAPER_TABLE2}
    t3 = {r["w"]: r for r in tables.PAPER_TABLE3}
    assert t2[("linear", 1000)]["fid"] == t3[0.2]["fid"] == tables.PAPER_TABLE1_FID[0] \
        == dict(tables.PAPER_TABLE4)["Guided Diffusion (the paper)"]
    assert t2[("linear", 1000)]["is"] == t3[0.2]["is"]
    mean, std = tables.mean_std(tables.PAPER_TABLE1_FID)
    assert (round(mean, 2), round(std, 2)) == (16.04, 0.11)          # the paper's "16.04 +/- 0.11"
    assert [fid for _, fid in tables.PAPER_TABLE4] == sorted(fid for _, fid in tables.PAPER_TABLE4)


def test_select_matches_every_keyword_and_tolerates_float_noise():
    rows = [row(w=0.2), row(w=0.1 + 0.1 + 1e-12), row(w=0.5), row(model="best", w=0.2), row(fid=None, w=2.0)]
    assert len(tables.select(rows, w=0.2)) == 3
    assert len(tables.select(rows, w=0.2, model="linear_T1000")) == 2
    assert tables.select(rows, w=3.0) == []
    assert tables.select(rows, fid=None) == []                         # a missing value never matches


def test_table1_uses_the_sample_std_over_seeds_of_one_model_and_w():
    rows = [row(seed=s, fid=f) for s, f in enumerate([10.0, 12.0, 14.0])] + [row(seed=0, w=0.5, fid=99.0)]
    rows.append(row(seed=0, sampler="dpm++", steps=10, n=500, fid=77.0))     # a plateau check is not a Table 1 set
    t = tables.table1(rows)
    assert [r["seed"] for r in t["sets"]] == [0, 1, 2]
    assert t["mean"] == 12.0 and t["std"] == pytest.approx(2.0)
    single = tables.table1([row()])
    assert single["mean"] == 50.0 and math.isnan(single["std"])


def test_training_spread_takes_one_set_per_training_seed_of_one_cell():
    rows = [row(model=f"m{k}", train_seed=k, fid=f) for k, f in enumerate([20.0, 26.0, 23.0])]
    rows += [row(model="m0", train_seed=0, seed=1, fid=90.0),                  # another sample set: not counted
             row(model="c", schedule="cosine", train_seed=5, fid=1.0),         # another cell
             row(model="m1", train_seed=1, sampler="dpm++", steps=10, fid=2.0)]
    t = tables.training_spread(rows)
    assert [r["train_seed"] for r in t["sets"]] == [0, 1, 2]
    assert t["mean"] == pytest.approx(23.0) and t["std"] == pytest.approx(3.0)
    assert math.isnan(tables.training_spread(rows, schedule="cosine")["std"])  # one training: no spread


def test_table2_pairs_each_paper_row_with_ours_or_none():
    rows = [row(schedule="cosine", T=4000, fid=30.0), row(), row(preset="best", schedule="cosine", T=1000),
            row(schedule="linear", T=4000, train_seed=1), row(schedule="linear", T=4000, sampler="ddim", steps=50)]
    t = {(r["schedule"], r["T"]): r for r in tables.table2(rows)}
    assert set(t) == {("linear", 1000), ("linear", 4000), ("cosine", 1000), ("cosine", 4000)}
    assert t[("cosine", 4000)]["ours"]["fid"] == 30.0 and t[("cosine", 4000)]["paper"]["fid"] == 21.70
    assert t[("cosine", 1000)]["ours"] is None                        # only the paper recipe's rows count
    assert t[("linear", 4000)]["ours"] is None                        # nor other training seeds or samplers


def test_plateau_reads_snapshots_in_order_and_applies_the_noise_rule():
    snaps = [row(sampler="dpm++", steps=10, n=500, checkpoint=c, fid=f)
             for c, f in ((6000, 40.0), (2000, 90.0), (10000, 38.0), (8000, 39.0))]
    again = row(sampler="dpm++", steps=10, n=500, checkpoint=10000, seed=1, fid=38.0 + math.sqrt(2))
    p = tables.plateau(snaps + [again, row()], "linear_T1000")
    assert p["steps"] == [2000, 6000, 8000, 10000] and p["fid"] == [90.0, 40.0, 39.0, 38.0]
    assert p["noise"] == pytest.approx(1.0) and p["change"] == pytest.approx(-1.0)
    assert p["verdict"] == "levelled off"
    falling = [dict(r, fid=r["fid"] - 10.0) if r["checkpoint"] == 10000 else r for r in snaps]
    assert tables.plateau(falling + [dict(again, fid=28.0 + math.sqrt(2))], "linear_T1000")["verdict"] == \
        "still improving"
    assert tables.plateau(snaps, "linear_T1000")["verdict"] == "not measured"     # no second seed: no spread
    assert tables.plateau([], "linear_T1000")["steps"] == []


def test_direction_agrees_disagrees_or_cannot_tell():
    assert tables.direction(10.0, 20.0, 16.0, 21.0, 1.0) == "agrees"             # both: a lower than b
    assert tables.direction(20.0, 10.0, 16.0, 21.0, 1.0) == "disagrees"
    assert tables.direction(10.0, 11.0, 16.0, 21.0, 1.0) == "cannot be told apart"
    assert tables.direction(10.0, 20.0, 16.0, 21.0, float("nan")) == "not measured"


def test_row_direction_reads_fid_as_lower_is_better_and_is_as_higher_is_better():
    ours_a, ours_b = {"fid": 10.0, "is": 9.0}, {"fid": 20.0, "is": 5.0}
    paper_a, paper_b = {"fid": 16.0, "is": 9.5}, {"fid": 21.0, "is": 9.1}
    assert tables.row_direction(ours_a, ours_b, paper_a, paper_b, 1.0) == "agrees"
    assert tables.row_direction(ours_b, ours_a, paper_a, paper_b, 1.0) == "disagrees"
    # IS: ours a is higher (better), and so is the paper's a
    assert tables.row_direction(ours_a, ours_b, paper_a, paper_b, 0.1, key="is") == "agrees"
    assert tables.row_direction(ours_a, ours_b, paper_b, paper_a, 0.1, key="is") == "disagrees"
    assert tables.row_direction(ours_a, {"is": 8.95}, paper_a, paper_b, 0.1, key="is") == "cannot be told apart"


def test_real_rows_reads_the_fashion_reference_when_asked(tmp_path, monkeypatch):
    import json
    ref = {"fid_n_vs_test": [{"n": 1000, "fid": 30.0}], "inception_score_test_by_n": [{"n": 1000, "mean": 8.0}],
           "classifier_accuracy_test": 0.91}
    (tmp_path / "reference_fashion.json").write_text(json.dumps(ref))
    monkeypatch.setattr(tables, "load_result", lambda name: json.loads((tmp_path / name).read_text()))
    assert tables.real_rows(1000, dataset="fashion") == {"n": 1000, "fid": 30.0, "is": 8.0, "accuracy": 0.91}
    with pytest.raises(DDPMLiteError, match="reference_fashion.json has no real-data row for n = 250"):
        tables.real_rows(250, dataset="fashion")


def test_compare_calls_differences_within_two_spreads_noise():
    assert tables.compare(10.0, 12.0, 1.0) == "indistinguishable"
    assert tables.compare(10.0, 12.5, 1.0) == "better"
    assert tables.compare(12.5, 10.0, 1.0) == "worse"
    assert tables.compare(9.5, 9.0, 0.1, lower_is_better=False) == "better"     # IS: higher is better
    assert tables.compare(None, 9.0, 0.1) == "not measured"
    assert tables.compare(1.0, 9.0, float("nan")) == "not measured"


def test_guidance_sweep_is_sorted_by_w():
    rows = [row(w=w) for w in (2.0, 0.0, 0.5, 0.2)] + [row(w=1.0, seed=1), row(w=3.0, sampler="dpm++", steps=10)]
    assert [r["w"] for r in tables.guidance_sweep(rows)] == [0.0, 0.2, 0.5, 2.0]


def test_markdown_table_and_fmt():
    assert tables.markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"
    assert tables.fmt(None) == tables.fmt(float("nan")) == "–" and tables.fmt(1.23456, 3) == "1.235"


def test_real_rows_read_the_reference_file_and_explain_a_missing_n():
    r = tables.real_rows(1000)
    ref = book.load_result("reference.json")
    assert r["fid"] == next(x["fid"] for x in ref["fid_n_vs_test"] if x["n"] == 1000)
    with pytest.raises(DDPMLiteError, match="no real-data row for n = 123.*--dataset mnist --add-n 123"):
        tables.real_rows(123)


def test_pick_plan_falls_back_and_explains_when_nothing_ran(monkeypatch, tmp_path):
    monkeypatch.setattr(book, "results_dir", lambda: tmp_path)
    monkeypatch.setattr(book, "_raw_url", lambda name: (tmp_path / "absent" / name).as_uri())    # offline
    with pytest.raises(DDPMLiteError, match="no experiment plan.*ddpm-lite experiments plans/cpu.json"):
        tables.pick_plan()
    folder = tmp_path / "experiments" / "cpu"
    folder.mkdir(parents=True)
    units = [{"name": "m", "kind": "train", "state": "done"}, {"name": "e", "kind": "evaluate", "state": "pending"}]
    (folder / "status.json").write_text(json.dumps({"units": units}))
    with pytest.raises(DDPMLiteError):                               # nothing evaluated yet
        tables.pick_plan()
    units[1]["state"] = "done"
    (folder / "status.json").write_text(json.dumps({"units": units}))
    (folder / "m.json").write_text(json.dumps({"unit": {"kind": "train"}}))
    (folder / "e.json").write_text(json.dumps({"unit": {"kind": "evaluate"}}))
    assert tables.pick_plan() == "cpu"
    assert set(tables.plan_results("cpu")) == {"m", "e"}


# --- the committed results that chapters 8 and 9 read -------------------------------------------
def committed_plans():
    root = book.results_dir() / "experiments"
    return sorted(p.name for p in root.iterdir() if (p / "status.json").is_file()) if root.is_dir() else []


@pytest.mark.parametrize("plan", committed_plans())
def test_committed_plan_results_are_complete_and_consistent(plan):
    status = book.load_result(f"experiments/{plan}/status.json")
    results = tables.plan_results(plan)
    done = [u for u in status["units"] if u["state"] == "done"]
    assert len(results) == len(done) == status["counts"]["done"]
    for name, r in results.items():
        assert r["unit"]["name"] == name and r["plan"]["scale"] == status["plan"]["scale"]
        assert "commit" in r["provenance"] and "hardware" in r["provenance"]
        if r["unit"]["kind"] == "sample":            # the preview kept for figures is the one recorded
            images, labels = tables.preview(plan, name)
            assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)
            assert np.bincount(labels, minlength=10).tolist() == [len(labels) // 10] * 10
            path = book.results_dir() / "experiments" / plan / f"{name}.preview.npz"
            from ddpm_lite.io import sha256_file
            assert sha256_file(path) == r["preview"]["sha256"]
        if r["unit"]["kind"] == "train":
            assert len(r["loss_curve"]["loss"]) <= 100 and r["loss_curve"]["step"][-1] == r["steps"]
    rows = tables.evaluation_rows(results)
    for n in {r["n"] for r in rows}:
        tables.real_rows(n)                          # every sample size has its real-data row
