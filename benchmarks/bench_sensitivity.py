"""Stage I speed: lipslib's single-pass sensitivity vs the naive way (one Ultralytics validation per
pruned layer) on the same inputs. Writes reports/bench/sensitivity.json. Not a test: timings are noisy,
so the result is a ratio measured in one run.

    python benchmarks/bench_sensitivity.py [--weights lips_iter24_best.pt] [--imgsz 320] [--layers N]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from lipslib.engine import load_model, prune, save_checkpoint
from lipslib.evaluate import evaluate, write_json
from lipslib.layers import default_targets
from lipslib.sensitivity import importance_from_drops, run_sensitivity


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

    # Ultralytics validates on cpu_count − 1 threads; time the fast path on the same count for the ratio,
    # and on all cores as lipslib runs it by default.
    from ultralytics.utils import NUM_THREADS

    t0 = time.perf_counter()
    fast = run_sensitivity(a.weights, a.data, ratio=a.ratio, layers=layers, imgsz=a.imgsz, threads=NUM_THREADS,
                           progress=False)  # fmt: skip
    fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_sensitivity(a.weights, a.data, ratio=a.ratio, layers=layers, imgsz=a.imgsz, progress=False)
    fast_all_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    tmp = f"/tmp/lips_bench_{os.getpid()}.pt"
    base_map = evaluate(a.weights, a.data, imgsz=a.imgsz, threads=NUM_THREADS)["map50_95"]
    naive = {}
    for name in tqdm(layers, desc="naive: one Ultralytics validation per layer"):
        save_checkpoint(prune(base, {name: a.ratio}, log=False).model, tmp)
        naive[name] = evaluate(tmp, a.data, imgsz=a.imgsz, threads=NUM_THREADS)["map50_95"]
    naive_s = time.perf_counter() - t0
    os.remove(tmp)

    ours = dict(zip(fast["table"].layer_name, fast["table"].mAP_50_95))
    naive_imp = importance_from_drops(base_map, naive)
    result = {
        "what": "Stage I over the same layers, images and ratio: single-pass fast path vs one Ultralytics "
                "validation per pruned layer (checkpoint saved and reloaded, as a script would)",
        "weights": str(a.weights), "data": str(a.data), "imgsz": a.imgsz, "ratio": a.ratio, "layers": len(layers),
        "images": fast["base"]["images"],
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.is_available()},
        "threads_for_ratio": NUM_THREADS,
        "fast_seconds": round(fast_s, 2), "naive_seconds": round(naive_s, 2),
        "speedup": round(naive_s / fast_s, 2),
        "fast_seconds_all_cores": round(fast_all_s, 2),
        "speedup_all_cores": round(naive_s / fast_all_s, 2),
        "spearman_importance": float(spearmanr([fast["importance"][k] for k in layers],
                                               [naive_imp[k] for k in layers]).statistic),
        "max_abs_map_diff": max(abs(ours[k] - naive[k]) for k in layers),
        "base_map_fast": fast["base"]["mAP_50_95"], "base_map_naive": base_map,
        "goals": {"speedup": ">= 5", "spearman": ">= 0.9"},
    }  # fmt: skip
    write_json(a.out, result)
    print({k: result[k] for k in ("fast_seconds", "naive_seconds", "speedup", "fast_seconds_all_cores",
                                  "spearman_importance", "max_abs_map_diff")})


if __name__ == "__main__":
    main()
