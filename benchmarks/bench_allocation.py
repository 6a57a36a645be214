"""How much can the choice of per-layer ratios buy at one budget? The Stage I vector against shuffled copies of it.

The first benchmark asked LIPS for 1.5 × uniform's mAP50-95 at the hard budget. LIPS only chooses per-layer
ratios, so this asks how far any such choice gets. From the baselines benchmark's base, data and Stage I vector
(its --work folder), at one budget, for each shaping strength (`schedule.spread`):
  stage1          the importance-shaped one-shot schedule (the `shaped` baseline at that spread);
  shuffled k      the same schedule built from the Stage I values shuffled over the layers (seeded permutation
                  k = 1…N): equally uneven ratios at equal GFLOPs, put on other layers;
  paper_iter24    the Stage I values reordered by the authors' own final schedule (lips_paper/iter_24/prune_spec.txt,
                  found by 24 iterations × 20 epochs on COCO): the layer they pruned least gets the largest value.
All three use the same values, so they differ only in which layer gets which. Each draw is pruned once to the
budget (±1 %), fine-tuned for the same epochs as every baseline, scored on the report split, and compared with
bench_baselines' `uniform` run by a paired bootstrap over the report images. What the intervals do not hold: every
draw is one training run (seed 0; bench_baselines --seeds measured 1–5 % between runs of one schedule here), and
the best of N draws is biased upwards by that spread. The shuffled draws' range is what reallocation is worth
here; a vector's rank among them (p = (1 + shuffles at or above it) / (N + 1)) says whether its order helps.
With --recovery (a bench_baselines recovery, e.g. recon_lsq) every draw, the uniform reference and Stage I cut
and recover as that method does: does allocation pay once the layers compensate? Writes
reports/bench/allocation.json (allocation_<recovery>.json with --recovery), .md and .png. Not a test: about
3 minutes per draw on 2 CPU cores, with reconstruction as without; reruns reuse finished draws (a draw folder
made from another vector or spread is refused).

    python benchmarks/bench_allocation.py [--budget 3.4] [--spreads 0.2,0.4] [--draws 8] [--recovery recon_lsq]
        [--work runs/bench_baselines]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from harness import (
    GFLOPS_TOL,
    HARD_GOAL,
    RECOVERIES,
    draw_beside,
    machine,
    one_shot,
    parse_floats,
    ratio_interval,
    run_dir,
    run_maps,
    setting_args,
    stage1,
)
from tqdm.auto import tqdm

from lipslib.assets.resolve import paper_dir
from lipslib.cfg import load_params
from lipslib.errors import LipsError, exit_code
from lipslib.files import write_json
from lipslib.pipeline.loop import load_importance, prepare_data
from lipslib.pipeline.plots import allocation_strip
from lipslib.pruning.engine import cost, load_model
from lipslib.pruning.spec import read_spec
from lipslib.schedule import initial_schedule
from lipslib.train.validator import evaluate

DEFAULT_OUT = "reports/bench/allocation.json"
REFERENCES = ("stage1", "paper_iter24")


def shuffled(importance: dict[str, float], draw: int) -> dict[str, float]:
    """The Stage I values moved to other layers by seeded permutation `draw`."""
    names = sorted(importance)
    values = [importance[k] for k in names]
    order = np.random.default_rng(draw).permutation(len(names))
    return {k: values[i] for k, i in zip(names, order)}


def paper_order(importance: dict[str, float]) -> dict[str, float]:
    """The Stage I values put on the layers in the order of the authors' iter-24 ratios: their least-pruned layer
    gets the largest value. Same values as every other draw, so only the order differs."""
    spec = paper_dir() / "iter_24" / "prune_spec.txt"
    ratios = read_spec(spec)
    if set(ratios) != set(importance):
        raise LipsError(
            f"{spec} names other layers than this base's LIPS targets; give the yolo11 base it was made for"
        )
    by_paper = sorted(ratios, key=lambda k: (ratios[k], k))  # least pruned first
    return dict(zip(by_paper, sorted(importance.values(), reverse=True)))


def check_draw(row: dict, values: dict[str, float], spread: float, r_max: float, folder: Path) -> None:
    """A reused draw must be the schedule this vector and spread give at its own bisection scalar."""
    want = initial_schedule(values, "importance", row["scalar"], spread, 0.0, r_max)
    if set(want) != set(row["ratios"]) or any(abs(want[k] - row["ratios"][k]) > 1e-9 for k in want):
        raise LipsError(f"{folder} holds a draw made from another vector or spread; delete it or give another --work")


def summarize(g: pd.DataFrame) -> dict:
    """One spread's draws: the shuffled draws' range, and each reference's ratio, rank and permutation p among them."""
    shuffles = g[g.vector == "shuffled"].vs_uniform
    out = {
        "shuffled_draws": len(shuffles),
        "shuffled_median": float(shuffles.median()),
        "shuffled_min": float(shuffles.min()),
        "shuffled_max": float(shuffles.max()),
        "shuffled_sd": float(shuffles.std(ddof=1)) if len(shuffles) > 1 else None,
        f"shuffled_ge_{HARD_GOAL:g}": int((shuffles >= HARD_GOAL).sum()),
    }
    for v in REFERENCES:
        x = float(g[g.vector == v].vs_uniform.iloc[0])
        out |= {
            f"{v}_vs_uniform": x,
            f"{v}_rank": int((shuffles > x).sum()) + 1,
            f"{v}_p": float((1 + (shuffles >= x).sum()) / (len(shuffles) + 1)),
        }
    return out


