"""Allocation search after reconstruction: which per-layer schedule, cut once and refit, keeps the most before any
fine-tuning.

With least-squares reconstruction a cut is judged in seconds (prune, refit on the calibration images, validate),
so instead of the loop's train-then-move steps, many schedules at the budget can be tried and the best fine-tuned
once. The candidates surround the Stage I shape: the importance-shaped schedule at several spreads, and the Stage
I vector perturbed (Gaussian noise on each layer's importance, clipped to [0, 1]) at the default spread; each is
bisected to the budget like the `shaped` baseline (`pruning.baselines.at_gflops`), recovered as the run says, and
scored on the selection split only — the images that report a model never choose it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch.nn as nn

from lipslib.errors import LipsError


def candidates(
    importance: dict[str, float], spreads=(0.0, 0.1, 0.2, 0.3, 0.4), draws: int = 8, noise: float = 0.15, seed: int = 0
) -> list[dict]:
    """The schedules tried: {'label', 'importance', 'spread'} for each spread of the Stage I vector, and `draws`
    perturbations of it (importance + N(0, noise), clipped to [0, 1]) at spread 0.2."""
    if draws < 0 or noise < 0:
        raise LipsError(f"search draws and noise must be ≥ 0, got {draws}, {noise}")
    rng = np.random.default_rng(seed)
    out = [{"label": f"spread {s:g}", "importance": dict(importance), "spread": float(s)} for s in spreads]
    names = sorted(importance)
    for k in range(draws):
        moved = np.clip(np.array([importance[n] for n in names]) + rng.normal(0, noise, len(names)), 0, 1)
        out.append({"label": f"draw {k + 1}", "importance": dict(zip(names, moved.tolist())), "spread": 0.2})
    return out


def allocation_search(
    base: nn.Module,
    importance: dict[str, float],
    budget: float,
    data: str | os.PathLike,
    *,
    select: str = "val",
    images=None,
    recovery=None,
    criterion="l1",
    round_to: int | None = None,
    r_max: float = 0.9,
    imgsz: int = 640,
    device=None,
    threads: int | None = None,
    spreads=(0.0, 0.1, 0.2, 0.3, 0.4),
    draws: int = 8,
    noise: float = 0.15,
    seed: int = 0,
    gram_cache: dict | None = None,
    progress: bool = True,
) -> dict:
    """Try schedules around the Stage I shape at a GFLOPs budget, each cut once, recovered and scored on `select`.

    Args:
        base: the model pruned (not changed).
        importance: the Stage I vector.
        budget: GFLOPs at 640.
        data: the dataset yaml.
        select: the split that scores candidates (never the one that reports: `test` is refused).
        images: calibration images for the recovery and for an `lsq` criterion.
        recovery: a `Recovery` applied after each cut (None: none).
        criterion: the channel choice, as `engine.prune` takes it (e.g. `recovery.lsq.channel_criterion`'s).
        round_to: kept widths rounded to multiples of this.
        r_max: the largest ratio.
        imgsz: validation size.
        device: where validation runs (None: Ultralytics' choice).
        threads: CPU threads.
        spreads: the Stage I shapes tried.
        draws: perturbed vectors tried at spread 0.2.
        noise: the perturbations' standard deviation.
        seed: their generator's seed.
        gram_cache: the base's Grams, reused across candidates (filled where missing).
        progress: a tqdm bar over the candidates.

    Returns:
        `{'best': the winning candidate ({'label', 'spread', 'importance', 'ratios', 'gflops', 'map50_95'}),
        'tried': every candidate's label, spread, GFLOPs and selection mAP, 'split': select}`.

    Raises:
        LipsError: `select` is `test`, or what `at_gflops` refuses (a budget not below the base).

    Examples:
        >>> found = allocation_search(base, imp, 3.4, "coco_val2193.yaml", images=cal)  # doctest: +SKIP
        >>> found["best"]["label"], found["best"]["map50_95"]                           # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    from lipslib.pruning.baselines import at_gflops
    from lipslib.pruning.engine import prune, save_checkpoint
    from lipslib.recovery import recover
    from lipslib.train.validator import evaluate

    if select == "test":
        raise LipsError("the allocation search scores on the selection split; test reports and chooses nothing")
    tried = []
    cache = {} if gram_cache is None else gram_cache
    with tempfile.TemporaryDirectory() as tmp:
        for c in tqdm(
            candidates(importance, spreads, draws, noise, seed), desc="allocation search", disable=not progress
        ):
            cut = at_gflops(
                "shaped",
                base,
                budget,
                importance=c["importance"],
                spread=c["spread"],
                r_max=r_max,
                criterion=criterion,
                round_to=round_to,
            )
            model = cut["model"]
            if recovery is not None and recovery.refits:
                res = prune(base, cut["ratios"], criterion=criterion, round_to=round_to, log=False, track=True)
                recover(res, base, images, recovery, gram_cache=cache, device=device)
                model = res.model
            path = save_checkpoint(model, Path(tmp) / "candidate.pt")
            score = evaluate(path, data, split=select, imgsz=imgsz, device=device, threads=threads)["map50_95"]
            tried.append({**c, "ratios": cut["ratios"], "gflops": cut["gflops"], "map50_95": score})
    best = max(tried, key=lambda c: c["map50_95"])
    return {
        "best": best,
        "tried": [{k: c[k] for k in ("label", "spread", "gflops", "map50_95")} for c in tried],
        "split": select,
    }
