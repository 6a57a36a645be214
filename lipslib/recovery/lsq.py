"""Least-squares reconstruction right after pruning: refit every consumer of removed channels on what it keeps.

Removing a channel removes its contribution to every dense conv that reads it, but most of that contribution is
predictable from the channels that stay. For each such conv, its kept output rows are refit on its kept inputs so
that its output on calibration images matches the reference's: the unpruned base for a fresh copy, or the
previous iteration's fine-tuned weights for a warm copy (`lipslib.recovery.warmstart`). With P the im2col patches of the
reference's own input to the conv, extended by a column of ones, G = PᵀP summed over every output pixel of every
calibration image, θ_ref the reference's weights and bias of the kept rows (one column per row), and k the kept
input columns plus the bias column,

    θ = (G_kk + λ · mean(diag G_kk) · I_w)⁻¹ · G_k,all · θ_ref

the ridge least-squares fit of the reference's output from the kept patches (I_w: the identity on the weight
columns; the bias is not regularised). Bias repair (`lipslib.recovery.repair`) is the special case that refits the bias
alone. Each conv is fitted independently, on the reference's inputs rather than the pruned copy's, so a conv's fit
never chases the errors of the convs before it.

A deep conv has many inputs (C·k² up to 2,304 in yolo11n) and few pixels (a 10 × 10 map at 320 px), so with few
calibration images the fit can be underdetermined and worse than bias repair on other images. The images are
therefore split in two folds: every candidate (the ridge λ, or several for `ridge="auto"`, and bias repair) is
fitted on one fold and scored on the other, both ways, and each conv keeps the candidate that predicted best,
refit on all the images.

Memory: two Grams (one per fold) of (C·k² + 1)² float64 per refit conv (C input channels of the reference,
k × k kernel), all held during one pass of the reference over the images; `max_bytes` bounds their sum, and convs beyond
it go to further passes (`gram_bytes` states the need). BatchNorm models: the conv is fitted before its BN, and
the fitted bias is folded into the BN's running mean, as bias repair does.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lipslib.errors import LipsError
from lipslib.pruning.engine import PruneResult
from lipslib.runtime import fp32_kernels

MAX_GRAM_BYTES = 2 << 30  # default bound on the Grams held at once (all dense convs of yolo11n: 0.28 GiB)
FOLDS = 2  # calibration images split in two, so that each refit is checked on images it was not fitted on
RIDGES = (1e-4, 1e-3, 1e-2, 1e-1)  # the λ tried with ridge: auto


@dataclass
class Plan:
    """One conv to refit: where its rows and input channels sit in the copy and in the reference."""

    ref: nn.Conv2d  # the reference's conv (its input is recorded, its weights are the target)
    rows: torch.Tensor  # output rows of the copy's conv that the reference has
    ref_rows: torch.Tensor  # the same rows' places in the reference's conv
    cols: torch.Tensor  # input channels of the copy's conv that the reference has
    ref_cols: torch.Tensor  # the same channels' places in the reference's input


def _places(origin: torch.Tensor, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """(output rows, input channels) of a pruned conv weight in its unpruned conv of `shape`, in the pruned
    conv's own order, from the weight's origin indices."""
    _, in_ch, kh, kw = shape
    return origin[:, 0, 0, 0] // (in_ch * kh * kw), (origin[0, :, 0, 0] // (kh * kw)) % in_ch


def _match(mine: torch.Tensor, theirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions in `mine`, positions in `theirs`) of the base places both hold."""
    where = {int(p): i for i, p in enumerate(theirs)}
    pairs = [(i, where[int(p)]) for i, p in enumerate(mine) if int(p) in where]
    if not pairs:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    a, b = zip(*pairs)
    return torch.tensor(a), torch.tensor(b)


