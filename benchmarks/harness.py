"""What the benchmark scripts share: one harness, so that every method is cut, recovered, fine-tuned and scored
the same way, and its scores are compared on the same image resamples.

- methods: Stage I on the fine-tune split (`stage1`), a one-shot cut at a GFLOPs budget (`one_shot`), the LIPS loop
  (`loop`), the unpruned base through the same fine-tuning (`control`), each resumable from its run folder;
- scores: per-image matches on the report split and their paired bootstrap (`run_maps`, `bootstrap_maps`,
  `ratio_interval`, `paired_bootstrap`), mAP50-95 recomputed from the matches (`map50_95`);
- the command line they share (`setting_args`, `parse_floats`, `parse_seeds`) and what a record says of the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from lipslib.cfg.settings import loop_settings
from lipslib.datasets import calibration_images
from lipslib.errors import LipsError
from lipslib.files import write_json
from lipslib.pipeline.loop import load_base, optimize, prepare_data
from lipslib.pipeline.search import allocation_search
from lipslib.pruning.baselines import at_gflops, tracked
from lipslib.pruning.costs import cost_model
from lipslib.pruning.engine import prune, save_checkpoint
from lipslib.recovery import Recovery, recover
from lipslib.recovery.lsq import channel_criterion
from lipslib.sensitivity import run_sensitivity
from lipslib.train.trainer import finetune
from lipslib.train.validator import evaluate, image_matches

PLAIN = {"recover.repair": False, "recover.reconstruct": False, "recover.distill": "none", "optimize.criterion": "l1"}


RECOVERIES = {  # a method's suffix → its channel choice and recovery; the part before the first _ is the schedule
    "": PLAIN,
    "recover": {**PLAIN, "recover.repair": True, "recover.distill": "outputs"},  # bias repair + output distillation
    "recon": {**PLAIN, "recover.reconstruct": True},  # L1 channels, least-squares reconstruction, plain fine-tuning
    "recon_distill": {**PLAIN, "recover.reconstruct": True, "recover.distill": "outputs"},
    "recon_lsq": {**PLAIN, "recover.reconstruct": True, "optimize.criterion": "lsq"},  # channels chosen for the refit
    "recon_lsq_distill": {
        **PLAIN,
        "recover.reconstruct": True,
        "optimize.criterion": "lsq",
        "recover.distill": "outputs",
    },
    # greedy second-order channel choice (lsq_greedy), least squares, distillation
    "recon_greedy_distill": {
        **PLAIN,
        "recover.reconstruct": True,
        "optimize.criterion": "lsq_greedy",
        "recover.distill": "outputs",
    },
}


GFLOPS_TOL = 0.01  # a one-shot cut lands within 1 % of its GFLOPs budget
HARD_GOAL = 1.5  # the first benchmark's goal: LIPS ≥ 1.5 × uniform's mAP50-95 at the hard budget


def parse_seeds(text: str) -> list[int]:
    """--seeds: distinct non-negative integers, comma-separated."""
    try:
        seeds = [int(x) for x in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise LipsError(f"--seeds {text!r}: give distinct non-negative integers, e.g. --seeds 0,1,2")
    return seeds


def parse_floats(text: str, flag: str, example: str) -> list[float]:
    """A list argument such as --budgets: distinct finite numbers, comma-separated."""
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(np.isfinite(values)) or len(set(values)) != len(values):
        raise LipsError(f"--{flag} {text!r}: give distinct numbers, comma-separated, e.g. --{flag} {example}")
    return values


def machine() -> dict:
    """What a benchmark ran on, for its JSON: the CPU's name and the instruction sets runtimes choose kernels by
    (AMX, AVX-512 bf16 and VNNI: whether "FP32" runs in bf16 and how fast INT8 is)."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), cpu)
        flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    except OSError:
        pass
    wanted = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "isa": [f for f in wanted if f in flags],
    }


