"""Stage II–III schedule: the initial per-layer ratios and the gate-based, cost-aware update.

Pure functions on dicts and floats (no torch), so the rule can be tested and replayed without a model.

Notation: r_i ratio of layer i, imp_i its importance in [0, 1], g / m the measured cost / mAP50-95 (the cost
is GFLOPs, or milliseconds of latency with a latency target; c_i below are in the same unit),
G / M the targets. Normalised gaps: overshoot e = (g − G) / G, cost slack c = (G − g) / G,
accuracy gap d = (M − m) / M.

* cost gate (g > G·(1 + tol)):       Δr_i = κ_c·e·(1 − imp_i) − s_c·imp_i
  κ_c "auto" (needs per-layer costs c_i, GFLOPs saved per unit ratio): Δr_i = a·(1 − imp_i) − s_c·imp_i with
  a = ((g − G) + s_c·Σ c_i·imp_i) / Σ c_i·(1 − imp_i), the step whose first-order saving Σ c_i·Δr_i is the
  whole overshoot g − G (steps adapted to the distance from the target, in GFLOPs rather than by a gain);
  where the guard below raises the crossover to x, a = (g − G) / (Σ c_i − Σ c_i·imp_i / x), b = −a / x.
  every update is affine in importance, Δr_i = a + b·imp_i with a = κ_c·e > 0 and a + b = −s_c < 0:
  unimportant layers are pruned more, important ones less, and the crossover −a/b = κ_c·e / (κ_c·e + s_c)
  moves toward the important layers as the overshoot grows (what the authors' logs show: 0.31 at
  +0.015 GFLOPs, 0.69 at +0.055).
* accuracy gate (cost met, m < M):   Δr_i = −s·imp_i,  s = max(s_a, κ_a·min(d, c))
  ratios fall in proportion to importance, with a step bounded by the cost room left, so it shrinks
  as GFLOPs approach the target (authors: 0.0195 → 0.013 → 0.005 → 0.004).
  Cost-aware guard: with per-layer costs c_i (GFLOPs saved per unit ratio), the first-order GFLOPs
  change is −Σ c_i·Δr_i, which is negative only if the crossover exceeds the cost-weighted mean
  importance Σ c_i·imp_i / Σ c_i. Given `costs`, the crossover is raised to at least that + `margin`, so
  the cost gate never adds GFLOPs (the fitted rule alone can: with a tiny overshoot its pull-back of
  the important layers dominates — the authors' run hovered at 4.53 GFLOPs above its 4.5 target).
  Costs measured ≤ 0 (a latency table can say that pruning a layer made it no faster) count as 0.
  Cost-neutral variant (`neutral_acc`, needs costs): Δr_i = −s·(imp_i − ī_c), ī_c = Σ c_i·imp_i / Σ c_i, whose
  first-order GFLOPs change Σ c_i·Δr_i is 0: at the budget, capacity moves from unimportant layers to
  important ones instead of being added, so the loop does not leave the budget to reallocate.
* hold (both met): Δr_i = 0.
* a cost step that falls short (`lengthen_step`, applied by the loop to cost-gate steps): first order
  overestimates what a step saves (a conv's FLOPs are a product of two widths that both shrink), so an
  auto step lands above the target and spends an iteration on one more cut; and with channel rounding,
  widths move in jumps of round_to, so a step's rounded copy can save less than the step would unrounded,
  or even cost more (its decreases on important layers cross a rounding threshold while its small
  increases do not). The step Δr is then scaled by the first factor
  whose pruned copy, by the cost's prediction, saves enough: with κ_c auto, down to target·(1 + tol);
  with rounding, at least the unrounded saving.
* oscillation: each time the gate flips between cost and accuracy, all steps are multiplied by ρ.
Ratios are then clipped to [r_min, r_max]. Defaults were fitted to the authors' 24 published updates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lipslib.errors import LipsError

GATES = ("cost", "accuracy", "hold")


@dataclass(frozen=True)
class Targets:
    """What the loop aims at; checked when made.

    Attributes:
        cost: the cost target G: GFLOPs, or milliseconds with a latency target (`schedule.target_ms`).
        map50_95: the accuracy target M (mAP50-95); below it, at the budget, the accuracy gate opens.
        cost_tol: relative tolerance: the cost gate opens above cost · (1 + cost_tol).

    Raises:
        LipsError: a cost ≤ 0, an mAP outside (0, 1] or a negative tolerance.
    """

    cost: float  # GFLOPs, or ms with a latency target
    map50_95: float
    cost_tol: float = 0.0  # relative: the cost gate opens above cost · (1 + tol)

    def __post_init__(self):
        if not self.cost > 0:
            raise LipsError(f"target cost (GFLOPs or ms) must be > 0, got {self.cost}")
        if not 0 < self.map50_95 <= 1:
            raise LipsError(f"target mAP50-95 must be in (0, 1], got {self.map50_95}")
        if self.cost_tol < 0:
            raise LipsError(f"cost tolerance must be ≥ 0, got {self.cost_tol}")


@dataclass(frozen=True)
class RuleParams:
    """The gains of the update rule (module doc); the defaults were fitted to the authors' 24 published updates.

    Attributes:
        kappa_cost: κ_c, the cost gate's push per unit of relative overshoot; None for `auto` (the step whose
            first-order saving is the whole overshoot; needs per-layer costs).
        step_cost: s_c, the cost gate's pull-back of the most important layer.
        kappa_acc: κ_a, the accuracy gate's step per unit of cost room left.
        step_acc: s_a, the smallest accuracy-gate step.
        damping: ρ, the factor applied to every step at each gate flip.
        margin: cost-aware guard: the cost gate's crossover is kept at least this far above the
            cost-weighted mean importance.
        neutral_acc: the accuracy gate moves capacity at constant first-order cost (needs per-layer costs).
        r_min: lower clip of the ratios.
        r_max: upper clip of the ratios.

    Raises:
        LipsError: clips outside 0 ≤ r_min ≤ r_max < 1, a damping outside (0, 1], or a negative gain.
    """

    kappa_cost: float | None = 0.6  # κ_c: push per unit of relative overshoot; None: auto (close it, first order)
    step_cost: float = 0.003  # s_c: pull-back of the most important layer under the cost gate
    kappa_acc: float = 0.34  # κ_a: accuracy-gate step per unit of cost room
    step_acc: float = 0.004  # s_a: smallest accuracy-gate step
    damping: float = 0.5  # ρ: step factor at each gate flip
    margin: float = 0.05  # cost-aware guard: crossover ≥ cost-weighted mean importance + margin
    neutral_acc: bool = False  # accuracy gate at constant GFLOPs (first order), given costs
    r_min: float = 0.0
    r_max: float = 0.9

    def __post_init__(self):
        if not 0 <= self.r_min <= self.r_max < 1:
            raise LipsError(f"need 0 ≤ r_min ≤ r_max < 1, got r_min={self.r_min}, r_max={self.r_max}")
        if not 0 < self.damping <= 1:
            raise LipsError(f"damping must be in (0, 1], got {self.damping}")
        for k in ("kappa_cost", "step_cost", "kappa_acc", "step_acc"):
            if getattr(self, k) is not None and getattr(self, k) < 0:
                raise LipsError(f"{k} must be ≥ 0, got {getattr(self, k)}")


def initial_schedule(
    importance: dict[str, float],
    kind: str = "uniform",
    ratio: float = 0.3,
    spread: float = 0.2,
    r_min: float = 0.0,
    r_max: float = 0.9,
) -> dict[str, float]:
    """The schedule the loop starts from.

    Args:
        importance: `{layer: importance}` (Stage I, `run_sensitivity`); its keys are the layers scheduled.
        kind: `uniform`: every layer at `ratio` (the paper: 0.3); `importance`: ratio + spread·(mean imp −
            imp_i), the same mean ratio with important layers pruned less.
        ratio: the (mean) ratio.
        spread: how strongly `importance` shapes the ratios (negative: against importance).
        r_min: lower clip of the shaped ratios.
        r_max: upper clip of the shaped ratios.

    Returns:
        `{layer: ratio}`, sorted by layer name.

    Raises:
        LipsError: an unknown kind or a ratio outside [0, 1).

    Examples:
        >>> initial_schedule({"a": 1.0, "b": 0.0, "c": 0.5}, "uniform", ratio=0.3)
        {'a': 0.3, 'b': 0.3, 'c': 0.3}
        >>> shaped = initial_schedule({"a": 1.0, "b": 0.0, "c": 0.5}, "importance", ratio=0.3, spread=0.2)
        >>> {k: round(v, 4) for k, v in shaped.items()}
        {'a': 0.2, 'b': 0.4, 'c': 0.3}
    """
    if not 0 <= ratio < 1:
        raise LipsError(f"initial ratio must be in [0, 1), got {ratio}")
    if kind == "uniform":
        return {k: ratio for k in sorted(importance)}
    if kind == "importance":
        mean = sum(importance.values()) / len(importance)
        return {k: _clip(ratio + spread * (mean - v), r_min, r_max) for k, v in sorted(importance.items())}
    raise LipsError(f"unknown initial schedule '{kind}'; choose uniform or importance")


def gate(cost: float, map50_95: float, targets: Targets) -> str:
    if cost > targets.cost * (1 + targets.cost_tol):
        return "cost"
    if map50_95 < targets.map50_95:
        return "accuracy"
    return "hold"


def update(
    ratios: dict[str, float],
    importance: dict[str, float],
    measured: dict,
    targets: Targets,
    state: dict | None = None,
    params: RuleParams = RuleParams(),
    costs: dict[str, float] | None = None,
) -> tuple[dict[str, float], dict]:
    """One LIPS update: which gate is open, and the affine step Δr_i = a + b·imp_i it takes (module doc).

    Args:
        ratios: the current `{layer: ratio}`.
        importance: `{layer: importance in [0, 1]}` for at least every layer of `ratios`.
        measured: what the last iteration measured: `{'cost': …, 'map50_95': …}` (cost in the targets' unit).
        targets: the cost and accuracy targets.
        state: the state this function returned last time (None at the first update): it carries the last
            gate and the damping.
        params: the rule's gains.
        costs: `{layer: cost saved per unit ratio}` (first order); needed by `kappa_cost=None` (auto) and
            `neutral_acc`, and turns on the cost-aware guard. Costs ≤ 0 count as 0.

    Returns:
        `(new_ratios, new_state)`: the ratios after the step, clipped to [r_min, r_max], and the state
        `{'gate', 'damp', 'a', 'b', 'step' (= −b), 'params'}`.

    Raises:
        LipsError: a layer without importance, or a rule that needs `costs` without them.

    Examples:
        Over the GFLOPs target, the cost gate prunes the unimportant layer more and the important one less:

        >>> targets = Targets(cost=4.0, map50_95=0.5)
        >>> ratios, state = update({"a": 0.3, "b": 0.3}, {"a": 1.0, "b": 0.0}, {"cost": 4.4, "map50_95": 0.45},
        ...                        targets)
        >>> state["gate"], {k: round(v, 4) for k, v in ratios.items()}
        ('cost', {'a': 0.297, 'b': 0.36})

        Within budget but below the accuracy target, ratios fall in proportion to importance (the gate flipped,
        so the step is damped by ρ = 0.5):

        >>> ratios, state = update(ratios, {"a": 1.0, "b": 0.0}, {"cost": 3.9, "map50_95": 0.4}, targets, state)
        >>> state["gate"], {k: round(v, 4) for k, v in ratios.items()}
        ('accuracy', {'a': 0.2927, 'b': 0.36})
    """
    missing = sorted(set(ratios) - set(importance))
    if missing:
        raise LipsError(f"no importance for layers {', '.join(missing)}")
    if costs:  # a measured latency saving can be ≤ 0 (noise, or a width a kernel likes less): no saving to steer by
        costs = {k: max(0.0, float(v)) for k, v in costs.items()}
        total = sum(costs[k] for k in ratios)  # Σ c_i
        weighted = sum(costs[k] * importance[k] for k in ratios)  # Σ c_i·imp_i
        if total - weighted <= 0:
            raise LipsError(
                "no layer below full importance saves any cost (per-layer costs ≤ 0): the cost-aware "
                "steps cannot move the cost; check the latency table or use a GFLOPs target"
            )
    state = dict(state or {})
    g, m = float(measured["cost"]), float(measured["map50_95"])
    which = gate(g, m, targets)
    damp = state.get("damp", 1.0)
    if which != "hold" and state.get("gate") in ("cost", "accuracy") and state["gate"] != which:
        damp *= params.damping
    if which == "cost":
        over = (g - targets.cost) / targets.cost
        if params.kappa_cost is None:
            if not costs:
                raise LipsError("kappa_cost auto needs the layers' costs (cost saved per unit ratio)")
            a = damp * ((g - targets.cost) + params.step_cost * weighted) / (total - weighted)
        else:
            a = damp * params.kappa_cost * over
        b = -(a + damp * params.step_cost)
        if costs and a > 0:
            floor = min(1.0, weighted / total + params.margin)
            if -a / b < floor:
                if params.kappa_cost is None:  # auto at the guarded crossover: still the whole overshoot
                    a = damp * (g - targets.cost) / (total - weighted / floor)
                b = -a / floor
    elif which == "accuracy":
        room = (targets.cost - g) / targets.cost
        gap = (targets.map50_95 - m) / targets.map50_95
        b = -damp * max(params.step_acc, params.kappa_acc * min(gap, room))
        if params.neutral_acc:
            if not costs:
                raise LipsError("neutral_acc needs the layers' costs (cost saved per unit ratio)")
            a = -b * weighted / total
        else:
            a = 0.0
    else:
        a = b = 0.0
    new = {k: _clip(r + a + b * importance[k], params.r_min, params.r_max) for k, r in sorted(ratios.items())}
    return new, {"gate": which, "damp": damp, "a": a, "b": b, "step": -b, "params": asdict(params)}


STEP_FACTORS = (1.0, 1.05, 1.1, 1.2, 1.3, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)


def lengthen_step(
    ratios: dict[str, float],
    new: dict[str, float],
    cost_of,
    goal: float,
    params: RuleParams = RuleParams(),
    factors=STEP_FACTORS,
) -> tuple[dict[str, float], float]:
    """A step `ratios` → `new` whose pruned copy must cost at most `goal`, by `cost_of(ratios)` (the cost of the
    pruned copy, as it will be pruned: rounded where the loop rounds). Returns the step scaled by the first of
    `factors` whose copy costs at most `goal` (else by the one that costs least), clipped to [r_min, r_max],
    and that factor."""
    best = None
    for f in factors:
        scaled = {k: _clip(r + f * (new[k] - r), params.r_min, params.r_max) for k, r in sorted(ratios.items())}
        c = cost_of(scaled)
        if c <= goal:
            return scaled, f
        if best is None or c < best[2]:
            best = (scaled, f, c)
    return best[0], best[1]


def _clip(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))
