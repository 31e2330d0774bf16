"""ddpm_lite.experiments as a subpackage: one idea a module, and every name the one-module version had."""
from pathlib import Path

import ddpm_lite.experiments as xp

# the public names of ddpm_lite/experiments.py before it became a subpackage
EARLIER_NAMES = ["KINDS", "TABLES", "SCALES", "Unit", "Plan", "load_plan", "Layout", "balanced_labels", "npz_bytes",
                 "Backend", "TrainOutcome", "Runner", "UnitState", "unit_state", "plan_states", "write_status",
                 "format_plan_table", "unit_estimate", "forward_gflop", "RATES", "FID_FIXED_S", "loss_curve",
                 "PREVIEW", "Packer", "PackFull", "PACK_FORMAT", "MiB", "import_pack", "plan_lock",
                 "run_experiments"]


def test_every_earlier_name_is_still_importable_from_the_package():
    missing = [n for n in EARLIER_NAMES if not hasattr(xp, n)]
    assert not missing
    assert set(xp.__all__) >= set(EARLIER_NAMES)
    assert xp.Plan is xp.ExperimentPlan and type(xp.load_plan(Path(__file__).parent.parent / "plans" / "mini.json")) \
        is xp.ExperimentPlan


def test_each_module_is_one_idea_under_400_lines():
    folder = Path(xp.__file__).parent
    modules = sorted(p.name for p in folder.glob("*.py"))
    assert modules == ["__init__.py", "backend.py", "command.py", "estimate.py", "gpu_backend.py", "pack.py", "plan.py",
                       "runner.py",
                       "state.py"]
    for p in folder.glob("*.py"):
        text = p.read_text()
        assert len(text.splitlines()) < 400, p.name
        assert "Plumbing module (hand-written)" in text.split('"""')[1], p.name    # says what it is
