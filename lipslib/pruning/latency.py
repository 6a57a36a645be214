"""Latency as a cost, measured on the runtime a model will run on, never modelled from FLOPs.

Whole models: batch-`batch` forward on a real letterboxed frame, in PyTorch (fused, fp32), ONNX Runtime or
OpenVINO (Ultralytics' export, what deployments run; `lipslib.deploy`), in the precision asked for (`default`: the
runtime's own choice, which for OpenVINO on a CPU with bf16 is bf16; `f32`; `int8`) and recorded in the one it ran
in, models interleaved round by round so that machine drift hits all alike; median and quartiles. Subnormal
floats are flushed (they are slow on x86 and appear in different amounts in trained and random-init weights), so
models are timed on their arithmetic.

Per block: a YOLO forward is a chain of top-level blocks (`model.model[i]`), and a block's time depends
on its own widths and input shape only. `block_table` times every block alone on the input it receives in
a real forward (for ONNX Runtime and OpenVINO each block is exported on its own; OpenVINO in `default` or `f32`
precision: INT8 is a whole-model property, calibrated once), and caches each time on disk under a
key of the machine, runtime, threads, the block's structure (its printed module tree: every width) and
its input shapes, so the pruned copies a loop tries re-time only the blocks they change. The table's sum
predicts the whole model; `table_error` reports how well.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from lipslib.cfg import RUNTIMES
from lipslib.errors import LipsError
from lipslib.pruning.engine import fused, load_model, save_checkpoint
from lipslib.runtime import cpu_threads

CACHE_ENV = "LIPS_LATENCY_CACHE"


def machine_key(runtime: str, threads: int, precision: str = "default") -> str:
    """What a time is valid for: processor, cores, library versions, runtime, precision and threads."""
    import onnxruntime

    parts = [
        platform.processor() or platform.machine(),
        str(os.cpu_count()),
        torch.__version__,
        onnxruntime.__version__,
    ]
    if runtime == "openvino":
        import openvino

        parts += [openvino.__version__]
    parts += [runtime, str(threads)] + ([precision] if precision != "default" or runtime == "openvino" else [])
    return "|".join(parts)


def check_runtime(
    runtime: str, threads: int, imgsz: int, batch: int = 1, runs: int = 1, precision: str = "default"
) -> None:
    """Refuse, before any work, a runtime that is unknown or not installed, a precision it does not have, and
    sizes, threads or runs out of range."""
    from lipslib.deploy import check_installed, check_precision

    if runtime not in RUNTIMES:
        raise LipsError(f"unknown runtime '{runtime}'; choose one of {', '.join(RUNTIMES)}")
    check_precision(runtime, precision)
    check_installed(runtime, precision)
    if runtime == "cuda" and not torch.cuda.is_available():
        raise LipsError("runtime cuda needs a CUDA GPU, and this machine has none; use torch or onnxruntime")
    if not isinstance(threads, int) or threads < 1:
        raise LipsError(f"latency threads must be an integer ≥ 1, got {threads!r}")
    if not isinstance(imgsz, int) or imgsz < 32 or imgsz % 32:
        raise LipsError(f"latency image size {imgsz!r} must be a multiple of 32 (the models' largest stride)")
    if not isinstance(batch, int) or batch < 1:
        raise LipsError(f"latency batch must be an integer ≥ 1, got {batch!r}")
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise LipsError(f"latency.runs (--runs) must be an integer ≥ 1: the timed runs after warm-up; got {runs!r}")


def _inference(model: nn.Module) -> nn.Module:
    """A fused eval copy whose Detect head returns its predictions alone (as exported)."""
    net = fused(copy.deepcopy(model).float())
    net.model[-1].export = True
    return net


def _onnx_file(module: nn.Module, inputs: tuple, path: Path) -> Path:
    """`module` on `inputs` exported to ONNX (legacy TorchScript exporter, as Ultralytics uses)."""
    with torch.no_grad():
        torch.onnx.export(
            module, inputs, str(path), opset_version=17, dynamo=False, input_names=[f"x{i}" for i in range(len(inputs))]
        )
    return path


def _openvino(module: nn.Module, inputs: tuple, threads: int, path: Path, precision: str):
    """A runner of `module` on `inputs` in OpenVINO (compiled from its ONNX export), in `precision`."""
    from lipslib.deploy import compile_openvino

    compiled, _ = compile_openvino(_onnx_file(module, inputs, path), precision, threads)
    request, feed = compiled.create_infer_request(), {i: t.numpy() for i, t in enumerate(inputs)}
    return lambda: request.infer(feed)


def _onnx(module: nn.Module, inputs: tuple, threads: int, path: Path):
    """An ONNX Runtime session of `module` on `inputs`."""
    import onnxruntime as ort

    _onnx_file(module, inputs, path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {f"x{i}": t.numpy() for i, t in enumerate(inputs)}
    return lambda: session.run(None, feed)


def whole_runner(
    weights,
    runtime: str,
    x: torch.Tensor,
    threads: int,
    tmp: Path,
    gpu=None,
    precision: str = "default",
    calibration: list | None = None,
) -> Callable[[], object]:
    """A zero-argument forward of a whole model on `x`: PyTorch (on `gpu`, a CUDA torch.device, when given,
    synchronised), or the model as Ultralytics exports it (`lipslib.deploy.export`) in ONNX Runtime or OpenVINO on
    the CPU, in `precision` (int8: calibrated on `calibration`, `deploy.calibration_batches`' batches; None: the
    sample frames). The runner's `precision` attribute says what it runs in (OpenVINO reports it; bf16 on AMX)."""
    from lipslib.deploy import export_record, exported_model, onnx_runner, openvino_runner

    exported = None if isinstance(weights, nn.Module) else exported_model(weights)
    model = load_model(weights) if exported is None else None
    if exported is not None:  # an export runs in its own runtime, in the precision it was exported in
        kind = "onnxruntime" if exported.suffix == ".onnx" else "openvino"
        was = export_record(exported).get("precision")
        if runtime != kind:
            raise LipsError(f"{exported} is an export for {kind}; time it with --runtime {kind}")
        if was is not None and (was == "int8") != (precision == "int8"):
            asked = "int8" if was == "int8" else "default or f32"
            raise LipsError(f"{exported} was exported in {was}; time it with --precision {asked}")
    if runtime == "cuda":
        gpu = gpu or torch.device("cuda", 0)
    if runtime in ("torch", "cuda") and gpu is not None:
        net, gx = fused(copy.deepcopy(model)).to(gpu), x.to(gpu)
        return _tagged(lambda: (net(gx), torch.cuda.synchronize(gpu)), "f32")
    if runtime == "torch":
        net = fused(copy.deepcopy(model))
        return _tagged(lambda: net(x), "f32")
    if exported is None:  # as a user deploys it: Ultralytics' export, INT8 calibrated like `lips export`
        exported = _export(model, runtime, precision, x, tmp, calibration)
    if runtime == "onnxruntime":
        return _tagged(onnx_runner(exported, x, threads), "int8" if precision == "int8" else "f32")
    run, ran = openvino_runner(exported, x, precision, threads)
    return _tagged(run, f"int8+{ran}" if precision == "int8" else ran)


