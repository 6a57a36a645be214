"""The directed pruning engine: `{layer: ratio}` → a structurally pruned copy of a YOLO detector.

Rule (reproduces the authors' released checkpoints exactly): layers are processed in sorted name order,
one torch-pruning dependency group at a time; each removes floor(n · ratio) output channels of its conv,
chosen by a named criterion over the whole group (L1 by default), and torch-pruning propagates the cut to
every dependent layer. Ratios are relative to the widths of the model passed in.

Cost, in the paper's convention: GFLOPs = 2 × torch-pruning MACs on a BN-fused copy at imgsz × imgsz.
"""

from __future__ import annotations

import math
import os
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
import torch.nn as nn
import torch_pruning as tp

from lipslib.assets import resolve_weights
from lipslib.errors import LipsError
from lipslib.layers import validate_layers

CRITERIA = {
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "random": lambda: tp.importance.RandomImportance(),
}
LOG_COLUMNS = [
    "layer_name", "ratio", "out_before", "out_after",
    "GMACs_before", "GMACs_after", "MParams_before", "MParams_after",
]  # fmt: skip


def load_model(weights: str | os.PathLike | nn.Module) -> nn.Module:
    """A detection model in float32 eval mode: from a module, a `.pt` checkpoint or a model yaml."""
    if isinstance(weights, nn.Module):
        model = weights
    elif str(weights).endswith((".yaml", ".yml")):
        from ultralytics.nn.tasks import DetectionModel

        try:
            with torch.random.fork_rng(devices=[]):  # a yaml has no weights: the same init in every process,
                torch.manual_seed(0)  # so a resumed run or a worker prunes the very same model
                model = DetectionModel(str(weights), verbose=False)
        except (FileNotFoundError, OSError):
            raise LipsError(f"model yaml '{weights}' not found; give a path or an Ultralytics yaml such as yolo11n.yaml") from None
    else:
        path = resolve_weights(weights)
        from ultralytics.nn.tasks import load_checkpoint

        try:
            model, _ = load_checkpoint(str(path))
        except Exception as e:
            raise LipsError(
                f"could not read checkpoint {path} ({type(e).__name__}: {' '.join(str(e).split())[:160]}…); "
                "is it a complete Ultralytics .pt file? re-download or re-save it"
            ) from None
    if not isinstance(getattr(model, "model", None), nn.Sequential):
        raise LipsError(f"{weights}: not an Ultralytics YOLO model (got {type(model).__name__})")
    from lipslib.layers import detect_head

    detect_head(model)  # raises for classification/other checkpoints
    model = model.float().eval()
    for p in model.parameters():
        p.requires_grad_(True)  # torch-pruning traces autograd; loaded checkpoints come frozen
    return model


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def fused(model: nn.Module) -> nn.Module:
    """`model` in eval mode with Conv+BN fused (in place), as Ultralytics runs it for inference."""
    model = model.eval()
    return model.fuse(verbose=False) if has_batchnorm(model) else model


def output_tensors(out) -> list[torch.Tensor]:
    """Every tensor in a model output (tensors, lists, tuples, dicts, nested), in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in output_tensors(o)]
    return []


def build_graph(model: nn.Module, trace_size: int = 64) -> tp.DependencyGraph:
    """torch-pruning's dependency graph. The structure is size-independent, so a small input traces it fast."""
    device = next(model.parameters()).device
    example = torch.zeros(1, 3, trace_size, trace_size, device=device)
    with torch.enable_grad():  # it traces through autograd, also when called under no_grad
        return tp.DependencyGraph().build_dependency(model, example_inputs=example, output_transform=output_tensors)


