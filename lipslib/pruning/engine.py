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

from lipslib.assets.resolve import resolve_weights
from lipslib.cfg import CALIBRATED_CRITERIA, CRITERION_NAMES
from lipslib.errors import LipsError
from lipslib.pruning.layers import validate_layers

CRITERIA = {
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "random": lambda: tp.importance.RandomImportance(),
}
# and `lsq`, channel choice aware of reconstruction: it needs calibration images, so it is resolved into a
# criterion object where images are at hand (lipslib.recovery.lsq.channel_criterion). CRITERION_NAMES, the five
# names, lives in lipslib.cfg (the CLI's choices, without torch); it must name exactly these:
assert CRITERION_NAMES == (*CRITERIA, *CALIBRATED_CRITERIA), "lipslib.cfg.CRITERION_NAMES disagrees with CRITERIA"
LOG_COLUMNS = [
    "layer_name",
    "ratio",
    "out_before",
    "out_after",
    "GMACs_before",
    "GMACs_after",
    "MParams_before",
    "MParams_after",
]


def load_model(weights: str | os.PathLike | nn.Module) -> nn.Module:
    """A detection model in float32 eval mode: from a module, a `.pt` checkpoint or a model yaml.

    Args:
        weights: an Ultralytics detection module, a `.pt` checkpoint (a path, or a name looked up under
            `$LIPS_ASSETS/weights/`, then downloaded by Ultralytics), or a model yaml such as `yolo11n.yaml`
            (built with a fixed seed, so every process builds the same weights).

    Returns:
        The `DetectionModel`, float32, in eval mode, with gradients enabled (torch-pruning traces autograd).

    Raises:
        LipsError: the file is missing or unreadable, or is not a YOLO detector.

    Examples:
        >>> base = load_model("lips_iter01_best.pt")  # doctest: +SKIP
    """
    if isinstance(weights, nn.Module):
        model = weights
    elif str(weights).endswith((".yaml", ".yml")):
        from ultralytics.nn.tasks import DetectionModel

        try:
            with torch.random.fork_rng(devices=[]):  # a yaml has no weights: the same init in every process,
                torch.manual_seed(0)  # so a resumed run or a worker prunes the very same model
                model = DetectionModel(str(weights), verbose=False)
        except (FileNotFoundError, OSError):
            raise LipsError(
                f"model yaml '{weights}' not found; give a path or an Ultralytics yaml such as yolo11n.yaml"
            ) from None
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
    from lipslib.pruning.layers import detect_head

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
    """Channels removed from a layer of `n` output channels at `ratio`.

    floor(n · ratio); with `round_to`, the kept count is the nearest (ties: the smaller) of the multiples of
    `round_to` that fit in n and n itself, which hardware likes better than odd widths. n itself is a
    candidate so that a layer whose base width is not a multiple (the authors' iter-01 has 12, 23, 45, …) is
    not cut by up to round_to − 1 channels at any ratio: forced cuts of the narrow stem layers (12 → 8) cost
    most of a rounded loop's accuracy. A layer narrower than `round_to` is left as floor(n · ratio) says.

    Args:
        n: the layer's output channels.
        ratio: share of channels to remove, in [0, 1).
        round_to: round the kept width to a multiple of this (None or 1: no rounding).

    Returns:
        The number of channels to remove.

    Examples:
        >>> n_remove(64, 0.3)                # floor(19.2)
        19
        >>> n_remove(23, 0.3, round_to=8)    # keeps 16, the multiple of 8 nearest to the 17 wanted
        7
        >>> n_remove(12, 0.1, round_to=8)    # keeps 12: the base width is nearer to 11 than 8 is
        0
        >>> n_remove(6, 0.5, round_to=8)     # narrower than round_to: floor(n · ratio)
        3
    """
    k = math.floor(n * ratio)
    if round_to and round_to > 1 and n >= round_to:
        want = n - k
        lower = max(want // round_to * round_to, round_to)
        candidates = {m for m in (lower, lower + round_to) if m <= n} | {n}
        k = n - min(candidates, key=lambda m: (abs(m - want), m))
    return k


@dataclass
class PruneResult:
    """What `prune` returns.

    Attributes:
        model: the pruned copy (or `model` itself, pruned in place, with `inplace=True`).
        ratios: the ratios applied, `{layer: ratio}`.
        log: with `log=True`, one row per layer in the authors' `prune_directed_log.csv` columns
            (`LOG_COLUMNS`; write it with `write_log`).
        origin: with `track=True`, for every parameter and floating-point buffer of `model`, the flat index in
            the unpruned tensor each element came from (what recovery and warm starts need); else None.
    """

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
    """Prune `ratios` out of (a copy of) `model`, the directed rule of the module doc.

    Layers are pruned in sorted name order; each removes `n_remove(n, ratio, round_to)` output channels of
    its conv, those with the lowest `criterion` score over the conv's whole dependency group, and the cut
    follows through every layer that depends on it.

    Args:
        model: the model to prune (from `load_model`); ratios are relative to its widths.
        ratios: `{conv name: ratio}` (see `read_spec`; `lipslib.pruning.layers.default_targets` lists the 29 LIPS
            targets, any other prunable conv may be named too).
        criterion: channel score: `l1` (default), `l2` or `random`.
        round_to: round kept widths to multiples of this (see `n_remove`).
        imgsz: image size of the cost log.
        log: count each step's cost, as in the authors' prune_directed_log.csv (one MAC count per layer).
        inplace: prune `model` itself instead of a copy.
        track: record in the result's `origin` where each kept element sits in `model` (a second, lockstep
            prune of a probe copy); recovery (`recover`) and warm starts need it.

    Returns:
        A `PruneResult`: the pruned model, the ratios, the per-layer log and (with `track`) the origins.

    Raises:
        LipsError: an unknown layer or criterion, a ratio outside [0, 1), or one that leaves no channel.

    Examples:
        >>> base = load_model("lips_iter01_best.pt")                     # doctest: +SKIP
        >>> res = prune(base, {"model.2.cv2.conv": 0.3, "model.4.cv2.conv": 0.2})  # doctest: +SKIP
        >>> cost(res.model).gflops < cost(base).gflops                   # doctest: +SKIP
        True
    """
    scorer = getattr(criterion, "scores", None)  # a data-aware criterion (lipslib.recovery.lsq.LeastSquaresCriterion)
    if criterion in CALIBRATED_CRITERIA:
        raise LipsError(
            f"criterion {criterion} needs calibration images: resolve it with lipslib.recovery.lsq.channel_criterion"
        )
    if scorer is None and criterion not in CRITERIA:
        raise LipsError(f"unknown pruning criterion '{criterion}'; choose one of {', '.join(CRITERION_NAMES)}")
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1):
        raise LipsError(f"round_to must be an integer ≥ 1 (e.g. 8) or none, got {round_to!r}")
    model = model if inplace else deepcopy(model)
    validate_layers(model, ratios)
    modules = dict(model.named_modules())
    for name, r in ratios.items():
        if not 0.0 <= r < 1.0:
            raise LipsError(f"ratio of {name} is {r}; it must be in [0, 1)")
        n = modules[name].out_channels
        if n - n_remove(n, r, round_to) < 1:
            raise LipsError(f"ratio {r} of {name} leaves no channel of {n}; lower it")
    probe, probe_graph = _origin_probe(model) if track or scorer else (None, None)
    graph = build_graph(model)
    importance = CRITERIA["l1" if scorer else criterion]()
    names = {m: n for n, m in model.named_modules()} if scorer else None
    rows: list[dict] = []
    before = cost(model, imgsz) if log else None
    for name in sorted(ratios):
        conv = modules[name]
        n = conv.out_channels
        k = n_remove(n, ratios[name], round_to)
        if k:
            group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(n)))
            scores = scorer(group, names, dict(probe.named_modules())) if scorer else None
            scores = importance(group) if scores is None else scores
            idxs = torch.argsort(scores, stable=True)[:k].tolist()
            graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=idxs).prune()
            if probe is not None:
                probe_conv = probe.get_submodule(name)
                probe_graph.get_pruning_group(probe_conv, tp.prune_conv_out_channels, idxs=idxs).prune()
        if log:
            after = cost(model, imgsz) if k else before
            rows.append(
                dict(
                    zip(
                        LOG_COLUMNS,
                        [
                            name,
                            ratios[name],
                            n,
                            conv.out_channels,
                            before.gflops / 2,
                            after.gflops / 2,
                            before.params / 1e6,
                            after.params / 1e6,
                        ],
                    )
                )
            )
            before = after
    return PruneResult(model=model, ratios=dict(ratios), log=rows, origin=origins(probe, model) if track else None)