def plans(res: PruneResult, base: nn.Module, ref: nn.Module | None = None, ref_origin: dict | None = None) -> dict:
    """{conv name: Plan} for every dense conv of `res.model` that lacks input channels its reference has.
    The reference is `base` itself, or `ref`, pruned from `base` with channel origins `ref_origin` (a warm
    copy's donor). `res` must come from pruning `base` with track=True."""
    if res.origin is None or (ref is not None and ref_origin is None):
        raise LipsError("recovery needs the channel origins: prune with track=True")
    reference = base if ref is None else ref
    ref_convs, out = dict(reference.named_modules()), {}
    for name, conv in base.named_modules():
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1:  # depthwise: a channel goes in and out together
            continue
        key = f"{name}.weight"
        rows, cols = _places(res.origin[key], conv.weight.shape)
        if ref is None:
            ref_rows, ref_cols = torch.arange(conv.out_channels), torch.arange(conv.in_channels)
        else:
            ref_rows, ref_cols = _places(ref_origin[key], conv.weight.shape)
        row_pos, ref_row_pos = _match(rows, ref_rows)
        col_pos, ref_col_pos = _match(cols, ref_cols)
        if len(row_pos) and len(ref_col_pos) < len(ref_cols):  # the copy lacks inputs the reference has
            out[name] = Plan(ref_convs[name], row_pos, ref_row_pos, col_pos, ref_col_pos)
    return out


def gram_size(conv: nn.Conv2d) -> int:
    """Side of a conv's Gram: C·k² + 1 (its input patches and the constant of the bias)."""
    return conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] + 1


def gram_bytes(convs) -> int:
    """Bytes of the float64 Grams (FOLDS per conv) of `convs` (Conv2d modules), held at once in a pass."""
    return sum(FOLDS * gram_size(c) ** 2 * 8 for c in convs)


def _passes(named: dict[str, nn.Conv2d], max_bytes: int) -> list[list[str]]:
    """Convs grouped into passes whose Grams fit in max_bytes together (in model order)."""
    groups, size = [[]], 0
    for name, conv in named.items():
        need = gram_bytes([conv])
        if need > max_bytes:
            raise LipsError(
                f"the Gram of {name} takes {need / 2**20:.0f} MiB, over recover.max_gib "
                f"({max_bytes / 2**20:.0f} MiB); raise it"
            )
        if size + need > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += need
    return [g for g in groups if g]


def grams(
    ref: nn.Module, images: torch.Tensor, names, batch: int = 16, max_bytes: int = MAX_GRAM_BYTES
) -> dict[str, torch.Tensor]:
    """{conv name: G (FOLDS × D × D)}: the Grams of [im2col patches of the conv's input, 1] over every output pixel
    of `ref` run on `images` (N×3×H×W in [0, 1]), image i summed into fold i mod FOLDS; float64, on `ref`'s device.
    One pass of `ref` per `max_bytes` of Grams."""
    modules = dict(ref.named_modules())
    named = {n: modules[n] for n in modules if n in set(names)}
    device = next(ref.parameters()).device
    out: dict[str, torch.Tensor] = {}
    first = [0]  # index of the batch's first image

    def hook(name, conv):
        def record(module, args):
            if name not in out:
                out[name] = torch.zeros(FOLDS, gram_size(conv), gram_size(conv), dtype=torch.float64, device=device)
            for i, x in enumerate(args[0]):  # one image at a time: an image's patches of an early conv at 640: ~30 MB
                p = F.unfold(x[None], conv.kernel_size, conv.dilation, conv.padding, conv.stride)[0]
                p = torch.cat([p, p.new_ones(1, p.shape[1])])
                out[name][(first[0] + i) % FOLDS] += (p @ p.T).double()

        return record

    net = ref.eval()
    for group in _passes(named, max_bytes):
        handles = [named[n].register_forward_pre_hook(hook(n, named[n])) for n in group]
        try:  # fp32 patch products (no TF32 on a GPU), summed per image in float64
            with torch.no_grad(), fp32_kernels():
                for first[0] in range(0, len(images), batch):
                    net(images[first[0] : first[0] + batch].to(device))
        finally:
            for h in handles:
                h.remove()
    return out


def _target(plan: Plan) -> torch.Tensor:
    """θ_ref: the reference's weights (one row per input patch column) and bias (last row) of the kept rows."""
    conv = plan.ref
    w = conv.weight.detach().double()[plan.ref_rows].reshape(len(plan.ref_rows), -1)
    b = conv.bias.detach().double()[plan.ref_rows] if conv.bias is not None else w.new_zeros(len(plan.ref_rows))
    return torch.cat([w.T, b[None]])


