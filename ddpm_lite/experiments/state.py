"""Where a plan's files live, and each unit's state read from those files alone.

Plumbing module (hand-written). ROOT is `--root` (the repository by default):
- ROOT/runs/experiments/PLAN/train/NAME/   checkpoints, model.pt, losses.csv (bulky, not committed)
- ROOT/runs/experiments/PLAN/samples/NAME.npz   uint8 images [N, 28, 28] and int64 labels [N]
- ROOT/results/experiments/PLAN/NAME.json  one small results file per unit: settings, seed, sha256
  of what it wrote, commit, hardware; `status.json` beside them lists every unit and its state.

A unit is done when its results file exists and the files it describes still have the recorded
sha256; otherwise it is partial (checkpoints or sample batches to resume from) or pending.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import with_defaults
from ..io import sha256_file, write_json
from ..runlock import folder_lock
from .plan import ExperimentPlan, Unit

__all__ = ["Layout", "plan_lock", "checkpointed_steps", "read_result", "UnitState", "sample_settings", "model_record",
           "unit_state", "plan_states", "write_status"]


class Layout:
    """Paths of a plan's outputs under `root`: bulky files in runs/, small results files in results/."""

    def __init__(self, root, plan_name: str):
        self.root = Path(root)
        self.runs = self.root / "runs" / "experiments" / plan_name
        self.results = self.root / "results" / "experiments" / plan_name

    def train_dir(self, name) -> Path:
        return self.runs / "train" / name

    def model_file(self, name) -> Path:
        return self.train_dir(name) / "model.pt"

    def snapshot_file(self, name, step: int) -> Path:
        """The model file a train unit keeps of its weights at an earlier `step` (its `snapshots`)."""
        return self.train_dir(name) / "snapshots" / f"step_{step:08d}.pt"

    def samples_file(self, name) -> Path:
        return self.runs / "samples" / f"{name}.npz"

    def parts_dir(self, name) -> Path:
        return self.runs / "samples" / f"{name}.parts"

    def result_file(self, name) -> Path:
        return self.results / f"{name}.json"

    def preview_file(self, name) -> Path:
        return self.results / f"{name}.preview.npz"

    @property
    def status_file(self) -> Path:
        return self.results / "status.json"

    def rel(self, path) -> str:
        """A path relative to the root, with forward slashes (what results files record)."""
        try:
            return Path(path).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)


def plan_lock(plan: ExperimentPlan, layout: Layout):
    """The lock of a plan's folder (runs/experiments/PLAN), held while units or an import write the
    plan's files; a second writer stops with FolderLocked naming the process that holds it."""
    return folder_lock(layout.runs, f"plan {plan.name!r} folder",
                       f"Wait for that run of the plan to finish, or stop it; `ddpm-lite experiments "
                       f"{plan.path} --dry-run` shows the plan's state meanwhile.")


def checkpointed_steps(run_dir) -> int:
    """The step of a run folder's newest periodic checkpoint (0 when it has none)."""
    from ..checkpoint import checkpoint_step, step_checkpoints
    found = step_checkpoints(run_dir)
    return checkpoint_step(found[-1]) if found else 0


