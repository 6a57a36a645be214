"""How much can the choice of per-layer ratios buy at one budget? The Stage I vector against shuffled copies of it.

#13 asks LIPS for 1.5 × uniform's mAP50-95 at the hard budget. LIPS only chooses per-layer ratios, so this asks
how far any such choice gets. From the baselines benchmark's base, data and Stage I vector (its --work folder),
at one budget, for each shaping strength (`schedule.spread`):
  draw 0          the importance-shaped one-shot schedule (the `shaped` baseline at that spread);
  draw k = 1…N    the same schedule built from the Stage I values shuffled over the layers (seeded permutation k):
                  equally uneven ratios at equal GFLOPs, put on other layers;
  paper_iter24    the shape of the authors' own final schedule (lips_paper/iter_24/prune_spec.txt, found by 24
                  iterations × 20 epochs on COCO): its ratios, scaled to the Stage I vector's 0–1 range, as an
                  importance vector (more pruned there = less important here).
Each draw is pruned once to the budget (±1 %), fine-tuned for the same epochs as every baseline, scored on the
report split, and compared with bench_baselines' `uniform` run (seed 0) by a paired bootstrap over the report images.
The spread of the shuffled draws is what reallocation is worth here; where the Stage I vector ranks among them says
whether it points the right way. Writes reports/bench/allocation.json, .md and .png. Not a test: about 3 minutes
per draw on 2 CPU cores; reruns reuse finished draws.

    python benchmarks/bench_allocation.py [--budget 3.4] [--spreads 0.2,0.4] [--draws 8] [--work runs/bench_baselines]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from bench_baselines import GFLOPS_TOL, PLAIN, matches, one_shot, resampled, run_dir, stage1
from lipslib.assets import paper_dir
from lipslib.config import load_params
from lipslib.engine import cost, load_model
from lipslib.errors import LipsError, exit_code
from lipslib.evaluate import evaluate, ratio_interval, write_json
from lipslib.optimize import load_importance, prepare_data
from lipslib.plots import allocation_strip
from lipslib.spec import read_spec

DEFAULT_OUT = "reports/bench/allocation.json"
GOAL = 1.5  # #13: LIPS ≥ 1.5 × uniform at the hard budget


def shuffled(importance: dict[str, float], draw: int) -> dict[str, float]:
    """The Stage I values moved to other layers by seeded permutation `draw`; draw 0 is the vector itself."""
    names = sorted(importance)
    values = [importance[k] for k in names]
    order = np.random.default_rng(draw).permutation(len(names)) if draw else np.arange(len(names))
    return {k: values[i] for k, i in zip(names, order)}


def paper_shape(names) -> dict[str, float]:
    """The authors' iter-24 ratios as importance in [0, 1]: their least-pruned layer 1, their most-pruned 0."""
    ratios = read_spec(paper_dir() / "iter_24" / "prune_spec.txt")
    if set(ratios) != set(names):
        raise LipsError(f"{paper_dir() / 'iter_24' / 'prune_spec.txt'} names other layers than this base's LIPS targets")
    lo, hi = min(ratios.values()), max(ratios.values())
    return {k: (hi - v) / (hi - lo) for k, v in ratios.items()}


