"""Does LIPS beat the easy alternatives at equal cost and equal fine-tuning? Two budgets, six methods.

From one base (default: the authors' iter-01, 4.24 GFLOPs) and one dataset (default: coco_val2193, whose
splits are disjoint: fine-tune on `train`, choose on `val`, report on `test`), at each GFLOPs budget:
  lips             the LIPS loop (profile's schedule, warm start), its best iteration chosen on `val`;
  lips_recover     the same with the recovery options (bias repair + output distillation from the base);
  uniform          one ratio on every LIPS layer, by bisection;
  uniform_recover  the same with the recovery options;
  shaped           the importance-shaped schedule by bisection (LIPS's start without the loop);
  global           torch-pruning's global magnitude ranking over the whole model, by bisection.
Every one-shot method lands within 1 % of the budget and is fine-tuned once for the loop's total epochs
(iterations × epochs); every model is scored on the report split, which played no part in any choice. A
paired bootstrap over the report images (the same resamples for all methods of a budget) gives each
method's 95 % interval (basic bootstrap) and each ratio to LIPS (percentile interval of the ratio). With
--seeds, every method is fine-tuned once per training seed (Ultralytics' `seed`: data order and augmentation);
a method's score is then its mean over seeds, and each resample also draws the seeds with replacement, so the
intervals hold the spread between training runs as well as between images. Stage I (importance) is measured
on the base over the fine-tune split. Writes reports/bench/baselines.json, baselines.md and the Pareto figure (also in
docs/figures/). Not a test: about 2 hours on 2 CPU cores with the defaults.

    python benchmarks/bench_baselines.py [--data coco_val2193.yaml] [--report test] [--budgets 3.7,3.4]
        [--iterations 4] [--epochs 1] [--seeds 0,1,2] [--set schedule.neutral_acc=true …] [--work runs/bench_baselines]
    python benchmarks/bench_baselines.py --figure-only        # redraw the figure from the JSON

Reruns reuse finished parts in --work (the loops resume; a baseline with result.json is kept). Seed 0 (Ultralytics'
default) runs in <budget>/<method>, seed s in <budget>/<method>_seed<s>.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from harness import (
    GFLOPS_TOL,
    HARD_GOAL,
    PLAIN,
    RECOVERIES,
    control,
    draw_beside,
    loop,
    machine,
    one_shot,
    parse_floats,
    parse_seeds,
    pool_seeds,
    ratio_interval,
    run_dir,
    run_maps,
    setting_args,
    split_method,
    stage1,
    with_seed,
)
from tqdm.auto import tqdm

from lipslib.cfg import load_params
from lipslib.cfg.settings import loop_settings
from lipslib.errors import LipsError, exit_code
from lipslib.files import write_json
from lipslib.pipeline.loop import load_importance, prepare_data
from lipslib.pipeline.plots import baselines_pareto
from lipslib.pruning.engine import cost, load_model
from lipslib.train.validator import evaluate

METHODS = (
    "lips",
    "lips_recover",
    "uniform",
    "uniform_recover",
    "shaped",
    "global",
    "control",
    *(
        f"{kind}_{v}"
        for v in ("recon", "recon_lsq")
        for kind in ("lips", "uniform", "shaped", "global")
        if not (kind == "global" and v == "recon_lsq")
    ),  # global magnitude ranks by weights, torch-pruning's own
    "lips_recon_distill",
    "uniform_recon_distill",
    "lips_recon_lsq_distill",
    "uniform_recon_lsq_distill",
    "shaped_recon_lsq_distill",
    "search_recon_lsq_distill",  # allocation search after reconstruction (lipslib.pipeline.search)
    *(f"{kind}_recon_greedy_distill" for kind in ("uniform", "shaped", "lips")),  # greedy channel choice
)
RECOVER = RECOVERIES["recover"]
# the greedy rows' Stage I is the lsq one: a layer's importance is measured with the same refit, and the greedy
# choice differs from lsq only in which channels a cut removes
STAGE1 = {"recon_greedy": "recon_lsq"}
DEPTH = {"3.4": (0.136, 0.120), "3": (0.112, None)}  # the best model's mAP50-95 goal, and before fine-tuning
DEFAULT_OUT = "reports/bench/baselines.json"


def _overrides(pairs) -> dict:
    import yaml

    return {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs or [])}


def pooled(by_seed: dict[int, dict], budget: float) -> dict:
    """A method's row over its training seeds: the first seed's row with its scores and GFLOPs replaced by their
    means, the seed-to-seed sd, the largest GFLOPs miss of any seed, and each seed's own figures under `seeds`."""
    first = next(iter(by_seed.values()))
    mean = lambda k: None if first.get(k) is None else float(np.mean([r[k] for r in by_seed.values()]))  # noqa: E731
    maps = [r["map50_95"] for r in by_seed.values()]
    return {
        **first,
        **{k: mean(k) for k in ("gflops", "map50_95", "map50", "map50_95_before_ft", "selection_map50_95")},
        "gflops_vs_budget": max((r["gflops"] / budget - 1 for r in by_seed.values()), key=abs),
        "map50_95_seed_sd": float(np.std(maps, ddof=1)) if len(maps) > 1 else None,
        "seeds": [
            {
                "seed": s,
                **{
                    k: r.get(k)
                    for k in ("gflops", "map50_95", "map50_95_before_ft", "selection_map50_95", "iteration", "weights")
                },
            }
            for s, r in by_seed.items()
        ],
    }