def read_result(layout: Layout, name: str) -> dict | None:
    """A unit's results file, or None when it is missing or unreadable."""
    try:
        d = json.loads(layout.result_file(name).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


class _Sha:
    """sha256 of files, remembered while a file's size and mtime stay the same."""

    def __init__(self):
        self._memo = {}

    def __call__(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._memo:
            self._memo[key] = sha256_file(path)
        return self._memo[key]


_SHA = _Sha()


@dataclass
class UnitState:
    """What a unit's files say about it, with a message for the dry run and status.json."""
    state: str               # "done", "partial", "pending" or "failed"
    message: str = ""


def _train_state(plan: ExperimentPlan, layout: Layout, u: Unit) -> UnitState:
    from ..checkpoint import checkpoint_step, step_checkpoints
    res = read_result(layout, u.name)
    model = layout.model_file(u.name)
    stored = res.get("config") if res else None
    if stored is not None and with_defaults(stored) == u.config.to_dict() and res.get("model_sha256"):
        if model.is_file():
            recorded = res.get("snapshots") or {}
            missing = [k for k in u.spec.get("snapshots", []) if str(k) not in recorded
                       or not layout.snapshot_file(u.name, k).is_file()
                       or _SHA(layout.snapshot_file(u.name, k)) != recorded[str(k)].get("model_sha256")]
            if missing:
                return UnitState("pending", f"the snapshots at steps {missing} are missing or changed; they will be "
                                            "written again from the run's checkpoints")
            if _SHA(model) == res["model_sha256"]:
                return UnitState("done", f"{res.get('steps')} steps")
            return UnitState("pending", "model.pt differs from the one its results describe; it will be rewritten")
        deps = plan.dependents(u.name)
        if deps and all(_sample_state(plan, layout, d).state == "done" for d in deps):
            return UnitState("done", "model file not kept here; every sample set drawn from it is done")
    ckpts = step_checkpoints(layout.train_dir(u.name))
    if ckpts:
        step = checkpoint_step(ckpts[-1])
        return UnitState("partial", f"checkpoint at step {step} of {u.config.iterations}")
    return UnitState("pending")


def sample_settings(u: Unit) -> dict:
    """The settings that decide a sample set's images (a results file with others is out of date)."""
    keys = ("model", "n", "w", "sampler", "steps", "seed", "batch_size")
    keys += ("checkpoint",) if "checkpoint" in u.spec else ()
    return {k: u.spec[k] for k in keys}


def model_record(model_res: dict | None, checkpoint: int | None) -> dict:
    """What a train unit's results file says about the model a sample unit draws from: its final
    model, or the snapshot at `checkpoint` ({"model": path, "model_sha256": ...}; {} when unknown)."""
    if not model_res:
        return {}
    if checkpoint is None:
        return {"model": model_res.get("model"), "model_sha256": model_res.get("model_sha256")}
    return dict((model_res.get("snapshots") or {}).get(str(checkpoint)) or {})


def _sample_state(plan: ExperimentPlan, layout: Layout, u: Unit) -> UnitState:
    res = read_result(layout, u.name)
    model_res = read_result(layout, u.needs)
    npz = layout.samples_file(u.name)
    if res and res.get("settings") == sample_settings(u) and res.get("samples_sha256"):
        drawn_from = model_record(model_res, u.spec.get("checkpoint")).get("model_sha256")
        if not (model_res and res.get("model_sha256") == drawn_from):
            return UnitState("pending", "drawn from an earlier version of its model; it will be redrawn")
        if npz.is_file():
            if _SHA(npz) == res["samples_sha256"]:
                return UnitState("done", f"{u.spec['n']} images")
            return UnitState("pending", f"{layout.rel(npz)} does not match its recorded sha256 (damaged or "
                                        "changed); it will be regenerated")
        evals = plan.dependents(u.name)
        if evals and all(_evaluate_state(plan, layout, e).state == "done" for e in evals):
            return UnitState("done", "sample file not kept here; every evaluation of it is done")
        return UnitState("pending", f"{layout.rel(npz)} is missing; it will be regenerated")
    parts = sorted(layout.parts_dir(u.name).glob("batch_*.npz"))
    if parts:
        total = -(-u.spec["n"] // u.spec["batch_size"])
        return UnitState("partial", f"{len(parts)} of {total} batches drawn")
    return UnitState("pending")


def _evaluate_state(plan: ExperimentPlan, layout: Layout, u: Unit) -> UnitState:
    res = read_result(layout, u.name)
    sres = read_result(layout, u.needs)
    if res and sres and (res.get("input") or {}).get("sha256") == sres.get("samples_sha256") \
            and res.get("fid_computed") == u.spec["fid"]:
        fid = (res.get("fid") or {}).get("value")
        return UnitState("done", f"FID {fid:.2f}" if isinstance(fid, (int, float)) else "IS and accuracy")
    return UnitState("pending")


def unit_state(plan: ExperimentPlan, layout: Layout, u: Unit) -> UnitState:
    return {"train": _train_state, "sample": _sample_state, "evaluate": _evaluate_state}[u.kind](plan, layout, u)


def plan_states(plan: ExperimentPlan, layout: Layout) -> dict:
    return {u.name: unit_state(plan, layout, u) for u in plan.units}


def write_status(plan: ExperimentPlan, layout: Layout, outcomes: dict | None = None) -> dict:
    """Write `status.json`: every unit with its state (done, partial, pending or failed) and a message.

    States come from the files; `outcomes` (this run's results) adds failures and why units waited."""
    states = plan_states(plan, layout)
    units = []
    for u in plan.units:
        st = states[u.name]
        out = (outcomes or {}).get(u.name)
        state, msg = st.state, st.message
        if out is not None and out.state in ("failed", "deferred") and st.state != "done":
            state, msg = ("failed" if out.state == "failed" else st.state), out.message
        units.append({"name": u.name, "kind": u.kind, "tables": list(u.tables), "needs": u.needs,
                      "state": state, "message": msg,
                      "result": layout.rel(layout.result_file(u.name)) if layout.result_file(u.name).is_file() else None})
    counts = {k: sum(1 for x in units if x["state"] == k) for k in ("done", "partial", "pending", "failed")}
    status = {"what": "state of every unit of an experiment plan", "plan": plan.header(), "counts": counts,
              "units": units, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(layout.status_file, status)
    return status
