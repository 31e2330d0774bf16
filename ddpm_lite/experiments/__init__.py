"""The paper's experiment plan as one resumable command: train, sample and evaluate units.

Plumbing module (hand-written). A plan is a JSON file (see `plans/`) listing units in priority
order; chapters 8 and 9 build the paper's tables from the results files that the units write.

    ddpm-lite experiments plans/cpu.json                  # run (or resume) everything
    ddpm-lite experiments plans/cpu.json --dry-run        # the plan, each unit's state and cost
    ddpm-lite experiments plans/paper.json --only evaluate --budget-minutes 60
    ddpm-lite experiments plans/paper.json --import OUT   # unpack what scripts/gpu_run.py produced

One idea a module:
- plan      the plan file: its schema, load_plan(), ExperimentPlan and Unit
- state     where each unit's files live (Layout), the plan's lock, and each unit's state from its files
- estimate  rough cost of a unit, and the dry run's table
- backend   how units train and sample on a device
- gpu_backend  FastBackend: Backend with the GPU's speed-ups, run by scripts/gpu_run.py (import it
            from ddpm_lite.experiments.gpu_backend; it is not loaded with the package)
- runner    Runner: every unit in priority order, resumable, within a budget
- pack      packing files into a few size-limited parts for the GPU machine, and unpacking them
- command   `ddpm-lite experiments`

Everything is importable from here, e.g. `from ddpm_lite.experiments import load_plan, Runner`.
"""
from ..io import npz_bytes
from ..sampling import balanced_labels
from .backend import Backend, TrainOutcome
from .command import run_experiments
from .estimate import (FID_FIXED_S, RATES, architecture, describe_unit, format_plan_table, format_seconds,
                       forward_gflop, unit_estimate)
from .pack import PACK_FORMAT, MiB, PackFull, Packer, import_pack
from .plan import KINDS, SCALES, TABLES, ExperimentPlan, Unit, load_plan
from .runner import PREVIEW, Runner, loss_curve
from .state import (Layout, UnitState, checkpointed_steps, plan_lock, plan_states, read_result, sample_settings,
                    unit_state, write_status)

Plan = ExperimentPlan     # the class's earlier name, kept so that code written against it still runs

__all__ = ["KINDS", "TABLES", "SCALES", "Unit", "ExperimentPlan", "Plan", "load_plan", "Layout", "balanced_labels",
           "npz_bytes", "Backend", "TrainOutcome", "Runner", "UnitState", "unit_state", "plan_states",
           "write_status", "read_result", "sample_settings", "checkpointed_steps", "format_plan_table",
           "unit_estimate", "forward_gflop", "architecture", "describe_unit", "format_seconds", "RATES",
           "FID_FIXED_S", "loss_curve", "PREVIEW", "Packer", "PackFull", "PACK_FORMAT", "MiB", "import_pack",
           "plan_lock", "run_experiments"]
