"""Warm start: carry a fine-tuned model's weights into the next, differently pruned copy of the same base.

The paper prunes the pretrained base afresh every iteration, so each iteration's fine-tuning starts over
and the loop's epochs never add up in one model: on a small budget, the best iteration has had only one
iteration's epochs. With a warm start, every element that the new copy keeps and the previous one had
(same tensor, same place in the base; `prune(..., track=True)` records those places) takes the previous
fine-tuned value; channels that come back take the base's value. An option (`optimize.warm_start`), off
in the paper profile.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from lipslib.pruning.engine import tensors


def inherit(
    model: nn.Module, origin: dict[str, torch.Tensor], donor: nn.Module, donor_origin: dict[str, torch.Tensor]
) -> float:
    """Copy into `model` (in place) each element `donor` has at the same base place. `origin` and
    `donor_origin` are the two `PruneResult.origin`s, both pruned from one base. Returns the share of
    `model`'s elements copied."""
    theirs = tensors(donor)
    copied = total = 0
    with torch.no_grad():
        for name, t in tensors(model).items():
            total += t.numel()
            if name not in theirs or name not in donor_origin:
                continue
            src = donor_origin[name].flatten()
            order = torch.argsort(src)
            src_sorted = src[order]
            want = origin[name].flatten()
            pos = torch.searchsorted(src_sorted, want).clamp(max=len(src_sorted) - 1)
            hit = src_sorted[pos] == want
            values = theirs[name].detach().flatten()[order[pos[hit]]]
            flat = t.data.view(-1)
            flat[hit] = values.to(flat.dtype)
            copied += int(hit.sum())
    return copied / max(total, 1)
