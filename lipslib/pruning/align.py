"""Widths the hardware likes: a pruned model's layers padded with zero channels up to a multiple, where measured
faster.

Runtimes pick their convolution kernels by channel count: on CPUs with AVX-512, VNNI and AMX, oneDNN (OpenVINO,
ONNX Runtime) works in blocks of 16 (fp32/bf16) or 32/64 (int8) channels, and a width of 23 pays for 32. Rounding
widths *down* (`round_to` in the engine) costs accuracy; padding *up* costs none: a zero channel (zero weights,
zero bias) outputs exactly 0 through every activation, concat and residual, and its consumers' weights for it
multiply that 0. Whether padding pays is measured, not assumed: `align` pads one layer at a time and keeps the
padding only where the runtime's per-block table (`latency.block_table`) says the model got faster.

A model here is a copy of its yaml's architecture pruned on the LIPS target layers (the authors' checkpoints and
every copy the engine makes of them are). Padding goes through the full-width architecture: the model is put back
into it with its removed channels at zero (`inflate`), then pruned to the padded widths, the zero channels first
(their L1 norm is 0).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from lipslib.errors import LipsError
from lipslib.pruning.engine import conv_shapes, fused, load_model, prune
from lipslib.pruning.layers import default_targets


def unpruned(model: nn.Module) -> nn.Module:
    """The full-width architecture `model` was pruned from: its yaml, built fresh (random init)."""
    from ultralytics.nn.tasks import DetectionModel

    yaml = getattr(model, "yaml", None)
    if not isinstance(yaml, dict):
        raise LipsError("the model has no yaml to recover its full widths from; padding needs an Ultralytics model")
    with torch.random.fork_rng(devices=[]):  # the dead channels' tiny weights are its random init: the same
        torch.manual_seed(0)  # in every process, and the caller's random state untouched
        return DetectionModel(dict(yaml), nc=int(model.model[-1].nc), verbose=False)


def widths(model: nn.Module) -> dict[str, int]:
    """Output channels of each LIPS target layer."""
    shapes = conv_shapes(model)
    return {name: shapes[name][0] for name in default_targets(model)}


def padded(model: nn.Module | str, wanted: dict[str, int], rtol: float = 1e-5) -> nn.Module:
    """`model` with the target layers in `wanted` widened to those widths by zero channels: the same function.

    Args:
        model: a pruned copy of its yaml (weights or module); not changed.
        wanted: {target layer: width}, each at least its width in `model` and at most its yaml's.
        rtol: the largest difference of the outputs allowed, relative to their largest value (checked on a random
            input; float32 summation order alone moves them by about 1e-6).

    Returns:
        A BN-free (fused) model whose other layers keep their widths.

    Raises:
        LipsError: a width below the model's or above the yaml's, a layer that is not a target, or a model that
            is not its yaml pruned on the target layers.

    Examples:
        >>> wide = padded("lips_iter01_best.pt", {"model.1.conv": 32})  # 23 → 32 channels  # doctest: +SKIP
    """
    from lipslib.pruning.inflate import inflate

    model = fused(copy.deepcopy(load_model(model)))  # fusing is in place: the caller's module stays as it is
    have = widths(model)
    full_model = unpruned(model)
    full = widths(full_model)
    for name, w in wanted.items():
        if name not in have:
            raise LipsError(f"{name} is not a LIPS target layer of the model; targets: {', '.join(have)}")
        if not have[name] <= w <= full[name]:
            raise LipsError(f"{name}: width {w} outside [{have[name]}, {full[name]}] (the model's to its yaml's)")
    target = {**have, **wanted}
    # removed channels at exactly 0 (BN γ = β = 0 folds into zero weights); load_model: fusing froze the weights,
    # and torch-pruning traces autograd
    wide = load_model(fused(inflate(model, full_model)))
    # n − floor(n·r) = kept  ⇔  r in ((n − kept)/n, (n − kept + 1)/n]: the midpoint is safe from rounding
    ratios = {k: (full[k] - w + 0.5) / full[k] for k, w in target.items() if w < full[k]}
    out = prune(wide, ratios, criterion="l1", log=False).model
    got = widths(out)
    if got != target:
        raise LipsError(f"padding reached other widths than asked ({got} vs {target}); this is a lipslib bug")
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.eval()(x)[0]
        err = float((want - out.eval()(x)[0]).abs().max() / want.abs().max())
    if not err <= rtol:
        raise LipsError(f"the padded model differs from the original by {err:.1e} (> {rtol}, relative); a lipslib bug")
    return out


def rounded_up(model: nn.Module, multiple: int) -> dict[str, int]:
    """{target layer: its width rounded up to `multiple`, capped at its yaml's} for the layers not aligned yet."""
    have, full = widths(model), widths(unpruned(model))
    up = {k: min(full[k], math.ceil(w / multiple) * multiple) for k, w in have.items()}
    return {k: w for k, w in up.items() if w > have[k]}


def align(
    model: nn.Module | str,
    multiple: int = 16,
    *,
    runtime: str = "openvino",
    imgsz: int = 640,
    threads: int = 1,
    runs: int = 15,
    precision: str = "default",
    tol: float = 0.01,
    progress: bool = True,
) -> tuple[nn.Module, dict]:
    """Pad each target layer's width up to `multiple` where the runtime says the model gets faster.

    Greedy, one layer at a time in the network's order: a layer's padding is kept when the predicted time drops by
    more than `tol` (relative), given the paddings kept so far. Predictions are `costs.LatencyCost.predict`'s: the
    per-block table (PyTorch, ONNX Runtime), or on OpenVINO the whole candidate timed against the model (its
    blocks alone overestimate and misjudge savings there). The function is unchanged (zero channels); only
    time and GFLOPs move (GFLOPs up: the zero channels are counted as multiplications, which they are).

    Args:
        model: a pruned checkpoint or module.
        multiple: the channel multiple to pad to (16 for fp32/bf16 kernels, 32 for int8 ones).
        runtime: where it is timed: openvino, onnxruntime or torch.
        imgsz: the deployment image size.
        threads: intra-op threads of the timed runs.
        runs: interleaved runs per block after warm-up (tables are cached across calls).
        precision: default or f32 (tables are not made in int8).
        tol: the smallest relative saving that keeps a padding.
        progress: a tqdm bar over the layers.

    Returns:
        (the aligned model, {'before_ms', 'after_ms' (predictions), 'padded': {layer: [from, to]}, 'tried': layers
        tried}).

    Raises:
        LipsError: a multiple < 2, or what `padded` and `block_table` refuse.

    Examples:
        >>> aligned, report = align("pruned.pt", 16, runtime="openvino", imgsz=640)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    from lipslib.pruning.costs import LatencyCost

    if not isinstance(multiple, int) or multiple < 2:
        raise LipsError(f"align multiple must be an integer ≥ 2 (e.g. 16), got {multiple!r}")
    model = fused(copy.deepcopy(load_model(model)))
    settings = dict(runtime=runtime, imgsz=imgsz, threads=threads, runs=runs, precision=precision)
    predict = LatencyCost(model, runtime, imgsz, threads, runs, precision=precision).predict
    candidates = rounded_up(model, multiple)
    have = widths(model)
    kept: dict[str, int] = {}
    best_ms = before_ms = predict(model)
    best = model
    for name in tqdm(candidates, desc=f"align to {multiple}", disable=not progress):
        trial = padded(model, {**kept, name: candidates[name]})
        ms = predict(trial)
        if ms < best_ms * (1 - tol):
            kept[name], best_ms, best = candidates[name], ms, trial
    report = {
        "multiple": multiple,
        **settings,
        "before_ms": before_ms,
        "after_ms": best_ms,
        "padded": {k: [have[k], w] for k, w in kept.items()},
        "tried": list(candidates),
    }
    return best, report
