"""Stage I: prune each target layer alone at ratio p, measure the mAP drop, normalise into importance.

    drop_i       = max(0, mAP_base − mAP_i)          (mAP50-95 on the chosen split)
    importance_i = drop_i / max_j drop_j              (the largest drop is exactly 1.0)

Fast path, same answer as one Ultralytics validation per layer: the validation images are loaded and
letterboxed once by Ultralytics' own dataloader and validator, in a single pass over the data. For each
batch the base network's activations are computed once; each pruned copy then runs only from the first
block its pruning changed (earlier blocks are untouched, so their outputs are the base's), and feeds its
own copy of the validator's metric state; tensors are channels-last, which CPU convolutions run up to
1.7× faster (same numbers up to float summation order). `mode="exact"` runs every pruned copy in full,
contiguous, from the input.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from lipslib.engine import conv_shapes, cost, fused, load_model, prune
from lipslib.errors import LipsError
from lipslib.evaluate import _first_line, check_data, make_validator, write_json
from lipslib.layers import default_targets, validate_layers
from lipslib.runtime import cpu_threads

COLUMNS = [
    "index", "layer_name", "ratio", "out_channels_before", "out_channels_after", "GMACs_before", "GMACs_after",
    "MParams_before", "MParams_after", "mAP_50_95", "mAP_50", "precision", "recall", "weights_path",
]  # fmt: skip  (the authors' prune_layerwise_results.csv)
MODES = ("fast", "exact")


@dataclass
class _Probe:
    """One pruned copy and its metric state."""

    layer: str | None  # None: the unpruned base
    model: nn.Module
    start: int  # first top-level block whose weights differ from the base
    validator: object


def _first_changed_block(base_shapes: dict, pruned_shapes: dict, n_blocks: int) -> int:
    changed = [n for n, s in pruned_shapes.items() if base_shapes.get(n) != s]
    return min(int(n.split(".")[1]) for n in changed) if changed else n_blocks


def _for_inference(model: nn.Module, channels_last: bool) -> nn.Module:
    """What Ultralytics' validator runs: a fused eval model (AutoBackend fuses Conv+BN)."""
    model = fused(model)
    return model.to(memory_format=torch.channels_last) if channels_last else model


@torch.no_grad()
def _forward(model: nn.Module, x: torch.Tensor, start: int = 0, cache: list | None = None, keep: bool = False):
    """DetectionModel's forward from block `start`, reading earlier outputs from `cache` (the base's).
    With `keep`, return every block's output too (the cache for the others)."""
    y = list(cache[:start]) if start else []
    if start:
        x = cache[start - 1]
    for m in model.model[start:]:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        x = m(x)
        y.append(x)
    return (x, y) if keep else x


def _stats(v) -> dict:
    s = v.get_stats()
    return {"mAP_50_95": float(s["metrics/mAP50-95(B)"]), "mAP_50": float(s["metrics/mAP50(B)"]),
            "precision": float(s["metrics/precision(B)"]), "recall": float(s["metrics/recall(B)"]), "images": v.seen}


