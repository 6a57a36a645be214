"""Does a sweep's wall time fall with its workers, and are its results those of a sequential run?

The same 2-target sweep on the smoke profile (coco128, 160 px, 3 LIPS iterations × 1 epoch on a quarter of the
images; notebook 03 only) twice, each from empty run folders, through `lips sweep --direct` (submitit's local
executor, no DVC): once with two CPU workers of one thread each, once with one worker of one thread (the targets
one after another). Wall time of each whole command; per target, the loop's seconds and its best iteration,
GFLOPs and mAP50-95, which must be identical (each target runs the same single-threaded computation either way).
Goal: parallel ≤ 0.6 × sequential on 2 cores. Writes reports/bench/sweep.json. Not a test: about 8
minutes on 2 cores; run it on an otherwise idle machine (timings under load are not the machine's).

    python benchmarks/bench_sweep.py [--targets 3.9,4.0] [--profile smoke] [--set KEY=VALUE ...]
                                     [--work runs/bench_sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPARED = ("iteration", "gflops", "map50_95", "selection_map50_95")
GOAL = 0.6


def run(mode: str, devices: str, a, work: Path) -> dict:
    out = work / mode
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "lipslib",
        "sweep",
        "--direct",
        "--targets",
        a.targets,
        "--devices",
        devices,
        "--threads",
        "1",
        "--profile",
        a.profile,
        "--notebooks",
        a.notebooks,
        "--out",
        str(out),
        *(["--set", *a.set] if a.set else []),
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    print(f"{mode}: {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"bench_sweep: the {mode} sweep failed: {proc.stderr.strip()[-800:]}")
    targets = json.loads((out / "sweep.json").read_text())["targets"]
    return {
        "command": " ".join(["lips", *cmd[3:]]),
        "devices": devices,
        "threads_per_worker": 1,
        "wall_s": round(wall, 1),
        "targets": targets,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--targets", default="3.9,4.0")
    p.add_argument("--profile", default="smoke")
    p.add_argument("--notebooks", default="03_optimize")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", default=[])
    p.add_argument("--work", default="runs/bench_sweep")
    p.add_argument("--out", default="reports/bench/sweep.json")
    a = p.parse_args()
    work = ROOT / a.work
    sequential = run("sequential", "cpu", a, work)
    parallel = run("parallel", "cpu,cpu", a, work)
    by_target = {r["target_gflops"]: r for r in sequential["targets"]}
    identical, per_target = True, []
    for r in parallel["targets"]:
        s = by_target[r["target_gflops"]]
        same = all(r[k] == s[k] for k in COMPARED)
        identical &= same
        per_target.append(
            {
                "target_gflops": r["target_gflops"],
                "identical": same,
                **{k: r[k] for k in COMPARED},
                "seconds_sequential": s["seconds"],
                "seconds_parallel": r["seconds"],
            }
        )
    ratio = parallel["wall_s"] / sequential["wall_s"]
    import torch

    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "cuda": torch.cuda.is_available(),
        },
        "setting": {
            "targets": a.targets,
            "profile": a.profile,
            "notebooks": a.notebooks,
            "set": a.set,
            "executor": "local (submitit, --direct)",
        },
        "sequential": sequential,
        "parallel": parallel,
        "wall_ratio": round(ratio, 3),
        "goal": GOAL,
        "goal_met": ratio <= GOAL,
        "identical_results": identical,
        "per_target": per_target,
    }
    out = ROOT / a.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"sequential {sequential['wall_s']} s, 2 workers × 1 thread {parallel['wall_s']} s: {ratio:.2f}× "
        f"(goal ≤ {GOAL}); results identical per target: {identical} → {out}"
    )


if __name__ == "__main__":
    main()
