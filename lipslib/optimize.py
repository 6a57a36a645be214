"""Stage III: the LIPS loop — prune(base, ratios) → fine-tune → evaluate → update(ratios) — with resume.

Run folder (`out`), the authors' layout plus ours:
  iter_kk/final/prune_spec.txt, iter_kk/final/pruned.pt, iter_kk/prune_directed_log.csv,
  iter_kk/ft/finetune/{args.yaml,results.csv,weights/last_pruned_full.pt}, iter_kk/metrics.json,
  history.csv, state.json, best.json, best.pt, layer_iteration.png, data/ (selection/report halves).
An iteration counts as done once state.json lists it (written atomically after its metrics); a killed
run loses at most the iteration in progress. Rerunning with different parameters is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import yaml

from lipslib.engine import cost, load_model, prune, save_checkpoint, write_log
from lipslib.errors import LipsError
from lipslib.evaluate import check_data, check_writable, evaluate, split_images, write_json
from lipslib.finetune import finetune
from lipslib.layers import default_targets, validate_layers
from lipslib.schedule import RuleParams, Targets, initial_schedule, update
from lipslib.spec import write_spec

REPORTS = {  # optimize.report: (how the data is prepared, split that chooses the best iteration, split that reports it)
    "half": ("val split in two halves", "val", "test"),
    "test": ("the dataset's own splits", "val", "test"),
    "val": ("val alone (the report is optimistic)", "val", "val"),
}
HISTORY_COLUMNS = ["iteration", "gflops", "params", "map50_95", "map50", "gate", "step",
                   "report_map50_95", "report_map50"]  # fmt: skip
FINGERPRINT_IGNORES = ("threads", "profile")  # may change between a run and its resume


def split_halves(data, out: Path) -> Path:
    """A data yaml whose `val` is the first half of the original val images (to choose on) and `test`
    the second half (to report on); `train` unchanged. Images are listed by Ultralytics' rules and
    written as absolute paths, so the lists resolve from anywhere. Deterministic: sorted file names."""
    info = check_data(data, splits=("train", "val"))
    images = split_images(info, "val")
    if len(images) < 2:
        raise LipsError(f"dataset {info['yaml_file']}: need ≥ 2 val images to split into selection/report halves")
    half = len(images) // 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "select.txt").write_text("".join(f"{p}\n" for p in images[:half]))
    (out / "report.txt").write_text("".join(f"{p}\n" for p in images[half:]))
    doc = {"path": str(Path(info["path"]).resolve()), "train": info["train"], "val": str((out / "select.txt").resolve()),
           "test": str((out / "report.txt").resolve()), "names": info["names"]}  # fmt: skip
    path = out / f"{Path(info['yaml_file']).stem}_halves.yaml"  # the name says what data it is
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def bisect_gflops(make, target_gflops: float, lo: float = 0.0, hi: float = 0.9, steps: int = 14,
                  count=cost):  # fmt: skip
    """Bisection on a scalar s until the model `make(s)` costs `target_gflops` (GFLOPs fall as s grows;
    `count`: engine.cost or an engine.cost_counter). Returns (s, model, gflops) of the closest step."""
    best = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        model = make(mid)
        g = count(model).gflops
        if best is None or abs(g - target_gflops) < abs(best[2] - target_gflops):
            best = (mid, model, g)
        lo, hi = (mid, hi) if g > target_gflops else (lo, mid)
    return best


def calibrate(base, shape, target_gflops: float, criterion: str = "l1", lo: float = 0.0, hi: float = 0.9,
              steps: int = 14) -> tuple[float, dict[str, float], float]:  # fmt: skip
    """The scalar s of a schedule family `shape(s) -> ratios` at which pruning `base` costs
    `target_gflops`. Returns (s, ratios, gflops)."""
    s, _, g = bisect_gflops(lambda x: prune(base, shape(x), criterion=criterion, log=False).model, target_gflops,
                            lo, hi, steps)  # fmt: skip
    return s, shape(s), g


def layer_costs(base, criterion: str = "l1", probe: float = 0.5, imgsz: int = 320) -> dict[str, float]:
    """GFLOPs each target layer saves per unit ratio, from pruning it alone at `probe`. Only their
    proportions matter (weights of the cost-aware guard), so a smaller image counts them 4× faster."""
    full = cost(base, imgsz).gflops
    return {name: (full - cost(prune(base, {name: probe}, criterion=criterion, log=False).model, imgsz).gflops) / probe
            for name in default_targets(base)}  # fmt: skip


def load_importance(spec, base) -> dict[str, float]:
    from lipslib.assets import paper_dir

    path = paper_dir() / "layer_importance.json" if spec == "paper" else Path(spec)
    if not path.is_file():
        raise LipsError(f"importance file {path} not found; run `lips sensitivity` or set optimize.importance: paper")
    importance = json.loads(path.read_text())
    validate_layers(base, importance)
    return {k: float(v) for k, v in importance.items()}


def _fingerprint(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in FINGERPRINT_IGNORES}


def check_params(params: dict, base_gflops: float | None = None) -> tuple[Targets, RuleParams]:
    """Refuse bad parameters before any compute."""
    s, o = params["schedule"], params["optimize"]
    if o["report"] not in REPORTS:
        raise LipsError(f"optimize.report must be one of {', '.join(REPORTS)}, got {o['report']!r}")
    if not isinstance(o["iterations"], int) or o["iterations"] < 1:
        raise LipsError(f"optimize.iterations must be an integer ≥ 1, got {o['iterations']!r}")
    if not isinstance(params["finetune"]["epochs"], int) or params["finetune"]["epochs"] < 1:
        raise LipsError(f"finetune.epochs must be an integer ≥ 1, got {params['finetune']['epochs']!r}")
    targets = Targets(float(s["target_gflops"]), float(s["target_map"]), float(s["gflops_tol"]))
    rule = RuleParams(**{k: float(s[k]) for k in ("kappa_cost", "step_cost", "kappa_acc", "step_acc", "damping",
                                                  "margin", "r_min", "r_max")})  # fmt: skip
    if base_gflops is not None and targets.gflops >= base_gflops:
        raise LipsError(f"target {targets.gflops} GFLOPs is not below the base model's {base_gflops:.3f}; lower it")
    return targets, rule


def prepare_data(data, report: str, out: Path) -> tuple[str, str, str]:
    """(data yaml, selection split, report split) for `optimize.report`, checked to have labels."""
    _, select, report_split = REPORTS[report]
    if report == "half":
        return str(split_halves(data, out / "data")), select, report_split
    info = check_data(data, splits=("train", select, report_split))
    return info["yaml_file"], select, report_split


def optimize(params: dict, out: str | os.PathLike = "runs", progress: bool = True) -> dict:
    """The LIPS loop on `params` (load_params' result) in the run folder `out`, resuming what is there.
    Returns {'best': best.json's record, 'history': DataFrame of history.csv}."""
    out = Path(out)
    targets, rule = check_params(params)
    check_writable(out / "state.json")
    state_file = out / "state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else None
    if state and state["params"] != _fingerprint(params):
        changed = sorted(k for k in set(state["params"]) | set(params)
                         if k not in FINGERPRINT_IGNORES and state["params"].get(k) != params.get(k))  # fmt: skip
        raise LipsError(f"{out} holds a run with other parameters (changed: {', '.join(changed)}); "
                        f"use another --out or delete {out} to start fresh")  # fmt: skip
    base = load_model(params["base"])
    o, ft = params["optimize"], params["finetune"]
    if state is None:
        base_cost = cost(base)
        check_params(params, base_cost.gflops)
        importance = load_importance(o["importance"], base)
        data, select, report = prepare_data(params["data"], o["report"], out)
        state = {"params": _fingerprint(params), "importance": importance, "data": data,
                 "split_select": select, "split_report": report,
                 "base_gflops": base_cost.gflops, "ratios": initial_ratios(base, importance, params, targets),
                 "layer_cost": layer_costs(base, o["criterion"]),
                 "rule_state": None, "done": []}  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        write_json(state_file, state)
    importance, data = state["importance"], state["data"]
    select_split, report_split = state["split_select"], state["split_report"]
    iterations = range(len(state["done"]) + 1, o["iterations"] + 1)
    from tqdm.auto import tqdm

    for k in tqdm(iterations, desc="LIPS iterations", disable=not progress, initial=len(state["done"]),
                  total=o["iterations"]):  # fmt: skip
        it = out / f"iter_{k:02d}"
        if it.exists():  # left by a run killed in this iteration
            shutil.rmtree(it)
        ratios = state["ratios"]
        res = prune(base, ratios, criterion=o["criterion"], track=o["warm_start"])
        inherited = _warm_start(base, res, out, state["done"][-1], o["criterion"]) if o["warm_start"] and k > 1 else 0.0
        write_spec(it / "final" / "prune_spec.txt", ratios)
        write_log(res.log, it / "prune_directed_log.csv")
        pruned = save_checkpoint(res.model, it / "final" / "pruned.pt",
                                 meta={"iteration": k, "ratios": ratios, "inherited": inherited})  # fmt: skip
        train = {k2: v for k2, v in ft.items() if k2 != "recipe"}
        tuned = finetune(pruned, data, it / "ft" / "finetune", recipe=ft["recipe"], imgsz=params["imgsz"],
                         device=params["device"], threads=params["threads"], **train)["weights"]  # fmt: skip
        ev = dict(imgsz=params["imgsz"], device=params["device"], threads=params["threads"])
        sel = evaluate(tuned, data, split=select_split, **ev)
        rep = evaluate(tuned, data, split=report_split, **ev) if report_split != select_split else sel
        new_ratios, rule_state = update(ratios, importance, sel, targets, state["rule_state"], rule,
                                        state["layer_cost"])  # fmt: skip
        row = {"iteration": k, "gflops": sel["gflops"], "params": sel["params"], "map50_95": sel["map50_95"],
               "map50": sel["map50"], "gate": rule_state["gate"], "step": rule_state["step"],
               "report_map50_95": rep["map50_95"], "report_map50": rep["map50"]}  # fmt: skip
        write_json(it / "metrics.json", {**row, "selection": sel, "report": rep, "ratios": ratios,
                                         "inherited": inherited})  # fmt: skip
        state.update(ratios=new_ratios, rule_state=rule_state, done=state["done"] + [{**row, "ratios": ratios}])
        write_json(state_file, state)  # the iteration is done from here on
        _write_history(out, state["done"])
    return _finish(out, state, targets, float(o["best_gflops_tol"]))


def tuned_weights(out: Path, iteration: int) -> Path:
    return out / f"iter_{iteration:02d}" / "ft" / "finetune" / "weights" / "last_pruned_full.pt"


def _warm_start(base, res, out: Path, prev: dict, criterion: str) -> float:
    """Give `res.model` the previous iteration's fine-tuned weights where both keep the same base
    elements. Read from its saved checkpoint (as a resumed run would), so resuming changes nothing."""
    from lipslib.warmstart import inherit

    donor = load_model(tuned_weights(out, prev["iteration"]))
    donor_origin = prune(base, prev["ratios"], criterion=criterion, log=False, track=True).origin
    return inherit(res.model, res.origin, donor, donor_origin)


def initial_ratios(base, importance, params, targets) -> dict[str, float]:
    s = params["schedule"]
    names = default_targets(base)
    imp = {k: importance.get(k, 0.0) for k in names}

    def shape(ratio):
        return initial_schedule(imp, s["initial"], ratio, float(s["spread"]), float(s["r_min"]), float(s["r_max"]))

    if s["initial_ratio"] == "auto":
        return calibrate(base, shape, targets.gflops, params["optimize"]["criterion"], hi=float(s["r_max"]))[1]
    return shape(float(s["initial_ratio"]))


def _write_history(out: Path, done: list[dict]) -> None:
    df = pd.DataFrame(done, columns=HISTORY_COLUMNS)
    tmp = out / "history.csv.tmp"
    df.to_csv(tmp, index=False, float_format="%.6f")
    os.replace(tmp, out / "history.csv")


def _finish(out: Path, state: dict, targets: Targets, tol: float) -> dict:
    from lipslib.plots import layer_iteration

    done = pd.DataFrame(state["done"])
    within = done[done.gflops <= targets.gflops * (1 + tol)]
    pick = within.loc[within.map50_95.idxmax()] if len(within) else done.loc[done.gflops.idxmin()]
    k = int(pick.iteration)
    weights = tuned_weights(out, k)
    shutil.copyfile(weights, out / "best.pt")
    best = {"iteration": k, "weights": str(weights), "stable_path": str(out / "best.pt"),
            "gflops": float(pick.gflops), "params": int(pick.params),
            "map50_95": float(pick.report_map50_95), "map50": float(pick.report_map50),
            "selection_map50_95": float(pick.map50_95), "data": state["data"],
            "split_select": state["split_select"], "split_report": state["split_report"],
            "within_target": bool(len(within)), "target_gflops": targets.gflops, "gflops_tol": tol}  # fmt: skip
    write_json(out / "best.json", best)
    wide = pd.DataFrame([{"iteration": d["iteration"], **d["ratios"]} for d in state["done"]]).set_index("iteration")
    layer_iteration(wide, state["importance"], out / "layer_iteration.png", title="LIPS ratios per iteration")
    return {"best": best, "history": done[HISTORY_COLUMNS]}
