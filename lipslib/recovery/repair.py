"""Bias repair right after pruning: the BN-free counterpart of BatchNorm recalibration.

Removing a channel removes its contribution to every conv that reads it. On average over real images that
contribution is a constant per output channel: δ_j = E[(W_j,removed ∗ x_removed)(h, w)], which the base
itself can measure. Folding δ into the consumer's bias (a fused conv) or out of its BN running mean (a BN
model in eval mode) restores every kept channel's mean pre-activation, so the pruned copy starts from
the base's operating point instead of a shifted one. One pass of the base over the images; the removed
inputs of each conv come from `prune(..., track=True)`.

A warm-started copy (`lipslib.recovery.warmstart`) carries a fine-tuned donor's weights, so what its new cuts remove
is the donor's contribution, not the base's: with `donor`, δ is measured on the donor over the channels the
donor has and the copy drops. Output channels the donor lacks (they come back with the base's weights) get
δ = 0, and input channels that come back are not compensated: the donor never computed them.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lipslib.pruning.engine import PruneResult
from lipslib.recovery.lsq import plans


def removed_contributions(
    res: PruneResult,
    base: nn.Module,
    images: torch.Tensor,
    batch: int = 16,
    donor: nn.Module | None = None,
    donor_origin: dict | None = None,
) -> dict:
    """{conv name: δ (one value per output channel of the conv in `res.model`)}: the mean over `images` of
    what the input channels that `res.model` drops added to its kept outputs, measured on `base`, or with
    `donor` (pruned from `base` with channel origins `donor_origin`) on the donor. `res` must come from
    pruning `base` with track=True. The convs and their places are `lipslib.recovery.lsq.plans`' (the refit's
    special case: the bias alone)."""
    todo = plans(res, base, donor, donor_origin)
    ref = base if donor is None else donor
    sums = {}

    def hook(name):
        plan = todo[name]
        conv = plan.ref
        removed = torch.ones(conv.in_channels, dtype=torch.bool)
        removed[plan.ref_cols] = False
        removed = torch.nonzero(removed).flatten()
        weight = conv.weight.detach()[plan.ref_rows][:, removed]

        def record(module, args):
            x = args[0][:, removed.to(args[0].device)]
            y = F.conv2d(x, weight.to(x), None, conv.stride, conv.padding, conv.dilation)
            s = sums.setdefault(name, [0, 0.0])
            s[0] += y.shape[0] * y.shape[2] * y.shape[3]
            s[1] = s[1] + y.double().sum((0, 2, 3))

        return record

    handles = [todo[n].ref.register_forward_pre_hook(hook(n)) for n in todo]
    try:
        with torch.no_grad():
            net = ref.eval()
            for i in range(0, len(images), batch):
                net(images[i : i + batch].to(next(net.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    modules, deltas = dict(res.model.named_modules()), {}
    for name, (k, s) in sums.items():
        deltas[name] = torch.zeros(modules[name].out_channels)
        deltas[name][todo[name].rows] = (s.cpu() / k).float()
    return deltas


def repair_biases(
    res: PruneResult,
    base: nn.Module,
    images: torch.Tensor,
    batch: int = 16,
    donor: nn.Module | None = None,
    donor_origin: dict | None = None,
) -> dict[str, float]:
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
