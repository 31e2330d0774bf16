"""Running a plan: every unit in priority order on a Backend, resumable at any point, within a budget.

Plumbing module (hand-written). A train unit trains (or resumes) its model and writes model.pt,
losses.csv and its results file; a sample unit draws its set batch by batch (each batch kept
until the set is whole, so a cut run resumes); an evaluate unit scores a set with
ddpm_lite.evaluation. The plan's folder is locked while the runner writes there.
"""
from __future__ import annotations

import math
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DDPMLiteError, DataError
from ..io import atomic_write_bytes, npz_bytes, provenance, sha256_file, write_json
from ..runlock import folder_lock
from ..sampling import balanced_labels
from .backend import Backend
from .estimate import FID_FIXED_S, architecture, describe_unit, format_seconds, unit_estimate
from .plan import ExperimentPlan, Unit
from .state import (Layout, checkpointed_steps, model_record, plan_lock, read_result, sample_settings, unit_state,
                    write_status)

__all__ = ["Runner", "loss_curve", "PREVIEW"]


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
    "Every array of an .npz file, read into memory."
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@dataclass
class _Result:
    """What running a unit came to: done, partial, deferred (waits for time or another unit) or failed."""
    state: str
    message: str = ""
    files: list = field(default_factory=list)      # paths written (for the GPU script's packer)
    seconds: float = 0.0


