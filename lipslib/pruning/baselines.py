"""Same-harness baselines for LIPS at equal cost: each prunes the base once to a GFLOPs target.

- uniform: every LIPS target layer at one ratio, found by bisection;
- shaped: the importance-shaped schedule (ratio + spread·(mean imp − imp_i)) with its mean ratio found by
  bisection, i.e. LIPS's first iteration without the loop;
- global magnitude: torch-pruning's global L1 ranking over every prunable group of the whole model, its
  global ratio found by bisection.

torch-pruning cannot prune YOLO11 as a whole out of the box: C3k2 (a C2f) splits its cv1 output with
`chunk`, which fails at `step()` once the two halves lose different channels, and tracing C2PSA's
attention never finishes. So C2f/C3k2 blocks are rewritten as the same function with cv1's halves as two
convs (`C2fSplit`), and C2PSA is left unpruned (its input channels still follow its producer). The
result is a module tree Ultralytics trains and validates, but loading it needs lipslib importable.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch_pruning as tp

from lipslib.errors import LipsError
from lipslib.pruning.costs import bisect
from lipslib.pruning.engine import CRITERIA, PruneResult, _origin_probe, cost_counter, origins, output_tensors, prune
from lipslib.pruning.layers import default_targets, detect_head
from lipslib.schedule import initial_schedule


class C2fSplit(nn.Module):
    """C2f / C3k2 with cv1's two output halves computed by two convs (cv0, cv1): same outputs."""

    def __init__(self, block: nn.Module):
        super().__init__()
        c = block.c
        self.cv0, self.cv1 = _out_slice(block.cv1, 0, c), _out_slice(block.cv1, c, 2 * c)
        self.m, self.cv2 = block.m, block.cv2
        for attr in ("i", "f", "type", "np"):  # Ultralytics' per-block bookkeeping (parse_model)
            if hasattr(block, attr):
                setattr(self, attr, getattr(block, attr))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv0(x), self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