def split_method(method: str) -> tuple[str, str]:
    """(schedule, recovery suffix): 'uniform_recon_distill' → ('uniform', 'recon_distill')."""
    kind, _, suffix = method.partition("_")
    if suffix not in RECOVERIES:
        known = ", ".join(filter(None, RECOVERIES))
        raise LipsError(f"method {method!r}: unknown recovery {suffix!r}; recoveries: {known}")
    return kind, suffix


def stage1(params: dict, work: Path, variant: str = "") -> Path:
    """Stage I on the base over the fine-tune split (images that neither choose nor report), each cut made and
    recovered as the methods of `variant` (a RECOVERIES suffix) make theirs."""
    out = work / "_".join(filter(None, ("sensitivity", variant.removesuffix("_distill"))))
    if not (out / "layer_importance.json").is_file():
        s = params["sensitivity"]
        recovery = Recovery.from_params(params["recover"])
        run_sensitivity(
            params["base"],
            params["data"],
            ratio=s["ratio"],
            imgsz=params["imgsz"],
            batch=s["batch"],
            device=params["device"],
            split="train",
            threads=params["threads"],
            out=out,
            criterion=params["optimize"]["criterion"],
            recovery=recovery if recovery.refits else None,
        )
    return out / "layer_importance.json"


def calibrated(params: dict, base, data) -> tuple:
    """(calibration images, the run's channel criterion as `prune` takes it, the base's Grams) for a run's params."""
    recovery = Recovery.from_params(params["recover"])
    images = calibration_images(data, "train", recovery.images, params["imgsz"])
    found: dict = {}
    return (
        images,
        channel_criterion(params["optimize"]["criterion"], base, images, found, recovery.ridge, params["device"]),
        found,
    )


def cut_scores(kind: str, base, cut: dict, params: dict, data, report: str, out: Path, calibration: tuple) -> dict:
    """mAP50-95 before any fine-tuning of one cut (`cut`: at_gflops' result, or {'ratios'} of a LIPS schedule) with
    the run's recovery, and for a reconstructed run the same cut with bias repair alone (the ≥ 3× goal).
    `calibration`: `calibrated(params, base, data)`. Returns {'model': the recovered copy, 'map50_95_before_ft',
    ['map50_95_before_ft_repair']}."""
    recovery = Recovery.from_params(params["recover"])
    images, criterion, found = calibration
    s = params["schedule"]
    ev = dict(imgsz=params["imgsz"], device=params["device"], threads=params["threads"])

    def recovered(settings: Recovery):
        if not settings.refits:
            return (
                cut["model"]
                if "model" in cut
                else prune(base, cut["ratios"], criterion=criterion, round_to=s["round_to"], log=False).model
            )
        res, ref = tracked(kind, base, cut, criterion=criterion, round_to=s["round_to"], r_max=float(s["r_max"]))
        recover(res, ref, images, settings, gram_cache=found if ref is base else None, device=params["device"])
        return res.model

    model = recovered(recovery)
    path = save_checkpoint(
        model, out / "pruned.pt", meta={"baseline": kind, "ratios": cut.get("ratios"), "recover": recovery.as_dict()}
    )
    scores = {"model": model, "map50_95_before_ft": evaluate(path, data, split=report, **ev)["map50_95"]}
    if recovery.reconstruct:
        repaired = save_checkpoint(recovered(replace(recovery, reconstruct=False, repair=True)), out / "repaired.pt")
        scores["map50_95_before_ft_repair"] = evaluate(repaired, data, split=report, **ev)["map50_95"]
    return scores


def tuned_scores(weights, params: dict, data, report: str, epochs: int, out: Path) -> dict:
    """Fine-tune `weights` for `epochs` as the run's params say (into out/ft) and score it on the report split:
    the fields every method's row shares."""
    ev = dict(imgsz=params["imgsz"], device=params["device"], threads=params["threads"])
    tuned = finetune(weights, data, out / "ft", **loop_settings(params).finetune_args(epochs=epochs))
    after = evaluate(tuned["weights"], data, split=report, **ev)
    return {
        "gflops": after["gflops"],
        "params": after["params"],
        "map50_95": after["map50_95"],
        "map50": after["map50"],
        "selection_map50_95": tuned["map50_95"],
        "epochs_model": epochs,
        "epochs_total": epochs,
        "weights": tuned["weights"],
    }


