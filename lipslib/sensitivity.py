"""Stage I: prune each target layer alone at ratio p, measure the mAP drop, normalise into importance.

    drop_i       = max(0, mAP_base − mAP_i)          (mAP50-95 on the chosen split)
    importance_i = drop_i / max_j drop_j              (the largest drop is exactly 1.0)

Fast path, same answer as one Ultralytics validation per layer: the validation images are loaded and
letterboxed by Ultralytics' own dataloader and validator, in a single pass over the data. For each batch
the base network runs once with every module call recorded; each pruned copy then recomputes only the
modules its pruning changed and whatever depends on them, reusing the base's outputs everywhere else
(`lipslib.pruning.memo`: earlier blocks, and the Detect branches a head layer does not feed). Every copy feeds
its own copy of the validator's metric state. Tensors are channels-last. On CPU the layers are spread
over one single-threaded process per core (small convolutions scale better over processes than over
threads). `mode="exact"` runs every pruned copy in full, contiguous, from the input, in one process.
"""

from __future__ import annotations

import copy
import math
import multiprocessing
import os
import queue
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from lipslib.cfg import CALIBRATED_CRITERIA, SENSITIVITY_MODES
from lipslib.datasets import calibration_images, check_data, split_images
from lipslib.errors import LipsError, first_line
from lipslib.files import check_writable, write_json
from lipslib.pruning.engine import CRITERION_NAMES, Cost, conv_shapes, cost_counter, fused, load_model, prune
from lipslib.pruning.layers import default_targets, validate_layers
from lipslib.pruning.memo import Recorder, bytes_per_image, reuse
from lipslib.recovery import Recovery, recover
from lipslib.recovery.lsq import channel_criterion
from lipslib.recovery.lsq import grams as conv_grams
from lipslib.runtime import cpu_threads, fp32_kernels, select_device, thread_count
from lipslib.train.validator import device_arg, make_validator, run_validator

COLUMNS = [  # the authors' prune_layerwise_results.csv
    "index",
    "layer_name",
    "ratio",
    "out_channels_before",
    "out_channels_after",
    "GMACs_before",
    "GMACs_after",
    "MParams_before",
    "MParams_after",
    "mAP_50_95",
    "mAP_50",
    "precision",
    "recall",
    "weights_path",
]
MODES = SENSITIVITY_MODES  # lipslib.cfg (the CLI's choices, without torch)
KEEP_BATCHES_BYTES = 2 << 30  # letterboxed uint8 images kept in memory between the two passes
MEMO_BYTES = 2 << 30  # default bound on the base activations the fast path holds, all processes together
# Our single pass must reproduce Ultralytics' own validation of the base. Both compute in fp32 (TF32 is
# switched off for the whole of Stage I, see `fp32_kernels`), so they differ by summation order only:
# channels-last vs contiguous kernels, measured on CPU, move mAP50-95 by at most 1e-6. A real defect
# (other images, preprocessing, NMS settings) moves it by far more than 1e-4.
AGREEMENT_TOL = 1e-4


@dataclass
class _Job:
    """What every worker needs: the base, the set-up validator (data and metrics) and the settings."""

    base: nn.Module
    validator: object
    ratio: float
    criterion: str
    cost: Callable[[nn.Module], Cost]
    fast: bool
    base_cost: Cost
    batches: list | None  # the loader's batches, kept from the base's validation when they fit in memory
    recovery: Recovery | None = None  # each cut repaired / reconstructed as the loop's copies are
    calibration: torch.Tensor | None = None  # its calibration images
    grams: dict | None = None  # reconstruction's Grams of the base, computed once before the workers fork


@dataclass
class _Probe:
    """One network (the base, or a copy with one layer pruned) and its metric state."""

    layer: str | None
    model: nn.Module
    validator: object


def _for_inference(model: nn.Module, channels_last: bool) -> nn.Module:
    """What Ultralytics' validator runs: a fused eval model (AutoBackend fuses Conv+BN)."""
    model = fused(model)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _stats(v) -> dict:
    s = v.get_stats()
    return {
        "mAP_50_95": float(s["metrics/mAP50-95(B)"]),
        "mAP_50": float(s["metrics/mAP50(B)"]),
        "precision": float(s["metrics/precision(B)"]),
        "recall": float(s["metrics/recall(B)"]),
        "images": v.seen,
    }


