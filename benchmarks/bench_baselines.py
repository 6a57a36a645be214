"""LIPS against same-harness baselines at equal cost and equal fine-tuning: does the loop earn its keep?

From one base and one data split, all at the GFLOPs of LIPS's best model (±1 %):
  lips     the LIPS loop (params.yaml profile): its best iteration, chosen on the selection half;
  uniform  one ratio on every LIPS layer, by bisection;
  shaped   the importance-shaped schedule by bisection: LIPS's first iteration without the loop;
  global   torch-pruning's global magnitude ranking over the whole model, by bisection.
Each baseline is fine-tuned once for the LIPS run's total epochs (iterations × epochs per iteration),
with the same recipe (with optimize.warm_start, LIPS's iteration k has itself had k × the epochs per
iteration); every model is scored on the report half, which played no part in any choice, and each
LIPS / baseline ratio gets a 95 % interval from a paired bootstrap over those images.
One more row, lips_schedule, trains LIPS's chosen ratios the same way: it separates the quality of the
schedule the loop found from the epochs the loop spent finding it (its search cost is not counted).
Writes reports/bench/baselines.json and baselines.md. Not a test: minutes of CPU.

    python benchmarks/bench_baselines.py [--profile demo] [--work runs/bench_baselines]

Reruns reuse finished parts in --work (the LIPS run resumes; a baseline with result.json is kept).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from lipslib.baselines import at_gflops
from lipslib.config import load_params
from lipslib.engine import load_model, prune, save_checkpoint
from lipslib.evaluate import evaluate, image_matches, paired_bootstrap, write_json
from lipslib.finetune import finetune
from lipslib.optimize import load_importance, optimize
from lipslib.sensitivity import run_sensitivity

METHODS = ("uniform", "shaped", "global")
GFLOPS_TOL = 0.01


def importance_file(params: dict, work: Path) -> Path:
    """The profile's importance vector; Stage I is run into `work` when it does not exist yet."""
    spec = params["optimize"]["importance"]
    if spec == "paper" or Path(spec).is_file():
        return spec
    s = params["sensitivity"]
    run_sensitivity(params["base"], params["data"], ratio=s["ratio"], layers=s["layers"], imgsz=params["imgsz"],
                    batch=s["batch"], device=str(params["device"]), split=s["split"], mode=s["mode"],
                    threads=params["threads"], out=work / "sensitivity")  # fmt: skip
    return work / "sensitivity" / "layer_importance.json"