def write_report(result: dict, out: Path) -> None:
    write_json(out, result, portable_paths=True)
    control = result.get("control")
    rows = [
        {
            "budget": b["budget"],
            "method": m + (" (other run)" if r.get("other_run") else ""),
            **{
                k: r.get(k)
                for k in (
                    "gflops",
                    "epochs_model",
                    "epochs_total",
                    "map50_95_before_ft",
                    "map50_95_before_ft_repair",
                    "map50_95",
                )
            },
            "seeds": len(r["seeds"]),
            "seed sd": r["map50_95_seed_sd"],
            "ci95": "{:.4f}–{:.4f}".format(*r["map50_95_ci95"]),
            "lips / it": r.get("lips_ratio"),
            "lips / it, 95 %": "{:.2f}–{:.2f}".format(*r["lips_ratio_ci95"]) if r.get("lips_ratio_ci95") else "",
        }
        for b in result["budgets"]
        for m, r in b["methods"].items()
    ]
    if control:
        rows.append(
            {
                "budget": None,
                "method": "control (unpruned base, same fine-tune)",
                "gflops": control["gflops"],
                "epochs_model": control["epochs_model"],
                "epochs_total": control["epochs_total"],
                "map50_95_before_ft": control["map50_95_before_ft"],
                "map50_95": control["map50_95"],
                "ci95": "{:.4f}–{:.4f}".format(*control["map50_95_ci95"]),
            }
        )
    md = out.with_suffix(".md")
    md.write_text(
        f"# LIPS vs baselines ({result['settings']['data']}, report split "
        f"{result['settings']['report_split']}, imgsz {result['settings']['imgsz']})\n\n"
        + pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f")
        + "\n\n"
        + "".join(
            f"Budget {b['budget']:g}: kept whole from {b['kept_from']} (an earlier run of this benchmark).\n\n"
            for b in result["budgets"]
            if b.get("kept_from")
        )
        + "Goals: "
        + json.dumps(result["goals"])
        + "\n"
    )
    draw(result, out)


def draw(result: dict, out: Path) -> None:
    draw_beside(baselines_pareto, result, out, DEFAULT_OUT, "docs/figures/baselines_pareto.png")