def control(params: dict, epochs: int, work: Path) -> dict:
    """The unpruned base through the same fine-tuning as the one-shot methods (plain): what fine-tuning alone does."""
    out = work / "control"
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    data, _, report = prepare_data(params["data"], params["optimize"]["report"], out)
    ev = dict(imgsz=params["imgsz"], device=params["device"], threads=params["threads"])
    before = evaluate(params["base"], data, split=report, **ev)
    result = {
        **tuned_scores(params["base"], params, data, report, epochs, out),
        "map50_95_before_ft": before["map50_95"],
        "seconds": round(time.perf_counter() - t0),
    }
    write_json(done, result)
    return result


def loop(params: dict, out: Path) -> dict:
    """The LIPS loop; its best iteration as a row. Its `seconds` add up its iterations' wall times (the loop's
    records, kept across resumes); None for a run with iterations recorded before the loop kept them. Before
    fine-tuning: its best schedule cut afresh from the base with the run's recovery (for a recovering run)."""
    best = optimize(params, out, progress=False)["best"]
    state = json.loads((out / "state.json").read_text())
    seconds = [d.get("seconds") for d in state["done"]]
    per_iter, n = params["finetune"]["epochs"], params["optimize"]["iterations"]
    ratios = state["done"][best["iteration"] - 1]["ratios"]
    row = {
        "gflops": best["gflops"],
        "params": best["params"],
        "map50_95_before_ft": None,
        "map50_95": best["map50_95"],
        "map50": best["map50"],
        "selection_map50_95": best["selection_map50_95"],
        "epochs_model": per_iter * best["iteration"],
        "epochs_total": per_iter * n,
        "iteration": best["iteration"],
        "cost": best["cost"],
        "cost_unit": best["cost_unit"],
        "ratios": ratios,
        "weights": str(out / "best.pt"),
        "seconds": None if None in seconds else round(sum(seconds)),
    }
    if Recovery.from_params(params["recover"]).refits:
        scores = out / "before_ft.json"
        if not scores.is_file():
            base = load_base(loop_settings(params))
            found = cut_scores(
                "lips",
                base,
                {"ratios": ratios},
                params,
                state["data"],
                state["split_report"],
                out / "before_ft",
                calibrated(params, base, state["data"]),
            )
            write_json(scores, {k: v for k, v in found.items() if k != "model"})
        row.update(json.loads(scores.read_text()))
    return row


def one_shot(method: str, params: dict, importance: dict, budget: float, epochs: int, out: Path) -> dict:
    """Prune once to `budget` (a baseline method), optionally repair, fine-tune `epochs`, score. The budget is in
    the run's cost unit: GFLOPs, or milliseconds on the `latency:` settings when `schedule.target_ms` is set (the
    cut then bisected on the cost's prediction, `costs.LatencyCost.predict`)."""
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    base = load_base(loop_settings(params))
    s = params["schedule"]
    kind, _ = split_method(method)
    data, select, report = prepare_data(params["data"], params["optimize"]["report"], out)
    calibration = calibrated(params, base, data)
    latency = loop_settings(params).latency
    if kind == "search" and latency is not None:
        raise LipsError("the allocation search cuts to a GFLOPs budget; run it without schedule.target_ms")
    if kind == "search":  # the schedule chosen on the selection split among cuts recovered as the run says
        found = allocation_search(
            base,
            importance,
            budget,
            data,
            select=select,
            images=calibration[0],
            recovery=Recovery.from_params(params["recover"]),
            criterion=calibration[1],
            round_to=s["round_to"],
            r_max=float(s["r_max"]),
            imgsz=params["imgsz"],
            device=params["device"],
            threads=params["threads"],
            gram_cache=calibration[2],
        )
        write_json(out / "search.json", found)
        best = found["best"]
        pruned = {"ratios": best["ratios"], "gflops": best["gflops"], "cost": best["gflops"], "scalar": None}
        kind = "shaped"  # the cut is a shaped schedule of (perturbed) importance: made again by its ratios
    else:
        pruned = at_gflops(
            kind,
            base,
            budget,
            importance=importance,
            spread=float(s["spread"]),
            r_max=float(s["r_max"]),
            criterion=calibration[1],
            round_to=s["round_to"],
            cost=None if latency is None else cost_model(latency, base).predict,
        )
    scores = cut_scores(kind, base, pruned, params, data, report, out, calibration)
    result = {
        **tuned_scores(out / "pruned.pt", params, data, report, epochs, out),
        "scalar": pruned["scalar"],
        "predicted_cost": pruned["cost"],
        **{k: v for k, v in scores.items() if k != "model"},
        "ratios": pruned["ratios"],
        "seconds": round(time.perf_counter() - t0),
    }
    write_json(done, result)
    return result


