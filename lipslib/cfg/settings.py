"""The loop's settings, typed: `loop_settings` parses `load_params`' dict once, at the edge, and refuses bad values
before any compute; the loop and the helpers below it (`costs.cost_model`, `loop.initial_ratios`, the
fine-tune's distillation arguments) take the typed settings, never the raw dict.

The dict stays what is recorded (`state.json`'s fingerprint, `args.yaml`): it is the file's own shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lipslib.cfg import CRITERION_NAMES, SENSITIVITY_MODES
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
        runtime: torch | onnxruntime | openvino | cuda.
        imgsz: the deployment image size, a multiple of 32.
        threads: intra-op threads of the timed runs.
        runs: interleaved runs after warm-up; the median counts.
        precision: default (the runtime's own: bf16 for OpenVINO on a CPU with bf16) | f32 | int8 (whole models
            only: a loop's per-block predictions are made in default or f32).

    Raises:
        LipsError: an unknown runtime or precision, a runtime not installed, cuda without a GPU, or a size,
            thread or run count out of range.
    """

    runtime: str = "torch"
    imgsz: int = 640
    threads: int = 1
    runs: int = 15
    precision: str = "default"

    def __post_init__(self):
        from lipslib.pruning.latency import check_runtime

        check_runtime(self.runtime, self.threads, self.imgsz, runs=self.runs, precision=self.precision)


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
    """Everything the LIPS loop reads from the configuration, checked (`loop_settings` makes it; its Raises).

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
        pad: the base padded up to multiples of round_to by zero channels before any cut (`load_base`).
        criterion: which channels a cut removes (l1 | l2 | random | lsq | lsq_greedy).
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
    pad: bool = False

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
        params: `cfg.load_params`' result (a notebook's `nb.params`).
        base_cost: the base's cost in the loop's unit; adds the check that the target is below it.

    Returns:
        The typed settings.

    Raises:
        LipsError: the first bad value, in one line naming its key (e.g. `schedule.target_gflops=abc`).

    Examples:
        >>> from lipslib.cfg import load_params
        >>> cfg = loop_settings(load_params(None, overrides={"schedule.target_gflops": 4.0}))
        >>> cfg.targets.cost, cfg.cost_unit
        (4.0, 'GFLOPs')
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
    if not isinstance(s["pad"], bool) or (s["pad"] and not _integer(s["round_to"], 2)):
        raise LipsError(f"schedule.pad must be true or false, and true needs schedule.round_to ≥ 2; got {s['pad']!r}")
    latency = None
    if s["target_ms"] is not None:
        lat = params["latency"]
        latency = LatencySettings(lat["runtime"], lat["imgsz"], lat["threads"], lat["runs"], lat["precision"])
        if latency.precision == "int8":
            raise LipsError(
                "schedule.target_ms on latency.precision int8: the loop predicts per block, in default or "
                "f32; export the result to INT8 afterwards (lips export --int8)"
            )
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
        pad=s["pad"],
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


def _size(key: str, value) -> None:
    if not _integer(value, 32) or value % 32:
        raise LipsError(f"{key} must be a multiple of 32 (the models' largest stride), e.g. 320 or 640; got {value!r}")


def check_params(params: dict) -> LoopSettings:
    """Every value of `load_params`' dict checked before any work, each bad one refused in one line naming its
    key: what `lips notebook`, `lips stage-params` (the DVC pipeline's first stage) and `lips sweep` run first,
    so that a bad `--set` never reaches a notebook's fourth cell.

    Args:
        params: `load_params`' result.

    Returns:
        The loop's typed settings (`loop_settings`), which check the loop's own keys.

    Raises:
        LipsError: the first bad value (e.g. `imgsz must be a multiple of 32 …; got -5`).
    """
    _size("imgsz", params["imgsz"])
    if params["threads"] is not None and not _integer(params["threads"]):
        raise LipsError(f"threads must be an integer ≥ 1 or null (all cores), got {params['threads']!r}")
    if params["device"] is not None and not isinstance(params["device"], (str, int)):
        raise LipsError(f"device must be cpu, a GPU index or indices (0,1) or null, got {params['device']!r}")
    s = params["sensitivity"]
    if not (_number(s["ratio"]) and 0 < s["ratio"] < 1):
        raise LipsError(f"sensitivity.ratio must be a number in (0, 1), got {s['ratio']!r}")
    if not _integer(s["batch"]):
        raise LipsError(f"sensitivity.batch must be an integer ≥ 1, got {s['batch']!r}")
    if s["mode"] not in SENSITIVITY_MODES:
        raise LipsError(f"sensitivity.mode must be one of {', '.join(SENSITIVITY_MODES)}, got {s['mode']!r}")
    if s["workers"] is not None and not _integer(s["workers"]):
        raise LipsError(f"sensitivity.workers must be an integer ≥ 1 or null, got {s['workers']!r}")
    if not (_number(s["memo_gib"]) and s["memo_gib"] > 0):
        raise LipsError(f"sensitivity.memo_gib must be a number > 0, got {s['memo_gib']!r}")
    if s["layers"] is not None and not (isinstance(s["layers"], list) and all(isinstance(x, str) for x in s["layers"])):
        raise LipsError(f"sensitivity.layers must be a list of conv names or null, got {s['layers']!r}")
    for key in ("recover",):
        if not isinstance(s[key], bool):
            raise LipsError(f"sensitivity.{key} must be true or false, got {s[key]!r}")
    lat = params["latency"]
    _size("latency.imgsz", lat["imgsz"])
    for key in ("threads", "runs"):
        if not _integer(lat[key]):
            raise LipsError(f"latency.{key} must be an integer ≥ 1, got {lat[key]!r}")
    v = params["video"]
    _size("video.imgsz", v["imgsz"])
    if not _integer(v["frame_step"]):
        raise LipsError(f"video.frame_step must be an integer ≥ 1, got {v['frame_step']!r}")
    if v["max_frames"] is not None and not _integer(v["max_frames"]):
        raise LipsError(f"video.max_frames must be an integer ≥ 1 or null, got {v['max_frames']!r}")
    ft = params["finetune"]
    if not (_integer(ft["batch"]) or ft["batch"] == -1 or (_number(ft["batch"]) and 0 < ft["batch"] < 1)):
        raise LipsError(f"finetune.batch must be an integer ≥ 1 (or Ultralytics' AutoBatch -1), got {ft['batch']!r}")
    if not (_number(ft["fraction"]) and 0 < ft["fraction"] <= 1):
        raise LipsError(f"finetune.fraction must be a number in (0, 1], got {ft['fraction']!r}")
    return loop_settings(params)
