"""The paper's experiment plan as one resumable command: train, sample and evaluate units.

Plumbing module (hand-written). A plan is a JSON file (see `plans/`) listing units in priority
order; chapters 8 and 9 build the paper's tables from the results files that the units write.

    ddpm-lite experiments plans/cpu.json                  # run (or resume) everything
    ddpm-lite experiments plans/cpu.json --dry-run        # the plan, each unit's state and cost
    ddpm-lite experiments plans/paper.json --only evaluate --budget-minutes 60
    ddpm-lite experiments plans/paper.json --import OUT   # unpack what scripts/gpu_run.py produced

Plan file:

    {"name": "paper", "scale": "paper" | "cpu-scale", "scale_note": "what was shrunk (cpu-scale)",
     "description": "...", "defaults": {"sample": {...}, "evaluate": {...}},
     "units": [
       {"kind": "train", "name": "linear_T1000", "preset": "paper", "overrides": {"T": 1000}, "tables": [2, 3]},
       {"kind": "sample", "name": "linear_T1000_w0.2_s0", "model": "linear_T1000", "n": 10000, "w": 0.2,
        "sampler": "ancestral", "steps": 1000, "seed": 0, "batch_size": 5000, "tables": [1, 2, 3]},
       {"kind": "evaluate", "name": "eval_linear_T1000_w0.2_s0", "samples": "linear_T1000_w0.2_s0",
        "fid": true, "tables": [1, 2, 3]}]}

A sample unit needs its train unit, an evaluate unit its sample unit, and each must come earlier
in the list. `tables` says which of the paper's tables a unit feeds: 1, 2, 3 or "best".

Where things go (ROOT is `--root`, the repository by default):
- ROOT/runs/experiments/PLAN/train/NAME/   checkpoints, model.pt, losses.csv (bulky, not committed)
- ROOT/runs/experiments/PLAN/samples/NAME.npz   uint8 images [N, 28, 28] and int64 labels [N]
- ROOT/results/experiments/PLAN/NAME.json  one small results file per unit: settings, seed, sha256
  of what it wrote, commit, hardware; `status.json` beside them lists every unit and its state.

A unit is done when its results file exists and the files it describes still have the recorded
sha256; anything else is run again, resuming where possible: training from its checkpoints, a
sample set from the batches already drawn (kept until the set is complete).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError, DDPMLiteError, DataError
from .io import atomic_write_bytes, npz_bytes, provenance, sha256_file, write_json
from .sampling import balanced_labels
from .runlock import folder_lock

__all__ = ["KINDS", "TABLES", "Unit", "Plan", "load_plan", "Layout", "balanced_labels", "npz_bytes",
           "Backend", "TrainOutcome", "Runner", "plan_states", "write_status", "format_plan_table",
           "unit_estimate", "loss_curve", "PREVIEW", "Packer", "PackFull",
           "import_pack", "plan_lock", "run_experiments"]

KINDS = ("train", "sample", "evaluate")
TABLES = ("1", "2", "3", "best")
SCALES = ("paper", "cpu-scale")
_FIELDS = {"train": {"preset", "overrides"},
           "sample": {"model", "n", "w", "sampler", "steps", "seed", "batch_size"},
           "evaluate": {"samples", "fid"}}
_COMMON = {"kind", "name", "tables", "note"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
PACK_FORMAT = "ddpm_lite.gpu-pack/1"
MiB = 1 << 20


# ---------------------------------------------------------------------------------------------
# The plan file
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """One step of a plan. `spec` holds the unit's settings with every default filled in."""
    kind: str
    name: str
    tables: tuple
    spec: dict
    needs: str | None = None          # the unit this one depends on (train for sample, sample for evaluate)
    config: object = None             # train: the validated Config; sample: the model's Config
    note: str = ""


@dataclass(frozen=True)
class Plan:
    name: str
    scale: str
    scale_note: str
    description: str
    units: tuple
    path: Path

    def unit(self, name: str) -> Unit:
        return self._by_name()[name]

    def _by_name(self) -> dict:
        return {u.name: u for u in self.units}

    def dependents(self, name: str) -> list:
        return [u for u in self.units if u.needs == name]

    def header(self) -> dict:
        """The block copied into every results file of the plan."""
        return {"name": self.name, "file": self.path.name, "scale": self.scale, "scale_note": self.scale_note}


_SAMPLER_NAMES = {"ancestral": "ancestral", "ddim": "DDIM", "dpm++": "DPM-Solver++"}


def _fail(where: str, msg: str):
    raise ConfigError(f"{where}: {msg}")


def _as_int(where, name, v, minimum):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")) \
            or int(v) != v or v < minimum:
        _fail(where, f"field {name!r} = {v!r} must be an integer >= {minimum}")
    return int(v)


def _parse_tables(where, v) -> tuple:
    v = [] if v is None else v
    if not isinstance(v, list):
        _fail(where, f"'tables' must be a list such as [1, 3] or [\"best\"], got {v!r}")
    out = []
    for t in v:
        s = str(t).strip().lower() if not isinstance(t, bool) else ""
        if s not in TABLES:
            _fail(where, f"unknown table {t!r} in 'tables'; use 1, 2, 3 or \"best\"")
        out.append(s)
    return tuple(dict.fromkeys(out))


def _train_unit(where, raw) -> dict:
    from .config import get_config
    preset = raw.get("preset", "quick")
    overrides = raw.get("overrides", {}) or {}
    if not isinstance(overrides, dict):
        _fail(where, f"'overrides' must be an object of config fields, got {overrides!r}")
    try:
        cfg = get_config(preset, **overrides)
    except ConfigError as e:
        _fail(where, str(e))
    return dict(spec={"preset": preset, "overrides": overrides}, config=cfg)