def _kept_columns(plan: Plan, device) -> torch.Tensor:
    """The Gram's columns of the kept input channels' patches (each channel's k² taps together)."""
    kk = plan.ref.kernel_size[0] * plan.ref.kernel_size[1]
    return (plan.ref_cols[:, None] * kk + torch.arange(kk)).flatten().to(device)


def _fit(gram: torch.Tensor, plan: Plan, how) -> torch.Tensor:
    """A refit θ ((C·k² + 1) × rows, zero on the removed inputs) of the reference's kept rows from one Gram: ridge
    least squares with λ = `how`, or bias repair (`how` = "repair": kept weights as they are, the removed inputs'
    mean contribution folded into the bias)."""
    target = _target(plan).to(gram.device)
    cols = _kept_columns(plan, gram.device)
    theta = torch.zeros_like(target)
    n = gram.shape[0] - 1
    if how == "repair":
        removed = torch.ones(n, dtype=torch.bool, device=gram.device)
        removed[cols] = False
        theta[cols] = target[cols]
        theta[n] = target[n] + gram[n, :n][removed] @ target[:n][removed] / gram[n, n].clamp_min(1e-30)
        return theta
    k = torch.cat([cols, torch.tensor([n], device=gram.device)])
    a = gram[k][:, k].clone()
    diag = torch.arange(len(cols), device=gram.device)
    a[diag, diag] += float(how) * a[diag, diag].mean()  # the bias (last) stays unregularised
    theta[k] = torch.linalg.solve(a, gram[k] @ target)
    return theta


def _error(gram: torch.Tensor, theta: torch.Tensor, target: torch.Tensor) -> float:
    """‖P θ − P θ_ref‖² over the pixels of `gram` (all rows), from the Gram alone."""
    diff = theta - target
    return float((diff * (gram @ diff)).sum())


def choose(folds: torch.Tensor, plan: Plan, ridge) -> tuple[object, dict]:
    """The refit for `plan` with the least error on held-out images: each candidate (λ = `ridge`, or each of
    RIDGES for "auto", and bias repair) is fitted on one fold and scored on the other, both ways. Returns (the
    winner, {candidate: held-out error relative to the reference output's})."""
    candidates = list(RIDGES if ridge == "auto" else (float(ridge),)) + ["repair"]
    if folds.shape[0] < 2 or not bool((folds.flatten(1)[:, -1] > 0).all()):  # a fold without images: no check
        return candidates[0], {}
    target = _target(plan).to(folds.device)
    scale = sum(_error(g, torch.zeros_like(target), target) for g in folds)
    held = {
        c: sum(_error(folds[1 - i], _fit(folds[i], plan, c), target) for i in range(2)) / max(scale, 1e-30)
        for c in candidates
    }
    return min(candidates, key=held.get), held