def baseline(method: str, base, importance: dict, params: dict, gflops: float, data: str, epochs: int,
             work: Path, ratios: dict | None = None) -> dict:  # fmt: skip
    """Prune once (a baseline method at `gflops`, or the given `ratios`), fine-tune `epochs`, score."""
    out = work / method
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    s, criterion = params["schedule"], params["optimize"]["criterion"]
    if ratios is None:
        pruned = at_gflops(method, base, gflops, importance=importance, spread=float(s["spread"]),
                           r_max=float(s["r_max"]), criterion=criterion)  # fmt: skip
    else:
        pruned = {"model": prune(base, ratios, criterion=criterion, log=False).model, "scalar": None, "ratios": ratios}
    path = save_checkpoint(pruned["model"], out / "pruned.pt", meta={"baseline": method, "ratios": pruned["ratios"]})
    ev = dict(imgsz=params["imgsz"], device=str(params["device"]), threads=params["threads"])
    before = evaluate(path, data, split="test", **ev)
    ft = {k: v for k, v in params["finetune"].items() if k != "recipe"}
    tuned = finetune(path, data, out / "ft", recipe=params["finetune"]["recipe"], **{**ft, "epochs": epochs}, **ev)
    sel = evaluate(tuned["weights"], data, split="val", **ev)
    rep = evaluate(tuned["weights"], data, split="test", **ev)
    result = {"method": method, "gflops": rep["gflops"], "params": rep["params"], "scalar": pruned["scalar"],
              "epochs_model": epochs, "epochs_total": epochs, "map50_95_before_ft": before["map50_95"],
              "map50_95": rep["map50_95"], "map50": rep["map50"], "selection_map50_95": sel["map50_95"],
              "ratios": pruned["ratios"], "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    write_json(done, result)
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--profile", default="demo")
    p.add_argument("--work", default="runs/bench_baselines")
    p.add_argument("--out", default="reports/bench/baselines.json")
    a = p.parse_args()
    work = Path(a.work)
    params = load_params(a.params, a.profile)
    params["optimize"]["importance"] = str(importance_file(params, work))

    t0 = time.perf_counter()
    lips = optimize(params, work / "lips")
    lips_s = time.perf_counter() - t0
    best = lips["best"]
    state = json.loads((work / "lips" / "state.json").read_text())
    data, per_iter = state["data"], params["finetune"]["epochs"]
    total = params["optimize"]["iterations"] * per_iter
    base = load_model(params["base"])
    importance = load_importance(params["optimize"]["importance"], base)

    chained = per_iter * best["iteration"] if params["optimize"]["warm_start"] else per_iter
    rows = [{"method": "lips", "gflops": best["gflops"], "params": best["params"], "scalar": None,
             "epochs_model": chained, "epochs_total": total, "map50_95_before_ft": None,
             "map50_95": best["map50_95"], "map50": best["map50"], "selection_map50_95": best["selection_map50_95"],
             "ratios": state["done"][best["iteration"] - 1]["ratios"], "seconds": round(lips_s, 1)}]  # fmt: skip
    rows += [baseline(m, base, importance, params, best["gflops"], data, total, work) for m in METHODS]
    # LIPS's chosen schedule trained like a baseline: schedule quality apart from the loop's search cost
    rows.append(baseline("lips_schedule", base, importance, params, best["gflops"], data, total, work,
                         ratios=rows[0]["ratios"]))  # fmt: skip
    rows[-1]["epochs_total"] = 2 * total  # the loop's search, then the final fine-tune
    for r in rows:
        r["gflops_vs_lips"] = r["gflops"] / best["gflops"] - 1
    # 64 report images decide little on their own: resample them to see how sure each comparison is
    ev = dict(imgsz=params["imgsz"], device=str(params["device"]), threads=params["threads"], split="test")
    lips_images = image_matches(work / "lips" / "best.pt", data, **ev)
    for r in rows[1:]:
        other = image_matches(work / r["method"] / "ft" / "weights" / "last_pruned_full.pt", data, **ev)
        boot = paired_bootstrap(lips_images, other)
        r["lips_ratio_ci95"], r["p_lips_better"] = boot["ratio_ci95"], boot["p_a_beats_b"]
    by = {r["method"]: r for r in rows}
    ratio_uniform = by["lips"]["map50_95"] / max(by["uniform"]["map50_95"], 1e-9)
    result = {
        "what": "LIPS vs same-harness baselines at LIPS's GFLOPs and its total fine-tune epochs; mAP on the report half",
        "profile": a.profile, "base": params["base"], "data": params["data"], "imgsz": params["imgsz"],
        "target_gflops": params["schedule"]["target_gflops"], "lips_best_iteration": best["iteration"],
        "lips_warm_start": params["optimize"]["warm_start"],
        "split_select": "first half of val (choosing the LIPS iteration)", "split_report": "second half of val",
        "machine": {"cpu": platform.processor() or platform.machine(), "cuda": torch.cuda.is_available()},
        "rows": rows,
        "equal_gflops": all(abs(r["gflops_vs_lips"]) <= GFLOPS_TOL for r in rows),
        "bootstrap": "paired over the report images, 1000 resamples: LIPS / method mAP50-95, 95 % interval",
        "goals": {"lips_over_uniform": {"goal": ">= 1.5", "value": round(ratio_uniform, 3),
                                        "ci95": by["uniform"]["lips_ratio_ci95"], "met": ratio_uniform >= 1.5},
                  "lips_over_shaped": {"goal": ">= 1.0 (the loop adds something)",
                                       "value": round(by["lips"]["map50_95"] / max(by["shaped"]["map50_95"], 1e-9), 3),
                                       "ci95": by["shaped"]["lips_ratio_ci95"],
                                       "met": by["lips"]["map50_95"] >= by["shaped"]["map50_95"]}},
    }  # fmt: skip
    write_json(a.out, result)
    table = pd.DataFrame(rows)
    table["lips_ratio_ci95"] = [f"{ci[0]:.2f}–{ci[1]:.2f}" if isinstance(ci, list) else "" for ci in table.lips_ratio_ci95]
    table = table[["method", "gflops", "gflops_vs_lips", "params", "epochs_model", "epochs_total",
                   "map50_95_before_ft", "selection_map50_95", "map50_95", "map50", "lips_ratio_ci95",
                   "p_lips_better"]]  # fmt: skip
    md = Path(a.out).with_suffix(".md")
    md.write_text(f"# LIPS vs baselines ({a.profile} profile, {params['base']}, imgsz {params['imgsz']})\n\n"
                  + table.to_markdown(index=False, floatfmt=".4f") + "\n\n"
                  + f"Goals: {json.dumps(result['goals'])}\n")  # fmt: skip
    print(md.read_text())


if __name__ == "__main__":
    main()