def main():
    p = setting_args(__doc__.split("\n")[0], DEFAULT_OUT)
    p.add_argument("--budgets", default="3.7,3.4", help="GFLOPs budgets, comma-separated")
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--epochs", type=int, default=1, help="per LIPS iteration; one-shot methods get iterations × it")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument(
        "--seeds", default="0", help="training seeds, comma-separated: each method is fine-tuned once per seed"
    )
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more params.yaml overrides")
    p.add_argument("--work", default="runs/bench_baselines")
    p.add_argument(
        "--keep-rows",
        nargs="+",
        default=[],
        metavar="JSON",
        help="previous reports whose rows not run now (methods, whole budgets, the control) are kept, marked as "
        "another run's; the first report holding a row gives it",
    )
    a = p.parse_args()
    out = Path(a.out)
    if a.figure_only:
        draw(json.loads(out.read_text()), out)
        return
    work, methods = Path(a.work), a.methods.split(",")
    for m in methods:
        if m not in METHODS:
            raise LipsError(f"--methods: unknown method {m!r}; choose from {', '.join(METHODS)}")
    pruned_methods = [m for m in methods if m != "control"]
    kept = [(f, json.loads(Path(f).read_text())) for f in a.keep_rows]
    seeds, budgets = parse_seeds(a.seeds), parse_floats(a.budgets, "budgets", "3.7,3.4")
    common = {
        "base": a.base,
        "data": a.data,
        "imgsz": a.imgsz,
        "optimize.report": a.report,
        "optimize.iterations": a.iterations,
        "finetune.epochs": a.epochs,
        "optimize.warm_start": True,
        "finetune.fraction": 1.0,
        **_overrides(a.set),
    }
    params = load_params(a.params, a.profile, {**common, **PLAIN})
    # Stage I once per channel choice and recovery that a schedule built on it uses (distillation plays no part)
    stage = {m: STAGE1.get(v, v) for m in pruned_methods for v in [split_method(m)[1].removesuffix("_distill")]}
    needs = {v for m, v in stage.items() if split_method(m)[0] in ("lips", "shaped", "search")}
    importance_paths = {
        v: stage1(load_params(a.params, a.profile, {**common, **RECOVERIES[v]}), work, v) for v in sorted(needs)
    }
    base = load_model(a.base)
    base_gflops = cost(base).gflops
    importances = {v: load_importance(str(path), base) for v, path in importance_paths.items()}
    data, _, report = prepare_data(a.data, a.report, work)
    t0, result = time.perf_counter(), {"budgets": []}
    base_row = evaluate(a.base, data, split=report, imgsz=a.imgsz, device=params["device"])
    steps = tqdm(
        total=len(budgets) * (len(pruned_methods) * len(seeds) + 1) + ("control" in methods), desc="baselines benchmark"
    )
    if "control" in methods:
        steps.set_postfix_str("control: the unpruned base fine-tuned")
        row = control(params, a.iterations * a.epochs, work)
        maps = run_maps(row, work / "control", data, params, report, base_row["images"], a.resamples)
        hi, lo = np.percentile(maps, [2.5, 97.5])
        result["control"] = {**row, "map50_95_ci95": [float(2 * row["map50_95"] - lo), float(2 * row["map50_95"] - hi)]}
        steps.update()
    for budget in budgets:
        runs = {m: {} for m in pruned_methods}  # method → seed → row
        for method in pruned_methods:
            kind, suffix = split_method(method)
            flag = stage[method]
            over = {
                **common,
                "schedule.target_gflops": budget,
                **RECOVERIES[suffix],
                **({"optimize.importance": str(importance_paths[flag])} if flag in importance_paths else {}),
            }
            mp = load_params(a.params, a.profile, over)
            if kind == "lips":
                loop_settings(mp, base_gflops)
            for seed in seeds:
                steps.set_postfix_str(f"{budget} GFLOPs: {method}, seed {seed}")
                sp = with_seed(mp, seed)
                out_dir = run_dir(work, budget, method, seed)
                runs[method][seed] = (
                    loop(sp, out_dir)
                    if kind == "lips"
                    else one_shot(method, sp, importances.get(flag), budget, a.iterations * a.epochs, out_dir)
                )
                steps.update()
        steps.set_postfix_str(f"{budget} GFLOPs: bootstrap")
        per_run = {
            (m, s): run_maps(r, run_dir(work, budget, m, s), data, params, report, base_row["images"], a.resamples)
            for m, by_seed in runs.items()
            for s, r in by_seed.items()
        }
        maps = {m: pool_seeds([per_run[m, s] for s in seeds]) for m in pruned_methods}
        rows = {m: pooled(by_seed, budget) for m, by_seed in runs.items()}
        for m, r in rows.items():
            # basic (pivotal) interval: resamples lose rare classes, whose AP is low, so resampled mAPs sit
            # above the full-set value; 2·mAP − quantile undoes that shift
            hi, lo = np.percentile(maps[m], [2.5, 97.5])
            r["map50_95_ci95"] = [float(2 * r["map50_95"] - lo), float(2 * r["map50_95"] - hi)]
            kind, suffix = split_method(m)
            ref = f"lips_{suffix}" if suffix and f"lips_{suffix}" in rows else "lips"
            if m != ref and ref in rows:
                r["lips_reference"] = ref
                r["lips_ratio"] = rows[ref]["map50_95"] / max(r["map50_95"], 1e-9)
                r.update({f"lips_{k}": v for k, v in ratio_interval(maps[ref], maps[m]).items() if k != "resamples"})
        gains = {
            f"{m}_over_{split_method(m)[0]}": ratio_interval(maps[m], maps[split_method(m)[0]])
            for m in rows
            if split_method(m)[1] and split_method(m)[0] in rows
        }
        # what the Stage I allocation alone buys: the shaped one-shot over uniform, same channel choice and recovery
        with_suffix = lambda kind, s: f"{kind}_{s}" if s else kind  # noqa: E731
        allocation = {
            f"{with_suffix(kind, s)}_over_{with_suffix('uniform', s)}": ratio_interval(
                maps[with_suffix(kind, s)], maps[with_suffix("uniform", s)]
            )
            for s in dict.fromkeys(split_method(m)[1] for m in rows)
            for kind in ("shaped", "search", "lips")
            if with_suffix(kind, s) in maps and with_suffix("uniform", s) in maps
        }
        # what the greedy channel choice buys: each `greedy` row over the same method with `lsq` channels
        channels = {
            f"{m}_over_{lsq}": ratio_interval(maps[m], maps[lsq])
            for m in rows
            for lsq in [m.replace("_greedy", "_lsq")]
            if lsq != m and lsq in maps
        }
        keep_rows(rows, kept, budget)
        result["budgets"].append(
            {
                "budget": budget,
                "methods": rows,
                "recovery_gain": gains,
                "allocation_gain": allocation,
                "channel_gain": channels,
            }
        )
        steps.update()
    steps.close()
    for budget in sorted({b["budget"] for _, k in kept for b in k.get("budgets", [])} - set(budgets), reverse=True):
        # a budget not run now: as the first report holding it ran it (its rows paired among themselves)
        file, whole = next((f, b) for f, k in kept for b in k.get("budgets", []) if b["budget"] == budget)
        result["budgets"].append({**whole, "kept_from": whole.get("kept_from") or file})
    result["budgets"].sort(key=lambda b: -b["budget"])
    if "control" not in result:
        source = next(((f, k["control"]) for f, k in kept if k.get("control")), None)
        if source:
            result["control"] = {**source[1], "other_run": source[1].get("other_run") or source[0]}
    result.update(
        {
            "what": "LIPS vs same-harness baselines at equal GFLOPs (±1 %) and equal total fine-tune epochs",
            "base": {"weights": a.base, "gflops": base_gflops, "map50_95": base_row["map50_95"]},
            "settings": {
                "data": a.data,
                "select_split": "val",
                "report_split": report,
                "report_images": base_row["images"],
                "imgsz": a.imgsz,
                "iterations": a.iterations,
                "epochs_per_iteration": a.epochs,
                "profile": a.profile,
                "overrides": a.set,
                "recoveries": RECOVERIES,
                "bootstrap_resamples": a.resamples,
                "seeds": seeds,
                "importance": {(k or "plain"): str(v) for k, v in importance_paths.items()},
                "kept_rows_from": a.keep_rows,
            },
            "machine": machine(),
            "seconds": round(time.perf_counter() - t0),
            "equal_gflops": all(
                abs(r["gflops_vs_budget"]) <= GFLOPS_TOL for b in result["budgets"] for r in b["methods"].values()
            ),
            "goals": goals(result["budgets"], base_row["map50_95"]),
        }
    )
    write_report(result, out)
    print(out.with_suffix(".md").read_text())


