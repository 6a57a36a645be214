"""Widths the hardware likes: rounded down, padded up, or as the cut leaves them — measured, not assumed.

From the authors' iter-01 (whose every target width is odd: 12, 23, 45, …), uniform cuts at several ratios with
kept widths as cut, rounded to multiples of 16 and of 32 (`round_to`: the nearest multiple, or the base width
where that is nearer), each also padded up with zero channels to the multiple (same outputs, more GFLOPs:
`pruning.align.padded`), and `align`'s choice (pad a layer only where the OpenVINO block table says it is
faster). Every model is timed interleaved with the others, 640 px, batch 1, one thread, in OpenVINO (default
precision, INT8) and ONNX Runtime (fp32): no training, so no accuracy here (rounding's accuracy is on the Latency
page; padding keeps it exactly). Writes reports/bench/widths.json and .md. Not a test: about 15 minutes on 2
cores; wants an idle machine.

    python benchmarks/bench_widths.py [--ratios 0.1,0.2,0.3] [--runs 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from harness import machine, parse_floats

from lipslib.errors import exit_code
from lipslib.files import write_json
from lipslib.pruning.align import align, padded, rounded_up
from lipslib.pruning.engine import cost, load_model, prune, save_checkpoint
from lipslib.pruning.latency import time_models
from lipslib.pruning.layers import default_targets

DEFAULT_OUT = "reports/bench/widths.json"
SETTINGS = [("openvino", "default"), ("openvino", "int8"), ("onnxruntime", "default")]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="lips_iter01_best.pt")
    p.add_argument("--ratios", default="0.1,0.2,0.3")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--out", default=DEFAULT_OUT)
    a = p.parse_args()
    t0 = time.perf_counter()
    base = load_model(a.base)
    names = default_targets(base)
    with tempfile.TemporaryDirectory() as tmp:
        models = {"base": save_checkpoint(base, Path(tmp) / "base.pt")}
        kinds = {"base": ("base", 0.0, None, "as cut")}
        for r in parse_floats(a.ratios, "ratios", "0.1,0.2,0.3"):
            for rt in (None, 16, 32):
                cut = prune(base, dict.fromkeys(names, r), round_to=rt, log=False).model
                label = f"uniform {r:g}" + (f", round_to {rt}" if rt else "")
                models[label] = save_checkpoint(cut, Path(tmp) / f"{len(models)}.pt")
                kinds[label] = ("cut", r, rt, "as cut")
                for multiple in (16, 32) if rt is None else (rt,):
                    wide = padded(cut, rounded_up(cut, multiple))
                    key = f"{label}, padded to {multiple}"
                    models[key] = save_checkpoint(wide, Path(tmp) / f"{len(models)}.pt")
                    kinds[key] = ("padded", r, rt, f"padded to {multiple}")
            cut = prune(base, dict.fromkeys(names, r), log=False).model
            chosen, report = align(cut, 16, runtime="openvino", imgsz=a.imgsz, runs=10, progress=False)
            key = f"uniform {r:g}, aligned to 16 where faster"
            models[key] = save_checkpoint(chosen, Path(tmp) / f"{len(models)}.pt")
            kinds[key] = ("aligned", r, None, f"{len(report['padded'])} of {len(report['tried'])} layers padded")
        times = {
            f"{rt}/{pr}": time_models(models, rt, imgsz=a.imgsz, threads=1, runs=a.runs, precision=pr)
            for rt, pr in SETTINGS
        }
        gflops = {k: cost(load_model(w)).gflops for k, w in models.items()}
    rows = []
    for k in models:
        kind, r, rt, widths = kinds[k]
        row = {"model": k, "kind": kind, "ratio": r, "round_to": rt, "widths": widths, "gflops": gflops[k]}
        for s, t in times.items():
            row[f"{s} ms"] = t[k]["median_ms"]
            row[f"{s} precision"] = t[k]["precision"]
        rows.append(row)
    df = pd.DataFrame(rows)
    for s in times:  # time saved per GFLOPs saved, against the base
        b = df.loc[df.model == "base"].iloc[0]
        df[f"{s} ρ"] = (1 - df[f"{s} ms"] / b[f"{s} ms"]) / (1 - df.gflops / b.gflops)
    result = {
        "what": "uniform cuts of iter-01 with widths as cut, rounded to 16/32 and padded up, timed at 640 px",
        "machine": machine(),
        "settings": {"imgsz": a.imgsz, "threads": 1, "runs": a.runs, "base": a.base},
        "rows": df.where(df.notna(), None).to_dict(orient="records"),
        "seconds": round(time.perf_counter() - t0),
    }
    out = Path(a.out)
    write_json(out, result, portable_paths=True)
    cols = ["model", "gflops"] + [f"{s} ms" for s in times] + [f"{s} ρ" for s in times]
    out.with_suffix(".md").write_text(
        f"# Widths ({a.imgsz} px, 1 thread)\n\n" + df[cols].to_markdown(index=False, floatfmt=".3f") + "\n"
    )
    print(df[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    raise SystemExit(exit_code("bench_widths", main))