def reconstruct(
    res: PruneResult,
    base: nn.Module,
    images: torch.Tensor | None = None,
    *,
    ridge: float | str = 1e-3,
    ref: nn.Module | None = None,
    ref_origin: dict | None = None,
    gram_cache: dict | None = None,
    batch: int = 16,
    max_bytes: int = MAX_GRAM_BYTES,
    device=None,
) -> dict[str, float]:
    """Refit, in place, every conv of `res.model` whose input channels the cut removed (see the module doc).

    Args:
        res: a copy of `base` pruned with track=True.
        base: the model `res` was pruned from.
        images: calibration images (N×3×H×W in [0, 1], e.g. `calibration_images`); may be None when
            `gram_cache` already holds every Gram needed.
        ridge: λ, relative to the mean diagonal of the kept inputs' Gram, or "auto": the best of RIDGES on
            held-out images.
        ref: the reference whose outputs are matched, when it is not `base`: a warm copy's donor, pruned
            from `base` with channel origins `ref_origin`. Rows and inputs the donor lacks are left as they are.
        gram_cache: a dict that keeps the reference's Grams between calls (reused by name, filled when missing);
            valid for one reference and one set of images only.
        batch: images per forward of the reference.
        max_bytes: bound on the Grams held at once (further passes beyond it).
        device: where the reference's pass, its Grams and the solves run (a torch device, or a device string as
            params.yaml takes it: cpu, 0, 0,1 → the first GPU; None: where the reference is). `res.model` stays
            where it is.

    Returns:
        {conv name: {'fit': the λ chosen, or 'repair' where bias repair did better on held-out images,
        'residual': the fit's squared error on the calibration images over the reference output's (0: perfect),
        'held_out': each candidate's relative error on the fold it was not fitted on}}.

    Raises:
        LipsError: a copy pruned without channel origins (track=False), a bad ridge, images that do not match
            the model, or no images where Grams must be computed.

    Example:
        >>> res = prune(base, {"model.2.cv1.conv": 0.3}, track=True)            # doctest: +SKIP
        >>> reconstruct(res, base, calibration_images("coco128.yaml", n=64))    # doctest: +SKIP
    """
    if ridge != "auto" and not float(ridge) >= 0:
        raise LipsError(f"reconstruction ridge must be ≥ 0 or auto, got {ridge!r}")
    todo = plans(res, base, ref, ref_origin)
    cache = {} if gram_cache is None else gram_cache
    missing = [n for n in todo if n not in cache]
    if missing:
        if images is None:
            raise LipsError("reconstruction needs calibration images for Grams it has not computed")
        reference = base if ref is None else ref
        if device is not None:
            reference = _on(reference, device)
        cache.update(grams(reference, images, missing, batch, max_bytes))
    modules, report = dict(res.model.named_modules()), {}
    ref_modules = dict((base if ref is None else ref).named_modules())
    with torch.no_grad():
        for name, plan in todo.items():
            how, held = choose(cache[name], plan, ridge)
            g = cache[name].sum(0)
            theta = _fit(g, plan, how)
            weight = theta[_kept_columns(plan, g.device)].T.reshape(
                len(plan.rows), len(plan.cols), *plan.ref.kernel_size
            )
            bias = theta[-1]
            conv = modules[name]
            rows, cols = plan.rows.to(conv.weight.device), plan.cols.to(conv.weight.device)
            conv.weight[rows[:, None], cols[None, :]] = weight.to(conv.weight)
            owner = name.rpartition(".")[0]
            bn = getattr(modules.get(owner), "bn", None) if name.endswith(".conv") else None
            if conv.bias is not None:
                conv.bias[rows] = bias.to(conv.bias)
            elif isinstance(bn, nn.BatchNorm2d):  # eval BN(z + b) is BN with its mean lowered by b
                ref_bn = ref_modules[owner].bn
                bn.running_mean[rows] = ref_bn.running_mean[plan.ref_rows.to(ref_bn.running_mean.device)].to(
                    bn.running_mean
                ) - bias.to(bn.running_mean)
            else:
                conv.bias = nn.Parameter(torch.zeros(conv.out_channels).to(conv.weight))
                conv.bias[rows] = bias.to(conv.bias)
            report[name] = {"fit": how, "residual": _residual(g, plan, theta), "held_out": held}
    return report


