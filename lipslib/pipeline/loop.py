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
import time
from pathlib import Path

import pandas as pd
import yaml

from lipslib.cfg.settings import REPORTS, LoopSettings, loop_settings
from lipslib.datasets import calibration_images, check_data, split_images
from lipslib.errors import LipsError
from lipslib.files import check_writable, write_json
from lipslib.pruning.costs import GflopsCost, bisect, cost_model
from lipslib.pruning.engine import load_model, prune, save_checkpoint, write_log
from lipslib.pruning.layers import default_targets, validate_layers
from lipslib.pruning.spec import write_spec
from lipslib.recovery import recover
from lipslib.recovery.lsq import channel_criterion
from lipslib.recovery.warmstart import inherit
from lipslib.schedule import RuleParams, Targets, initial_schedule, lengthen_step, update
from lipslib.train.trainer import finetune
from lipslib.train.validator import evaluate

HISTORY_COLUMNS = [
    "iteration",
    "gflops",
    "params",
    "map50_95",
    "map50",
    "gate",
    "step",
    "report_map50_95",
    "report_map50",
    "cost",
]
FINGERPRINT_IGNORES = ("threads", "profile")  # may change between a run and its resume
MS_GRID = 6  # a bisection on measured ms scans this many cuts first (`costs.bisect`: ms need not fall everywhere)


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
    doc = {
        "path": str(Path(info["path"]).resolve()),
        "train": info["train"],
        "val": str((out / "select.txt").resolve()),
        "test": str((out / "report.txt").resolve()),
        "names": info["names"],
    }
    path = out / f"{Path(info['yaml_file']).stem}_halves.yaml"  # the name says what data it is
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def calibrate(
    base,
    shape,
    target: float,
    criterion: str = "l1",
    lo: float = 0.0,
    hi: float = 0.9,
    steps: int = 14,
    measure=None,
    round_to: int | None = None,
    grid: int = 0,
) -> tuple[float, dict[str, float], float]:
    """The scalar s of a schedule family `shape(s) -> ratios` at which pruning `base` costs `target`
    (`measure`: a model's cost, default GFLOPs; `grid`: see `costs.bisect`). Returns (s, ratios, cost)."""
    s, _, c = bisect(
        lambda x: prune(base, shape(x), criterion=criterion, round_to=round_to, log=False).model,
        target,
        measure or GflopsCost().measure,
        lo,
        hi,
        steps,
        grid,
    )
    return s, shape(s), c


def load_importance(spec, base) -> dict[str, float]:
    from lipslib.assets.resolve import paper_dir

    path = paper_dir() / "layer_importance.json" if spec == "paper" else Path(spec)
    if not path.is_file():
        raise LipsError(f"importance file {path} not found; run `lips sensitivity` or set optimize.importance: paper")
    importance = json.loads(path.read_text())
    validate_layers(base, importance)
    return {k: float(v) for k, v in importance.items()}


def _fingerprint(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in FINGERPRINT_IGNORES}


def prepare_data(data, report: str, out: Path) -> tuple[str, str, str]:
    """(data yaml, selection split, report split) for `optimize.report`, checked to have labels."""
    _, select, report_split = REPORTS[report]
    if report == "half":
        return str(split_halves(data, out / "data")), select, report_split
    info = check_data(data, splits=("train", select, report_split))
    return info["yaml_file"], select, report_split


