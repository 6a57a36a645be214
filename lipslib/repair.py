"""Bias repair right after pruning: the BN-free counterpart of BatchNorm recalibration.

Removing a channel removes its contribution to every conv that reads it. On average over real images that
contribution is a constant per output channel: δ_j = E[(W_j,removed ∗ x_removed)(h, w)], which the base
itself can measure. Folding δ into the consumer's bias (a fused conv) or out of its BN running mean (a BN
model in eval mode) restores every kept channel's mean pre-activation, so the pruned copy starts from
the base's operating point instead of a shifted one. One pass of the base over the images; the removed
inputs of each conv come from `prune(..., track=True)`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lipslib.engine import PruneResult


def _kept(origin: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept output channels, kept input channels) of a conv weight of `shape` from its origin indices."""
    out_ch, in_ch, kh, kw = shape
    flat = origin.reshape(-1)
    return torch.unique(flat // (in_ch * kh * kw)), torch.unique((flat // (kh * kw)) % in_ch)


def removed_contributions(res: PruneResult, base: nn.Module, images: torch.Tensor, batch: int = 16) -> dict:
    """{conv name: δ (one value per kept output channel)}: the mean over `images` of what the removed input
    channels of each dense conv of `base` added to its kept outputs. `res` must come from pruning `base`
    with track=True."""
    if res.origin is None:
        raise ValueError("bias repair needs the channel origins: prune with track=True")
    plans, sums = {}, {}
    for name, conv in base.named_modules():
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1:  # depthwise: a channel goes in and out together
            continue
        kept_out, kept_in = _kept(res.origin[f"{name}.weight"], conv.weight.shape)
        removed = torch.tensor(sorted(set(range(conv.in_channels)) - set(kept_in.tolist())), dtype=torch.long)
        if len(removed):
            plans[name] = (conv, kept_out, removed)

    def hook(name):
        conv, kept_out, removed = plans[name]
        weight = conv.weight.detach()[kept_out][:, removed]

        def record(module, args):
            x = args[0][:, removed.to(args[0].device)]
            y = F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation)
            s = sums.setdefault(name, [0, 0.0])
            s[0] += y.shape[0] * y.shape[2] * y.shape[3]
            s[1] = s[1] + y.double().sum((0, 2, 3))

        return record

    handles = [plans[n][0].register_forward_pre_hook(hook(n)) for n in plans]
    try:
        with torch.no_grad():
            net = base.eval()
            for i in range(0, len(images), batch):
                net(images[i : i + batch].to(next(net.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return {n: (s / k).float() for n, (k, s) in sums.items()}


def repair_biases(res: PruneResult, base: nn.Module, images: torch.Tensor, batch: int = 16) -> dict[str, float]:
    """Fold the removed channels' mean contributions (`removed_contributions`) into `res.model`, in place:
    a conv's bias, or for a conv followed by BatchNorm its running mean. Returns {conv: mean |δ|}."""
    deltas = removed_contributions(res, base, images, batch)
    modules = dict(res.model.named_modules())
    with torch.no_grad():
        for name, delta in deltas.items():
            conv = modules[name]
            owner = modules.get(name.rpartition(".")[0])
            bn = getattr(owner, "bn", None) if name.endswith(".conv") else None
            if isinstance(bn, nn.BatchNorm2d):  # eval BN(z + δ) = BN with its mean lowered by δ
                bn.running_mean -= delta.to(bn.running_mean)
            elif conv.bias is not None:
                conv.bias += delta.to(conv.bias)
            else:
                conv.bias = nn.Parameter(delta.to(conv.weight))
    return {n: float(d.abs().mean()) for n, d in deltas.items()}