def run_sensitivity(
    weights,
    data,
    *,
    ratio: float = 0.85,
    layers=None,
    imgsz: int = 640,
    batch: int = 16,
    device: str = "cpu",
    split: str = "val",
    criterion: str = "l1",
    mode: str = "fast",
    cost_imgsz: int = 640,
    threads: int | None = None,
    out: str | os.PathLike | None = None,
    reference: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Stage I. Returns {'importance', 'table' (DataFrame, the authors' columns), 'base', 'seconds'};
    with `out`, writes layer_importance.json, sensitivity.csv, params.json and the figures there."""
    if not 0.0 < float(ratio) < 1.0:
        raise LipsError(f"sensitivity ratio {ratio} is outside (0, 1); the paper uses 0.85")
    if mode not in MODES:
        raise LipsError(f"unknown sensitivity mode '{mode}'; choose one of {', '.join(MODES)}")
    t0 = time.perf_counter()
    info = check_data(data, splits=(split,))
    base = load_model(weights)
    names = validate_layers(base, layers) if layers else default_targets(base)
    base_shapes = conv_shapes(base)
    base_cost = cost(base, cost_imgsz)

    validator = make_validator(info, imgsz=imgsz, batch=batch, device=device, split=split, threads=threads)
    try:
        with cpu_threads(threads):
            official = validator(model=copy.deepcopy(base))  # Ultralytics' own validation of the base
    except Exception as e:
        raise LipsError(f"validation of {weights} on {info['yaml_file']} ({split}) failed: {_first_line(e)}") from None
    dev = validator.device

    from ultralytics.utils.metrics import DetMetrics

    def probe(layer, model, start):
        v = copy.copy(validator)
        v.metrics = DetMetrics()
        v.init_metrics(model)
        return _Probe(layer, model, start, v)

    fast = mode == "fast"
    base_net = _for_inference(copy.deepcopy(base), fast).to(dev)
    probes = [probe(None, base_net, 0)]
    rows = []
    for i, name in enumerate(names):
        pruned = prune(base, {name: float(ratio)}, criterion=criterion, log=False).model
        c = cost(pruned, cost_imgsz)
        shapes = conv_shapes(pruned)
        start = _first_changed_block(base_shapes, shapes, len(pruned.model)) if fast else 0
        probes.append(probe(name, _for_inference(pruned, fast).to(dev), start))
        rows.append({"index": i, "layer_name": name, "ratio": float(ratio),
                     "out_channels_before": base_shapes[name][0], "out_channels_after": shapes[name][0],
                     "GMACs_before": base_cost.gflops / 2, "GMACs_after": c.gflops / 2,
                     "MParams_before": base_cost.params / 1e6, "MParams_after": c.params / 1e6,
                     "weights_path": ""})  # fmt: skip

    loader = validator.dataloader
    bar = tqdm(total=len(loader) * len(probes), desc=f"sensitivity ({len(names)} layers)", disable=not progress,
               mininterval=1.0)  # fmt: skip
    with cpu_threads(threads):  # after Ultralytics' select_device, which drops to cpu_count − 1
        for raw in loader:
            b = validator.preprocess(raw)
            img = b["img"].contiguous(memory_format=torch.channels_last) if fast else b["img"]
            base_out, cache = _forward(base_net, img, keep=True)
            for p in probes:
                preds = base_out if p.layer is None else _forward(p.model, img, p.start, cache)
                p.validator.update_metrics(p.validator.postprocess(preds), b)
                bar.update()
    bar.close()

    base_stats = _stats(probes[0].validator)
    if abs(base_stats["mAP_50_95"] - float(official["metrics/mAP50-95(B)"])) > 1e-4:
        raise LipsError("sensitivity's single-pass evaluation disagrees with Ultralytics' validation; lipslib bug")
    for row, p in zip(rows, probes[1:]):
        row.update({k: v for k, v in _stats(p.validator).items() if k != "images"})
    table = pd.DataFrame(rows, columns=COLUMNS)
    importance = importance_from_drops(base_stats["mAP_50_95"], dict(zip(table.layer_name, table.mAP_50_95)))
    result = {
        "importance": importance,
        "table": table,
        "base": {**base_stats, "gflops": base_cost.gflops, "params": base_cost.params},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if out:
        params = dict(weights=str(weights), data=info["yaml_file"], split=split, ratio=float(ratio), imgsz=imgsz,
                      batch=batch, device=str(device), criterion=criterion, mode=mode, cost_imgsz=cost_imgsz,
                      threads=threads, layers=names, images=base_stats["images"])  # fmt: skip
        write_outputs(out, result, params, reference)
    return result


def importance_from_drops(base_map: float, maps: dict[str, float]) -> dict[str, float]:
    drops = {k: max(0.0, base_map - v) for k, v in maps.items()}
    top = max(drops.values())
    if top <= 0:
        raise LipsError("no layer lowered mAP when pruned, so importance is undefined; raise the ratio or use more images")
    return {k: (1.0 if d == top else d / top) for k, d in sorted(drops.items())}


def write_outputs(out, result: dict, params: dict, reference=None) -> Path:
    from lipslib.plots import importance_bar, importance_scatter

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
        rho = importance_scatter(result["importance"], ref, out / "importance_vs_reference.png")
        write_json(out / "reference.json", {"reference": str(reference), "spearman": rho})
    return out
