"""`ddpm-lite experiments PLAN`: check the plan, then run it, show it (--dry-run) or import into it.

Plumbing module (hand-written).
"""
from __future__ import annotations

import math
import sys

from ..errors import ConfigError
from .backend import Backend
from .estimate import RATES, format_plan_table
from .pack import import_pack
from .plan import KINDS, load_plan
from .runner import Runner
from .state import Layout, plan_lock, write_status

__all__ = ["run_experiments"]


def run_experiments(plan_path, only=None, budget_minutes=None, dry_run=False, device="auto", root=".",
                    import_dir=None, progress=True, log=print) -> int:
    """`ddpm-lite experiments`: returns the exit status (0, or 1 when a unit failed; units left
    pending by a budget are not failures: run the command again to go on)."""
    plan = load_plan(plan_path)
    layout = Layout(root, plan.name)
    only = [only] if isinstance(only, str) else only
    if only:
        bad = [k for k in only if k not in KINDS]
        if bad:
            raise ConfigError(f"--only {bad[0]!r}: use one of {', '.join(KINDS)}.")
    if budget_minutes is not None and not (budget_minutes >= 0 and math.isfinite(budget_minutes)):
        raise ConfigError(f"--budget-minutes must be a number of minutes >= 0, got {budget_minutes}.")
    if import_dir is not None:
        with plan_lock(plan, layout):
            import_pack(import_dir, plan, layout, log=log)
            write_status(plan, layout)
        log(format_plan_table(plan, layout, "cpu", only))
        return 0
    if dry_run:                  # a device type is enough for estimates: plan a GPU run from a CPU
        from ..device import pick_device
        kind = str(device).split(":")[0]
        log(format_plan_table(plan, layout, kind if kind in RATES else pick_device(device).type, only))
        return 0
    backend = Backend(device, progress=progress)
    runner = Runner(plan, layout, backend, only=only,
                    budget_s=None if budget_minutes is None else budget_minutes * 60, log=log)
    log(f"plan {plan.name}: {len(plan.units)} units, scale {plan.scale}, on {backend.device}; "
        f"results in {layout.rel(layout.results)}/")
    st = runner.run()
    wanted = [x for x in st["units"] if not only or x["kind"] in only]
    c = {k: sum(1 for x in wanted if x["state"] == k) for k in ("done", "partial", "pending", "failed")}
    log(f"{c['done']} done, {c['partial']} partial, {c['pending']} pending, {c['failed']} failed "
        f"(status: {layout.rel(layout.status_file)})")
    for x in wanted:
        if x["state"] == "failed":
            print(f"failed: {x['name']}: {x['message']}", file=sys.stderr)
    return 1 if c["failed"] else 0