def optimize(params: dict, out: str | os.PathLike = "runs", progress: bool = True) -> dict:
    """The LIPS loop: prune the base → recover → fine-tune → evaluate → update the ratios, `optimize.iterations`
    times, in the run folder `out`, resuming what a killed run left there.

    Each iteration prunes the *base* afresh with the current ratios (relative to the base's widths), recovers the
    copy as `recover:` says (bias repair or least-squares reconstruction; with `optimize.warm_start` it first
    inherits the previous iteration's fine-tuned weights), fine-tunes it (`finetune:`, `recipes:`, distillation),
    scores it on the selection split, and moves the ratios by the gate rule (`schedule.update`): the cost gate
    while the cost (GFLOPs, or measured ms with `schedule.target_ms`) is above the target, the accuracy gate
    otherwise. The best iteration is the one with the highest selection mAP within the cost target; it is
    reported on the report split, which chose nothing (`optimize.report`).

    Args:
        params: the configuration (`load_params`' result; the same dict a notebook gets from `nb.params`).
        out: the run folder. It receives, per iteration k, `iter_kk/final/{prune_spec.txt,pruned.pt}`,
            `iter_kk/prune_directed_log.csv`, `iter_kk/ft/finetune/` (Ultralytics' run: args.yaml, results.csv,
            weights/last_pruned_full.pt) and `iter_kk/metrics.json`; and `history.csv`, `state.json`, `best.json`,
            `best.pt` and `layer_iteration.png`. A folder holding a run with other parameters is refused.
        progress: show a tqdm bar over the iterations.

    Returns:
        `{'best': best.json's record (iteration, weights, gflops, params, map50_95 and map50 on the report split,
        selection_map50_95, cost, cost_unit, within_target, the splits used), 'history': history.csv as a
        DataFrame (one row per iteration: gflops, params, mAPs, gate, step, cost)}`.

    Raises:
        LipsError: a bad setting (`loop_settings`, before any work), a target not below the base's cost, an
            out folder holding a run with other parameters, or a failed fine-tune (its message).

    Examples:
        >>> import lipslib as L
        >>> params = L.load_params("params.yaml", "demo", {"schedule.target_gflops": 3.8})  # doctest: +SKIP
        >>> res = L.optimize(params, "runs/demo")                                           # doctest: +SKIP
        >>> res["best"]["gflops"], res["best"]["map50_95"]                                  # doctest: +SKIP
    """
    out = Path(out)
    cfg = loop_settings(params)  # parsed once: everything below reads the typed settings
    targets, rule, round_to, recovery = cfg.targets, cfg.rule, cfg.round_to, cfg.recovery
    check_writable(out / "state.json")
    state_file = out / "state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else None
    if state and state["params"] != _fingerprint(params):
        changed = sorted(
            k
            for k in set(state["params"]) | set(params)
            if k not in FINGERPRINT_IGNORES and state["params"].get(k) != params.get(k)
        )
        raise LipsError(
            f"{out} holds a run with other parameters (changed: {', '.join(changed)}); "
            f"use another --out or delete {out} to start fresh"
        )
    base = load_base(cfg)
    calibration = None
    base_grams: dict = {}  # the base's Grams: reconstruction of every fresh copy, and the lsq criterion

    def images():
        nonlocal calibration
        if calibration is None:
            calibration = calibration_images(cfg.data, "train", recovery.images, cfg.imgsz)
        return calibration

    criterion = channel_criterion(cfg.criterion, base, images, base_grams, recovery.ridge, cfg.device)
    if state is None:
        costs = cost_model(cfg.latency, base)
        base_cost = costs.measure(base)
        cfg.check_base_cost(base_cost)
        importance = load_importance(cfg.importance, base)
        data, select, report = prepare_data(cfg.data, cfg.report, out)
        state = {
            "params": _fingerprint(params),
            "importance": importance,
            "data": data,
            "split_select": select,
            "split_report": report,
            "cost": costs.state(),
            "cost_unit": costs.unit,
            "base_cost": base_cost,
            "ratios": initial_ratios(base, importance, cfg, costs, base_cost, criterion),
            "layer_cost": costs.layer_costs(base, criterion, round_to),
            "rule_state": None,
            "done": [],
        }
        out.mkdir(parents=True, exist_ok=True)
        write_json(state_file, state)
    costs = cost_model(cfg.latency, base, state["cost"])
    importance, data = state["importance"], state["data"]
    select_split, report_split = state["split_select"], state["split_report"]
    iterations = range(len(state["done"]) + 1, cfg.iterations + 1)
    from tqdm.auto import tqdm

    for k in tqdm(
        iterations, desc="LIPS iterations", disable=not progress, initial=len(state["done"]), total=cfg.iterations
    ):
        it, t0 = out / f"iter_{k:02d}", time.perf_counter()
        if it.exists():  # left by a run killed in this iteration
            shutil.rmtree(it)
        ratios = state["ratios"]
        warm = cfg.warm_start and k > 1
        res = prune(base, ratios, criterion=criterion, round_to=round_to, track=cfg.warm_start or recovery.refits)
        donor, donor_origin, inherited = None, None, 0.0
        if warm:
            donor, donor_origin = _previous(base, out, state["done"][-1], criterion, round_to)
            inherited = inherit(res.model, res.origin, donor, donor_origin)
        if recovery.refits:  # after inheriting: a warm copy's new cuts remove the donor's tuned channels
            recover(
                res,
                base,
                images(),
                recovery,
                donor=donor,
                donor_origin=donor_origin,
                gram_cache=None if warm else base_grams,
                device=cfg.device,
            )
        write_spec(it / "final" / "prune_spec.txt", ratios)
        write_log(res.log, it / "prune_directed_log.csv")
        pruned = save_checkpoint(
            res.model, it / "final" / "pruned.pt", meta={"iteration": k, "ratios": ratios, "inherited": inherited}
        )
        tuned = finetune(pruned, data, it / "ft" / "finetune", **cfg.finetune_args())
        ev = dict(imgsz=cfg.imgsz, device=cfg.device, threads=cfg.threads)
        sel = tuned["metrics"]  # the tuned weights on the val split, which is the selection split
        rep = evaluate(tuned["weights"], data, split=report_split, **ev) if report_split != select_split else sel
        measured = sel["gflops"] if costs.unit == "GFLOPs" else costs.measure(load_model(tuned["weights"]))
        new_ratios, rule_state = update(
            ratios,
            importance,
            {"cost": measured, "map50_95": sel["map50_95"]},
            targets,
            state["rule_state"],
            rule,
            state["layer_cost"],
        )
        if rule_state["gate"] == "cost" and (round_to or rule.kappa_cost is None):
            new_ratios, rule_state["step_factor"] = cost_step(
                base, ratios, new_ratios, costs, criterion, round_to, rule, targets
            )
        row = {
            "iteration": k,
            "gflops": sel["gflops"],
            "params": sel["params"],
            "map50_95": sel["map50_95"],
            "map50": sel["map50"],
            "gate": rule_state["gate"],
            "step": rule_state["step"],
            "report_map50_95": rep["map50_95"],
            "report_map50": rep["map50"],
            "cost": measured,
        }
        factor = {"step_factor": rule_state["step_factor"]} if "step_factor" in rule_state else {}
        seconds = round(time.perf_counter() - t0, 1)  # the iteration's wall time, kept across resumes
        write_json(
            it / "metrics.json",
            {
                **row,
                "selection": sel,
                "report": rep,
                "ratios": ratios,
                "inherited": inherited,
                "seconds": seconds,
                **factor,
            },
        )
        state.update(
            ratios=new_ratios,
            rule_state=rule_state,
            done=state["done"] + [{**row, "ratios": ratios, "seconds": seconds}],
        )
        write_json(state_file, state)  # the iteration is done from here on
        _write_history(out, state["done"])
    return _finish(out, state, targets, cfg.best_cost_tol)