def _sample_unit(where, raw, models: dict) -> dict:
    from .config import get_config
    model = raw.get("model")
    if model not in models:
        _fail(where, f"needs train unit {model!r}, which is not defined earlier in the plan"
              + (f" (defined units: {', '.join(models)})" if models else ""))
    cfg = models[model]
    if "n" not in raw:
        _fail(where, "field 'n' (number of images) is required")
    n = _as_int(where, "n", raw["n"], 10)
    if n % 10:
        _fail(where, f"n = {n} must be a multiple of 10 (the same number of images for each digit)")
    sampler = raw.get("sampler", cfg.sampler)
    w = raw.get("w", cfg.w)
    if sampler == "ancestral":
        steps = _as_int(where, "steps", raw.get("steps", cfg.T), 1)
        if steps != cfg.T:
            _fail(where, f"ancestral sampling takes all T = {cfg.T} steps of model {model!r}; got steps = {steps}")
    else:
        steps = _as_int(where, "steps", raw.get("steps", cfg.sample_steps), 1)
    try:                                   # the config's own checks: sampler name, w >= 0, 1 <= steps <= T
        get_config(cfg, sampler=sampler, w=w, sample_steps=min(steps, cfg.T) if sampler == "ancestral" else steps)
    except ConfigError as e:
        _fail(where, str(e))
    spec = {"model": model, "n": n, "w": float(w), "sampler": sampler, "steps": steps,
            "seed": _as_int(where, "seed", raw.get("seed", 0), 0),
            "batch_size": _as_int(where, "batch_size", raw.get("batch_size", 500), 1)}
    return dict(spec=spec, needs=model, config=cfg)


def _evaluate_unit(where, raw, samples: set) -> dict:
    s = raw.get("samples")
    if s not in samples:
        _fail(where, f"needs sample unit {s!r}, which is not defined earlier in the plan")
    fid = raw.get("fid", True)
    if not isinstance(fid, bool):
        _fail(where, f"field 'fid' must be true or false, got {fid!r}")
    return dict(spec={"samples": s, "fid": fid}, needs=s)


def load_plan(path) -> Plan:
    """Read and check a plan file; every problem is a ConfigError naming the unit and the field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no plan file at {path}; the plans shipped with the book are in plans/.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read plan file {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"plan file {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.") from None
    where = f"plan {path.name}"
    if not isinstance(raw, dict) or not isinstance(raw.get("units"), list) or not raw["units"]:
        _fail(where, "must be a JSON object with a non-empty list 'units'")
    unknown = set(raw) - {"name", "scale", "scale_note", "description", "defaults", "units"}
    if unknown:
        _fail(where, f"unknown top-level field(s) {sorted(unknown)}; known: name, scale, scale_note, "
                     "description, defaults, units")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.match(name):
        _fail(where, f"'name' = {name!r} must be letters, digits, '.', '_' or '-'")
    scale = raw.get("scale")
    if scale not in SCALES:
        _fail(where, f"'scale' = {scale!r} must be \"paper\" or \"cpu-scale\"")
    note = raw.get("scale_note", "")
    if scale != "paper" and not (isinstance(note, str) and note.strip()):
        _fail(where, "a cpu-scale plan needs 'scale_note': a sentence saying what was shrunk")
    defaults = raw.get("defaults", {}) or {}
    if not isinstance(defaults, dict) or set(defaults) - set(KINDS):
        _fail(where, f"'defaults' must map unit kinds ({', '.join(KINDS)}) to default fields")
    units, models, samples = [], {}, set()
    for i, ru in enumerate(raw["units"]):
        uwhere = f"{where}, unit {i + 1}"
        if not isinstance(ru, dict):
            _fail(uwhere, "each unit must be a JSON object")
        kind = ru.get("kind")
        if kind not in KINDS:
            _fail(uwhere, f"unknown unit kind {kind!r}; use one of {', '.join(KINDS)}")
        uname = ru.get("name")
        if not isinstance(uname, str) or not _NAME.match(uname):
            _fail(uwhere, f"'name' = {uname!r} must be letters, digits, '.', '_' or '-' (it names files)")
        uwhere = f"{where}, unit {uname!r} ({kind})"
        if any(u.name == uname for u in units):
            _fail(uwhere, "this name is used twice; unit names must be unique")
        merged = {**defaults.get(kind, {}), **ru}
        extra = set(merged) - _COMMON - _FIELDS[kind]
        if extra:
            import difflib
            known = sorted(_FIELDS[kind] | _COMMON)
            near = difflib.get_close_matches(sorted(extra)[0], known, n=1)
            _fail(uwhere, f"unknown field {sorted(extra)[0]!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                  + f"; a {kind} unit has {', '.join(known)}")
        if kind == "train":
            parts = _train_unit(uwhere, merged)
            models[uname] = parts["config"]
        elif kind == "sample":
            parts = _sample_unit(uwhere, merged, models)
            samples.add(uname)
        else:
            parts = _evaluate_unit(uwhere, merged, samples)
        units.append(Unit(kind, uname, _parse_tables(uwhere, merged.get("tables")), parts["spec"],
                          parts.get("needs"), parts.get("config"), str(merged.get("note", ""))))
    return Plan(name, scale, note if isinstance(note, str) else "", str(raw.get("description", "")),
                tuple(units), path)


def loss_curve(losses, points: int = 100) -> dict:
    """The training loss as at most `points` window means, small enough for a results file.

    Window k covers steps (k-1)*every+1 .. k*every; `step` is each window's last step."""
    losses = [float(v) for v in losses]
    every = max(1, math.ceil(len(losses) / points))
    windows = [losses[i:i + every] for i in range(0, len(losses), every)]
    return {"every": every, "step": [min(len(losses), (k + 1) * every) for k in range(len(windows))],
            "loss": [round(sum(w) / len(w), 6) for w in windows]}