def refit_sequential(
    res: PruneResult, base: nn.Module, images: torch.Tensor, ridge: float = 1e-3, batch: int = 16
) -> dict[str, float]:
    """Refit, in place and in network order, every conv of `res.model` that lost input channels, on the pruned
    copy's *own* inputs (after the refits before it) with the base's conv outputs as targets.

    `reconstruct` fits each conv on the base's inputs, so it never chases the errors of the convs before it, and
    never corrects them either; this fit does, at the price of one pass of both models over the images per conv
    (minutes, not seconds). An experiment, not a recovery option: `benchmarks/bench_refit.py` measures it against
    `reconstruct`.

    Args:
        res: a copy of `base` pruned with track=True (BN-free: the fit writes the conv's bias).
        base: the model it was pruned from.
        images: calibration images (N×3×H×W in [0, 1]).
        ridge: λ, relative to the mean diagonal of each conv's input Gram.
        batch: images per forward.

    Returns:
        {conv name: the fit's squared error on the images over the target's}.

    Raises:
        LipsError: a copy without channel origins, or a conv without a bias (a BatchNorm model).

    Examples:
        >>> res = prune(base, ratios, track=True)                                # doctest: +SKIP
        >>> refit_sequential(res, base, calibration_images("coco128.yaml"))     # doctest: +SKIP
    """
    todo = plans(res, base)
    copy_modules, base_modules, report = dict(res.model.named_modules()), dict(base.named_modules()), {}
    net, ref = res.model.eval(), base.eval()
    for name, plan in todo.items():
        conv, target_conv = copy_modules[name], base_modules[name]
        if conv.bias is None:
            raise LipsError(f"{name} has no bias: the sequential refit is for BN-free models (fused, as iter-01)")
        rows, ref_rows = plan.rows.to(conv.weight.device), plan.ref_rows.to(conv.weight.device)
        d = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] + 1
        gram = torch.zeros(d, d, dtype=torch.float64)
        cross = torch.zeros(d, len(rows), dtype=torch.float64)
        scale = torch.zeros((), dtype=torch.float64)
        seen: dict = {}
        h_in = conv.register_forward_pre_hook(lambda m, args, s=seen: s.__setitem__("x", args[0].detach()))
        h_out = target_conv.register_forward_hook(lambda m, args, out, s=seen: s.__setitem__("y", out.detach()))
        try:
            with torch.no_grad(), fp32_kernels():
                for i in range(0, len(images), batch):
                    x = images[i : i + batch]
                    ref(x)
                    net(x)
                    for xi, yi in zip(seen["x"], seen["y"]):
                        p = F.unfold(xi[None], conv.kernel_size, conv.dilation, conv.padding, conv.stride)[0]
                        p = torch.cat([p, p.new_ones(1, p.shape[1])]).double()
                        y = yi[ref_rows].reshape(len(rows), -1).double()
                        gram += p @ p.T
                        cross += p @ y.T
                        scale += (y * y).sum()
        finally:
            h_in.remove(), h_out.remove()
        a = gram.clone()
        diag = torch.arange(d - 1)
        a[diag, diag] += ridge * a[diag, diag].mean()
        theta = torch.linalg.solve(a, cross)  # d × rows
        residual = float(scale - 2 * (theta * cross).sum() + (theta * (gram @ theta)).sum()) / max(float(scale), 1e-30)
        with torch.no_grad():
            conv.weight[rows] = theta[:-1].T.reshape(len(rows), *conv.weight.shape[1:]).to(conv.weight)
            conv.bias[rows] = theta[-1].to(conv.bias)
        report[name] = residual
    return report


def _on(model: nn.Module, device) -> nn.Module:
    """`model`, or a copy of it on `device` (a torch device or a params.yaml device string) when it is elsewhere."""
    if not isinstance(device, torch.device):
        from lipslib.runtime import select_device
        from lipslib.train.validator import device_arg

        device = select_device(device_arg(device))
    return model if next(model.parameters()).device == device else deepcopy(model).to(device)


def _residual(gram: torch.Tensor, plan: Plan, theta: torch.Tensor) -> float:
    """‖P θ − P θ_ref‖² / ‖P θ_ref‖² on the calibration images, from the Gram alone (no second pass)."""
    target = _target(plan).to(gram.device)
    return _error(gram, theta, target) / max(_error(gram, torch.zeros_like(target), target), 1e-30)