def load_base(cfg: LoopSettings):
    """The model every cut starts from: `cfg.base`, with `cfg.pad` its widths padded up to multiples of `round_to`
    by zero channels (same outputs; `pruning.align`), so that every kept width is a multiple."""
    from lipslib.pruning.engine import has_batchnorm

    base = load_model(cfg.base)
    if cfg.pad:
        from lipslib.pruning.align import padded, rounded_up

        if has_batchnorm(base):  # padding fuses the base: its recipe (auto) would change with it
            raise LipsError(
                f"schedule.pad pads BN-free models (fused, as the authors' checkpoints); {cfg.base} has "
                "BatchNorm: fuse it first or leave pad off"
            )
        wanted = rounded_up(base, cfg.round_to)
        base = padded(base, wanted) if wanted else base
    return base


def cost_step(
    base, ratios: dict, new: dict, costs, criterion: str, round_to: int | None, rule: RuleParams, targets: Targets
) -> tuple[dict, float]:
    """The cost-gate step `ratios` → `new`, lengthened (schedule.lengthen_step) until its pruned copy of `base`
    saves, by the cost's prediction, what the step is for: with κ_c auto, down to the gate's threshold
    target·(1 + tol); with round_to, at least what the step saves unrounded. Returns the ratios and the factor."""

    def cost_of(r, rounding=round_to):
        return costs.predict(prune(base, r, criterion=criterion, round_to=rounding, log=False).model)

    now = cost_of(ratios)
    saving = cost_of(ratios, None) - cost_of(new, None) if round_to else 0.0
    if rule.kappa_cost is None:
        saving = max(saving, now - targets.cost * (1 + targets.cost_tol))
    return lengthen_step(ratios, new, cost_of, now - saving, rule)