# the first PREVIEW images of a sample set (10 of each digit) are kept beside its results file for figures
PREVIEW = 100


def _read_npz(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------------------------------------
# Where each unit's files live
# ---------------------------------------------------------------------------------------------
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


def plan_lock(plan: Plan, layout: Layout):
    """The lock of a plan's folder (runs/experiments/PLAN), held while units or an import write the
    plan's files; a second writer stops with FolderLocked naming the process that holds it."""
    return folder_lock(layout.runs, f"plan {plan.name!r} folder",
                       f"Wait for that run of the plan to finish, or stop it; `ddpm-lite experiments "
                       f"{plan.path} --dry-run` shows the plan's state meanwhile.")


def _read_result(layout: Layout, name: str) -> dict | None:
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


# ---------------------------------------------------------------------------------------------
# A unit's state, from its files alone
# ---------------------------------------------------------------------------------------------
@dataclass
class UnitState:
    state: str               # "done", "partial", "pending" or "failed"
    message: str = ""


def _train_state(plan: Plan, layout: Layout, u: Unit) -> UnitState:
    from .checkpoint import step_checkpoints
    res = _read_result(layout, u.name)
    model = layout.model_file(u.name)
    if res and res.get("config") == u.config.to_dict() and res.get("model_sha256"):
        if model.is_file():
            if _SHA(model) == res["model_sha256"]:
                return UnitState("done", f"{res.get('steps')} steps")
            return UnitState("pending", "model.pt differs from the one its results describe; it will be rewritten")
        deps = plan.dependents(u.name)
        if deps and all(_sample_state(plan, layout, d).state == "done" for d in deps):
            return UnitState("done", "model file not kept here; every sample set drawn from it is done")
    ckpts = step_checkpoints(layout.train_dir(u.name))
    if ckpts:
        step = int(ckpts[-1].stem.split("_")[1])
        return UnitState("partial", f"checkpoint at step {step} of {u.config.iterations}")
    return UnitState("pending")


def _sample_settings(u: Unit) -> dict:
    return {k: u.spec[k] for k in ("model", "n", "w", "sampler", "steps", "seed", "batch_size")}


def _sample_state(plan: Plan, layout: Layout, u: Unit) -> UnitState:
    res = _read_result(layout, u.name)
    model_res = _read_result(layout, u.needs)
    npz = layout.samples_file(u.name)
    if res and res.get("settings") == _sample_settings(u) and res.get("samples_sha256"):
        if not (model_res and res.get("model_sha256") == model_res.get("model_sha256")):
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


def _evaluate_state(plan: Plan, layout: Layout, u: Unit) -> UnitState:
    res = _read_result(layout, u.name)
    sres = _read_result(layout, u.needs)
    if res and sres and (res.get("input") or {}).get("sha256") == sres.get("samples_sha256") \
            and res.get("fid_computed") == u.spec["fid"]:
        fid = (res.get("fid") or {}).get("value")
        return UnitState("done", f"FID {fid:.2f}" if isinstance(fid, (int, float)) else "IS and accuracy")
    return UnitState("pending")


def unit_state(plan: Plan, layout: Layout, u: Unit) -> UnitState:
    return {"train": _train_state, "sample": _sample_state, "evaluate": _evaluate_state}[u.kind](plan, layout, u)


def plan_states(plan: Plan, layout: Layout) -> dict:
    return {u.name: unit_state(plan, layout, u) for u in plan.units}


def write_status(plan: Plan, layout: Layout, outcomes: dict | None = None) -> dict:
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


# ---------------------------------------------------------------------------------------------
# Cost estimates (rough; for the dry run and for deciding what fits in a budget)
# ---------------------------------------------------------------------------------------------
# Effective rates: a 2-core CPU reaches ~70 GFLOP/s on these U-Nets in training and sampling alike
# (paper U-Net: 43 img/s x 1.81 GFLOP; quick model: 270 img/s x 0.26 GFLOP), and Inception features
# for FID run at ~12 images/s, after ~30 s of fixed cost (loading the network, the square root of a
# 2048 x 2048 matrix). The GPU figures are guesses for one H200 in bf16; the GPU script measures its
# own. `step_s` is a floor per optimizer step or sampling step (launch overheads).
RATES = {"cpu": dict(gflops=70.0, step_s=0.002, fid_images_s=12.0),
         "mps": dict(gflops=2_000.0, step_s=0.005, fid_images_s=100.0),
         "cuda": dict(gflops=200_000.0, step_s=0.003, fid_images_s=500.0)}
FID_FIXED_S = 30.0
_GFLOP = {}


def forward_gflop(cfg) -> float:
    """GFLOP of one forward pass of one image through the model that `cfg` describes (counted once, cached)."""
    key = (cfg.model, tuple(cfg.channels), cfg.time_dim, cfg.attention)
    if key not in _GFLOP:
        import torch
        from torch.utils.flop_counter import FlopCounterMode
        from .unet import build_model
        with torch.random.fork_rng(devices=[]):        # building a model draws weights: leave the RNG as it was
            model = build_model(cfg).eval()
        x, t, y = torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)
        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            model(x, t, y)
        _GFLOP[key] = fc.get_total_flops() / 2 / 1e9
    return _GFLOP[key]