def _out_slice(conv_block: nn.Module, start: int, stop: int) -> nn.Module:
    """A copy of an Ultralytics Conv (conv [+ bn] + act) keeping output channels start:stop."""
    block = copy.deepcopy(conv_block)
    old = block.conv
    new = nn.Conv2d(
        old.in_channels,
        stop - start,
        old.kernel_size,
        old.stride,
        old.padding,
        old.dilation,
        old.groups,
        bias=old.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(old.weight[start:stop])
        if old.bias is not None:
            new.bias.copy_(old.bias[start:stop])
    block.conv = new
    bn = getattr(block, "bn", None)
    if isinstance(bn, nn.BatchNorm2d):
        sliced = nn.BatchNorm2d(stop - start, bn.eps, bn.momentum)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(sliced, name).copy_(getattr(bn, name)[start:stop])
        block.bn = sliced
    return block


def split_c2f(model: nn.Module) -> nn.Module:
    """Replace every C2f/C3k2 block of the top-level sequence (in place) by its C2fSplit."""
    from ultralytics.nn.modules.block import C2f

    for i, block in enumerate(model.model):
        if isinstance(block, C2f):
            model.model[i] = C2fSplit(block)
    return model


def _ignored(model: nn.Module) -> list[nn.Module]:
    """What the global pruner must not prune: the head's prediction convs, DFL, and C2PSA (attention)."""
    from ultralytics.nn.modules.block import C2PSA

    head = detect_head(model)
    keep = [seq[-1] for branch in (head.cv2, head.cv3) for seq in branch]
    return keep + [head.dfl] + [m for m in model.modules() if isinstance(m, C2PSA)]


def global_magnitude_at(
    base: nn.Module,
    ratio: float,
    criterion: str = "l1",
    max_ratio: float = 0.9,
    round_to: int | None = None,
    track: bool = False,
) -> nn.Module | PruneResult:
    """A copy of `base` pruned by torch-pruning's global ranking at global channel ratio `ratio`. With `track`, a
    PruneResult whose `origin` places every kept element in `split_c2f(base)` (a lockstep prune of an origin probe,
    as `engine.prune` keeps), for recovery against that split copy."""
    model = split_c2f(copy.deepcopy(base)).eval()
    probe, probe_graph = _origin_probe(model) if track else (None, None)
    names = {m: n for n, m in model.named_modules()}
    example = torch.zeros(1, 3, 64, 64, device=next(model.parameters()).device)
    with torch.enable_grad():
        pruner = tp.pruner.BasePruner(
            model,
            example,
            importance=CRITERIA[criterion](),
            global_pruning=True,
            pruning_ratio=ratio,
            max_pruning_ratio=max_ratio,
            ignored_layers=_ignored(model),
            round_to=round_to,
            output_transform=output_tensors,
        )
        for group in pruner.step(interactive=True):
            root = group[0].dep
            if track:  # the same channels of the same layer, before the group changes the module
                twin = probe.get_submodule(names[root.target.module])
                probe_group = probe_graph.get_pruning_group(twin, root.handler, idxs=list(group[0].idxs))
            group.prune()
            if track:
                probe_group.prune()
    if not track:
        return model
    return PruneResult(model=model, ratios={}, origin=origins(probe, model))


def at_gflops(
    method: str,
    base: nn.Module,
    target_gflops: float,
    *,
    importance: dict[str, float] | None = None,
    spread: float = 0.2,
    r_max: float = 0.9,
    criterion: str = "l1",
    round_to: int | None = None,
    steps: int = 14,
    cost=None,
) -> dict:
    """Prune `base` once to a GFLOPs budget (or a budget in another cost) with a baseline method, its one scalar
    found by bisection.

    Args:
        method: `uniform` (every LIPS target at one ratio), `shaped` (the importance-shaped schedule,
            ratio + spread·(mean imp − imp_i), at the mean ratio that meets the budget) or `global`
            (torch-pruning's global magnitude ranking over the whole model, at one global ratio).
        base: the model to prune (not changed).
        target_gflops: the budget, below the base's GFLOPs (at 640, the paper's convention).
        importance: `{layer: importance}`, needed by `shaped`.
        spread: the shaping's strength for `shaped`.
        r_max: the largest ratio tried.
        criterion: channel score: `l1`, `l2` or `random`.
        round_to: round kept widths to multiples of this.
        steps: bisection steps on the scalar.
        cost: a model's cost in another unit, e.g. `costs.LatencyCost(...).predict` (milliseconds on a runtime);
            `target_gflops` is then a budget in that unit. None: GFLOPs.

    Returns:
        `{'model' (the pruned copy), 'gflops', 'cost' (in the budget's unit), 'scalar' (the ratio found),
        'ratios' (`{layer: ratio}` per LIPS target; None for global)}`.

    Raises:
        LipsError: an unknown method, a budget outside (0, base GFLOPs), or `shaped` without importance.

    Examples:
        >>> cut = at_gflops("uniform", load_model("lips_iter01_best.pt"), 3.9)  # doctest: +SKIP
        >>> res = prune(base, cut["ratios"], track=True)                      # doctest: +SKIP
    """
    count = cost_counter(base)  # exact (counted at 64 px and scaled): the bisection's counts cost little
    measure, unit = (cost, "ms") if cost is not None else ((lambda m: count(m).gflops), "GFLOPs")
    base_cost = measure(base)
    if not 0 < target_gflops < base_cost:
        raise LipsError(f"baseline target {target_gflops} {unit} must be in (0, {base_cost:.3f}) for this base")
    names = default_targets(base)
    if method in ("uniform", "shaped"):
        if method == "shaped" and not importance:
            raise LipsError("the shaped baseline needs an importance vector")
        imp = {k: (importance or {}).get(k, 0.0) for k in names}
        kind = "uniform" if method == "uniform" else "importance"

        def shape(s):
            return initial_schedule(imp, kind, s, spread, 0.0, r_max)

        s, model, c = bisect(
            lambda x: prune(base, shape(x), criterion=criterion, round_to=round_to, log=False).model,
            target_gflops,
            measure,
            hi=r_max,
            steps=steps,
            grid=0 if cost is None else 6,  # measured ms need not fall everywhere (`costs.bisect`)
        )
        return {"model": model, "gflops": count(model).gflops, "cost": c, "scalar": s, "ratios": shape(s)}
    if method == "global":
        s, model, c = bisect(
            lambda r: global_magnitude_at(base, r, criterion, r_max, round_to),
            target_gflops,
            measure,
            hi=r_max,
            steps=steps,
            grid=0 if cost is None else 6,
        )
        return {"model": model, "gflops": count(model).gflops, "cost": c, "scalar": s, "ratios": None}
    raise LipsError(f"unknown baseline '{method}'; choose uniform, shaped or global")


def tracked(
    method: str, base: nn.Module, cut: dict, *, criterion: str = "l1", round_to: int | None = None, r_max: float = 0.9
) -> tuple[PruneResult, nn.Module]:
    """The cut `at_gflops(method, base, …)` returned, made again with channel origins for recovery
    (`lipslib.recovery`), and the model those origins refer to: `base`, or for global magnitude its `split_c2f` copy
    (same outputs, the names the pruned copy has)."""
    if method == "global":
        res = global_magnitude_at(base, cut["scalar"], criterion, r_max, round_to, track=True)
        return res, split_c2f(copy.deepcopy(base))
    return prune(base, cut["ratios"], criterion=criterion, round_to=round_to, log=False, track=True), base