def tuned_weights(out: Path, iteration: int) -> Path:
    return out / f"iter_{iteration:02d}" / "ft" / "finetune" / "weights" / "last_pruned_full.pt"


def _previous(base, out: Path, prev: dict, criterion: str, round_to: int | None) -> tuple:
    """(the previous iteration's fine-tuned model, its channel origins in `base`), read from its saved
    checkpoint (as a resumed run would), so resuming changes nothing."""
    donor = load_model(tuned_weights(out, prev["iteration"]))
    donor_origin = prune(base, prev["ratios"], criterion=criterion, round_to=round_to, log=False, track=True).origin
    return donor, donor_origin


def initial_ratios(
    base, importance: dict[str, float], cfg: LoopSettings, costs=None, base_cost=None, criterion=None
) -> dict[str, float]:
    """The starting schedule: uniform or importance-shaped, at `cfg.start.ratio`, or with `auto` at the ratio
    whose pruned copy costs target + start·(base_cost − target), by the cost's prediction.

    Args:
        base: the unpruned model.
        importance: `{layer: importance}`; layers it lacks count as 0.
        cfg: the loop's settings (`settings.loop_settings`).
        costs: the loop's cost (`costs.cost_model`); default GFLOPs.
        base_cost: the base's cost in that unit; default the target (an `auto` start then lands on it).
        criterion: the channel criterion as `prune` takes it (default `cfg.criterion`, which must then be a
            plain name).

    Returns:
        `{layer: ratio}` for every target layer of `base`.
    """
    start, rule = cfg.start, cfg.rule
    imp = {k: importance.get(k, 0.0) for k in default_targets(base)}

    def shape(ratio):
        return initial_schedule(imp, start.initial, ratio, float(start.spread), rule.r_min, rule.r_max)

    if start.ratio is None:
        target = cfg.targets.cost
        return calibrate(
            base,
            shape,
            target + float(start.start) * ((base_cost or target) - target),
            criterion or cfg.criterion,
            hi=rule.r_max,
            measure=(costs or GflopsCost()).predict,
            round_to=cfg.round_to,
            grid=0 if cfg.latency is None else MS_GRID,
        )[1]
    return shape(float(start.ratio))


def _write_history(out: Path, done: list[dict]) -> None:
    df = pd.DataFrame(done, columns=HISTORY_COLUMNS)
    tmp = out / "history.csv.tmp"
    df.to_csv(tmp, index=False, float_format="%.6f")
    os.replace(tmp, out / "history.csv")


def _finish(out: Path, state: dict, targets: Targets, tol: float) -> dict:
    from lipslib.pipeline.plots import layer_iteration

    done = pd.DataFrame(state["done"])
    within = done[done.cost <= targets.cost * (1 + tol)]
    pick = within.loc[within.map50_95.idxmax()] if len(within) else done.loc[done.cost.idxmin()]
    k = int(pick.iteration)
    weights = tuned_weights(out, k)
    shutil.copyfile(weights, out / "best.pt")
    best = {
        "iteration": k,
        "weights": str(weights),
        "stable_path": str(out / "best.pt"),
        "gflops": float(pick.gflops),
        "params": int(pick.params),
        "map50_95": float(pick.report_map50_95),
        "map50": float(pick.report_map50),
        "selection_map50_95": float(pick.map50_95),
        "data": state["data"],
        "split_select": state["split_select"],
        "split_report": state["split_report"],
        "cost": float(pick.cost),
        "cost_unit": state["cost_unit"],
        "target_cost": targets.cost,
        "cost_tol": tol,
        "within_target": bool(len(within)),
    }
    write_json(out / "best.json", best)
    wide = pd.DataFrame([{"iteration": d["iteration"], **d["ratios"]} for d in state["done"]]).set_index("iteration")
    layer_iteration(wide, state["importance"], out / "layer_iteration.png", title="LIPS ratios per iteration")
    return {"best": best, "history": done[HISTORY_COLUMNS]}