def unit_estimate(plan: Plan, u: Unit, device_type: str = "cpu", steps_done: int = 0) -> float:
    """Rough seconds a unit needs on a device type ('cpu', 'cuda', 'mps'), from FLOPs and RATES."""
    r = RATES.get(device_type, RATES["cpu"])
    if u.kind == "train":
        cfg = u.config
        # a training step costs about three forward passes (forward, then backward at twice that)
        per_step = max(r["step_s"], 3 * forward_gflop(cfg) * cfg.batch_size / r["gflops"])
        return max(0, cfg.iterations - steps_done) * per_step
    if u.kind == "sample":
        s = u.spec
        passes = 2 if s["w"] > 0 else 1          # guidance runs the network on 2B images (eq 6)
        batches = -(-s["n"] // s["batch_size"])
        per_step = max(r["step_s"], passes * min(s["n"], s["batch_size"]) * forward_gflop(u.config) / r["gflops"])
        return batches * s["steps"] * per_step
    n = plan.unit(u.needs).spec["n"]
    return (n / r["fid_images_s"] + FID_FIXED_S) if u.spec["fid"] else n / 2000 + 5.0


def _fmt_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _describe(u: Unit) -> str:
    s = u.spec
    if u.kind == "train":
        c = u.config
        return f"{s['preset']}: {c.model} {'/'.join(map(str, c.channels))}, {c.schedule} T={c.T}, " \
               f"{c.iterations} it x {c.batch_size}"
    if u.kind == "sample":
        how = f"{_SAMPLER_NAMES[s['sampler']]} {s['steps']}"
        return f"{s['n']} images of {s['model']}, {how}, w={s['w']:g}, seed {s['seed']}"
    return f"{'FID, ' if s['fid'] else ''}IS, accuracy of {s['samples']}"


def format_plan_table(plan: Plan, layout: Layout, device_type: str = "cpu", only=None) -> str:
    """The dry run: every unit with its tables, state and estimated cost on `device_type`."""
    from .checkpoint import step_checkpoints
    states = plan_states(plan, layout)
    rows, total = [], 0.0
    for i, u in enumerate(plan.units, 1):
        st = states[u.name]
        done_steps = 0
        if u.kind == "train" and st.state == "partial":
            found = step_checkpoints(layout.train_dir(u.name))
            done_steps = int(found[-1].stem.split("_")[1]) if found else 0
        est = 0.0 if st.state == "done" else unit_estimate(plan, u, device_type, done_steps)
        if only is None or u.kind in only:
            total += est
        cost = "-" if st.state == "done" else _fmt_seconds(est)
        skipped = only is not None and u.kind not in only
        rows.append((str(i), u.kind, u.name, ",".join(u.tables) or "-", st.state + (" (skipped)" if skipped else ""),
                     cost, _describe(u) + (f"  [{st.message}]" if st.message else "")))
    head = ("#", "kind", "name", "tables", "state", "est.", "what")
    widths = [max(len(r[k]) for r in rows + [head]) for k in range(6)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r[:6], widths)) + "  " + r[6]
    out = [f"plan {plan.name} ({plan.path}): scale {plan.scale}" + (f" - {plan.scale_note}" if plan.scale_note else ""),
           line(head)] + [line(r) for r in rows]
    counts = {s: sum(1 for v in states.values() if v.state == s) for s in ("done", "partial", "pending")}
    out.append(f"{counts['done']} done, {counts['partial']} partial, {counts['pending']} pending; "
               f"estimated time left on {device_type}: {_fmt_seconds(total)} (rough)")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# How units run on a device
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainOutcome:
    state: object            # the TrainState (None when the unit was deferred before it started)
    finished: bool
    step: int
    steps_this_call: int = 0
    seconds: float = 0.0
    deferred: str = ""       # why training stopped early ("" when it finished or was never limited)


class Backend:
    """The book's own code: `ddpm_lite.training.train` and the chapter 6 samplers, on any device.

    `scripts/gpu_run.py` subclasses it with the GPU's speed-ups. Every method is deterministic
    given the plan's seeds (on one CPU thread, bit for bit).
    """
    name = "ddpm_lite"
    weights_dtype = "float32"

    def __init__(self, device="auto", progress: bool = True, data=None, log=print):
        from .device import pick_device
        self.device = pick_device(device)
        self.progress = progress
        self._data = data
        self.log = log

    def training_data(self):
        if self._data is None:
            from .data import load_mnist_float
            self._data = load_mnist_float("train")
        return self._data

    def train(self, cfg, run_dir: Path, deadline: float | None = None, must_finish: bool = False) -> TrainOutcome:
        """Train (or resume) to cfg.iterations; with a deadline, in chunks that stop before it.

        With must_finish, a run that the first chunk shows cannot end by the deadline stops there
        (checkpointed) and reports why, so that cheaper units can use the time first."""
        from .checkpoint import step_checkpoints
        from .training import train
        found = step_checkpoints(run_dir)
        step0 = step = int(found[-1].stem.split("_")[1]) if found else 0
        t0 = time.monotonic()
        if deadline is None:
            state = train(cfg, run_dir, device=self.device, data=self.training_data(), progress=self.progress)
            return TrainOutcome(state, True, state.step, state.step - step0, time.monotonic() - t0)
        per_step, measured_s, state = None, 0.0, None
        while step < cfg.iterations:
            left = deadline - time.monotonic() - 2.0          # keep time to write the checkpoint
            need = None if per_step is None else (cfg.iterations - step) * per_step
            # decide only on a measurement of some seconds: a short first chunk includes the set-up
            if must_finish and need is not None and need > left and measured_s >= 5:
                return TrainOutcome(state, False, step, step - step0, time.monotonic() - t0,
                                    f"needs ~{_fmt_seconds(need)}, {_fmt_seconds(max(0, left))} left")
            if per_step is None:
                chunk = min(cfg.iterations - step, 20)
            else:
                chunk = min(cfg.iterations - step, int(left / per_step), max(1, int(60 / per_step)))
            if chunk < 1:
                return TrainOutcome(state, False, step, step - step0, time.monotonic() - t0, "out of time")
            c0 = time.monotonic()
            state = train(cfg, run_dir, device=self.device, data=self.training_data(), progress=self.progress,
                          stop_after=chunk)
            done, step = state.step - step, state.step
            if done > 0:
                measured_s = time.monotonic() - c0
                per_step = measured_s / done
        if state is None:                                  # already trained: load the final state
            state = train(cfg, run_dir, device=self.device, data=self.training_data(), progress=False, stop_after=0)
        return TrainOutcome(state, True, step, step - step0, time.monotonic() - t0)

    def details(self, kind: str) -> dict:
        """Extra facts for the results file of the last unit of this kind (speed-ups used, timings)."""
        return {}

    def save_model(self, path: Path, cfg, state) -> Path:
        from .checkpoint import save_model_file
        return save_model_file(path, cfg, state.ema.model.state_dict(), state.step)

    def load_model(self, path):
        from .checkpoint import load_model
        return load_model(path, self.device)

    def schedule(self, cfg):
        from .forward import make_schedule
        return make_schedule(cfg.schedule, cfg.T)

    def probe_sample_rate(self, model, sched, y, w: float) -> float | None:
        """Seconds per image per network pass, timed on a few steps before a long batch (None: not measured)."""
        return None

    def sample_batch(self, model, sched, y, w: float, sampler: str, steps: int, seed: int, b: int,
                     progress: bool = False):
        """Batch b of a sample set: `ddpm_lite.sampling.sample_batch`, float32 on the CPU."""
        from .sampling import sample_batch
        return sample_batch(model, sched, y, w, sampler, steps, seed, b, progress=progress)