def origins(probe: nn.Module, model: nn.Module) -> dict[str, torch.Tensor]:
    """The origin indices an origin probe (`_origin_probe`) holds after it was pruned in lockstep with `model`."""
    origin = {n: t.detach().long() for n, t in tensors(probe).items()}
    if {n: o.shape for n, o in origin.items()} != {n: t.shape for n, t in tensors(model).items()}:
        raise LipsError("tracking channel origins went out of step with pruning; this is a lipslib bug")
    return origin


def write_log(rows: list[dict], path: str | os.PathLike) -> Path:
    """The per-layer log as the authors' prune_directed_log.csv."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=LOG_COLUMNS).to_csv(path, index=False, float_format="%.6f")
    return path


@dataclass
class Cost:
    """A model's cost in the paper's convention (see `cost`).

    Attributes:
        gflops: 2 × MACs of one forward of the BN-fused model at imgsz × imgsz, in billions.
        params: parameters of the BN-fused model.
    """

    gflops: float
    params: int


def _macs(model: nn.Module, imgsz: int) -> tuple[float, int]:
    needs_copy = has_batchnorm(model) or any(p.dtype != torch.float32 for p in model.parameters())
    net = fused(deepcopy(model).float()) if needs_copy else model  # tp counts on its own copy anyway
    device = next(net.parameters()).device
    with torch.no_grad():
        return tp.utils.count_ops_and_params(net, torch.zeros(1, 3, imgsz, imgsz, device=device))


def cost(model: nn.Module, imgsz: int = 640) -> Cost:
    """GFLOPs (2 × MACs) and parameters of a BN-fused copy at imgsz × imgsz, the paper's convention.

    Args:
        model: a detection model (from `load_model` or `prune`); it is not changed.
        imgsz: square input size; GFLOPs are always quoted at 640 in the paper and in lipslib's reports.

    Returns:
        A `Cost` with `gflops` and `params`.

    Raises:
        RuntimeError: a model torch-pruning cannot trace at this size (e.g. imgsz not a multiple of its stride).

    Examples:
        >>> cost(load_model("yolo11n.yaml"))  # doctest: +SKIP
        Cost(gflops=6.5189504, params=2624080)
    """
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
    return {
        "weights": str(weights),
        "imgsz": imgsz,
        "gflops": c.gflops,
        "params": c.params,
        "batchnorm": has_batchnorm(model),
        "convs": conv_shapes(model),
    }


def _as_dict(args) -> dict:
    """Ultralytics keeps args as a dict or a namespace (a plain path string for some loaded models)."""
    if isinstance(args, dict):
        return dict(args)
    return dict(vars(args)) if hasattr(args, "__dict__") else {}


def save_checkpoint(model: nn.Module, path: str | os.PathLike, meta: dict | None = None, train_args=None) -> Path:
    """Save a model as a plain Ultralytics checkpoint.

    The pickled module keeps the pruned shapes, so `YOLO(path)` loads, predicts and exports it with no
    lipslib code. Written atomically: a crash never leaves a half-written file.

    Args:
        model: the (pruned) detection model; saved as an fp16 copy, as Ultralytics saves.
        path: the `.pt` file to write (folders are created).
        meta: extra information stored under the checkpoint's `lips` key.
        train_args: Ultralytics arguments to store as `train_args` (default: the model's own `args`).

    Returns:
        The path written.

    Raises:
        OSError: the file cannot be written (nothing is left behind: the write is atomic).

    Examples:
        >>> save_checkpoint(res.model, "pruned.pt")  # doctest: +SKIP
    """
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
