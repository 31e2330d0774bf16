"""Rough cost of each unit of a plan, and the dry run's table of units, states and costs.

Plumbing module (hand-written). Estimates come from the FLOPs of the unit's model and a few
effective rates per device type; the runner uses them to decide what fits in a budget, and
replaces them with the rates it measures once it has run a unit of the same kind.
"""
from __future__ import annotations

from .plan import ExperimentPlan, Unit
from .state import Layout, checkpointed_steps, plan_states

__all__ = ["RATES", "FID_FIXED_S", "architecture", "forward_gflop", "unit_estimate", "format_seconds",
           "describe_unit", "format_plan_table"]

_SAMPLER_NAMES = {"ancestral": "ancestral", "ddim": "DDIM", "dpm++": "DPM-Solver++"}


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


def architecture(cfg) -> tuple:
    """The config fields that decide a model's cost per image (models that share them cost the same)."""
    return (cfg.model, tuple(cfg.channels), cfg.time_dim, cfg.attention)


def forward_gflop(cfg) -> float:
    """GFLOP of one forward pass of one image through the model that `cfg` describes (counted once, cached)."""
    key = architecture(cfg)
    if key not in _GFLOP:
        import torch
        from torch.utils.flop_counter import FlopCounterMode
        from ..unet import build_model
        with torch.random.fork_rng(devices=[]):        # building a model draws weights: leave the RNG as it was
            model = build_model(cfg).eval()
        x, t, y = torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)
        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            model(x, t, y)
        _GFLOP[key] = fc.get_total_flops() / 2 / 1e9
    return _GFLOP[key]


def unit_estimate(plan: ExperimentPlan, u: Unit, device_type: str = "cpu", steps_done: int = 0) -> float:
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


def format_seconds(s: float) -> str:
    """A duration as a person reads it: seconds, minutes or hours."""
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def describe_unit(u: Unit) -> str:
    """One line saying what a unit does (the dry run's and the log's "what" column)."""
    s = u.spec
    if u.kind == "train":
        c = u.config
        return f"{s['preset']}: {c.model} {'/'.join(map(str, c.channels))}, {c.schedule} T={c.T}, " \
               f"{c.iterations} it x {c.batch_size}"
    if u.kind == "sample":
        how = f"{_SAMPLER_NAMES[s['sampler']]} {s['steps']}"
        return f"{s['n']} images of {s['model']}, {how}, w={s['w']:g}, seed {s['seed']}"
    return f"{'FID, ' if s['fid'] else ''}IS, accuracy of {s['samples']}"


def format_plan_table(plan: ExperimentPlan, layout: Layout, device_type: str = "cpu", only=None) -> str:
    """The dry run: every unit with its tables, state and estimated cost on `device_type`."""
    states = plan_states(plan, layout)
    rows, total = [], 0.0
    for i, u in enumerate(plan.units, 1):
        st = states[u.name]
        done_steps = checkpointed_steps(layout.train_dir(u.name)) if u.kind == "train" and st.state == "partial" else 0
        est = 0.0 if st.state == "done" else unit_estimate(plan, u, device_type, done_steps)
        if only is None or u.kind in only:
            total += est
        cost = "-" if st.state == "done" else format_seconds(est)
        skipped = only is not None and u.kind not in only
        rows.append((str(i), u.kind, u.name, ",".join(u.tables) or "-", st.state + (" (skipped)" if skipped else ""),
                     cost, describe_unit(u) + (f"  [{st.message}]" if st.message else "")))
    head = ("#", "kind", "name", "tables", "state", "est.", "what")
    widths = [max(len(r[k]) for r in rows + [head]) for k in range(6)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r[:6], widths)) + "  " + r[6]
    out = [f"plan {plan.name} ({plan.path}): scale {plan.scale}" + (f" - {plan.scale_note}" if plan.scale_note else ""),
           line(head)] + [line(r) for r in rows]
    counts = {s: sum(1 for v in states.values() if v.state == s) for s in ("done", "partial", "pending")}
    out.append(f"{counts['done']} done, {counts['partial']} partial, {counts['pending']} pending; "
               f"estimated time left on {device_type}: {format_seconds(total)} (rough)")
    return "\n".join(out)