# ---------------------------------------------------------------------------------------------
# Running a plan
# ---------------------------------------------------------------------------------------------
@dataclass
class _Result:
    state: str
    message: str = ""
    files: list = field(default_factory=list)      # paths written (for the GPU script's packer)
    seconds: float = 0.0


class Runner:
    """Runs a plan's units in priority order, skipping done ones; resumable at any point."""

    def __init__(self, plan: Plan, layout: Layout, backend: Backend, only=None, budget_s: float | None = None,
                 log=print, on_unit_done=None, device_type: str | None = None):
        self.plan, self.layout, self.backend = plan, layout, backend
        self.only = set(only) if only else None
        self.t0 = time.monotonic()
        self.deadline = None if budget_s is None else self.t0 + budget_s
        self.log = log
        self.on_unit_done = on_unit_done
        self.device_type = device_type or backend.device.type
        self.outcomes: dict[str, _Result] = {}
        self.sample_rate: dict = {}        # architecture -> seconds per image through the network
        self.eval_rate: float | None = None

    # -- bookkeeping ----------------------------------------------------------------------------
    def _left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def _header(self, u: Unit, extra=None) -> dict:
        return {"plan": self.plan.header(), "unit": {"kind": u.kind, "name": u.name, "tables": list(u.tables),
                                                     **u.spec, **({"note": u.note} if u.note else {})},
                **(extra or {})}

    def write_status(self) -> dict:
        return write_status(self.plan, self.layout, self.outcomes)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> dict:
        """Every unit in priority order; with a budget, units that cannot finish in the time left
        are passed over for later ones that can, and unfinished training uses what time remains.
        The plan's folder is locked meanwhile: a second writer stops with FolderLocked."""
        with plan_lock(self.plan, self.layout):
            return self._run_units()

    def _run_units(self) -> dict:
        todo = [u for u in self.plan.units if self.only is None or u.kind in self.only]
        deferred = []
        try:
            for i, u in enumerate(todo, 1):
                res = self._run_one(u, i, len(todo), must_finish=self.deadline is not None)
                if res is not None and res.state == "deferred" and u.kind == "train":
                    deferred.append((i, u))
            for i, u in deferred:                 # leftover time: train as far as it goes (resumable)
                if self._left() < 10:
                    break
                self._run_one(u, i, len(todo), must_finish=False)
        finally:
            status = self.write_status()
        return status

    def _run_one(self, u: Unit, i: int, total: int, must_finish: bool):
        st = unit_state(self.plan, self.layout, u)
        tag = f"[{i}/{total}] {u.kind} {u.name}"
        if st.state == "done":
            self.log(f"{tag}: done ({st.message}), skipped")
            return None
        if u.needs is not None:
            dep = unit_state(self.plan, self.layout, self.plan.unit(u.needs))
            if dep.state != "done":
                msg = f"waits for {u.needs} ({dep.state})"
                self.outcomes[u.name] = _Result("deferred", msg)
                self.log(f"{tag}: {msg}")
                return self.outcomes[u.name]
        est = self._estimate(u)
        if self.deadline is not None and u.kind == "train" and self._left() < 10:
            msg = "deferred: under 10 s of the budget left"
            self.outcomes[u.name] = _Result("deferred", msg)
            self.log(f"{tag}: {msg}")
            return self.outcomes[u.name]
        if self.deadline is not None and u.kind != "train" and est > self._left():
            msg = f"deferred: needs ~{_fmt_seconds(est)}, {_fmt_seconds(max(0, self._left()))} of the budget left"
            self.outcomes[u.name] = _Result("deferred", msg)
            self.log(f"{tag}: {msg}")
            return self.outcomes[u.name]
        self.log(f"{tag}: {_describe(u)} (~{_fmt_seconds(est)})" + (f" [{st.message}]" if st.message else ""))
        t0 = time.monotonic()
        try:
            res = getattr(self, f"_run_{u.kind}")(u, must_finish)
        except KeyboardInterrupt:
            self.outcomes[u.name] = _Result("failed", "interrupted")
            raise
        except (DDPMLiteError, ValueError, RuntimeError) as e:
            # a unit that fails (diverged, damaged input) is recorded; units that do not need it go on
            res = _Result("failed", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        res.seconds = time.monotonic() - t0
        self.outcomes[u.name] = res
        self.log(f"{tag}: {res.state}" + (f" ({res.message})" if res.message else "") + f" in {_fmt_seconds(res.seconds)}")
        self.write_status()
        if self.on_unit_done is not None:
            self.on_unit_done(u, res)
        return res

    def _estimate(self, u: Unit) -> float:
        if u.kind == "sample" and self._arch(u.config) in self.sample_rate:
            s = u.spec
            return s["n"] * (2 if s["w"] > 0 else 1) * s["steps"] * self.sample_rate[self._arch(u.config)]
        if u.kind == "evaluate" and self.eval_rate is not None and u.spec["fid"]:
            return self.plan.unit(u.needs).spec["n"] * self.eval_rate + FID_FIXED_S
        steps_done = 0
        if u.kind == "train":
            from .checkpoint import step_checkpoints
            found = step_checkpoints(self.layout.train_dir(u.name))
            steps_done = int(found[-1].stem.split("_")[1]) if found else 0
        return unit_estimate(self.plan, u, self.device_type, steps_done)

    @staticmethod
    def _arch(cfg) -> tuple:
        return (cfg.model, tuple(cfg.channels), cfg.time_dim, cfg.attention)

    # -- train ----------------------------------------------------------------------------------
    def _run_train(self, u: Unit, must_finish: bool) -> _Result:
        # the unit's run folder is locked too: `ddpm-lite train --run-dir` into it stops at once
        with folder_lock(self.layout.train_dir(u.name), "run folder", "It is a train unit of a running "
                         "experiment plan; wait for the plan to finish, or stop it."):
            return self._train_unit(u, must_finish)

    def _train_unit(self, u: Unit, must_finish: bool) -> _Result:
        cfg = u.config
        run_dir = self.layout.train_dir(u.name)
        out = self.backend.train(cfg, run_dir, self.deadline, must_finish)
        if not out.finished:
            return _Result("deferred" if must_finish else "partial",
                           f"stopped at step {out.step} of {cfg.iterations}: {out.deferred}")
        state = out.state
        model_path = self.backend.save_model(self.layout.model_file(u.name), cfg, state)
        csv = "step,loss\n" + "".join(f"{k + 1},{v:.6f}\n" for k, v in enumerate(state.losses))
        losses = atomic_write_bytes(run_dir / "losses.csv", csv.encode())
        last = state.losses[-100:]
        result = self._header(u, {
            "what": "a trained model (EMA weights) of an experiment plan",
            "preset": u.spec["preset"], "overrides": {k: v for k, v in u.spec["overrides"].items()},
            "config": cfg.to_dict(), "seed": cfg.seed, "steps": state.step,
            "model": self.layout.rel(model_path), "model_sha256": sha256_file(model_path),
            "weights_dtype": self.backend.weights_dtype,
            "final_loss_mean_last_100": sum(last) / max(1, len(last)),
            "loss_curve": loss_curve(state.losses),
            "steps_this_call": out.steps_this_call, "seconds_this_call": round(out.seconds, 1),
            "steps_per_second_this_call": round(out.steps_this_call / out.seconds, 2) if out.seconds > 0 else None,
            "backend": self.backend.name, **self.backend.details("train"),
            "provenance": provenance(str(self.backend.device))})
        path = write_json(self.layout.result_file(u.name), result)
        return _Result("done", f"{state.step} steps", files=[model_path, losses, run_dir / "config.json", path])

    # -- sample ---------------------------------------------------------------------------------
    def _run_sample(self, u: Unit, must_finish: bool) -> _Result:
        from .data import to_uint8
        from .io import remove_stale_temp_files
        s = u.spec
        model_file = self.layout.model_file(s["model"])
        model_res = _read_result(self.layout, s["model"])
        if not model_file.is_file() or model_res is None:
            raise DataError(f"the model of train unit {s['model']!r} is not here ({self.layout.rel(model_file)}); "
                            "train it first, or copy its run folder here.")
        model_sha = sha256_file(model_file)
        if model_sha != model_res.get("model_sha256"):
            raise DataError(f"{self.layout.rel(model_file)} does not match the sha256 in its results file; "
                            "run the train unit again to rewrite it.")
        model, mcfg = self.backend.load_model(model_file)
        sched = self.backend.schedule(mcfg)
        labels = balanced_labels(s["n"])
        chunks = labels.split(s["batch_size"])
        parts = self.layout.parts_dir(u.name)
        settings = {**_sample_settings(u), "model_sha256": model_sha}
        info_file = parts / "parts.json"
        if parts.is_dir():
            remove_stale_temp_files(parts)
            try:
                same = json.loads(info_file.read_text()) == settings
            except (OSError, ValueError):
                same = False
            if not same:                          # batches of other settings or another model: start over
                for p in parts.glob("*"):
                    p.unlink()
        write_json(info_file, settings)
        rate_key = self._arch(mcfg)
        passes = 2 if s["w"] > 0 else 1
        t_all = time.monotonic()
        from tqdm.auto import tqdm
        bar = tqdm(total=len(chunks), desc=u.name, unit="batch", disable=not self.backend.progress, leave=False)
        drawn = 0
        for b, y in enumerate(chunks):
            part = parts / f"batch_{b:05d}.npz"
            if part.is_file() and self._part_ok(part, y):
                bar.update(1)
                continue
            if self.deadline is not None and rate_key not in self.sample_rate:
                probe = self.backend.probe_sample_rate(model, sched, y, s["w"])
                if probe is not None:
                    self.sample_rate[rate_key] = probe
            if self.deadline is not None and rate_key in self.sample_rate:
                need = len(y) * passes * s["steps"] * self.sample_rate[rate_key]
                if need > self._left():
                    bar.close()
                    return _Result("partial", f"{b} of {len(chunks)} batches drawn; out of time")
            t0 = time.monotonic()
            x = self.backend.sample_batch(model, sched, y, s["w"], s["sampler"], s["steps"], s["seed"], b,
                                          progress=self.backend.progress and len(chunks) == 1)
            self.sample_rate[rate_key] = (time.monotonic() - t0) / (len(y) * passes * s["steps"])
            atomic_write_bytes(part, npz_bytes(compress=False, images=to_uint8(x)[:, 0].numpy(),
                                               labels=y.numpy().astype(np.int64)))
            drawn += len(y)
            bar.update(1)
        bar.close()
        seconds = time.monotonic() - t_all
        images = np.concatenate([_read_npz(parts / f"batch_{b:05d}.npz")["images"] for b in range(len(chunks))])
        lab = np.concatenate([_read_npz(parts / f"batch_{b:05d}.npz")["labels"] for b in range(len(chunks))])
        npz = atomic_write_bytes(self.layout.samples_file(u.name), npz_bytes(images=images, labels=lab))
        result = self._header(u, {
            "what": "a sample set of an experiment plan: uint8 images and the labels they were drawn for",
            "settings": _sample_settings(u), "n": s["n"], "w": s["w"], "sampler": s["sampler"], "steps": s["steps"],
            "seed": s["seed"], "batch_size": s["batch_size"],
            "labels": "balanced: n/10 of each digit, cycling 0..9",
            "seeding": "batch b draws its noise from torch.Generator().manual_seed(seed * 100003 + b) "
                       "(ddpm_lite.sampling.batch_seed)",
            "model": self.layout.rel(model_file), "model_sha256": model_sha, "model_config": mcfg.to_dict(),
            "samples": self.layout.rel(npz), "samples_sha256": sha256_file(npz),
            "images_drawn_this_call": drawn, "seconds_this_call": round(seconds, 1),
            "images_per_second_this_call": round(drawn / seconds, 2) if seconds > 0 and drawn else None,
            "backend": self.backend.name, **self.backend.details("sample"),
            "provenance": provenance(str(self.backend.device))})
        sidecar = write_json(npz.with_suffix(".json"), result)    # read by evaluate_path ("samples" block)
        preview = atomic_write_bytes(self.layout.preview_file(u.name),
                                     npz_bytes(images=images[:PREVIEW], labels=lab[:PREVIEW]))
        result["preview"] = {"file": self.layout.rel(preview), "sha256": sha256_file(preview),
                             "what": f"the first {min(PREVIEW, len(images))} images of the set, for figures"}
        path = write_json(self.layout.result_file(u.name), result)
        for p in parts.glob("*"):
            p.unlink()
        parts.rmdir()
        return _Result("done", f"{s['n']} images", files=[npz, sidecar, preview, path])

    @staticmethod
    def _part_ok(part: Path, y) -> bool:
        try:
            d = _read_npz(part)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):
            return False
        return d.get("images") is not None and d["images"].shape == (len(y), 28, 28) \
            and d["images"].dtype == np.uint8 and np.array_equal(d.get("labels"), y.numpy())

    # -- evaluate -------------------------------------------------------------------------------
    def _run_evaluate(self, u: Unit, must_finish: bool) -> _Result:
        sres = _read_result(self.layout, u.needs)
        npz = self.layout.samples_file(u.needs)
        if sres is None or not npz.is_file():
            raise DataError(f"sample set {u.needs!r} is not here ({self.layout.rel(npz)}); run its sample unit "
                            "first, or import it (--import).")
        if sha256_file(npz) != sres.get("samples_sha256"):
            raise DataError(f"{self.layout.rel(npz)} does not match the sha256 in its results file; "
                            "run its sample unit again to regenerate it.")
        t0 = time.monotonic()
        if u.spec["fid"]:
            from .evaluation import evaluate_path
            result = evaluate_path(npz, npz.with_name(f"{u.name}.eval.json"), device=self.backend.device,
                                   progress=self.backend.progress)
            result.pop("written_to", None)
            if result["n"] >= 200:           # a per-image rate only from sets where images dominate the cost
                self.eval_rate = max(0.0, time.monotonic() - t0 - FID_FIXED_S) / result["n"]
        else:
            from .evaluation import evaluate_file
            result = evaluate_file(npz, self.backend.device, progress=False, fid=False)
            result["samples"] = {k: v for k, v in sres.items() if k not in ("provenance", "plan", "unit")}
        result["fid_computed"] = u.spec["fid"]
        mres = _read_result(self.layout, self.plan.unit(u.needs).needs) or {}
        cfg = mres.get("config") or {}
        s = sres.get("settings", {})
        result["row"] = {"model": s.get("model"), "preset": (mres.get("unit") or {}).get("preset"),
                         "schedule": cfg.get("schedule"), "T": cfg.get("T"), "iterations": cfg.get("iterations"),
                         "steps_trained": mres.get("steps"), "w": s.get("w"), "sampler": s.get("sampler"),
                         "steps": s.get("steps"), "n": s.get("n"), "seed": s.get("seed")}
        result = {**self._header(u), **result}
        path = write_json(self.layout.result_file(u.name), result)
        fid = (result.get("fid") or {}).get("value")
        msg = (f"FID {fid:.2f}, " if isinstance(fid, (int, float)) else "") + \
              f"IS {result['inception_score']['mean']:.2f}, accuracy {result['conditional_accuracy']['overall']:.3f}"
        return _Result("done", msg, files=[path])