def keep_rows(rows: dict, kept: list[tuple[str, dict]], budget: float) -> dict:
    """Add to `rows` the kept reports' rows of `budget` for methods not in it (the first report holding one
    gives it), each marked with the run it came from: for reference, with their own intervals, no pairing with
    this run's. Returns `rows`."""
    for file, report in kept:
        previous = next((b for b in report.get("budgets", []) if b["budget"] == budget), None)
        for m, r in (previous or {}).get("methods", {}).items():
            if m not in rows:
                rows[m] = {**r, "other_run": r.get("other_run") or file}
    return rows


def goals(budgets: list[dict], base_map: float) -> dict:
    """The goals of the recovery work and of the hard budget, from this run's rows."""
    get = lambda ms, m, k="map50_95": (ms.get(m) or {}).get(k)  # noqa: E731
    out = {}
    hard = min(budgets, key=lambda b: b["budget"])["methods"] if len(budgets) > 1 else {}
    if get(hard, "lips") and get(hard, "uniform"):  # the hard budget (the lower of two or more), where both ran
        out[f"hard_budget_lips_over_uniform_ge_{HARD_GOAL:g}"] = get(hard, "lips") / max(get(hard, "uniform"), 1e-9)
    retention = {"3.7": 0.8, "3.4": 0.65}  # share of the base's mAP the best LIPS model keeps
    for b in budgets:
        ms, key = b["methods"], f"{b['budget']:g}"
        lips = [m for m in ms if m.startswith("lips_recon") and "other_run" not in ms[m]]
        if lips and key in retention:
            best = max(lips, key=lambda m: ms[m]["map50_95"])
            out.setdefault("retention", {})[key] = {
                "best": best,
                "map50_95": ms[best]["map50_95"],
                "goal": retention[key] * base_map,
                "share_of_base": ms[best]["map50_95"] / base_map,
            }
        for m in ("uniform_recon", "lips_recon", "uniform_recon_lsq", "lips_recon_lsq"):
            if get(ms, m, "map50_95_before_ft_repair"):
                out.setdefault("reconstruction_over_repair_before_ft_ge_3", {}).setdefault(key, {})[m] = get(
                    ms, m, "map50_95_before_ft"
                ) / max(get(ms, m, "map50_95_before_ft_repair"), 1e-9)
        current = {m: r for m, r in ms.items() if not r.get("other_run")}
        if key in DEPTH and current:  # the paper's depth: the best model, before and after fine-tuning
            best = max(current, key=lambda m: current[m]["map50_95"])
            before = max(current, key=lambda m: current[m].get("map50_95_before_ft") or 0)
            out.setdefault("depth", {})[key] = {
                "best": best,
                "map50_95": current[best]["map50_95"],
                "goal": DEPTH[key][0],
                "best_before_ft": before,
                "map50_95_before_ft": current[before].get("map50_95_before_ft"),
                "goal_before_ft": DEPTH[key][1],
            }
        alloc = {
            k: g for k, g in (b.get("allocation_gain") or {}).items() if k.endswith("_over_uniform_recon_lsq_distill")
        }
        if alloc:
            top = max(alloc, key=lambda k: alloc[k]["ratio_median"])
            out.setdefault("allocation_over_uniform_ge_1.10", {})[key] = {"best": top, **alloc[top]}
        for v in ("recon", "recon_lsq"):
            if get(ms, f"lips_{v}") and get(ms, f"uniform_{v}", "lips_ratio"):  # a kept row may have no ratio
                r = ms[f"uniform_{v}"]
                out.setdefault(f"lips_{v}_over_uniform_{v}", {})[key] = {
                    "ratio": r["lips_ratio"],
                    "ci95": r.get("lips_ratio_ci95"),
                    "goal": 1.15 if b["budget"] < 3.55 else 1.0,
                }
    return out


if __name__ == "__main__":
    sys.exit(exit_code("bench_baselines.py", main))
