"""A pruned BN-free checkpoint embedded in its full-width architecture, with BatchNorm: same function.

The paper's base is the pretrained yolo11n.pt (full width, BatchNorm), which cannot be had offline; a
random-init yolo11n.yaml has the architecture but 0.0 mAP, so Stage I on it has no drops to measure.
`inflate` builds the next best thing from what is real: the unpruned architecture of a model yaml, with
BatchNorm, computing exactly what a pruned checkpoint of it computes (e.g. the authors' iter-01).

1. The yaml model is pruned to the checkpoint's widths by the LIPS engine (one ratio per target layer,
   found from the widths), tracking where each kept element sits in the unpruned tensors.
2. The checkpoint's fused weights go into that copy as conv + BatchNorm computing z ↦ z + bias exactly.
   With calibration images, BN's running statistics are those of the conv's output z on them (μ, σ²),
   and γ = √(σ² + ε), β = bias + μ: the same eval function, and in train mode (batch statistics) nearly
   the same one, as in a trained BN network. Without images: μ = 0, σ² = 1 − ε, γ = 1, β = bias, exact in
   eval mode only (train mode then normalises by statistics the weights never saw).
3. Everything is scattered back to the unpruned shapes. The removed channels output exactly 0 (BN γ = β = 0)
   through every activation, concat, pool and residual, but keep the yaml's own random init scaled by
   1e-3 as weights: with all-zero weights in and out a channel is a saddle point whose every gradient is
   0, so a channel that a schedule gives back could never learn; with these, BN's γ gets a gradient in
   training, and their L1 norm stays far below any trained channel's, so L1 pruning removes them first.
The result is checked against the checkpoint on a random input.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

from lipslib.errors import LipsError
from lipslib.pruning.engine import conv_shapes, load_model, prune, tensors
from lipslib.pruning.layers import default_targets


def conv_output_stats(model: nn.Module, images: torch.Tensor, batch: int = 16) -> dict[str, tuple]:
    """Per-channel mean and variance over `images` (N×3×H×W) of every Conv2d output of `model`, by name."""
    sums: dict[str, list] = {}

    def hook(name):
        def record(module, args, out):
            z = out.detach().double().transpose(0, 1).reshape(out.shape[1], -1)
            s = sums.setdefault(name, [0, 0.0, 0.0])
            s[0] += z.shape[1]
            s[1] = s[1] + z.sum(1)
            s[2] = s[2] + (z * z).sum(1)

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch):
                model.eval()(images[i : i + batch])
    finally:
        for h in handles:
            h.remove()
    return {n: (s1 / k, (s2 / k - (s1 / k) ** 2).clamp(min=0)) for n, (k, s1, s2) in sums.items()}


def _unfused_state(pruned: nn.Module, target: nn.Module, stats: dict | None) -> dict[str, torch.Tensor]:
    """`target`'s state (a BN model of `pruned`'s shapes) holding `pruned`'s weights; fused convs
    (weight + bias, no BN) become conv + BN computing z ↦ z + bias, with `stats` (of the fused conv
    outputs, `conv_output_stats`) as running statistics where given."""
    src, out = pruned.state_dict(), {}
    for key, t in target.state_dict().items():
        if key in src and src[key].shape == t.shape:
            out[key] = src[key].to(t.dtype)
            continue
        owner, _, leaf = key.rpartition(".")
        if not owner.endswith(".bn"):
            raise LipsError(f"{key}: no counterpart in the pruned checkpoint; it is not a pruned copy of this yaml")
        bias = src.get(owner[: -len("bn")] + "conv.bias")
        if bias is None:
            raise LipsError(f"{key}: the checkpoint has neither BatchNorm nor a fused conv bias here")
        eps = target.get_submodule(owner).eps
        conv = owner[: -len("bn")] + "conv"
        if stats and conv in stats:  # z = fused output − bias: mean μ_fused − bias, variance σ²
            mean_fused, var = (v.to(bias.dtype) for v in stats[conv])
            mean, gamma, beta = mean_fused - bias, (var + eps).sqrt(), mean_fused
        else:
            mean, var, gamma, beta = (
                torch.zeros_like(bias),
                torch.full_like(bias, 1.0 - eps),
                torch.ones_like(bias),
                bias,
            )
        values = {"weight": gamma, "bias": beta, "running_mean": mean, "running_var": var, "num_batches_tracked": t}
        out[key] = values[leaf].to(t.dtype)
    return out


DEAD_SCALE = 1e-3  # removed channels' weights: the random init this much smaller than trained weights


def _dead(full: nn.Module) -> None:
    """What a removed channel holds, everywhere in `full`: BN γ = β = 0 with mean 0 and variance 1 (it outputs
    exactly 0), conv weights at DEAD_SCALE × their random init, everything else 0."""
    with torch.no_grad():
        for m in full.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(DEAD_SCALE)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.zero_(), m.bias.zero_(), m.running_mean.zero_(), m.running_var.fill_(1.0)
            else:
                for t in list(m.parameters(recurse=False)) + [
                    b for b in m.buffers(recurse=False) if b.is_floating_point()
                ]:
                    t.zero_()


def inflate(
    weights: str | os.PathLike | nn.Module,
    yaml: str = "yolo11n.yaml",
    images: torch.Tensor | None = None,
    atol: float = 1e-3,
) -> nn.Module:
    """The unpruned `yaml` architecture, with BatchNorm, computing what the pruned checkpoint `weights`
    computes (checked on a random input within `atol`). Its removed channels hold zeros. `images`
    (N×3×H×W in [0, 1], e.g. `calibration_images`) give BN its running statistics."""
    pruned = load_model(weights)
    full = load_model(yaml)
    shapes, full_shapes = conv_shapes(pruned), conv_shapes(full)
    names = default_targets(full)
    if set(shapes) != set(full_shapes) or any(name not in shapes for name in names):
        raise LipsError(f"{weights} does not have the layers of {yaml}; inflate needs a pruned copy of that yaml")
    # n − floor(n·r) = kept  ⇔  r in ((n − kept)/n, (n − kept + 1)/n]: the midpoint is safe from rounding
    ratios = {k: (full_shapes[k][0] - shapes[k][0] + 0.5) / full_shapes[k][0] for k in names}
    res = prune(full, ratios, log=False, track=True)
    if conv_shapes(res.model) != shapes:
        raise LipsError(f"{weights} is not {yaml} pruned on the LIPS target layers (its other widths differ)")
    stats = conv_output_stats(pruned, images) if images is not None else None
    res.model.load_state_dict(_unfused_state(pruned, res.model, stats))
    _dead(full)
    with torch.no_grad():
        kept = tensors(res.model)
        for name, t in tensors(full).items():
            t.view(-1)[res.origin[name].view(-1)] = kept[name].detach().reshape(-1).to(t.dtype)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = pruned.eval()(x)[0], full.eval()(x)[0]
    err = float((want - got).abs().max())
    if not err <= atol:
        raise LipsError(f"the inflated model differs from {weights} by {err:.2e} (> {atol}); this is a lipslib bug")
    return full
