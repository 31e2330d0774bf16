"""The benchmark's report: the printed table of ratios and the book's targets as observations.

Plumbing module (hand-written). table_rows turns a results dict (what scripts/bench.py writes to
results/bench.json) into (measurement, baseline, compared, ratio) rows; observations sets each
of the book's speed targets (timing.TARGETS) beside what the run observed, never asserting it;
print_report prints both, with the run's notes.
"""
from __future__ import annotations

from .timing import TARGETS


def _fmt(v, unit=""):
    if v is None:
        return "-"
    if abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.3g}"
    return f"{s} {unit}".strip()


def table_rows(res: dict) -> list[tuple[str, str, str, str]]:
    """(measurement, baseline, compared, ratio) rows for the printed table."""
    rows = []
    mm = res["machine"]["matmul"]
    n = mm["n"]
    rows.append((f"fp32 matmul {n}x{n}x{n} (the yardstick)", "", _fmt(mm["gflop_per_s"], "GFLOP/s"), ""))
    for name, tr in res["training"].items():
        rows.append((f"train step {name}, batch {tr['batch_size']}: FLOP/s vs matmul",
                     _fmt(tr["matmul_gflop_per_s"], "GFLOP/s"),
                     f"{_fmt(tr['achieved_gflop_per_s'], 'GFLOP/s')} ({_fmt(tr['images_per_s'], 'img/s')})",
                     f"{tr['fraction_of_matmul']:.0%}"))
        peak = res["machine"].get("fma_peak", {}).get("gflop_per_s")
        if peak and tr.get("fraction_of_fma_peak") is not None:
            rows.append((f"train step {name}: FLOP/s vs the FMA peak", _fmt(peak, "GFLOP/s"),
                         _fmt(tr["achieved_gflop_per_s"], "GFLOP/s"), f"{tr['fraction_of_fma_peak']:.0%}"))
        rows.append((f"train step {name}: contiguous -> channels_last", _fmt(tr["images_per_s"], "img/s"),
                     _fmt(tr["channels_last_images_per_s"], "img/s"), f"{tr['channels_last_speedup']:.2f}x"))
    for name, sp in res["sampling"].items():
        ps, sx = sp["per_step"], sp["speedup"]
        ips = lambda pair, k: _fmt(ps[pair][k]["images_per_s"], "img/s")   # noqa: E731
        rows.append((f"reverse step {name}, B={sp['batch']}, w={sp['w']}: two passes -> batched",
                     ips("guidance_w", "two_pass"), ips("guidance_w", "batched"), f"{sx['batched_over_two_pass']:.2f}x"))
        rows.append((f"reverse step {name}, w=0: two passes -> skip uncond. pass", ips("guidance_w0", "two_pass_w0"),
                     ips("guidance_w0", "skip_w0"), f"{sx['skip_w0_over_two_pass_w0']:.2f}x"))
        rows.append((f"reverse step {name}: batched -> + channels_last", ips("channels_last", "batched"),
                     ips("channels_last", "batched_channels_last"), f"{sx['channels_last_over_batched']:.2f}x"))
        rows.append((f"reverse step {name}: autograd on -> inference_mode", ips("inference_mode", "batched_autograd_on"),
                     ips("inference_mode", "batched"), f"{sx['inference_mode_over_autograd_on']:.2f}x"))
        ws = sp["whole_sample"]
        anc = ws["ancestral_1000"]
        for k in ("ddim_50", "ddim_20"):
            rows.append((f"whole sample {name}: 1000 ancestral -> {k.replace('_', '-')} (estimated)",
                         f"{_fmt(anc['seconds_per_image'], 's/img')}, {anc['forward_calls']} calls",
                         f"{_fmt(ws[k]['seconds_per_image'], 's/img')}, {ws[k]['forward_calls']} calls",
                         f"{ws[k]['time_speedup']:.1f}x"))
    c = res["evaluation"]["classifier"]
    if "skipped" in c:
        rows.append(("IS classifier", "skipped", "", ""))
    else:
        rows.append((f"IS classifier: 1 image a call -> {c['n_batched']} a call",
                     _fmt(c["one_at_a_time"]["images_per_s"], "img/s"),
                     _fmt(c["batched"]["images_per_s"], "img/s"), f"{c['batched_speedup']:.0f}x"))
        rows.append(("IS classifier batched: contiguous -> channels_last", _fmt(c["batched"]["images_per_s"], "img/s"),
                     _fmt(c["batched_channels_last"]["images_per_s"], "img/s"),
                     f"{c['channels_last_speedup_over_batched']:.2f}x"))
    inc = res["evaluation"]["inception"]
    if "skipped" in inc:
        rows.append(("Inception pool3", "skipped", "", ""))
    else:
        base = inc["eager_channels_last"]
        for k, v in inc.items():
            if isinstance(v, dict) and "speedup" in v:
                rows.append((f"FID features, n={inc['n']}: eager -> {k} (max diff {v['max_abs_diff_vs_eager']:.1e})",
                             _fmt(base["images_per_s"], "img/s"), _fmt(v["images_per_s"], "img/s"),
                             f"{v['speedup']:.2f}x"))
        if "fid_check" in inc:
            fc = inc["fid_check"]
            rows.append((f"FID of {fc['n']} real digits: eager vs {inc['default_backend']} features", "", "",
                         f"|diff| {fc['abs_diff']:.1e}"))
    for name, o in res["fast_paths"]["optimizer"].items():
        for k in ("foreach", "fused"):
            rows.append((f"{o['optimizer']} step, {name} model: for-loop -> {k}", _fmt(o["for_loop"]["step_ms"], "ms"),
                         _fmt(o[k]["step_ms"], "ms"), f"{o[k]['speedup']:.2f}x"))
    return rows