# ---------------------------------------------------------------------------------------------
# Packing files into a few size-limited parts (the GPU machine returns at most 8 files of 16 MiB)
# ---------------------------------------------------------------------------------------------
class PackFull(DDPMLiteError):
    """The files would not fit in the allowed number and size of pack parts."""


class Packer:
    """Appends files to `part_1.bin`, `part_2.bin`, ... (each at most max_bytes; a file may span parts)
    and keeps `manifest.json` up to date after every file, so whatever was packed survives a kill.
    The manifest counts as one of the max_files files."""

    def __init__(self, out_dir, max_files: int = 8, max_bytes: int = 16 * MiB, meta: dict | None = None):
        if max_files < 2 or max_bytes < 1:
            raise ValueError("a pack needs at least two files (one part and the manifest) and a positive size")
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.max_parts, self.max_bytes = max_files - 1, max_bytes
        self.files: list[dict] = []
        self.left_out: list[dict] = []
        self.meta = dict(meta or {})
        self._sizes: list[int] = []

    @property
    def used(self) -> int:
        return sum(self._sizes)

    @property
    def capacity_left(self) -> int:
        return self.max_parts * self.max_bytes - self.used

    def has(self, path: str) -> bool:
        return any(f["path"] == path for f in self.files)

    def add(self, relpath: str, data: bytes, **info) -> dict:
        """Append one file (its path relative to the root it will be unpacked into)."""
        if len(data) > self.capacity_left:
            raise PackFull(f"{relpath} ({len(data) / MiB:.1f} MiB) does not fit: {self.capacity_left / MiB:.1f} MiB "
                           f"left in {self.max_parts} parts of {self.max_bytes / MiB:g} MiB")
        segments, pos = [], 0
        while pos < len(data) or not segments:
            if not self._sizes or self._sizes[-1] >= self.max_bytes:
                self._sizes.append(0)
            k = len(self._sizes)
            take = min(len(data) - pos, self.max_bytes - self._sizes[-1])
            with open(self.out / f"part_{k}.bin", "ab") as f:
                f.write(data[pos:pos + take])
            segments.append({"part": f"part_{k}.bin", "offset": self._sizes[-1], "length": take})
            self._sizes[-1] += take
            pos += take
            if not data:
                break
        entry = {"path": relpath, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                 "segments": segments, **info}
        self.files.append(entry)
        self.write_manifest()
        return entry

    def write_manifest(self, **extra) -> Path:
        self.meta.update(extra)
        return write_json(self.out / "manifest.json", {"format": PACK_FORMAT, **self.meta, "files": self.files,
                                                       "left_out": self.left_out,
                                                       "parts": {f"part_{k + 1}.bin": s for k, s in enumerate(self._sizes)}})