def matches(row: dict, data, params: dict, split: str, cache: Path) -> list[dict]:
    """Ultralytics' per-image matches of a row's weights on the report split, cached; a cache whose mAP is not
    the row's (its run was redone since) is measured again."""
    if cache.is_file():
        m = torch.load(cache, weights_only=False)
        if abs(map50_95(m) - row["map50_95"]) <= 1e-6:
            return m
    m = image_matches(
        row["weights"], data, imgsz=params["imgsz"], device=params["device"], split=split, threads=params["threads"]
    )
    torch.save(m, cache)
    return m


def run_dir(work: Path, budget: float, method: str, seed: int) -> Path:
    return work / f"{budget:g}" / (method if seed == 0 else f"{method}_seed{seed}")


def with_seed(params: dict, seed: int) -> dict:
    """params fine-tuning with training seed `seed`; seed 0 is Ultralytics' default and leaves params as they are
    (so runs made before --seeds existed are still the loop's resumable runs)."""
    return params if seed == 0 else {**params, "finetune": {**params["finetune"], "seed": seed}}


def run_maps(row: dict, folder: Path, data, params: dict, split: str, images: int, resamples: int) -> np.ndarray:
    """The paired bootstrap mAPs of the run in `folder` (`resampled`), its matches and resamples cached beside it."""
    find = partial(matches, row, data, params, split, folder.with_suffix(".matches.pt"))
    return resampled(row, find, images, resamples, folder.with_suffix(f".boot{resamples}.npz"))


def resampled(row: dict, find, images: int, resamples: int, cache: Path) -> np.ndarray:
    """`bootstrap_maps` of one run, cached: over the same `images` report images its resamples are the same for
    every run (a fixed generator seed), so runs scored apart pair as if scored together. `find()` gives the run's
    per-image matches; it is called only when the cache is missing or of another mAP, image count or resample
    count. A run scored on other images than the base is one LipsError, as in `bootstrap_maps`."""
    if cache.is_file():
        c = np.load(cache)
        if (
            len(c["maps"]) == resamples
            and "images" in c.files
            and int(c["images"]) == images
            and abs(float(c["map50_95"]) - row["map50_95"]) <= 1e-6
        ):
            return c["maps"]
    found = find()
    if len(found) != images:
        raise LipsError(
            f"a paired bootstrap needs the same images for every model: {row['weights']} was matched "
            f"on {len(found)} images, the base scored on {images}"
        )
    maps = bootstrap_maps({"run": found}, resamples)["run"]
    np.savez(cache, maps=maps, map50_95=row["map50_95"], images=images)
    return maps


def draw_beside(plot, result: dict, out: Path, default_out: str, readme_copy: str) -> None:
    """`plot(result, path)` beside the JSON `out`; the README's copy (`readme_copy`) only from the default run."""
    plot(result, out.with_suffix(".png"))
    if out == Path(default_out):
        plot(result, Path(readme_copy))