def observations(res: dict) -> list[dict]:
    """The book's speed targets, each with what this run observed (never asserted)."""
    obs = []
    paper = res["training"]["paper"]
    goal = TARGETS["paper_step_fraction_of_matmul"]
    obs.append({"target": f"paper U-Net training step reaches >= {goal:.0%} of the matmul FLOP/s",
                "observed": paper["fraction_of_matmul"], "met": paper["fraction_of_matmul"] >= goal})
    for name, sp in res["sampling"].items():
        s, goal = sp["speedup"]["skip_w0_over_two_pass_w0"], TARGETS["skip_w0_speedup_over_two_pass"]
        obs.append({"target": f"{name}: at w = 0, skipping the unconditional pass is >= {goal}x the two-pass way",
                    "observed": s, "met": s >= goal})
        d, goal = sp["whole_sample"]["ddim_50"], TARGETS["ddim50_fewer_than_ancestral1000"]
        obs.append({"target": f"{name}: DDIM-50 needs >= {goal:.0f}x fewer forward passes and less time "
                              "than 1000 ancestral steps",
                    "observed": {"fewer_forward_calls": d["fewer_forward_calls"], "time_speedup": d["time_speedup"]},
                    "met": min(d["fewer_forward_calls"], d["time_speedup"]) >= goal})
    c = res["evaluation"]["classifier"]
    if "skipped" not in c:
        goal = TARGETS["batched_classifier_speedup"]
        obs.append({"target": f"the IS classifier batched is >= {goal:.0f}x faster than one image at a time",
                    "observed": c["batched_speedup"], "met": c["batched_speedup"] >= goal})
    inc = res["evaluation"]["inception"]
    if "skipped" not in inc and inc["default_backend"] != "eager":
        v = inc[f"{inc['default_backend']}_backend"]
        goal, tol = TARGETS["fid_features_speedup_over_eager"], TARGETS["fid_features_max_abs_diff"]
        obs.append({"target": f"FID features through the default backend ({inc['default_backend']}) are >= {goal:g}x "
                              f"the eager path, within {tol:g} (max abs)",
                    "observed": {"speedup": v["speedup"], "max_abs_diff": v["max_abs_diff_vs_eager"],
                                 "fastest_variant": inc["fastest"]},
                    "met": v["speedup"] >= goal and v["max_abs_diff_vs_eager"] <= tol})
    return obs


def print_report(res: dict) -> None:
    rows = table_rows(res)
    head = ("measurement", "baseline", "compared", "ratio")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    print(line)
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print(line)
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print(line)
    print("ratio: median over rounds of baseline time / compared time, measured back to back (above 1: the\n"
          "compared way is faster); train-step FLOP/s rows: achieved FLOP/s as a fraction of the matmul's.")
    print("Targets (observations, not checks):")
    for o in res["targets"]:
        print(f"  - {o['target']}: observed {o['observed']} ({'at or above' if o['met'] else 'below'} the target)")
    for note in res["notes"]:
        print(f"note: {note}")