def _unpack_file(folder: Path, entry: dict) -> bytes:
    chunks = []
    for seg in entry["segments"]:
        part = folder / seg["part"]
        if not part.is_file() or "/" in seg["part"] or "\\" in seg["part"]:
            raise DataError(f"{folder}: part {seg['part']!r} of {entry['path']} is missing.")
        with open(part, "rb") as f:
            f.seek(seg["offset"])
            chunks.append(f.read(seg["length"]))
    data = b"".join(chunks)
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise DataError(f"{folder}: {entry['path']} does not match its sha256 in manifest.json (a part is "
                        "damaged or incomplete). Nothing of this file was written.")
    return data


def import_pack(folder, plan: Plan, layout: Layout, log=print) -> dict:
    """Unpack what scripts/gpu_run.py wrote (manifest.json + part_*.bin) into `layout`'s root.

    Every file is checked against its sha256 before it is written; only paths inside this plan's
    runs/ and results/ folders are accepted. Returns {'written': [...], 'unchanged': [...]}."""
    folder = Path(folder)
    try:
        man = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{folder} holds no readable manifest.json ({type(e).__name__}); pass the folder that "
                        "scripts/gpu_run.py wrote (--out).") from None
    if man.get("format") != PACK_FORMAT:
        raise DataError(f"{folder}/manifest.json is not a {PACK_FORMAT} manifest.")
    if man.get("plan") != plan.name:
        raise DataError(f"{folder} holds results of plan {man.get('plan')!r}, not {plan.name!r}.")
    allowed = (layout.rel(layout.runs) + "/", layout.rel(layout.results) + "/")
    written, unchanged = [], []
    for entry in man.get("files", []):
        rel = entry["path"]
        if ".." in Path(rel).parts or Path(rel).is_absolute() or not rel.startswith(allowed):
            raise DataError(f"{folder}/manifest.json names {rel!r}, outside {' and '.join(allowed)}; refused.")
        target = layout.root / rel
        if target.is_file() and sha256_file(target) == entry["sha256"]:
            unchanged.append(rel)
            continue
        atomic_write_bytes(target, _unpack_file(folder, entry))
        written.append(rel)
    log(f"imported {len(written)} file(s) from {folder} ({len(unchanged)} already here)"
        + (f"; left out on the GPU: {', '.join(x['path'] for x in man['left_out'])}" if man.get("left_out") else ""))
    return {"written": written, "unchanged": unchanged, "manifest": man}


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------
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
        from .device import pick_device
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
