"""The loop's settings, typed: `loop_settings` parses `load_params`' dict once, at the edge, and refuses bad values
before any compute; the loop and the helpers below it (`costs.cost_model`, `optimize.initial_ratios`, the
fine-tune's distillation arguments) take the typed settings, never the raw dict.

The dict stays what is recorded (`state.json`'s fingerprint, `args.yaml`): it is the file's own shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lipslib.cfg import CRITERION_NAMES
from lipslib.errors import LipsError
from lipslib.recovery import Recovery
from lipslib.schedule import RuleParams, Targets

REPORTS = {  # optimize.report: (how the data is prepared, split that chooses the best iteration, split that reports it)
    "half": ("val split in two halves", "val", "test"),
    "test": ("the dataset's own splits", "val", "test"),
    "val": ("val alone (the report is optimistic)", "val", "val"),
}
INITIAL_KINDS = ("uniform", "importance")  # schedule.initial
RULE_KEYS = ("kappa_cost", "step_cost", "kappa_acc", "step_acc", "damping", "margin", "r_min", "r_max")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


@dataclass(frozen=True)
class LatencySettings:
    """The `latency:` settings: how a model's latency is measured (schedule.target_ms, `lips latency`).

    Args:
        runtime: torch | onnxruntime | cuda.
        imgsz: the deployment image size, a multiple of 32.
        threads: intra-op threads of the timed runs.
        runs: interleaved runs after warm-up; the median counts.

    Raises:
        LipsError: an unknown runtime, cuda without a GPU, or a size, thread or run count out of range.
    """

    runtime: str = "torch"
    imgsz: int = 640
    threads: int = 1
    runs: int = 15

    def __post_init__(self):
        from lipslib.pruning.latency import check_runtime

        check_runtime(self.runtime, self.threads, self.imgsz)
        if not _integer(self.runs):
            raise LipsError(f"latency.runs must be an integer ≥ 1, got {self.runs!r}")


@dataclass(frozen=True)
class StartSettings:
    """Where the loop's first schedule starts (schedule.initial, initial_ratio, start, spread).

    Args:
        initial: uniform | importance (`schedule.initial_schedule`'s kind).
        ratio: the (mean) ratio, or None for `auto`: bisected so that the pruned copy costs
            target + start·(base − target).
        start: with `auto`, the share of the way from the target back to the base's cost, in [0, 1).
        spread: how strongly importance shapes an `importance` start.

    Raises:
        LipsError: an unknown kind, or a ratio or start out of range.
    """

    initial: str = "uniform"
    ratio: float | None = 0.3
    start: float = 0.0
    spread: float = 0.2

    def __post_init__(self):
        if self.initial not in INITIAL_KINDS:
            raise LipsError(f"schedule.initial must be one of {', '.join(INITIAL_KINDS)}, got {self.initial!r}")
        if self.ratio is not None and not (_number(self.ratio) and 0 <= self.ratio < 1):
            raise LipsError(f"schedule.initial_ratio must be a number in [0, 1) or auto, got {self.ratio!r}")
        if not (_number(self.start) and 0 <= self.start < 1):
            raise LipsError(
                f"schedule.start must be in [0, 1): the share of the way back to the base, got {self.start!r}"
            )
        if not _number(self.spread):
            raise LipsError(f"schedule.spread must be a number, got {self.spread!r}")


@dataclass(frozen=True)
class LoopSettings:
    """Everything the LIPS loop reads from params.yaml, checked (`loop_settings` makes it).

    Attributes:
        base: the weights pruned; every ratio is relative to its widths.
        data: the dataset yaml.
        imgsz: train and evaluation image size.
        device: Ultralytics' device string (cpu, 0, 0,1, …), or None for its choice.
        threads: CPU threads, or None for all cores.
        targets: the cost and accuracy targets.
        rule: the update rule's gains.
        start: the first schedule.
        round_to: kept widths rounded to multiples of this, or None.
        criterion: which channels a cut removes (l1 | l2 | random | lsq).
        report: half | test | val (`REPORTS`).
        iterations: the loop's iterations.
        best_cost_tol: best = highest selection mAP with cost ≤ target·(1 + tol).
        importance: `paper` or the path of an importance vector.
        warm_start: each iteration starts from the previous one's fine-tuned weights.
        recovery: what follows each cut (repair, reconstruction, distillation).
        recipe: the fine-tune recipe (paper | bn-free | auto).
        recipes: the recipe tables (`recipes:`).
        train: the rest of `finetune:`, Ultralytics' train arguments as they are.
        latency: the latency settings when the loop's cost is latency (schedule.target_ms), else None: GFLOPs.
    """

    base: str
    data: str
    imgsz: int
    device: str | None
    threads: int | None
    targets: Targets
    rule: RuleParams
    start: StartSettings
    round_to: int | None
    criterion: str
    report: str
    iterations: int
    best_cost_tol: float
    importance: str
    warm_start: bool
    recovery: Recovery
    recipe: str
    recipes: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    latency: LatencySettings | None = None

    @property
    def cost_unit(self) -> str:
        return "GFLOPs" if self.latency is None else "ms"

    def distill_args(self) -> dict:
        """`finetune`'s distillation arguments: the teacher is the unpruned base."""
        r = self.recovery
        return {"distill": r.distill, "teacher": self.base, "distill_weight": float(r.distill_weight)}

    def finetune_args(self, **over) -> dict:
        """`finetune`'s keyword arguments for one fine-tune of a copy of the base: recipe, distillation, the
        `finetune:` train arguments, size, device and threads; `over` replaces any of them (e.g. epochs=4)."""
        return {
            "recipe": self.recipe,
            "recipes": self.recipes,
            "imgsz": self.imgsz,
            "device": self.device,
            "threads": self.threads,
            **self.distill_args(),
            **self.train,
            **over,
        }

    def check_base_cost(self, base_cost: float) -> None:
        """Refuse a cost target that is not below the base's cost (in the loop's unit)."""
        if self.targets.cost >= base_cost:
            raise LipsError(
                f"target {self.targets.cost:g} {self.cost_unit} is not below the base model's {base_cost:.3f} "
                f"{self.cost_unit}; lower it"
            )


def loop_settings(params: dict, base_cost: float | None = None) -> LoopSettings:
    """Parse and check `load_params`' dict for the loop, before any compute.

    Args:
        params: `config.load_params`' result (a notebook's `nb.params`).
        base_cost: the base's cost in the loop's unit; adds the check that the target is below it.

    Returns:
        The typed settings.

    Raises:
        LipsError: the first bad value, in one line naming its key (e.g. `schedule.target_gflops=abc`).
    """
    s, o, ft = params["schedule"], params["optimize"], params["finetune"]
    if o["criterion"] not in CRITERION_NAMES:
        raise LipsError(f"optimize.criterion must be one of {', '.join(CRITERION_NAMES)}, got {o['criterion']!r}")
    if o["report"] not in REPORTS:
        raise LipsError(f"optimize.report must be one of {', '.join(REPORTS)}, got {o['report']!r}")
    recovery = Recovery.from_params(params["recover"])
    if not _integer(o["iterations"]):
        raise LipsError(f"optimize.iterations must be an integer ≥ 1, got {o['iterations']!r}")
    if not _integer(ft["epochs"]):
        raise LipsError(f"finetune.epochs must be an integer ≥ 1, got {ft['epochs']!r}")
    if s["round_to"] is not None and not _integer(s["round_to"]):
        raise LipsError(f"schedule.round_to must be an integer ≥ 1 (e.g. 8) or null, got {s['round_to']!r}")
    latency = None
    if s["target_ms"] is not None:
        lat = params["latency"]
        latency = LatencySettings(lat["runtime"], lat["imgsz"], lat["threads"], lat["runs"])
    cost_key = "target_gflops" if latency is None else "target_ms"
    numbers = [cost_key, "target_map", "cost_tol", "best_cost_tol", *RULE_KEYS]
    for key in numbers:  # a --set value YAML read as text (e.g. target_gflops=abc)
        section, value = ("optimize", o[key]) if key == "best_cost_tol" else ("schedule", s[key])
        if key == "kappa_cost" and value == "auto":
            continue
        if not _number(value):
            auto = " or auto" if key == "kappa_cost" else ""
            raise LipsError(f"{section}.{key} must be a number{auto}, got {value!r}")
    if not s[cost_key] > 0:
        raise LipsError(f"schedule.{cost_key} must be > 0, got {s[cost_key]}")
    targets = Targets(float(s[cost_key]), float(s["target_map"]), float(s["cost_tol"]))
    rule = RuleParams(
        **{k: None if s[k] == "auto" else float(s[k]) for k in RULE_KEYS}, neutral_acc=bool(s["neutral_acc"])
    )
    start = StartSettings(
        s["initial"], None if s["initial_ratio"] == "auto" else s["initial_ratio"], s["start"], s["spread"]
    )
    settings = LoopSettings(
        base=str(params["base"]),
        data=str(params["data"]),
        imgsz=params["imgsz"],
        device=params["device"],
        threads=params["threads"],
        targets=targets,
        rule=rule,
        start=start,
        round_to=s["round_to"],
        criterion=o["criterion"],
        report=o["report"],
        iterations=o["iterations"],
        best_cost_tol=float(o["best_cost_tol"]),
        importance=str(o["importance"]),
        warm_start=bool(o["warm_start"]),
        recovery=recovery,
        recipe=ft["recipe"],
        recipes=params["recipes"],
        train={k: v for k, v in ft.items() if k != "recipe"},
        latency=latency,
    )
    if base_cost is not None:
        settings.check_base_cost(base_cost)
    return settings
