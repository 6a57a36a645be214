"""What the LIPS loop counts as a pruned copy's cost: GFLOPs, or milliseconds on a runtime.

* `GflopsCost`: 2 × MACs of the fused copy at 640 (the paper's convention), exact and cheap; it measures
  and predicts alike.
* `LatencyCost`: measured, never modelled from FLOPs. `measure` times the model interleaved with the base
  (so machine drift cancels) and scales the ratio by the base's time taken when the run started;
  `predict` (for the bisection of a starting schedule and for per-layer costs) is, on PyTorch and ONNX Runtime,
  the per-block table's sum (`lipslib.pruning.latency`) times the base's whole/table factor, which removes the
  table's own bias. On OpenVINO a block alone pays for its own network (layout conversions at its edges, a call):
  its table overestimates the whole by 45–90 % and, scaled by the base's factor, misses a 20–30 % cut's saving
  by about a tenth (docs: Latency). There `predict` times the whole candidate instead, interleaved with the base,
  once per structure (cached): a few seconds a candidate.
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
        precision: str = "default",
    ):
        """`reference` ({'base_ms', 'factor'}) comes from a saved state; without it the base is timed now."""
        from lipslib.pruning.latency import check_runtime, table_ms, time_models

        check_runtime(runtime, threads, imgsz, precision=precision)
        self.base = base
        self.settings = dict(runtime=runtime, imgsz=imgsz, threads=threads, runs=runs, precision=precision)
        self.whole = runtime == "openvino"  # predictions by timing the whole candidate (see the module doc)
        self._predicted: dict[str, float] = {}
        self._runners = None
        if reference is None:
            base_ms = time_models({"base": base}, **self.settings)["base"]["median_ms"]
            factor = 1.0 if self.whole else base_ms / table_ms(base, **self.settings)
            reference = {"base_ms": base_ms, "factor": factor}
        self.reference = reference

    def state(self) -> dict:
        return {"kind": "latency", **self.settings, **self.reference}

    def measure(self, model: nn.Module) -> float:
        from lipslib.pruning.latency import time_models

        t = time_models({"base": self.base, "model": model}, **self.settings)
        return self.reference["base_ms"] * t["model"]["median_ms"] / t["base"]["median_ms"]

    def predict(self, model: nn.Module) -> float:
        from lipslib.pruning.latency import table_ms

        if self.whole:
            return self._whole(model)
        return self.reference["factor"] * table_ms(model, **self.settings)

    def _whole(self, model: nn.Module) -> float:
        """The candidate timed whole, interleaved with the base (compiled once), scaled by the base's reference
        time; cached by structure."""
        import tempfile
        from pathlib import Path

        from lipslib.datasets import frame_tensor
        from lipslib.pruning.latency import candidate_runner, interleaved, structure_key
        from lipslib.runtime import cpu_threads

        s = self.settings
        key = structure_key(model, s["runtime"], s["imgsz"], s["threads"], s["precision"])
        if key not in self._predicted:
            if self._runners is None:
                from ultralytics.utils import ASSETS

                tmp = Path(tempfile.mkdtemp(prefix="lipslib-predict-"))
                x = frame_tensor(ASSETS / "bus.jpg", s["imgsz"])
                self._runners = (
                    tmp,
                    x,
                    candidate_runner(self.base, s["runtime"], x, s["threads"], tmp, s["precision"]),
                )
            tmp, x, base_run = self._runners
            with cpu_threads(s["threads"]):
                run = candidate_runner(model, s["runtime"], x, s["threads"], tmp, s["precision"])
                times = interleaved({"base": base_run, "model": run}, s["runs"])
            ratio = sorted(times["model"])[len(times["model"]) // 2] / sorted(times["base"])[len(times["base"]) // 2]
            self._predicted[key] = self.reference["base_ms"] * ratio
        return self._predicted[key]

    def layer_costs(
        self, base: nn.Module, criterion: str = "l1", round_to: int | None = None, probe: float = 0.5
    ) -> dict[str, float]:
        """Milliseconds each target layer saves per unit ratio, by `predict`."""
        return probe_savings(base, self.predict, criterion, probe, round_to)


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
    return LatencyCost(
        base, latency.runtime, latency.imgsz, latency.threads, latency.runs, reference, latency.precision
    )


def bisect(make, target: float, measure, lo: float = 0.0, hi: float = 0.9, steps: int = 14, grid: int = 0):
    """Bisection on a scalar s until `measure(make(s))` is `target` (the cost falls as s grows). Returns
    (s, model, cost) of the closest step.

    `grid` > 0: the cost is not known to fall everywhere (measured milliseconds: very deep cuts leave tiny odd
    widths that run slower than wider aligned ones), so `grid` evenly spaced values of s are measured first and the
    bisection runs between the last one above the target and the first one at or below it, the shallowest cut
    that meets it."""
    best = None
    if grid:
        points = [lo + (hi - lo) * (i + 1) / (grid + 1) for i in range(grid)]
        for s in points:
            model = make(s)
            c = measure(model)
            if best is None or abs(c - target) < abs(best[2] - target):
                best = (s, model, c)
            if c <= target:
                hi = s
                break
            lo = s
        steps = max(steps - grid, 1)
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
