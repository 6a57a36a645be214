"""Bias repair right after pruning: the BN-free counterpart of BatchNorm recalibration.

Removing a channel removes its contribution to every conv that reads it. On average over real images that
contribution is a constant per output channel: δ_j = E[(W_j,removed ∗ x_removed)(h, w)], which the base
itself can measure. Folding δ into the consumer's bias (a fused conv) or out of its BN running mean (a BN
model in eval mode) restores every kept channel's mean pre-activation, so the pruned copy starts from
the base's operating point instead of a shifted one. One pass of the base over the images; the removed
inputs of each conv come from `prune(..., track=True)`.

A warm-started copy (`lipslib.warmstart`) carries a fine-tuned donor's weights, so what its new cuts remove
is the donor's contribution, not the base's: with `donor`, δ is measured on the donor over the channels the
donor has and the copy drops. Output channels the donor lacks (they come back with the base's weights) get
δ = 0, and input channels that come back are not compensated: the donor never computed them.
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


def removed_contributions(res: PruneResult, base: nn.Module, images: torch.Tensor, batch: int = 16,
                          donor: nn.Module | None = None, donor_origin: dict | None = None) -> dict:  # fmt: skip
    """{conv name: δ (one value per output channel of the conv in `res.model`)}: the mean over `images` of
    what the input channels that `res.model` drops added to its kept outputs, measured on `base`, or with
    `donor` (pruned from `base` with channel origins `donor_origin`) on the donor. `res` must come from
    pruning `base` with track=True."""
    if res.origin is None or (donor is not None and donor_origin is None):
        raise ValueError("bias repair needs the channel origins: prune with track=True")
    ref = base if donor is None else donor
    ref_convs = dict(ref.named_modules())
    plans, sums = {}, {}
    for name, conv in base.named_modules():
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1:  # depthwise: a channel goes in and out together
            continue
        key = f"{name}.weight"
        out_new, in_new = _kept(res.origin[key], conv.weight.shape)
        if donor is None:
            out_ref, in_ref = torch.arange(conv.out_channels), torch.arange(conv.in_channels)
        else:
            out_ref, in_ref = _kept(donor_origin[key], conv.weight.shape)
        rows = torch.searchsorted(out_ref, out_new).clamp(max=len(out_ref) - 1)  # out_new's places in the reference
        present = out_ref[rows] == out_new
        removed = torch.nonzero(~torch.isin(in_ref, in_new)).flatten()
        if len(removed) and present.any():
            plans[name] = (ref_convs[name], rows[present], present, removed)

    def hook(name):
        conv, rows, _, removed = plans[name]
        weight = conv.weight.detach()[rows][:, removed]

        def record(module, args):
            x = args[0][:, removed.to(args[0].device)]
            y = F.conv2d(x, weight.to(x), None, conv.stride, conv.padding, conv.dilation)
            s = sums.setdefault(name, [0, 0.0])
            s[0] += y.shape[0] * y.shape[2] * y.shape[3]
            s[1] = s[1] + y.double().sum((0, 2, 3))

        return record

    handles = [plans[n][0].register_forward_pre_hook(hook(n)) for n in plans]
    try:
        with torch.no_grad():
            net = ref.eval()
            for i in range(0, len(images), batch):
                net(images[i : i + batch].to(next(net.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    deltas = {}
    for name, (k, s) in sums.items():
        present = plans[name][2]
        deltas[name] = torch.zeros(len(present))
        deltas[name][present] = (s.cpu() / k).float()
    return deltas


def repair_biases(res: PruneResult, base: nn.Module, images: torch.Tensor, batch: int = 16,
                  donor: nn.Module | None = None, donor_origin: dict | None = None) -> dict[str, float]:  # fmt: skip
    """Fold the removed channels' mean contributions (`removed_contributions`, on `base` or on `donor`) into
    `res.model`, in place: a conv's bias, or for a conv followed by BatchNorm its running mean. Returns
    {conv: mean |δ|}."""
    deltas = removed_contributions(res, base, images, batch, donor, donor_origin)
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