def _probe(job: _Job, layer, model) -> _Probe:
    from ultralytics.utils.metrics import DetMetrics

    v = copy.copy(job.validator)
    v.metrics = DetMetrics()
    v.init_metrics(model)
    return _Probe(layer, model, v)


def _evaluate_layers(job: _Job, names: list[str], tick) -> tuple[dict, list[dict]]:
    """The base's metrics and one row per layer, in one pass over the data; `tick(n)` after n forwards."""
    dev = job.validator.device
    base_net = _for_inference(copy.deepcopy(job.base), job.fast).to(dev)
    recorder = Recorder(base_net) if job.fast else None
    probes = [_probe(job, None, base_net)]
    base_shapes, rows = conv_shapes(job.base), []
    for name in names:
        res = prune(job.base, {name: job.ratio}, criterion=job.criterion, log=False, track=job.recovery is not None)
        if job.recovery is not None:
            recover(res, job.base, job.calibration, job.recovery, gram_cache=job.grams)
        pruned = res.model
        c = job.cost(pruned)
        net = _for_inference(pruned, job.fast).to(dev)
        probes.append(_probe(job, name, reuse(net, base_net, recorder) if recorder else net))
        rows.append(
            {
                "layer_name": name,
                "ratio": job.ratio,
                "out_channels_before": base_shapes[name][0],
                "out_channels_after": conv_shapes(pruned)[name][0],
                "GMACs_before": job.base_cost.gflops / 2,
                "GMACs_after": c.gflops / 2,
                "MParams_before": job.base_cost.params / 1e6,
                "MParams_after": c.params / 1e6,
                "weights_path": "",
            }
        )
    v0 = job.validator
    with torch.no_grad():  # not inference_mode: lipslib.pruning.memo relies on autograd's version counters
        for raw in job.batches or v0.dataloader:
            b = v0.preprocess(raw)
            img = b["img"].contiguous(memory_format=torch.channels_last) if job.fast else b["img"]
            if recorder:
                recorder.clear()
            for p in probes:  # the base first: it fills the recorder
                p.validator.update_metrics(p.validator.postprocess(p.model(img)), b)
            tick(len(probes))
    for row, p in zip(rows, probes[1:]):
        row.update({k: v for k, v in _stats(p.validator).items() if k != "images"})
    return _stats(probes[0].validator), rows


def _n_workers(workers: int | None, threads: int | None, device, n_layers: int, fast: bool) -> int:
    """Processes for the fast path: one per CPU thread by default; always 1 on an accelerator, because
    the workers are forked from this process and CUDA cannot be used in a child forked after it started."""
    if device.type != "cpu":
        if workers not in (None, 1):
            raise LipsError(f"sensitivity workers={workers} needs the CPU; on {device} use workers: 1 (or unset)")
        return 1
    if workers is not None:
        return min(int(workers), n_layers)
    if not fast or sys.platform != "linux":
        return 1
    return min(thread_count(threads), n_layers)