def _tagged(run: Callable[[], object], precision: str) -> Callable[[], object]:
    def runner():
        return run()

    runner.precision = precision
    return runner


def _export(model: nn.Module, runtime: str, precision: str, x: torch.Tensor, tmp: Path, calibration) -> Path:
    from lipslib.deploy import calibration_batches, run_exporter

    pt = save_checkpoint(model, tmp / f"m{len(list(tmp.iterdir()))}.pt")
    int8 = precision == "int8"
    if int8 and calibration is None:
        calibration = calibration_batches(None, imgsz=x.shape[-1])
    fmt = "openvino" if runtime == "openvino" else "onnx"
    return run_exporter(pt, fmt, int8, x.shape[-1], x.shape[0], calibration if int8 else None)


def candidate_runner(model: nn.Module, runtime: str, x: torch.Tensor, threads: int, tmp: Path, precision: str):
    """A runner of a pruned copy for predictions: its fused inference copy exported to ONNX and compiled (OpenVINO)
    or opened (ONNX Runtime) directly — the same network as Ultralytics' export, in a second rather than several."""
    net = _inference(model)
    path = tmp / f"c{len(list(tmp.iterdir()))}.onnx"
    run = _openvino(net, (x,), threads, path, precision) if runtime == "openvino" else _onnx(net, (x,), threads, path)
    path.unlink(missing_ok=True)  # compiled / loaded: a long loop times hundreds of candidates
    return run


def structure_key(model: nn.Module, runtime: str, imgsz: int, threads: int, precision: str) -> str:
    """What a whole model's time depends on: the machine, runtime, precision, threads, size and every width."""
    return hashlib.sha1(f"{machine_key(runtime, threads, precision)}|{imgsz}|{model!r}".encode()).hexdigest()


def interleaved(runners: dict[str, Callable[[], object]], runs: int = 15, warmup: int = 3) -> dict[str, list[float]]:
    """Milliseconds of each runner over `runs` rounds after `warmup`; every round runs each once, in an order
    rotated from round to round, so drift and position hit all alike."""
    names, times = list(runners), {k: [] for k in runners}
    denormal = torch.set_flush_denormal(True)
    try:
        with torch.inference_mode():
            for r in range(warmup + runs):
                for k in names[r % len(names) :] + names[: r % len(names)]:
                    t0 = time.perf_counter()
                    runners[k]()
                    if r >= warmup:
                        times[k].append(1e3 * (time.perf_counter() - t0))
    finally:
        if denormal:
            torch.set_flush_denormal(False)
    return times