class LeastSquaresCriterion:
    """Channel choice aware of reconstruction, as `engine.prune`'s `criterion` (`optimize.criterion: lsq`).

    Weight magnitude (L1) keeps the channels with large weights, whether or not the rest could stand in for them. This
    criterion scores an output channel c of a pruned layer by what its consumers would lose if c alone were removed
    and they were refit on the others (the optimal-brain-surgeon saliency of least squares): for a consumer with
    regularised input Gram G (the reference's, as `grams` computes it) and weights W_c on c's k² patch columns,

        s_c = tr(W_c · S_c · W_cᵀ),   S_c = ((G⁻¹)_cc)⁻¹

    (S_c: the Schur complement of c's block, the part of c's patches the other inputs cannot predict), summed over
    the consumers that read c. The layer keeps its channels of highest score. Scores are those of the base, mapped
    onto a partly pruned model through the origin probe `engine.prune` keeps; a group none of whose consumers has a
    Gram falls back to L1.

    Args:
        base: the model being pruned (the reference of the Grams).
        gram_cache: `{conv name: Grams}` as `grams` returns them (per fold; summed here), e.g. the cache
            `reconstruct` fills.
        ridge: λ of the regularised Gram (as in the refit; `auto` uses 1e-3).
    """

    name = "lsq"

    def __init__(self, base: nn.Module, gram_cache: dict, ridge: float | str = 1e-3):
        modules = dict(base.named_modules())
        lam = 1e-3 if ridge == "auto" else float(ridge)
        self.saliency = {n: _saliency(modules[n], g.sum(0), lam) for n, g in gram_cache.items()}

    def __repr__(self) -> str:
        return self.name

    def scores(self, group, names: dict, probe: dict) -> torch.Tensor | None:
        """One score per channel of the group's root (torch-pruning's group): the saliency its dense consumers give
        it. `names`: module → name in the model being pruned; `probe`: name → module of its origin probe."""
        from torch_pruning.pruner import function

        score, used = None, False
        for i, (dep, idxs) in enumerate(group):
            layer = dep.layer
            name = names.get(layer)
            if dep.pruning_fn != function.prune_conv_in_channels or name not in self.saliency or layer.groups != 1:
                continue
            sal = self.saliency[name].to(layer.weight.device)
            kk = layer.kernel_size[0] * layer.kernel_size[1]
            here = (probe[name].weight[0, :, 0, 0].long() // kk) % len(sal)  # each current input's base channel
            if score is None:
                score = torch.zeros(len(group[0].idxs), dtype=torch.float64, device=sal.device)
            score.index_add_(0, torch.as_tensor(group[i].root_idxs, device=sal.device), sal[here[list(idxs)]])
            used = True
        return score if used else None


class GreedyLeastSquaresCriterion(LeastSquaresCriterion):
    """`lsq` that removes one channel at a time and rescores the rest (`optimize.criterion: lsq_greedy`).

    `lsq` scores every channel alone, with all the others present: two channels that predict each other both look
    redundant, and both can go. Here the layer's channels are ranked by a greedy removal: the channel whose loss
    s_c is smallest goes first, then every consumer's refit weights θ and inverse regularised Gram are updated as
    if it were gone (the block downdate of optimal brain surgeon: θ_r −= (G⁻¹)_rc S_c θ_c,
    G⁻¹_rr −= (G⁻¹)_rc S_c (G⁻¹)_cr, with S_c = ((G⁻¹)_cc)⁻¹), and the next one is chosen on what is left; the
    engine then removes the first k. Exact least squares within one layer's cut, from the same Grams: no extra
    forward pass. Consumers are taken as in the base (the inputs other groups removed are not accounted for).
    """

    name = "lsq_greedy"

    def __init__(self, base: nn.Module, gram_cache: dict, ridge: float | str = 1e-3):
        super().__init__(base, gram_cache, ridge)
        self.modules = dict(base.named_modules())
        self.grams = gram_cache
        self.ridge = 1e-3 if ridge == "auto" else float(ridge)
        self._orders: dict = {}

    def scores(self, group, names: dict, probe: dict) -> torch.Tensor | None:
        """The removal step of each channel of the group's root (0: first to go), from the joint greedy over the
        dense consumers that read it; None (L1) when none has a Gram. The order does not depend on how many
        channels go, so it is computed once per layer and consumers (a bisection prunes the same layer often)."""
        from torch_pruning.pruner import function

        n = len(group[0].idxs)
        consumers, key = [], []  # (name, {root position: base channel})
        for i, (dep, idxs) in enumerate(group):
            layer = dep.layer
            name = names.get(layer)
            if dep.pruning_fn != function.prune_conv_in_channels or name not in self.grams or layer.groups != 1:
                continue
            ref = self.modules[name]
            kk = ref.kernel_size[0] * ref.kernel_size[1]
            here = (probe[name].weight[0, :, 0, 0].long() // kk) % ref.in_channels  # current input → base channel
            channels = {int(pos): int(here[idx]) for pos, idx in zip(group[i].root_idxs, idxs)}
            consumers.append((name, channels))
            key.append((name, tuple(sorted(channels.items()))))
        if not consumers:
            return None
        key = (n, tuple(key))
        if key not in self._orders:
            self._orders[key] = self._greedy(n, consumers)
        return self._orders[key].clone()

    def _greedy(self, n: int, consumers: list) -> torch.Tensor:
        state = []  # per consumer: inverse regularised Gram, refit θ, (positions, their Gram column blocks)
        for name, channels in consumers:
            ref = self.modules[name]
            kk = ref.kernel_size[0] * ref.kernel_size[1]
            gram = self.grams[name].sum(0)
            d = gram.shape[0] - 1
            a = gram.clone()
            diag = torch.arange(d, device=gram.device)
            a[diag, diag] += self.ridge * a[diag, diag].mean()
            w = ref.weight.detach().double().to(gram.device).reshape(ref.out_channels, -1)
            b = ref.bias.detach().double().to(gram.device) if ref.bias is not None else w.new_zeros(ref.out_channels)
            positions = torch.tensor(sorted(channels))
            base = torch.tensor([channels[int(p)] for p in positions], device=gram.device)
            blocks = base[:, None] * kk + torch.arange(kk, device=gram.device)  # P × k²
            inv = torch.linalg.inv(a)
            # θ: the ridge fit of the consumer's own output from all its inputs (θ_ref itself when λ = 0)
            state.append([inv, inv @ (gram @ torch.cat([w.T, b[None]])), positions, blocks])
        order = torch.full((n,), float(n), dtype=torch.float64)
        alive = torch.ones(n, dtype=torch.bool)
        for step in range(n - 1):  # the last channel is never removed (a layer keeps one at least)
            loss = torch.zeros(n, dtype=torch.float64)
            for inv, theta, positions, blocks in state:
                live = alive[positions]
                idx = blocks[live]  # L × k²
                s = torch.linalg.inv(inv[idx[:, :, None], idx[:, None, :]])  # L × k² × k²
                t_c = theta[idx]  # L × k² × out
                loss[positions[live]] += torch.einsum("lko,lkj,ljo->l", t_c, s, t_c).cpu()
            loss[~alive] = float("inf")
            gone = int(torch.argmin(loss))
            order[gone], alive[gone] = step, False
            for consumer in state:
                inv, theta, positions, blocks = consumer
                hit = (positions == gone).nonzero().flatten()
                for j in hit.tolist():
                    c = blocks[j]
                    s = torch.linalg.inv(inv[c][:, c])
                    col = inv[:, c]  # (G⁻¹)_·c
                    theta -= col @ (s @ theta[c])
                    inv -= col @ s @ col.T
                    inv[c, :], inv[:, c], theta[c] = 0.0, 0.0, 0.0
        return order


def _saliency(conv: nn.Conv2d, gram: torch.Tensor, ridge: float) -> torch.Tensor:
    """s_c of every input channel of `conv` (see LeastSquaresCriterion), from its Gram of [patches, 1]."""
    kk = conv.kernel_size[0] * conv.kernel_size[1]
    n = gram.shape[0] - 1
    a = gram.clone()
    diag = torch.arange(n, device=gram.device)
    a[diag, diag] += ridge * a[diag, diag].mean()
    inv = torch.linalg.inv(a)
    blocks = torch.arange(conv.in_channels, device=gram.device)[:, None] * kk + torch.arange(kk, device=gram.device)
    schur = torch.linalg.inv(inv[blocks[:, :, None], blocks[:, None, :]])  # C × k² × k²
    w = conv.weight.detach().double().to(gram.device).reshape(conv.out_channels, conv.in_channels, kk)
    return torch.einsum("rck,ckl,rcl->c", w, schur, w)


def channel_criterion(criterion, base: nn.Module, images, gram_cache: dict, ridge: float | str = 1e-3, device=None):
    """`criterion` as `engine.prune` takes it: a name of `engine.CRITERIA` as it is; `lsq` → a LeastSquaresCriterion,
    `lsq_greedy` → a GreedyLeastSquaresCriterion, over the Grams of every dense conv of `base`, computed into
    `gram_cache` where missing (`images`: the calibration
    images, or a function that returns them, called only if Grams are missing)."""
    if criterion not in (LeastSquaresCriterion.name, GreedyLeastSquaresCriterion.name):
        return criterion
    names = [n for n, m in base.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    missing = [n for n in names if n not in gram_cache]
    if missing:
        ref = base if device is None else _on(base, device)
        gram_cache.update(grams(ref, images() if callable(images) else images, missing))
    kind = LeastSquaresCriterion if criterion == LeastSquaresCriterion.name else GreedyLeastSquaresCriterion
    return kind(base, {n: gram_cache[n] for n in names}, ridge)