def draw_figure(result: dict, out: Path) -> None:
    draw_beside(allocation_strip, result, out, DEFAULT_OUT, "docs/figures/allocation.png")


def main():
    p = setting_args(__doc__.split("\n")[0], DEFAULT_OUT)
    p.add_argument("--budget", type=float, default=3.4, help="GFLOPs")
    p.add_argument("--spreads", default="0.2,0.4", help="shaping strengths (schedule.spread), comma-separated")
    p.add_argument("--draws", type=int, default=8, help="shuffled vectors per spread")
    p.add_argument(
        "--epochs", type=int, default=4, help="fine-tune epochs of every draw (bench_baselines: iterations × epochs)"
    )
    p.add_argument(
        "--work", default="runs/bench_baselines", help="bench_baselines' folder: Stage I and its uniform run"
    )
    p.add_argument(
        "--recovery",
        default="none",
        choices=["none", *(v for v in RECOVERIES if v)],
        help="channel choice and recovery of every cut, as bench_baselines' methods of that suffix",
    )
    a = p.parse_args()
    variant = "" if a.recovery == "none" else a.recovery
    out = Path(a.out if a.out != DEFAULT_OUT or not variant else DEFAULT_OUT.replace(".json", f"_{variant}.json"))
    if a.figure_only:
        draw_figure(json.loads(out.read_text()), out)
        return
    spreads = parse_floats(a.spreads, "spreads", "0.2,0.4")
    for flag, n in (("draws", a.draws), ("epochs", a.epochs)):
        if n < 1:
            raise LipsError(f"--{flag} {n}: give at least 1")
    work = Path(a.work)
    common = {
        "base": a.base,
        "data": a.data,
        "imgsz": a.imgsz,
        "optimize.report": a.report,
        "finetune.fraction": 1.0,
        "schedule.target_gflops": a.budget,
        **RECOVERIES[variant],
    }
    params = load_params(a.params, a.profile, common)
    base = load_model(a.base)
    importance = load_importance(str(stage1(params, work, variant)), base)
    vectors = [
        ("stage1", None, importance),
        *[("shuffled", k, shuffled(importance, k)) for k in range(1, a.draws + 1)],
        ("paper_iter24", None, paper_order(importance)),
    ]
    data, _, report = prepare_data(a.data, a.report, work)
    base_row = evaluate(a.base, data, split=report, imgsz=a.imgsz, device=params["device"], threads=params["threads"])
    images = base_row["images"]
    suffix = f"_{variant}" if variant else ""
    uniform_dir = run_dir(work, a.budget, f"uniform{suffix}", 0)
    # bench_baselines' uniform run with this recovery, or made now
    uniform = one_shot(f"uniform{suffix}", params, importance, a.budget, a.epochs, uniform_dir)
    if uniform["epochs_total"] != a.epochs:
        raise LipsError(
            f"{uniform_dir}: the uniform run was fine-tuned {uniform['epochs_total']} epochs, not "
            f"--epochs {a.epochs}; give the same epochs or another --work"
        )
    uniform_maps = run_maps(uniform, uniform_dir, data, params, report, images, a.resamples)
    rows = []
    bar = tqdm(total=len(spreads) * len(vectors), desc="allocation benchmark")
    for spread in spreads:
        sp = load_params(a.params, a.profile, {**common, "schedule.spread": spread})
        for vector, draw, values in vectors:
            label = vector if draw is None else f"{vector} {draw}"
            bar.set_postfix_str(f"spread {spread:g}, {label}")
            # folders: stage1 is draw0, shuffled k is draw<k> (the names the first runs were made under)
            name = "draw0" if vector == "stage1" else vector if draw is None else f"draw{draw}"
            folder = work / f"{a.budget:g}" / f"allocation_spread{spread:g}{suffix}" / name
            r = one_shot(f"shaped{suffix}", sp, values, a.budget, a.epochs, folder)
            check_draw(r, values, spread, float(sp["schedule"]["r_max"]), folder)
            vs = ratio_interval(run_maps(r, folder, data, params, report, images, a.resamples), uniform_maps)
            rows.append(
                {
                    "spread": spread,
                    "vector": vector,
                    "draw": label,
                    "gflops": r["gflops"],
                    "map50_95_before_ft": r["map50_95_before_ft"],
                    "map50_95": r["map50_95"],
                    "vs_uniform": r["map50_95"] / uniform["map50_95"],
                    "vs_uniform_ci95": vs["ratio_ci95"],
                    "p_beats_uniform": vs["p_a_beats_b"],
                    "ratios": r["ratios"],
                    "seconds": r["seconds"],
                }
            )
            bar.update()
    bar.close()
    df = pd.DataFrame(rows)
    summary = {f"{spread:g}": summarize(g) for spread, g in df.groupby("spread")}
    result = {
        "what": "per-layer allocation at equal GFLOPs and epochs: the Stage I-shaped schedule against the same values "
        "shuffled over the layers and ordered by the authors' final schedule",
        "goal_vs_uniform": HARD_GOAL,
        "base": {"weights": a.base, "gflops": cost(base).gflops, "map50_95": base_row["map50_95"]},
        "uniform": {k: uniform[k] for k in ("gflops", "map50_95", "map50_95_before_ft", "weights", "scalar")},
        "settings": {
            "data": a.data,
            "report_split": report,
            "report_images": images,
            "imgsz": a.imgsz,
            "budget": a.budget,
            "spreads": spreads,
            "draws": a.draws,
            "epochs": a.epochs,
            "profile": a.profile,
            "training_seeds": [0],
            "bootstrap_resamples": a.resamples,
            "work": str(work),
            "recovery": variant or "none",
            "recover": RECOVERIES[variant],
        },
        "machine": machine(),
        "run_seconds": int(df.seconds.sum()),  # the draws' own, from their records: reruns reuse finished draws
        "equal_gflops": bool(max(abs(g / a.budget - 1) for g in [*df.gflops, uniform["gflops"]]) <= GFLOPS_TOL),
        "summary": summary,
        "draws": rows,
    }
    write_json(out, result, portable_paths=True)
    table = df.drop(columns=["ratios"]).assign(vs_uniform_ci95=[f"{lo:.2f}–{hi:.2f}" for lo, hi in df.vs_uniform_ci95])
    out.with_suffix(".md").write_text(
        f"# Allocation at {a.budget:g} GFLOPs ({a.data}, {report} split, {images} images, imgsz {a.imgsz}, "
        f"{a.epochs} epochs, training seed 0, recovery {a.recovery})\n\n"
        f"uniform: {uniform['map50_95']:.4f} at {uniform['gflops']:.3f} GFLOPs\n\n"
        + table.to_markdown(index=False, floatfmt=".4f")
        + "\n\n"
        + pd.DataFrame(summary).T.to_markdown(floatfmt=".3g")
        + "\n\nrank: 1 + shuffled draws above; p: (1 + shuffled "
        "draws at or above) / (draws + 1). Intervals: report images only, not training runs.\n"
    )
    draw_figure(result, out)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    sys.exit(exit_code("bench_allocation.py", main))
