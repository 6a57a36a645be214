"""What the LIPS loop counts as a pruned copy's cost: GFLOPs, or milliseconds on a runtime.

* `GflopsCost`: 2 × MACs of the fused copy at 640 (the paper's convention), exact and cheap; it measures
  and predicts alike.
* `LatencyCost`: measured, never modelled from FLOPs. `measure` times the model interleaved with the base
  (so machine drift cancels) and scales the ratio by the base's time taken when the run started;
  `predict` (for the bisection of a starting schedule and for per-layer costs) is the per-block table's
  sum (`lipslib.pruning.latency`) times the base's whole/table factor, which removes the table's own bias.
Both give per-layer costs (cost saved per unit ratio, pruning one target layer alone at 0.5) for the
cost-aware steps of `schedule.update`. A latency cost's reference is kept in the run's state, so a
resumed run compares against the same numbers.
"""

from __future__ import annotations

import torch.nn as nn

from lipslib.pruning.engine import cost, prune
from lipslib.pruning.layers import default_targets


class GflopsCost:
    unit = "GFLOPs"

    def state(self) -> dict:
        return {"kind": "gflops"}

    def measure(self, model: nn.Module) -> float:
        return cost(model).gflops

    predict = measure

    def layer_costs(
        self, base: nn.Module, criterion: str = "l1", round_to: int | None = None, probe: float = 0.5, imgsz: int = 320
    ) -> dict[str, float]:
        """GFLOPs (at 640) each target layer saves per unit ratio. Counted at `imgsz` and scaled by the pixel
        ratio (YOLO's cost is per pixel, `engine.cost_counter`): 4× faster than at 640."""
        return probe_savings(
            base, lambda m: cost(m, imgsz).gflops, criterion, probe, round_to, scale=(640 / imgsz) ** 2
        )


class LatencyCost:
    unit = "ms"

    def __init__(
        self,
        base: nn.Module,
        runtime: str = "torch",
        imgsz: int = 640,
        threads: int = 1,
        runs: int = 15,
        reference: dict | None = None,
    ):
        """`reference` ({'base_ms', 'factor'}) comes from a saved state; without it the base is timed now."""
        from lipslib.pruning.latency import check_runtime, table_ms, time_models

        check_runtime(runtime, threads, imgsz)
        self.base, self.settings = base, dict(runtime=runtime, imgsz=imgsz, threads=threads, runs=runs)
        if reference is None:
            base_ms = time_models({"base": base}, runtime, imgsz=imgsz, threads=threads, runs=runs)["base"]["median_ms"]
            reference = {"base_ms": base_ms, "factor": base_ms / table_ms(base, **self.settings)}
        self.reference = reference

    def state(self) -> dict:
        return {"kind": "latency", **self.settings, **self.reference}

    def measure(self, model: nn.Module) -> float:
        from lipslib.pruning.latency import time_models

        s = self.settings
        t = time_models(
            {"base": self.base, "model": model}, s["runtime"], imgsz=s["imgsz"], threads=s["threads"], runs=s["runs"]
        )
        return self.reference["base_ms"] * t["model"]["median_ms"] / t["base"]["median_ms"]

    def predict(self, model: nn.Module) -> float:
        from lipslib.pruning.latency import table_ms

        return self.reference["factor"] * table_ms(model, **self.settings)

    def layer_costs(
        self, base: nn.Module, criterion: str = "l1", round_to: int | None = None, probe: float = 0.5
    ) -> dict[str, float]:
        """Milliseconds each target layer saves per unit ratio: the block table's prediction, scaled by the
        base's whole/table factor."""
        from lipslib.pruning.latency import table_ms

        return probe_savings(
            base, lambda m: table_ms(m, **self.settings), criterion, probe, round_to, scale=self.reference["factor"]
        )


def probe_savings(
    base: nn.Module, measure, criterion: str = "l1", probe: float = 0.5, round_to: int | None = None, scale: float = 1.0
) -> dict[str, float]:
    """{target layer: scale × the cost it saves per unit ratio}, by `measure` (a model's cost), pruning each
    target layer of `base` alone at `probe`."""
    full = measure(base)
    return {
        name: scale
        * (full - measure(prune(base, {name: probe}, criterion=criterion, round_to=round_to, log=False).model))
        / probe
        for name in default_targets(base)
    }


def cost_model(latency=None, base: nn.Module | None = None, saved: dict | None = None):
    """The loop's cost: GFLOPs, or with `latency` (a `settings.LatencySettings`, set when the loop has a latency
    target) the latency measured on those settings, restored from a run's saved cost state where there is one."""
    if latency is None:
        return GflopsCost()
    reference = {k: saved[k] for k in ("base_ms", "factor")} if saved else None
    return LatencyCost(base, latency.runtime, latency.imgsz, latency.threads, latency.runs, reference)


def bisect(make, target: float, measure, lo: float = 0.0, hi: float = 0.9, steps: int = 14):
    """Bisection on a scalar s until `measure(make(s))` is `target` (the cost falls as s grows). Returns
    (s, model, cost) of the closest step."""
    best = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        model = make(mid)
        c = measure(model)
        if best is None or abs(c - target) < abs(best[2] - target):
            best = (mid, model, c)
        lo, hi = (mid, hi) if c > target else (lo, mid)
    return best


def most_saved(save: dict[str, float], spend: dict[str, float], budget: float, r_max: float = 0.9) -> float:
    """First-order bound: the most of one cost (`save`, e.g. ms per unit ratio of each layer) that any schedule
    of ratios in [0, r_max] removes while removing `budget` of another (`spend`, e.g. GFLOPs per unit ratio).
    A fractional knapsack: layers by save/spend, best first; a layer that saves nothing (≤ 0) is never worth
    taking, one that spends nothing is taken whole."""
    saved, left = 0.0, budget
    for k in sorted(
        (k for k in save if save[k] > 0),
        key=lambda k: save[k] / spend[k] if spend[k] > 0 else float("inf"),
        reverse=True,
    ):
        r = r_max if spend[k] <= 0 else min(r_max, left / spend[k])
        saved, left = saved + r * save[k], left - r * max(spend[k], 0.0)
        if left <= 0:
            break
    return saved