def reconstruction_grams(base: nn.Module, images: torch.Tensor, device, recovery: Recovery) -> dict:
    """Reconstruction's Grams of every dense conv of `base`, computed on `device` in one pass (forked CPU workers
    share them; the solves then run where they are)."""
    names = [n for n, m in base.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    return conv_grams(copy.deepcopy(base).to(device), images, names, max_bytes=int(float(recovery.max_gib) * 2**30))


def largest_side(imgsz: int, stride: int = 32) -> int:
    """The largest side of Ultralytics' rect validation batches at imgsz (letterboxed with half a stride of
    padding, rounded up to the stride): 192 for 160, 672 for 640."""
    return math.ceil(imgsz / stride + 0.5) * stride


def memo_batch(base: nn.Module, imgsz: int, batch: int, memo_bytes: int, device) -> tuple[int, int]:
    """The fast path holds every recorded activation of one batch of the base: bytes_per_image × batch,
    per image at most what a square image of the largest rect side takes. Returns (batch, bytes_per_image)
    with the batch lowered so that this stays within `memo_bytes`."""
    per_image = bytes_per_image(_for_inference(copy.deepcopy(base), True).to(device), largest_side(imgsz))
    cap = max(1, int(memo_bytes // per_image))
    return min(int(batch), cap), per_image


def _balance(names: list[str], n: int) -> list[list[str]]:
    """Split layers over n workers by their work, roughly the number of blocks after the pruned one."""
    groups, load = [[] for _ in range(n)], [0] * n
    for name in sorted(names, key=lambda k: (int(k.split(".")[1]), k)):
        i = load.index(min(load))
        groups[i].append(name)
        load[i] += 100 - int(name.split(".")[1])
    return [g for g in groups if g]


def _worker(job: _Job, i: int, names: list[str], q) -> None:
    torch.set_num_threads(1)  # a forked child must stay single-threaded (OpenMP is not fork-safe)
    try:
        q.put(("done", i, _evaluate_layers(job, names, lambda n: q.put(("tick", i, n)))))
    except Exception as e:
        q.put(("error", i, f"{names[0]}…: {first_line(e)}"))


def _in_processes(job: _Job, groups: list[list[str]], bar) -> list:
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(job, i, g, q), daemon=True) for i, g in enumerate(groups)]
    for p in procs:
        p.start()
    results = {}
    try:
        while len(results) < len(procs):
            try:
                kind, i, payload = q.get(timeout=2.0)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs) or all(p.exitcode is not None for p in procs):
                    raise LipsError(
                        "a sensitivity worker process died (out of memory?); retry with workers: 1"
                    ) from None
                continue
            if kind == "tick":
                bar.update(payload)
            elif kind == "error":
                raise LipsError(f"sensitivity worker failed on {payload}")
            else:
                results[i] = payload
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    return [results[i] for i in range(len(procs))]