def n_remove(n: int, ratio: float, round_to: int | None = None) -> int:
    """Channels removed from a layer of n: floor(n · ratio); with round_to, the kept count is the nearest
    (ties: the smaller) of the multiples of round_to that fit in n and n itself, which hardware likes better
    than odd widths. n itself is a candidate so that a layer whose base width is not a multiple (the
    authors' iter-01 has 12, 23, 45, …) is not cut by up to round_to − 1 channels at any ratio: forced
    cuts of the narrow stem layers (12 → 8) cost most of the rounded loop's accuracy. A layer narrower than
    round_to is left as floor(n · ratio) says."""
    k = math.floor(n * ratio)
    if round_to and round_to > 1 and n >= round_to:
        want = n - k
        lower = max(want // round_to * round_to, round_to)
        candidates = {m for m in (lower, lower + round_to) if m <= n} | {n}
        k = n - min(candidates, key=lambda m: (abs(m - want), m))
    return k


@dataclass
class PruneResult:
    model: nn.Module
    ratios: dict[str, float]
    log: list[dict] = field(default_factory=list)  # one row per layer, the authors' prune_directed_log columns
    # with track: for every tensor of `model`, the flat index in the unpruned tensor each element came from
    origin: dict[str, torch.Tensor] | None = None


def tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and floating-point buffer by name (what pruning slices)."""
    return {**dict(model.named_parameters()), **{n: b for n, b in model.named_buffers() if b.is_floating_point()}}


def _origin_probe(model: nn.Module) -> tuple[nn.Module, tp.DependencyGraph]:
    """A copy of `model` whose every tensor holds its own flat indices (float64, so exact). Pruned with
    the same indices as the model, it ends up holding where each surviving element came from."""
    probe = deepcopy(model)
    graph = build_graph(probe)
    for t in tensors(probe).values():
        t.data = torch.arange(t.numel(), dtype=torch.float64, device=t.device).view_as(t)
    return probe, graph


def prune(
    model: nn.Module,
    ratios: dict[str, float],
    *,
    criterion: str = "l1",
    round_to: int | None = None,
    imgsz: int = 640,
    log: bool = True,
    inplace: bool = False,
    track: bool = False,
) -> PruneResult:
    """Prune `ratios` out of (a copy of) `model`. With `log`, each step's cost is counted, as in the
    authors' prune_directed_log.csv (that costs one MAC count per layer). With `track`, the result's
    `origin` maps each kept element to its place in `model` (a second, lockstep prune of a probe copy)."""
    if criterion not in CRITERIA:
        raise LipsError(f"unknown pruning criterion '{criterion}'; choose one of {', '.join(CRITERIA)}")
    model = model if inplace else deepcopy(model)
    validate_layers(model, ratios)
    modules = dict(model.named_modules())
    for name, r in ratios.items():
        if not 0.0 <= r < 1.0:
            raise LipsError(f"ratio of {name} is {r}; it must be in [0, 1)")
        n = modules[name].out_channels
        if n - n_remove(n, r, round_to) < 1:
            raise LipsError(f"ratio {r} of {name} leaves no channel of {n}; lower it")
    probe, probe_graph = _origin_probe(model) if track else (None, None)
    graph = build_graph(model)
    importance = CRITERIA[criterion]()
    rows: list[dict] = []
    before = cost(model, imgsz) if log else None
    for name in sorted(ratios):
        conv = modules[name]
        n = conv.out_channels
        k = n_remove(n, ratios[name], round_to)
        if k:
            group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(n)))
            scores = importance(group)
            idxs = torch.argsort(scores, stable=True)[:k].tolist()
            graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=idxs).prune()
            if track:
                probe_conv = probe.get_submodule(name)
                probe_graph.get_pruning_group(probe_conv, tp.prune_conv_out_channels, idxs=idxs).prune()
        if log:
            after = cost(model, imgsz) if k else before
            rows.append(dict(zip(LOG_COLUMNS, [
                name, ratios[name], n, conv.out_channels,
                before.gflops / 2, after.gflops / 2, before.params / 1e6, after.params / 1e6,
            ])))  # fmt: skip
            before = after
    origin = None
    if track:
        origin = {n: t.detach().long() for n, t in tensors(probe).items()}
        if {n: o.shape for n, o in origin.items()} != {n: t.shape for n, t in tensors(model).items()}:
            raise LipsError("tracking channel origins went out of step with pruning; this is a lipslib bug")
    return PruneResult(model=model, ratios=dict(ratios), log=rows, origin=origin)


def write_log(rows: list[dict], path: str | os.PathLike) -> Path:
    """The per-layer log as the authors' prune_directed_log.csv."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=LOG_COLUMNS).to_csv(path, index=False, float_format="%.6f")
    return path


@dataclass
class Cost:
    gflops: float
    params: int


def _macs(model: nn.Module, imgsz: int) -> tuple[float, int]:
    needs_copy = has_batchnorm(model) or any(p.dtype != torch.float32 for p in model.parameters())
    net = fused(deepcopy(model).float()) if needs_copy else model  # tp counts on its own copy anyway
    device = next(net.parameters()).device
    with torch.no_grad():
        return tp.utils.count_ops_and_params(net, torch.zeros(1, 3, imgsz, imgsz, device=device))


def cost(model: nn.Module, imgsz: int = 640) -> Cost:
    """GFLOPs (2 × MACs) and parameters of a BN-fused copy at imgsz × imgsz, the paper's convention."""
    macs, params = _macs(model, imgsz)
    return Cost(gflops=2 * macs / 1e9, params=int(params))


def cost_counter(base: nn.Module, imgsz: int = 640, small: int = 64):
    """`cost(·, imgsz)` for many pruned copies of `base`, about 2× cheaper: counted at small × small and scaled
    by the pixel ratio. Convolutions, activations and upsampling cost per pixel, so the scaled count is
    exact for YOLO detectors; it is used only if it equals the direct count on `base` exactly (pruning
    changes channel counts, not which ops run), otherwise every call counts at imgsz."""
    scale = (imgsz // small) ** 2
    if imgsz % small == 0 and _macs(base, small)[0] * scale == _macs(base, imgsz)[0]:

        def scaled(model: nn.Module) -> Cost:
            macs, params = _macs(model, small)
            return Cost(gflops=2 * (macs * scale) / 1e9, params=int(params))

        return scaled
    return lambda model: cost(model, imgsz)


def conv_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Every Conv2d's [out_channels, in_channels]."""
    return {n: [m.out_channels, m.in_channels] for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def info(weights, imgsz: int = 640) -> dict:
    model = load_model(weights)
    c = cost(model, imgsz)
    return {"weights": str(weights), "imgsz": imgsz, "gflops": c.gflops, "params": c.params,
            "batchnorm": has_batchnorm(model), "convs": conv_shapes(model)}  # fmt: skip


def _as_dict(args) -> dict:
    """Ultralytics keeps args as a dict or a namespace (a plain path string for some loaded models)."""
    if isinstance(args, dict):
        return dict(args)
    return dict(vars(args)) if hasattr(args, "__dict__") else {}


def save_checkpoint(model: nn.Module, path: str | os.PathLike, meta: dict | None = None, train_args=None) -> Path:
    """Save as a plain Ultralytics checkpoint (the pickled module keeps the pruned shapes, so `YOLO(path)`
    loads it with no lipslib code). Written atomically: a crash never leaves a half-written file."""
    import ultralytics

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "date": datetime.now().isoformat(),
        "version": ultralytics.__version__,
        "license": "AGPL-3.0 (https://ultralytics.com/license)",
        "epoch": -1,
        "best_fitness": None,
        "model": deepcopy(model).half(),
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": _as_dict(train_args if train_args is not None else getattr(model, "args", None)),
        "lips": meta or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path