def summary(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {
        "median_ms": statistics.median(times),
        "p25_ms": q[0],
        "p75_ms": q[2],
        "min_ms": min(times),
        "runs": len(times),
    }


def time_models(
    models: dict[str, object],
    runtime: str = "torch",
    image=None,
    imgsz: int = 640,
    batch: int = 1,
    threads: int = 1,
    runs: int = 15,
    warmup: int = 3,
    precision: str = "default",
    data=None,
) -> dict[str, dict]:
    """{label: summary} for {label: weights, exported model or module}, timed interleaved on one real frame
    (`image`, default Ultralytics' bus.jpg) on `runtime` with `threads` threads, in `precision`; each summary says
    the precision the model ran in. INT8 calibrates on `data`'s train split (64 images), else on Ultralytics' two
    sample images (enough to time, not to score)."""
    from ultralytics.utils import ASSETS

    from lipslib.datasets import frame_tensor
    from lipslib.deploy import calibration_batches

    check_runtime(runtime, threads, imgsz, batch, runs, precision)
    x = frame_tensor(image or ASSETS / "bus.jpg", imgsz).repeat(batch, 1, 1, 1)
    calibration = calibration_batches(data, "train", 64, imgsz) if precision == "int8" and data else None
    with cpu_threads(threads), tempfile.TemporaryDirectory() as tmp:
        runners = {
            k: whole_runner(w, runtime, x, threads, Path(tmp), precision=precision, calibration=calibration)
            for k, w in models.items()
        }
        times = interleaved(runners, runs, warmup)
        return {k: {**summary(t), "precision": runners[k].precision} for k, t in times.items()}


OP_KINDS = {  # kind: substrings of the aten op names it covers (the first kind that matches wins)
    "conv": ("convolution", "conv2d"),
    "activation": ("silu", "sigmoid", "softmax"),
    "pooling": ("pool",),
    "memory": (
        "copy_",
        "cat",
        "upsample",
        "split",
        "narrow",
        "view",
        "reshape",
        "empty",
        "resize_",
        "as_strided",
        "contiguous",
        "chunk",
        "slice",
        "permute",
        "transpose",
    ),
}


def op_breakdown(weights, image=None, imgsz: int = 640, threads: int = 1, runs: int = 5) -> dict[str, float]:
    """Where a fused fp32 PyTorch CPU forward (batch 1) spends its time: {kind: ms per forward} over the
    kinds of `OP_KINDS` plus `other` (matmuls of the attention, elementwise arithmetic), each op's self time
    under torch.profiler averaged over `runs` forwards, and `total`. Convs scale with FLOPs (in × out
    channels); the other kinds with activations (channels alone) or not at all, which is why a pruned
    model's time falls more slowly than its GFLOPs."""
    from torch.profiler import ProfilerActivity, profile
    from ultralytics.utils import ASSETS

    from lipslib.datasets import frame_tensor

    check_runtime("torch", threads, imgsz)
    net = _inference(load_model(weights))
    x = frame_tensor(image or ASSETS / "bus.jpg", imgsz)
    with cpu_threads(threads), torch.inference_mode():
        for _ in range(2):
            net(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                net(x)
    ms = dict.fromkeys([*OP_KINDS, "other"], 0.0)
    for event in prof.key_averages():
        kind = next((k for k, keys in OP_KINDS.items() if any(key in event.key for key in keys)), "other")
        ms[kind] += event.self_cpu_time_total / 1e3 / runs
    return {**ms, "total": sum(ms.values())}


class _Block(nn.Module):
    """One top-level block as a module of positional tensors (a list input becomes several arguments)."""

    def __init__(self, block: nn.Module, listed: bool):
        super().__init__()
        self.block, self.listed = block, listed

    def forward(self, *xs):
        return self.block(list(xs) if self.listed else xs[0])


def _part_runners(
    parts: dict, runtime: str, threads: int, tmp: Path, precision: str = "default"
) -> dict[str, Callable[[], object]]:
    """Zero-argument runners of {key: (module, inputs)} on a runtime (ONNX Runtime, OpenVINO: each exported alone)."""
    if runtime == "onnxruntime":
        return {k: _onnx(m, a, threads, tmp / f"{k}.onnx") for k, (m, a) in parts.items()}
    if runtime == "openvino":
        return {k: _openvino(m, a, threads, tmp / f"{k}.onnx", precision) for k, (m, a) in parts.items()}
    if runtime == "cuda":
        gpu = torch.device("cuda", 0)
        moved = {k: (copy.deepcopy(m).to(gpu), tuple(t.to(gpu) for t in a)) for k, (m, a) in parts.items()}
        return {k: (lambda m=m, a=a: (m(*a), torch.cuda.synchronize(gpu))) for k, (m, a) in moved.items()}
    return {k: (lambda m=m, a=a: m(*a)) for k, (m, a) in parts.items()}


def block_inputs(net: nn.Module, x: torch.Tensor) -> list[tuple[tuple, bool]]:
    """The input each top-level block of `net` receives in a forward on `x`: (tensors, given as a list)."""
    seen: list = []

    def record(module, args):
        arg = args[0]
        seen.append(
            (
                tuple(t.detach().clone() for t in arg) if isinstance(arg, list) else (arg.detach().clone(),),
                isinstance(arg, list),
            )
        )

    handles = [m.register_forward_pre_hook(record) for m in net.model]
    try:
        with torch.inference_mode():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def default_cache() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lipslib" / "latency.json")


def block_table(
    model,
    runtime: str = "torch",
    imgsz: int = 640,
    batch: int = 1,
    threads: int = 1,
    runs: int = 15,
    cache: Path | None = None,
    precision: str = "default",
) -> list[dict]:
    """Per top-level block of `model` (weights or module): {'block', 'type', 'ms', 'cached'} on `runtime`, each
    block timed alone on its real input (a zero input of batch × 3 × imgsz × imgsz through the network),
    interleaved with the other uncached blocks; times are read from and written to `cache`."""
    check_runtime(runtime, threads, imgsz, batch, runs, precision)
    if precision == "int8":
        raise LipsError("per-block tables are not made in int8 (calibration is per whole model): use default or f32")
    cache = Path(cache) if cache else default_cache()
    store = json.loads(cache.read_text()) if cache.is_file() else {}
    net = _inference(load_model(model))
    x = torch.zeros(batch, 3, imgsz, imgsz)
    machine = machine_key(runtime, threads, precision)
    rows, todo = [], {}
    with torch.inference_mode():
        inputs = block_inputs(net, x)
    for i, (block, (args, listed)) in enumerate(zip(net.model, inputs)):
        shapes = [list(t.shape) for t in args]
        key = hashlib.sha1(f"{machine}|{block!r}|{shapes}".encode()).hexdigest()
        rows.append(
            {"block": i, "type": type(block).__name__, "key": key, "ms": store.get(key), "cached": key in store}
        )
        if key not in store and key not in todo:
            todo[key] = (_Block(block, listed).eval(), args)
    if todo:
        with cpu_threads(threads), tempfile.TemporaryDirectory() as tmp:
            measured = interleaved(_part_runners(todo, runtime, threads, Path(tmp), precision), runs)
        store.update({k: statistics.median(t) for k, t in measured.items()})
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp_file = cache.with_suffix(".tmp")
        tmp_file.write_text(json.dumps(store, sort_keys=True))
        os.replace(tmp_file, cache)
    for row in rows:
        row["ms"] = store[row.pop("key")]
    return rows


def table_ms(model, **kw) -> float:
    """The table's prediction of a whole forward: the sum over blocks."""
    return sum(r["ms"] for r in block_table(model, **kw))


def table_error(
    models: dict[str, object],
    runtime: str = "torch",
    imgsz: int = 640,
    threads: int = 1,
    runs: int = 15,
    precision: str = "default",
) -> dict[str, dict]:
    """How well a block table predicts a whole forward: for each model, its blocks and the whole model (the
    same export for ONNX Runtime) timed in the same interleaved rounds, so that load and drift hit both
    alike. {label: {'table_ms', 'whole_ms', 'error'}}."""
    check_runtime(runtime, threads, imgsz, runs=runs, precision=precision)
    if precision == "int8":
        raise LipsError("per-block tables are not made in int8 (calibration is per whole model): use default or f32")
    out = {}
    for label, weights in models.items():
        net = _inference(load_model(weights))
        x = torch.zeros(1, 3, imgsz, imgsz)
        inputs = block_inputs(net, x)
        parts = {
            f"b{i}": (_Block(b, listed).eval(), args) for i, (b, (args, listed)) in enumerate(zip(net.model, inputs))
        }
        parts["whole"] = (net, (x,))
        with cpu_threads(threads), tempfile.TemporaryDirectory() as tmp:
            times = {
                k: statistics.median(t)
                for k, t in interleaved(_part_runners(parts, runtime, threads, Path(tmp), precision), runs).items()
            }
        whole = times.pop("whole")
        out[label] = {"table_ms": sum(times.values()), "whole_ms": whole, "error": sum(times.values()) / whole - 1}
    return out