def run_sensitivity(
    weights,
    data,
    *,
    ratio: float = 0.85,
    layers=None,
    imgsz: int = 640,
    batch: int = 32,
    device: str | None = None,
    split: str = "val",
    criterion: str = "l1",
    mode: str = "fast",
    cost_imgsz: int = 640,
    threads: int | None = None,
    workers: int | None = None,
    memo_gib: float = MEMO_BYTES / 2**30,
    out: str | os.PathLike | None = None,
    reference: str | os.PathLike | None = None,
    recovery: Recovery | None = Recovery(),
    calibration_split: str = "train",
    progress: bool = True,
) -> dict:
    """Stage I: prune each target layer alone at `ratio`, measure the mAP drop on `split`, normalise the drops
    into an importance vector (max exactly 1.0, the authors' format).

    Args:
        weights: the base model (a checkpoint, a model yaml or a name under `$LIPS_ASSETS/weights/`).
        data: the dataset yaml whose `split` images measure the drops.
        ratio: the share of each layer's output channels removed, in (0, 1).
        layers: the conv names to measure; None: the 29 LIPS targets (`pruning.layers.default_targets`).
        imgsz: validation image size.
        batch: validation batch size (the fast mode lowers it to fit `memo_gib`).
        device: `cpu`, `0`, …; None lets Ultralytics choose (the first GPU when present).
        split: the split whose images measure the drops (the demo uses `train`, so that the images that choose
            and report play no part).
        criterion: which channels a cut removes: l1 | l2 | random, or lsq (calibrated like `recovery`).
        mode: fast (reuse the base's activations where a cut leaves them unchanged; same numbers) | exact.
        cost_imgsz: image size of the GFLOPs counted per cut (the paper's 640).
        threads: CPU threads (None: all cores).
        workers: processes for the fast mode (None: one per thread on a CPU; 1 on a GPU).
        memo_gib: bound on the base activations the fast mode holds at once (all processes together).
        out: also write `layer_importance.json`, `sensitivity.csv` (the authors' columns), `params.json`,
            `base_metrics.json` and the figures there (checked writable before any work).
        reference: a reference `layer_importance.json` (e.g. the authors'): its Spearman ρ and a scatter figure.
        recovery: each cut's repair or reconstruction before it is measured, as the loop's copies get (a layer
            matters if cutting it hurts after the rest compensates); None: plain cuts. Calibrated on the first
            `recovery.images` images of `calibration_split`.
        calibration_split: the split the recovery and the lsq criterion calibrate on.
        progress: show a tqdm bar over the layers.

    Returns:
        `{'importance': {layer: importance}, 'table': DataFrame (one row per layer, the authors' columns of
        prune_layerwise_results.csv), 'base': the base's metrics record, 'seconds': wall time}`.

    Raises:
        LipsError: a ratio outside (0, 1), an unknown layer, a bad worker count or memo bound, a dataset without
            the split, a device that is not there, or an output folder that cannot be written — before any work.

    Examples:
        >>> res = run_sensitivity("lips_iter24_best.pt", "coco128.yaml", imgsz=320, out="runs/sens")  # doctest: +SKIP
        >>> max(res["importance"].values())                                                          # doctest: +SKIP
        1.0
    """
    if not 0.0 < float(ratio) < 1.0:
        raise LipsError(f"sensitivity ratio {ratio} is outside (0, 1); the paper uses 0.85")
    if mode not in MODES:
        raise LipsError(f"unknown sensitivity mode '{mode}'; choose one of {', '.join(MODES)}")
    if criterion not in CRITERION_NAMES:
        raise LipsError(f"unknown pruning criterion '{criterion}'; choose one of {', '.join(CRITERION_NAMES)}")
    if workers is not None and int(workers) < 1:
        raise LipsError(f"sensitivity workers must be ≥ 1, got {workers}; leave it unset for one per CPU core")
    if not float(memo_gib) > 0:
        raise LipsError(f"sensitivity memo_gib must be > 0, got {memo_gib}")
    if out:
        check_writable(Path(out) / "layer_importance.json")
    recovery = recovery if recovery is not None and recovery.refits else None
    calibrating = recovery or (Recovery(repair=False, reconstruct=False) if criterion in CALIBRATED_CRITERIA else None)
    t0 = time.perf_counter()
    info = check_data(data, splits=(split,) + ((calibration_split,) if calibrating else ()))
    base = load_model(weights)
    names = validate_layers(base, layers) if layers else default_targets(base)
    try:
        dev = select_device(device_arg(device), verbose=False)  # Ultralytics' choice, made before any work
    except ValueError as e:
        raise LipsError(f"sensitivity: {first_line(e)}") from None
    n = _n_workers(workers, threads, dev, len(names), mode == "fast")
    count = cost_counter(base, cost_imgsz)
    base_cost = count(base)
    requested_batch, per_image = batch, None
    if mode == "fast":  # each worker process holds its own memo
        batch, per_image = memo_batch(base, imgsz, batch, int(float(memo_gib) * 2**30) // n, dev)
    calibration = grams = None
    chosen_by = criterion
    if calibrating:
        calibration = calibration_images(data, calibration_split, calibrating.images, imgsz)
        if calibrating.reconstruct or criterion in CALIBRATED_CRITERIA:
            grams = reconstruction_grams(base, calibration, dev, calibrating)  # once: any cut may reach any consumer
            chosen_by = channel_criterion(criterion, base, calibration, grams, calibrating.ridge)
    with fp32_kernels():
        result = _measure(
            base,
            names,
            info,
            weights,
            device,
            n,
            count,
            base_cost,
            float(ratio),
            chosen_by,
            mode,
            imgsz,
            batch,
            split,
            threads,
            progress,
            (recovery, calibration, grams),
        )
    result["seconds"] = round(time.perf_counter() - t0, 2)
    if out:
        params = dict(
            weights=str(weights),
            data=info["yaml_file"],
            split=split,
            ratio=float(ratio),
            imgsz=imgsz,
            batch=batch,
            requested_batch=requested_batch,
            memo_bytes_per_image=per_image,
            memo_gib=float(memo_gib),
            device=str(dev),
            criterion=criterion,
            mode=mode,
            cost_imgsz=cost_imgsz,
            threads=threads,
            workers=result.pop("workers"),
            layers=names,
            images=result["base"]["images"],
            recovery=recovery.as_dict() if recovery else None,
            calibration_split=calibration_split if recovery else None,
        )
        write_outputs(out, result, params, reference)
    else:
        result.pop("workers")
    return result


def _measure(
    base,
    names,
    info,
    weights,
    device,
    n,
    count,
    base_cost,
    ratio,
    criterion,
    mode,
    imgsz,
    batch,
    split,
    threads,
    progress,
    recovering=(None, None, None),
) -> dict:
    """Ultralytics' validation of the base (kept as the check), then the pass over every pruned copy."""
    validator = make_validator(info, imgsz=imgsz, batch=batch, device=device, split=split, threads=threads)
    batches = None
    if len(split_images(info, split)) * 3 * largest_side(imgsz) ** 2 <= KEEP_BATCHES_BYTES:  # else: read again
        batches = []  # each raw batch, a shallow copy: preprocess replaces the dict's entries
        validator.preprocess = lambda raw: batches.append(dict(raw)) or type(validator).preprocess(validator, raw)
    try:  # Ultralytics' own validation of the base
        official = run_validator(validator, copy.deepcopy(base), weights, info, split, threads)
    finally:
        if batches is not None:
            del validator.preprocess  # back to the class's own
    job = _Job(base, validator, ratio, criterion, count, mode == "fast", base_cost, batches, *recovering)
    groups = _balance(names, n) if n > 1 else [names]

    bar = tqdm(
        total=len(validator.dataloader) * (len(names) + len(groups)),
        disable=not progress,
        mininterval=1.0,
        desc=f"sensitivity ({len(names)} layers, {len(groups)} process{'es' if len(groups) > 1 else ''})",
    )
    with bar:
        if len(groups) == 1:
            with cpu_threads(threads):  # the layer pass runs on `threads`, as the worker processes do
                results = [_evaluate_layers(job, names, bar.update)]
        else:
            results = _in_processes(job, groups, bar)

    base_stats = results[0][0]
    if (
        any(r[0] != base_stats for r in results)
        or abs(base_stats["mAP_50_95"] - float(official["metrics/mAP50-95(B)"])) > AGREEMENT_TOL
    ):
        raise LipsError("sensitivity's single-pass evaluation disagrees with Ultralytics' validation; lipslib bug")
    by_name = {row["layer_name"]: row for _, rows in results for row in rows}
    table = pd.DataFrame([{"index": i, **by_name[k]} for i, k in enumerate(names)], columns=COLUMNS)
    importance = importance_from_drops(base_stats["mAP_50_95"], dict(zip(table.layer_name, table.mAP_50_95)))
    return {
        "importance": importance,
        "table": table,
        "base": {**base_stats, "gflops": base_cost.gflops, "params": base_cost.params},
        "workers": len(groups),
    }


def importance_from_drops(base_map: float, maps: dict[str, float]) -> dict[str, float]:
    drops = {k: max(0.0, base_map - v) for k, v in maps.items()}
    top = max(drops.values())
    if top <= 0:
        raise LipsError(
            "no layer lowered mAP when pruned, so importance is undefined; raise the ratio or use more images"
        )
    return {k: (1.0 if d == top else d / top) for k, d in sorted(drops.items())}


def write_outputs(out, result: dict, params: dict, reference=None) -> Path:
    from lipslib.pipeline.plots import importance_bar, importance_scatter, spearman

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "layer_importance.json", result["importance"])
    result["table"].to_csv(out / "sensitivity.csv", index=False, float_format="%.6f")
    write_json(out / "params.json", params)
    write_json(out / "base_metrics.json", result["base"])
    importance_bar(result["importance"], out / "layer_importance.png")
    if reference:
        import json

        ref = json.loads(Path(reference).read_text())
        importance_scatter(result["importance"], ref, out / "importance_vs_reference.png")
        rho = spearman(result["importance"], ref)
        write_json(out / "reference.json", {"reference": str(reference), "spearman": rho})
    return out