def parse_floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise LipsError(f"--{what} {text!r}: give numbers, comma-separated, e.g. --{what} 0.2,0.4") from None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--profile", default="demo")
    p.add_argument("--base", default="lips_iter01_best.pt")
    p.add_argument("--data", default="coco_val2193.yaml")
    p.add_argument("--report", default="test")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--budget", type=float, default=3.4, help="GFLOPs")
    p.add_argument("--spreads", default="0.2,0.4", help="shaping strengths (schedule.spread), comma-separated")
    p.add_argument("--draws", type=int, default=8, help="shuffled vectors per spread, besides the Stage I vector")
    p.add_argument("--epochs", type=int, default=4, help="fine-tune epochs of every draw (bench_baselines: iterations × epochs)")
    p.add_argument("--resamples", type=int, default=500)
    p.add_argument("--work", default="runs/bench_baselines", help="bench_baselines' folder: Stage I and its uniform run")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--figure-only", action="store_true", help="redraw the figure from --out")
    a = p.parse_args()
    out = Path(a.out)
    if a.figure_only:
        allocation_strip(json.loads(out.read_text()), out.with_suffix(".png"))
        return
    spreads = parse_floats(a.spreads, "spreads")
    if a.draws < 1 or a.epochs < 1:
        raise LipsError(f"--draws {a.draws} and --epochs {a.epochs} must be ≥ 1")
    work = Path(a.work)
    common = {"base": a.base, "data": a.data, "imgsz": a.imgsz, "optimize.report": a.report,
              "finetune.fraction": 1.0, "schedule.target_gflops": a.budget, **PLAIN}  # fmt: skip
    params = load_params(a.params, a.profile, common)
    base = load_model(a.base)
    importance = load_importance(str(stage1(params, work)), base)
    data, _, report = prepare_data(a.data, a.report, work)
    t0 = time.perf_counter()
    base_row = evaluate(a.base, data, split=report, imgsz=a.imgsz, device=params["device"], threads=params["threads"])

    def boot(row: dict, folder: Path) -> np.ndarray:  # a run's bootstrap mAPs, paired with every other run's
        find = partial(matches, row, data, params, report, folder.with_suffix(".matches.pt"))
        return resampled(row, find, base_row["images"], a.resamples, folder.with_suffix(f".boot{a.resamples}.npz"))

    uniform_dir = run_dir(work, a.budget, "uniform", 0)
    uniform = one_shot("uniform", params, importance, a.budget, a.epochs, uniform_dir)  # bench_baselines' run, or made
    if uniform["epochs_total"] != a.epochs:
        raise LipsError(f"{uniform_dir}: the uniform run was fine-tuned {uniform['epochs_total']} epochs, not "
                        f"--epochs {a.epochs}; give the same epochs or another --work")  # fmt: skip
    uniform_maps = boot(uniform, uniform_dir)
    vectors = [("stage1", 0, importance), *[("shuffled", k, shuffled(importance, k)) for k in range(1, a.draws + 1)],
               ("paper_iter24", None, paper_shape(importance))]  # fmt: skip
    rows = []
    bar = tqdm(total=len(spreads) * len(vectors), desc="allocation benchmark")
    for spread in spreads:
        sp = load_params(a.params, a.profile, {**common, "schedule.spread": spread})
        for vector, draw, values in vectors:
            bar.set_postfix_str(f"spread {spread:g}, {vector} {draw or ''}")
            folder = work / f"{a.budget:g}" / f"allocation_spread{spread:g}" / (vector if draw is None else f"draw{draw}")
            r = one_shot("shaped", sp, values, a.budget, a.epochs, folder)
            vs = ratio_interval(boot(r, folder), uniform_maps)
            rows.append({"spread": spread, "vector": vector, "draw": draw, "gflops": r["gflops"],
                         "map50_95_before_ft": r["map50_95_before_ft"], "map50_95": r["map50_95"],
                         "uniform_ratio": r["map50_95"] / uniform["map50_95"], **{f"uniform_{k}": v for k, v in
                         vs.items() if k != "resamples"}, "ratios": r["ratios"], "seconds": r["seconds"]})  # fmt: skip
            bar.update()
    bar.close()
    df = pd.DataFrame(rows)
    summary = {}
    for spread, g in df.groupby("spread"):
        shuffles = g[g.vector == "shuffled"].uniform_ratio
        of = lambda v: float(g[g.vector == v].uniform_ratio.iloc[0])  # noqa: E731
        summary[f"{spread:g}"] = {
            **{f"{v}_ratio": of(v) for v in ("stage1", "paper_iter24")},
            **{f"{v}_rank": int((g.uniform_ratio > of(v)).sum()) + 1 for v in ("stage1", "paper_iter24")},
            "shuffled_median": float(shuffles.median()), "shuffled_min": float(shuffles.min()),
            "shuffled_max": float(shuffles.max()), "shuffled_sd": float(shuffles.std(ddof=1)) if len(shuffles) > 1 else None,
            "draws_ge_goal": int((g.uniform_ratio >= GOAL).sum()), "draws": len(g),
        }  # fmt: skip
    result = {
        "what": "per-layer allocation at equal GFLOPs and epochs: the Stage I-shaped schedule against shuffled copies "
                "and the shape of the authors' final schedule",
        "goal_ratio": GOAL,
        "base": {"weights": a.base, "gflops": cost(base).gflops, "map50_95": base_row["map50_95"]},
        "uniform": {k: uniform[k] for k in ("gflops", "map50_95", "map50_95_before_ft", "weights", "scalar")},
        "settings": {"data": a.data, "report_split": report, "report_images": base_row["images"], "imgsz": a.imgsz,
                     "budget": a.budget, "spreads": spreads, "draws": a.draws, "epochs": a.epochs, "profile": a.profile,
                     "bootstrap_resamples": a.resamples, "work": str(work), "recover": PLAIN},  # fmt: skip
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "cuda": torch.cuda.is_available()},
        "seconds": round(time.perf_counter() - t0),
        "equal_gflops": bool((df.gflops / a.budget - 1).abs().max() <= GFLOPS_TOL),
        "summary": summary,
        "draws": rows,
    }
    write_json(out, result)
    table = df.drop(columns=["ratios", "uniform_ratio_median"]).assign(
        uniform_ratio_ci95=[f"{lo:.2f}–{hi:.2f}" for lo, hi in df.uniform_ratio_ci95])
    out.with_suffix(".md").write_text(
        f"# Allocation at {a.budget:g} GFLOPs ({a.data}, {report} split, {base_row['images']} images, imgsz {a.imgsz}, "
        f"{a.epochs} epochs)\n\nuniform: {uniform['map50_95']:.4f}\n\n" + table.to_markdown(index=False, floatfmt=".4f")
        + "\n\n" + pd.DataFrame(summary).T.to_markdown(floatfmt=".3f") + "\n")  # fmt: skip
    allocation_strip(result, out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    sys.exit(exit_code("bench_allocation.py", main))