class Runner:
    """Runs a plan's units in priority order, skipping done ones; resumable at any point."""

    def __init__(self, plan: ExperimentPlan, layout: Layout, backend: Backend, only=None, budget_s: float | None = None,
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
            msg = f"deferred: needs ~{format_seconds(est)}, {format_seconds(max(0, self._left()))} of the budget left"
            self.outcomes[u.name] = _Result("deferred", msg)
            self.log(f"{tag}: {msg}")
            return self.outcomes[u.name]
        self.log(f"{tag}: {describe_unit(u)} (~{format_seconds(est)})" + (f" [{st.message}]" if st.message else ""))
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
        self.log(f"{tag}: {res.state}" + (f" ({res.message})" if res.message else "")
                 + f" in {format_seconds(res.seconds)}")
        self.write_status()
        if self.on_unit_done is not None:
            self.on_unit_done(u, res)
        return res

    def _estimate(self, u: Unit) -> float:
        if u.kind == "sample" and architecture(u.config) in self.sample_rate:
            s = u.spec
            return s["n"] * (2 if s["w"] > 0 else 1) * s["steps"] * self.sample_rate[architecture(u.config)]
        if u.kind == "evaluate" and self.eval_rate is not None and u.spec["fid"]:
            return self.plan.unit(u.needs).spec["n"] * self.eval_rate + FID_FIXED_S
        steps_done = checkpointed_steps(self.layout.train_dir(u.name)) if u.kind == "train" else 0
        return unit_estimate(self.plan, u, self.device_type, steps_done)

    # -- train ----------------------------------------------------------------------------------
    def _run_train(self, u: Unit, must_finish: bool) -> _Result:
        # the unit's run folder is locked too: `ddpm-lite train --run-dir` into it stops at once
        with folder_lock(self.layout.train_dir(u.name), "run folder", "It is a train unit of a running "
                         "experiment plan; wait for the plan to finish, or stop it."):
            return self._train(u, must_finish)

    def _train(self, u: Unit, must_finish: bool) -> _Result:
        cfg = u.config
        run_dir = self.layout.train_dir(u.name)
        snapshots, steps_done, seconds = {}, 0, 0.0

        def keep(step: int, snap: Path) -> None:          # record a snapshot's model file in the results
            snapshots[str(step)] = {"model": self.layout.rel(snap), "model_sha256": sha256_file(snap)}

        # the run stops at each snapshot step to keep a model file of the weights there, then goes on
        for stop_at in [*u.spec.get("snapshots", []), None]:
            snap = None if stop_at is None else self.layout.snapshot_file(u.name, stop_at)
            if snap is not None and (snap.is_file() or self._snapshot_from_checkpoint(u, stop_at, snap)):
                keep(stop_at, snap)
                continue
            out = self.backend.train(cfg, run_dir, self.deadline, must_finish, stop_at=stop_at)
            steps_done, seconds = steps_done + out.steps_this_call, seconds + out.seconds
            if not out.finished:
                return _Result("deferred" if must_finish else "partial",
                               f"stopped at step {out.step} of {cfg.iterations}: {out.deferred}")
            if snap is not None:
                if out.step != stop_at:
                    raise DataError(f"train unit {u.name!r} is already past step {stop_at} (at {out.step}) and its "
                                    f"checkpoint there is gone, so that snapshot cannot be written; delete "
                                    f"{self.layout.rel(run_dir)} to train again, or drop the snapshot from the plan.")
                self.backend.save_model(snap, cfg, out.state)
                keep(stop_at, snap)
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
            **({"snapshots": snapshots} if snapshots else {}),
            "final_loss_mean_last_100": sum(last) / max(1, len(last)),
            "loss_curve": loss_curve(state.losses),
            "steps_this_call": steps_done, "seconds_this_call": round(seconds, 1),
            "steps_per_second_this_call": round(steps_done / seconds, 2) if seconds > 0 else None,
            "backend": self.backend.name, **self.backend.details("train"),
            "provenance": provenance(str(self.backend.device))})
        path = write_json(self.layout.result_file(u.name), result)
        kept = [self.layout.root / rec["model"] for rec in snapshots.values()]
        return _Result("done", f"{state.step} steps", files=[model_path, losses, run_dir / "config.json", path, *kept])

    def _snapshot_from_checkpoint(self, u: Unit, step: int, snap: Path) -> bool:
        """A snapshot written from the run's own checkpoint at `step`, if it is still there."""
        from ..checkpoint import checkpoint_path, load_checkpoint, save_model_file
        ckpt = checkpoint_path(self.layout.train_dir(u.name), step)
        if not ckpt.is_file():
            return False
        save_model_file(snap, u.config, load_checkpoint(ckpt)["ema"], step)
        return True

    # -- sample ---------------------------------------------------------------------------------
    def _run_sample(self, u: Unit, must_finish: bool) -> _Result:
        from ..data import to_uint8
        from ..io import open_parts_folder
        s = u.spec
        step = s.get("checkpoint")
        model_file = self.layout.model_file(s["model"]) if step is None else self.layout.snapshot_file(s["model"], step)
        model_res = read_result(self.layout, s["model"])
        if not model_file.is_file() or model_res is None:
            raise DataError(f"the model of train unit {s['model']!r} is not here ({self.layout.rel(model_file)}); "
                            "train it first, or copy its run folder here.")
        model_sha = sha256_file(model_file)
        if model_sha != model_record(model_res, step).get("model_sha256"):
            raise DataError(f"{self.layout.rel(model_file)} does not match the sha256 in its results file; "
                            "run the train unit again to rewrite it.")
        model, mcfg = self.backend.load_model(model_file)
        sched = self.backend.schedule(mcfg)
        labels = balanced_labels(s["n"])
        chunks = labels.split(s["batch_size"])
        parts = self.layout.parts_dir(u.name)
        settings = {**sample_settings(u), "model_sha256": model_sha}
        open_parts_folder(parts, settings)        # batches of other settings or another model: start over
        rate_key = architecture(mcfg)
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
            "settings": sample_settings(u), "n": s["n"], "w": s["w"], "sampler": s["sampler"], "steps": s["steps"],
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
        sres = read_result(self.layout, u.needs)
        npz = self.layout.samples_file(u.needs)
        if sres is None or not npz.is_file():
            raise DataError(f"sample set {u.needs!r} is not here ({self.layout.rel(npz)}); run its sample unit "
                            "first, or import it (--import).")
        if sha256_file(npz) != sres.get("samples_sha256"):
            raise DataError(f"{self.layout.rel(npz)} does not match the sha256 in its results file; "
                            "run its sample unit again to regenerate it.")
        mres = read_result(self.layout, self.plan.unit(u.needs).needs) or {}
        cfg = mres.get("config") or {}
        dataset = cfg.get("dataset", "mnist")       # scored against the data set the model learned
        t0 = time.monotonic()
        if u.spec["fid"]:
            from ..evaluation import evaluate_path
            result = evaluate_path(npz, npz.with_name(f"{u.name}.eval.json"), device=self.backend.device,
                                   progress=self.backend.progress, dataset=dataset)
            result.pop("written_to", None)
            if result["n"] >= 200:           # a per-image rate only from sets where images dominate the cost
                self.eval_rate = max(0.0, time.monotonic() - t0 - FID_FIXED_S) / result["n"]
        else:
            from ..evaluation import evaluate_file
            result = evaluate_file(npz, self.backend.device, progress=False, fid=False, dataset=dataset)
            result["samples"] = {k: v for k, v in sres.items() if k not in ("provenance", "plan", "unit")}
        result["fid_computed"] = u.spec["fid"]
        s = sres.get("settings", {})
        result["row"] = {"model": s.get("model"), "preset": (mres.get("unit") or {}).get("preset"),
                         "schedule": cfg.get("schedule"), "T": cfg.get("T"), "iterations": cfg.get("iterations"),
                         "steps_trained": mres.get("steps"), "w": s.get("w"), "sampler": s.get("sampler"),
                         "steps": s.get("steps"), "n": s.get("n"), "seed": s.get("seed"),
                         "checkpoint": s.get("checkpoint") or mres.get("steps"), "train_seed": cfg.get("seed")}
        result = {**self._header(u), **result}
        path = write_json(self.layout.result_file(u.name), result)
        model_path = self._record_on_model(self.plan.unit(u.needs).needs)
        fid = (result.get("fid") or {}).get("value")
        msg = (f"FID {fid:.2f}, " if isinstance(fid, (int, float)) else "") + \
              f"IS {result['inception_score']['mean']:.2f}, accuracy {result['conditional_accuracy']['overall']:.3f}"
        return _Result("done", msg, files=[path] + ([model_path] if model_path else []))

    def _record_on_model(self, model: str):
        """Copy the scores of every finished set of `model` into its train unit's results file, so that one
        file says how the model did: at each snapshot (its plateau check) and at the end, per sampler and w."""
        res = read_result(self.layout, model)
        if res is None:
            return None
        found = []
        for e in self.plan.units:
            if e.kind != "evaluate" or self.plan.unit(e.needs).spec["model"] != model:
                continue
            r = read_result(self.layout, e.name)
            if r is None or unit_state(self.plan, self.layout, e).state != "done":
                continue
            s = self.plan.unit(e.needs).spec
            found.append({"samples": e.needs, **{k: s[k] for k in ("sampler", "steps", "w", "n", "seed")},
                          "checkpoint": s.get("checkpoint", res.get("steps")),
                          "fid": (r.get("fid") or {}).get("value"), "inception_score": r["inception_score"]["mean"],
                          "conditional_accuracy": r["conditional_accuracy"]["overall"]})
        res["evaluations"] = sorted(found, key=lambda f: (f["sampler"], f["checkpoint"], f["w"], f["seed"]))
        return write_json(self.layout.result_file(model), res)
