"""An experiment plan's file: its schema, read and checked before any work starts.

Plumbing module (hand-written). A plan is a JSON file (see `plans/`) listing units in priority order:

    {"name": "paper", "scale": "paper" | "cpu-scale", "scale_note": "what was shrunk (cpu-scale)",
     "description": "...", "defaults": {"sample": {...}, "evaluate": {...}},
     "units": [
       {"kind": "train", "name": "linear_T1000", "preset": "paper", "overrides": {"T": 1000}, "tables": [2, 3],
        "snapshots": [2000, 4000]},
       {"kind": "sample", "name": "linear_T1000_w0.2_s0", "model": "linear_T1000", "n": 10000, "w": 0.2,
        "sampler": "ancestral", "steps": 1000, "seed": 0, "batch_size": 5000, "tables": [1, 2, 3]},
       {"kind": "evaluate", "name": "eval_linear_T1000_w0.2_s0", "samples": "linear_T1000_w0.2_s0",
        "fid": true, "tables": [1, 2, 3]},
       {"kind": "sample", "name": "plateau_2000", "model": "linear_T1000", "checkpoint": 2000, "n": 500, ...}]}

A train unit may keep `snapshots`, model files at earlier steps, which a sample unit names with
`checkpoint` (to show that training has reached a plateau). A sample unit needs its train unit, an
evaluate unit its sample unit, and each must come earlier in the list. `tables` says which of the
paper's tables a unit feeds: 1, 2, 3 or "best".
load_plan() turns the file into an ExperimentPlan of Units, every default filled in; any problem
is a ConfigError that names the unit and the field.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = ["KINDS", "TABLES", "SCALES", "Unit", "ExperimentPlan", "load_plan"]

KINDS = ("train", "sample", "evaluate")
TABLES = ("1", "2", "3", "best")
SCALES = ("paper", "cpu-scale")
_FIELDS = {"train": {"preset", "overrides", "snapshots"},
           "sample": {"model", "n", "w", "sampler", "steps", "seed", "batch_size", "checkpoint"},
           "evaluate": {"samples", "fid"}}
_COMMON = {"kind", "name", "tables", "note"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


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
class ExperimentPlan:
    """A checked plan file: its name, scale (with the note saying what a cpu-scale plan shrinks) and
    units in priority order."""
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
    from ..config import get_config
    preset = raw.get("preset", "quick")
    overrides = raw.get("overrides", {}) or {}
    if not isinstance(overrides, dict):
        _fail(where, f"'overrides' must be an object of config fields, got {overrides!r}")
    try:
        cfg = get_config(preset, **overrides)
    except ConfigError as e:
        _fail(where, str(e))
    snaps = raw.get("snapshots", [])
    if not isinstance(snaps, list):
        _fail(where, f"'snapshots' must be a list of training steps such as [2000, 4000], got {snaps!r}")
    snaps = sorted({_as_int(where, "snapshots", v, 1) for v in snaps})
    if snaps and snaps[-1] >= cfg.iterations:
        _fail(where, f"snapshot step {snaps[-1]} must be below iterations = {cfg.iterations} "
                     "(the final model is always kept)")
    spec = {"preset": preset, "overrides": overrides}
    if snaps:                                # a model file kept at each of these steps (plateau checks)
        spec["snapshots"] = snaps
    return dict(spec=spec, config=cfg)


def _sample_unit(where, raw, models: dict, snapshots: dict) -> dict:
    from ..config import get_config
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
    if raw.get("checkpoint") is not None:    # draw from the model as it was at this training step
        step = _as_int(where, "checkpoint", raw["checkpoint"], 1)
        if step not in snapshots[model]:
            _fail(where, f"checkpoint = {step} is not among the 'snapshots' of train unit {model!r} "
                         f"({snapshots[model] or 'none'}); add it there, or drop 'checkpoint' for the final model")
        spec["checkpoint"] = step
    return dict(spec=spec, needs=model, config=cfg)


def _evaluate_unit(where, raw, samples: set) -> dict:
    s = raw.get("samples")
    if s not in samples:
        _fail(where, f"needs sample unit {s!r}, which is not defined earlier in the plan")
    fid = raw.get("fid", True)
    if not isinstance(fid, bool):
        _fail(where, f"field 'fid' must be true or false, got {fid!r}")
    return dict(spec={"samples": s, "fid": fid}, needs=s)


def load_plan(path) -> ExperimentPlan:
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
    units, models, samples, snapshots = [], {}, set(), {}
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
            snapshots[uname] = parts["spec"].get("snapshots", [])
        elif kind == "sample":
            parts = _sample_unit(uwhere, merged, models, snapshots)
            samples.add(uname)
        else:
            parts = _evaluate_unit(uwhere, merged, samples)
        units.append(Unit(kind, uname, _parse_tables(uwhere, merged.get("tables")), parts["spec"],
                          parts.get("needs"), parts.get("config"), str(merged.get("note", ""))))
    return ExperimentPlan(name, scale, note if isinstance(note, str) else "", str(raw.get("description", "")),
                          tuple(units), path)