def setting_args(description: str, default_out: str) -> argparse.ArgumentParser:
    """A parser with the arguments the benchmarks on one base and dataset share."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=default_out)
    p.add_argument("--figure-only", action="store_true", help="redraw the figure from --out")
    p.add_argument("--resamples", type=int, default=500, help="paired bootstrap resamples of the report images")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--profile", default="demo", help="schedule, recipe and Stage I settings come from here")
    p.add_argument("--base", default="lips_iter01_best.pt")
    p.add_argument("--data", default="coco_val2193.yaml")
    p.add_argument("--report", default="test", help="test: choose on val, report on test; half: split val in two")
    p.add_argument("--imgsz", type=int, default=320)
    return p


def map50_95(images: list[dict]) -> float:
    """mAP50-95 over these images, by Ultralytics' ap_per_class (classes present in their labels)."""
    from ultralytics.utils.metrics import ap_per_class

    cat = {k: np.concatenate([im[k] for im in images], 0) for k in ("tp", "conf", "pred_cls", "target_cls")}
    ap = ap_per_class(cat["tp"], cat["conf"], cat["pred_cls"], cat["target_cls"])[5]
    return float(ap.mean()) if len(ap) else 0.0


def bootstrap_maps(
    matches: dict[str, list[dict]], resamples: int = 1000, seed: int = 0, progress: bool = False
) -> dict[str, np.ndarray]:
    """Each model's mAP50-95 (`validator.image_matches` per model, the same images) over the same `resamples`
    resamples of the images with replacement: paired, so any two rows give a ratio's distribution."""
    from tqdm.auto import tqdm

    sizes = {len(m) for m in matches.values()}
    if len(sizes) != 1 or not sizes.pop():
        counts = ", ".join(f"{k}: {len(m)}" for k, m in matches.items())
        raise LipsError(f"a paired bootstrap needs the same images for every model (got {counts})")
    n = len(next(iter(matches.values())))
    rng = np.random.default_rng(seed)
    out = {k: np.empty(resamples) for k in matches}
    for r in tqdm(range(resamples), desc="bootstrap", disable=not progress):
        idx = rng.integers(0, n, n)
        for k, m in matches.items():
            out[k][r] = map50_95([m[i] for i in idx])
    return out


def pool_seeds(runs: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """One method fine-tuned with several training seeds, as one bootstrap distribution of its mean mAP.
    `runs`: per seed, `bootstrap_maps`' array for that run (all over the same image resamples). Each resample
    also draws the seeds with replacement, so intervals built from the result hold the spread between
    training runs as well as between images; a single seed is returned as it is."""
    stack = np.stack(runs)  # seeds × resamples
    if len(stack) == 1:
        return stack[0]
    pick = np.random.default_rng(seed).integers(0, len(stack), stack.shape)
    return np.take_along_axis(stack, pick, 0).mean(0)


def ratio_interval(a: np.ndarray, b: np.ndarray) -> dict:
    """How sure is "a beats b", from paired bootstrap mAPs: the ratio a/b's 2.5/50/97.5 percentiles and
    the share of resamples where a > b."""
    ratios = a / np.maximum(b, 1e-9)
    lo, mid, hi = np.percentile(ratios, [2.5, 50, 97.5])
    return {
        "ratio_ci95": [float(lo), float(hi)],
        "ratio_median": float(mid),
        "p_a_beats_b": float(np.mean(a > b)),
        "resamples": len(a),
    }


def paired_bootstrap(a: list[dict], b: list[dict], resamples: int = 1000, seed: int = 0) -> dict:
    """`ratio_interval` of models a and b (`validator.image_matches` on the same images)."""
    maps = bootstrap_maps({"a": a, "b": b}, resamples, seed)
    return {**ratio_interval(maps["a"], maps["b"]), "images": len(a)}
