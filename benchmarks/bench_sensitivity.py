"""Stage I speed: lipslib's single-pass sensitivity vs the naive way (one Ultralytics validation per
pruned layer) on the same inputs. Writes reports/bench/sensitivity.json. Not a test: timings are noisy,
so the result is a ratio measured in one run.

    python benchmarks/bench_sensitivity.py [--weights lips_iter24_best.pt] [--imgsz 320] [--layers N]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time

import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from lipslib.errors import exit_code
from lipslib.files import write_json
from lipslib.pruning.engine import fused, load_model, prune, save_checkpoint
from lipslib.pruning.layers import default_targets
from lipslib.pruning.memo import Recorder, reuse
from lipslib.runtime import cpu_threads
from lipslib.sensitivity import importance_from_drops, run_sensitivity
from lipslib.train.validator import evaluate


@torch.no_grad()
def forward_work(base, layers, imgsz, batch=16, reps=3) -> dict:
    """The forward work left after reusing the base's activations, in base passes (one thread, one batch):
    with exact answers and no validator cost at all, naive / fast can be at most (1 + n) / (1 + this)."""
    net = fused(copy.deepcopy(base)).to(memory_format=torch.channels_last)
    rec = Recorder(net)
    probes = [
        reuse(fused(prune(base, {k: 0.85}, log=False).model).to(memory_format=torch.channels_last), net, rec)
        for k in layers
    ]
    x = torch.rand(batch, 3, imgsz, imgsz).contiguous(memory_format=torch.channels_last)
    base_s = probes_s = 0.0
    with cpu_threads(1):
        for _ in range(reps):
            rec.clear()
            t0 = time.perf_counter()
            net(x)
            base_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            for p in probes:
                p(x)
            probes_s += time.perf_counter() - t0
    work = probes_s / base_s
    return {
        "probes_in_base_passes": round(work, 2),
        "naive_in_base_passes": len(layers) + 1,
        "ceiling_speedup_equal_resources": round((len(layers) + 1) / (1 + work), 2),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--weights", default="lips_iter24_best.pt")
    p.add_argument("--data", default="coco128.yaml")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--ratio", type=float, default=0.85)
    p.add_argument("--layers", type=int, default=0, help="first N targets only (0: all)")
    p.add_argument("--out", default="reports/bench/sensitivity.json")
    a = p.parse_args()

    base = load_model(a.weights)
    layers = default_targets(base)[: a.layers or None]
    import torchvision.ops  # noqa: F401  (imports are paid before any timing, not by the first method timed)
    import ultralytics.models.yolo.detect  # noqa: F401
    from ultralytics.utils import NUM_THREADS  # Ultralytics validates on cpu_count − 1 threads

    def naive(threads):
        t0 = time.perf_counter()
        tmp = f"/tmp/lips_bench_{os.getpid()}.pt"
        base_map = evaluate(a.weights, a.data, imgsz=a.imgsz, threads=threads)["map50_95"]
        maps = {}
        for name in tqdm(layers, desc=f"naive: one Ultralytics validation per layer, {threads} thread(s)"):
            save_checkpoint(prune(base, {name: a.ratio}, log=False).model, tmp)
            maps[name] = evaluate(tmp, a.data, imgsz=a.imgsz, threads=threads)["map50_95"]
        os.remove(tmp)
        return time.perf_counter() - t0, base_map, maps

    def fast(**kw):
        t0 = time.perf_counter()
        res = run_sensitivity(a.weights, a.data, ratio=a.ratio, layers=layers, imgsz=a.imgsz, progress=False, **kw)
        return time.perf_counter() - t0, res

    floor = forward_work(base, layers, a.imgsz)
    # as each is run by default: lipslib on all cores (one process per core), Ultralytics on cpu_count − 1 threads
    fast_s, fast_res = fast()
    naive_s, base_map, naive_maps = naive(NUM_THREADS)
    # and at equal resources: lipslib in one process on Ultralytics' thread count, Ultralytics on all cores
    fast_1p_s, _ = fast(threads=NUM_THREADS, workers=1)
    naive_all_s, _, _ = naive(None)

    ours = dict(zip(fast_res["table"].layer_name, fast_res["table"].mAP_50_95))
    naive_imp = importance_from_drops(base_map, naive_maps)
    cores = os.cpu_count()
    result = {
        "what": "Stage I over the same layers, images and ratio: lipslib's single-pass fast path vs one Ultralytics "
        "validation per pruned layer (checkpoint saved and reloaded, as a script would)",
        "weights": str(a.weights),
        "data": str(a.data),
        "imgsz": a.imgsz,
        "ratio": a.ratio,
        "layers": len(layers),
        "images": fast_res["base"]["images"],
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": cores,
            "cuda": torch.cuda.is_available(),
        },
        "default": {
            "fast_seconds": round(fast_s, 2),
            "fast_processes": cores,
            "naive_seconds": round(naive_s, 2),
            "naive_threads": NUM_THREADS,
            "speedup": round(naive_s / fast_s, 2),
        },
        "equal_resources": {
            "one_thread": {
                "threads": NUM_THREADS,
                "fast_seconds": round(fast_1p_s, 2),
                "naive_seconds": round(naive_s, 2),
                "speedup": round(naive_s / fast_1p_s, 2),
            },
            "all_cores": {
                "cores": cores,
                "fast_seconds": round(fast_s, 2),
                "naive_seconds": round(naive_all_s, 2),
                "speedup": round(naive_all_s / fast_s, 2),
            },
        },
        "spearman_importance": float(
            spearmanr([fast_res["importance"][k] for k in layers], [naive_imp[k] for k in layers]).statistic
        ),
        "max_abs_map_diff": max(abs(ours[k] - naive_maps[k]) for k in layers),
        "base_map_fast": fast_res["base"]["mAP_50_95"],
        "base_map_naive": base_map,
        "forward_work": floor,
        "goals": {"speedup": ">= 5", "spearman": ">= 0.9"},
    }
    write_json(a.out, result, portable_paths=True)
    print({k: result[k] for k in ("default", "equal_resources", "spearman_importance", "max_abs_map_diff")})


if __name__ == "__main__":
    sys.exit(exit_code("bench_sensitivity.py", main))
