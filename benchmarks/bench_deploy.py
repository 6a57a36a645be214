"""Pruned models that are faster where they run: OpenVINO and ONNX Runtime, FP32 and INT8, measured on this CPU.

From one base (the authors' iter-01) and the `deploy` profile of params.yaml (coco_val2193 at 320 px for accuracy;
latency at 640 px on OpenVINO in its default precision, one thread), at equal fine-tuning (the loop's iterations ×
epochs), every pruned model with `lsq` channels, least-squares reconstruction and output distillation:
  base            the base itself;
  uniform_ms      one ratio on every LIPS target, bisected to `--fraction` × the base's measured ms, kept widths
                  rounded to multiples of 16 or left at the base's width where nearer (`schedule.round_to`),
                  predicted by timing whole candidates;
  shaped_ms       the importance-shaped schedule (Stage I, `schedule.spread`), the same way;
  lips_ms         the LIPS loop with `schedule.target_ms` at that fraction, the same rounding;
  uniform_gflops  uniform at the GFLOPs lips_ms reached, widths as the ratio leaves them (no rounding);
  lips_gflops     the LIPS loop with `schedule.target_gflops` at that GFLOPs, no rounding.
Latency: every model timed interleaved with the others (median of `--runs`) in OpenVINO (default precision, forced
f32, INT8) and ONNX Runtime (fp32, INT8), with 1 and 2 threads, 640 px, batch 1; each record says the precision a
model ran in. INT8 for timing is calibrated on 64 fine-tune images at 640. Accuracy: each model exported at 320
(OpenVINO f32 and INT8, ONNX fp32 and INT8; INT8 calibrated on the first 300 fine-tune images) and scored on the
1,000 `test` images, which calibrate and choose nothing; paired bootstrap intervals over those images.
Writes reports/bench/deploy.json, deploy.md and deploy.png (mAP vs measured ms). Not a test: about an hour on 2
CPU cores; reruns reuse finished models in --work.

    python benchmarks/bench_deploy.py [--fraction 0.8] [--threads 1,2] [--runs 20] [--work runs/bench_deploy]
    python benchmarks/bench_deploy.py --figure-only      # deploy.md, .png and the goals again from deploy.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from harness import (
    RECOVERIES,
    loop,
    machine,
    one_shot,
    parse_floats,
    ratio_interval,
    run_maps,
    setting_args,
    stage1,
)

from lipslib.cfg import load_params
from lipslib.deploy import export, export_record, exported_model
from lipslib.errors import LipsError, exit_code
from lipslib.files import write_json
from lipslib.pipeline.loop import load_importance, prepare_data
from lipslib.pipeline.plots import deploy_pareto
from lipslib.pruning.engine import cost, load_model
from lipslib.pruning.latency import time_models
from lipslib.train.validator import evaluate

DEFAULT_OUT = "reports/bench/deploy.json"
RECOVERY = "recon_lsq_distill"
MS, GF = ("uniform_ms", "shaped_ms", "lips_ms"), ("uniform_gflops", "lips_gflops")
LATENCY = [
    ("openvino", "default"),
    ("openvino", "f32"),
    ("openvino", "int8"),
    ("onnxruntime", "f32"),
    ("onnxruntime", "int8"),
]
EXPORTS = {
    "openvino_f32": ("openvino", False),
    "openvino_int8": ("openvino", True),
    "onnx_f32": ("onnx", False),
    "onnx_int8": ("onnx", True),
}
HEADLINE = "openvino/default/1"  # the runtime, precision and threads the goals speak of
EQUAL_MS = 0.03  # two models' headline times within 3 % of each other count as equal


def models(args, work: Path) -> tuple[dict, dict]:
    """Train (or reuse) every model; returns ({method: row}, settings)."""
    common = {
        "base": args.base,
        "data": args.data,
        "imgsz": args.imgsz,
        "optimize.report": args.report,
        "finetune.fraction": 1.0,
        **RECOVERIES[RECOVERY],
    }
    probe = load_params(args.params, args.profile, common)
    lat = probe["latency"]
    base = load_model(args.base)
    saved = work / "target.json"  # the first run's target: a rerun resumes the very same loops
    if saved.is_file():
        base_ms, target_ms = (json.loads(saved.read_text())[k] for k in ("base_ms", "target_ms"))
    else:
        base_ms = time_models(
            {"base": base},
            lat["runtime"],
            imgsz=lat["imgsz"],
            threads=lat["threads"],
            runs=args.runs,
            precision=lat["precision"],
        )["base"]["median_ms"]
        target_ms = round(args.fraction * base_ms, 2)
        write_json(saved, {"base_ms": base_ms, "target_ms": target_ms, "fraction": args.fraction})
    # Stage I on the fine-tune split, each cut recovered as the models are; the loops read it too
    path = stage1(load_params(args.params, args.profile, {**common, "schedule.target_ms": target_ms}), work, RECOVERY)
    common["optimize.importance"] = str(path)
    ms_params = load_params(args.params, args.profile, {**common, "schedule.target_ms": target_ms})
    epochs = ms_params["optimize"]["iterations"] * ms_params["finetune"]["epochs"]
    importance = load_importance(str(path), base)
    rows = {}
    for method in MS:
        kind = method.split("_")[0]
        out = work / method
        rows[method] = (
            loop(ms_params, out)
            if kind == "lips"
            else one_shot(f"{kind}_{RECOVERY}", ms_params, importance, target_ms, epochs, out)
        )
    gflops = round(rows["lips_ms"]["gflops"], 3)
    gf = {"schedule.target_ms": None, "schedule.target_gflops": gflops, "schedule.round_to": None}
    gf_params = load_params(args.params, args.profile, {**common, **gf})
    rows["uniform_gflops"] = one_shot(
        f"uniform_{RECOVERY}", gf_params, importance, gflops, epochs, work / "uniform_gflops"
    )
    rows["lips_gflops"] = loop(gf_params, work / "lips_gflops")
    settings = {
        "profile": args.profile,
        "data": args.data,
        "imgsz": args.imgsz,
        "report_split": args.report,
        "epochs": epochs,
        "fraction": args.fraction,
        "base_ms_at_start": base_ms,
        "target_ms": target_ms,
        "target_gflops": gflops,
        "round_to": ms_params["schedule"]["round_to"],
        "recovery": RECOVERIES[RECOVERY],
        "latency": lat,
    }
    return rows, settings


def exports(rows: dict, args, work: Path) -> dict:
    """{method: {export: path}} at the accuracy size, INT8 calibrated on the first 300 fine-tune images."""
    out = {}
    for method, row in rows.items():
        out[method] = {}
        for name, (fmt, int8) in EXPORTS.items():
            folder = work / "exports" / method / name
            found = [p for p in folder.glob("*") if p.suffix == ".onnx" or p.name.endswith("_openvino_model")]
            if not found:
                export(
                    row["weights"],
                    fmt,
                    int8=int8,
                    data=args.data if int8 else None,
                    images=300,
                    imgsz=args.imgsz,
                    out=folder,
                )
            out[method][name] = folder
    return out


def latency(rows: dict, args, threads: list[int]) -> dict:
    """{'runtime/precision/threads': {method: summary}} at 640, every model interleaved with the others."""
    weights = {m: r["weights"] for m, r in rows.items()}
    out = {}
    for runtime, precision in LATENCY:
        for t in threads:
            key = f"{runtime}/{precision}/{t}"
            out[key] = time_models(
                weights,
                runtime,
                imgsz=args.latency_imgsz,
                threads=t,
                runs=args.runs,
                precision=precision,
                data=args.data,
            )
            print(key, {m: round(s["median_ms"], 2) for m, s in out[key].items()}, flush=True)
    return out


def main():
    p = setting_args(__doc__.split("\n")[0], DEFAULT_OUT)
    p.set_defaults(profile="deploy")
    p.add_argument("--fraction", type=float, default=0.8, help="the ms target as a share of the base's measured ms")
    p.add_argument("--threads", default="1,2", help="thread counts the latency table is measured with")
    p.add_argument("--runs", type=int, default=20, help="interleaved timed runs per model and setting")
    p.add_argument("--latency-imgsz", type=int, default=640)
    p.add_argument("--work", default="runs/bench_deploy")
    a = p.parse_args()
    out = Path(a.out)
    if a.figure_only:  # the figure, the table and the goals again from the record's own figures
        result = json.loads(out.read_text())
        write_report({**result, "goals": goals(result)}, out)
        return
    if not 0 < a.fraction < 1:
        raise LipsError(f"--fraction {a.fraction}: the target is a share of the base's time, in (0, 1)")
    threads = [int(t) for t in parse_floats(a.threads, "threads", "1,2")]
    if 1 not in threads:
        raise LipsError(f"--threads {a.threads}: the goals are measured on 1 thread; include it, e.g. --threads 1,2")
    work, t0 = Path(a.work), time.perf_counter()
    trained, settings = models(a, work)
    data, _, report = prepare_data(a.data, a.report, work)
    base_row = {**evaluate(a.base, data, split=report, imgsz=a.imgsz), "weights": a.base}
    rows = {"base": base_row, **trained}
    exported = exports(rows, a, work)
    lat = latency(rows, a, threads)
    images = base_row["images"]
    params = load_params(a.params, a.profile, {"base": a.base, "data": a.data, "imgsz": a.imgsz})
    maps, result_rows = {}, {}
    (work / "scores").mkdir(parents=True, exist_ok=True)
    for method, row in rows.items():
        maps[(method, "pt")] = run_maps(row, work / "scores" / method, data, params, report, images, a.resamples)
        record = {
            "gflops": row["gflops"],
            "params": row.get("params", cost(load_model(row["weights"])).params),
            "map50_95": row["map50_95"],
            "map50_95_ci95": ci(maps[(method, "pt")], row["map50_95"]),
            "weights": row["weights"],
            "latency": {k: v[method] for k, v in lat.items()},
            "exported": {},
        }
        for name, folder in exported[method].items():
            ev = evaluate(folder, data, split=report, imgsz=a.imgsz)
            erow = {"weights": str(folder), "map50_95": ev["map50_95"]}
            maps[(method, name)] = run_maps(
                erow, work / "scores" / f"{method}_{name}", data, params, report, images, a.resamples
            )
            record["exported"][name] = {
                "map50_95": ev["map50_95"],
                "map50_95_ci95": ci(maps[(method, name)], ev["map50_95"]),
                "calibration": export_record(exported_model(folder)).get("calibration"),
            }
        for fmt in ("openvino", "onnx"):  # INT8 over FP32 of the same export, paired
            record["exported"][f"{fmt}_int8"]["over_fp32"] = ratio_interval(
                maps[(method, f"{fmt}_int8")], maps[(method, f"{fmt}_f32")]
            )
        result_rows[method] = record
    b = result_rows["base"]
    for method, r in result_rows.items():
        if method == "base":
            continue
        ms, base_ms = r["latency"][HEADLINE]["median_ms"], b["latency"][HEADLINE]["median_ms"]
        r["time_saved"], r["gflops_saved"] = 1 - ms / base_ms, 1 - r["gflops"] / b["gflops"]
        r["time_per_gflops_saved"] = r["time_saved"] / r["gflops_saved"] if r["gflops_saved"] > 0 else None
        r["int8_speedup_over_f32"] = {  # keyed by thread count as the JSON record holds it
            str(t): r["latency"][f"openvino/f32/{t}"]["median_ms"] / r["latency"][f"openvino/int8/{t}"]["median_ms"]
            for t in threads
        }
    comparisons = {
        f"{x}_over_{y}": ratio_interval(maps[(x, "pt")], maps[(y, "pt")])
        for x, y in (
            ("lips_ms", "uniform_ms"),
            ("lips_ms", "shaped_ms"),
            ("shaped_ms", "uniform_ms"),
            ("lips_gflops", "uniform_gflops"),
        )
    }
    result = {
        "machine": {**machine(), "openvino": __import__("openvino").__version__},
        "settings": {
            **settings,
            "report_images": images,
            "bootstrap_resamples": a.resamples,
            "runs": a.runs,
            "threads": threads,
            "latency_imgsz": a.latency_imgsz,
            "headline": HEADLINE,
        },
        "rows": result_rows,
        "comparisons": comparisons,
        "seconds": round(time.perf_counter() - t0),
    }
    result["goals"] = goals(result)
    write_report(result, out)
    print(json.dumps(result["goals"], indent=2))


def ci(maps: np.ndarray, point: float) -> list[float]:
    """Basic bootstrap 95 % interval of a model's mAP (as bench_baselines reports its rows)."""
    lo, hi = np.percentile(maps, [2.5, 97.5])
    return [float(2 * point - hi), float(2 * point - lo)]


def goals(result: dict) -> dict:
    rows, c = result["rows"], result["comparisons"]
    pruned = {m: r for m, r in rows.items() if m != "base"}
    int8 = {
        f"{m}/{fmt}": r["exported"][f"{fmt}_int8"]["map50_95"] / max(r["exported"][f"{fmt}_f32"]["map50_95"], 1e-9)
        for m, r in rows.items()
        for fmt in ("openvino", "onnx")
    }
    aligned = [m for m in MS if m in rows]
    ms = {m: rows[m]["latency"][HEADLINE]["median_ms"] for m in ("lips_ms", "uniform_ms")}
    time_ratio = ms["lips_ms"] / ms["uniform_ms"]
    return {
        "lips_ms_keeps_0.120": rows["lips_ms"]["map50_95"] >= 0.120,
        "lips_ms_map50_95": rows["lips_ms"]["map50_95"],
        "every_model_saves_0.8x_time_per_gflops": all(
            (r["time_per_gflops_saved"] or 0) >= 0.8 for r in pruned.values()
        ),
        "time_per_gflops_saved": {m: r["time_per_gflops_saved"] for m, r in pruned.items()},
        "int8_keeps_0.99": all(v >= 0.99 for v in int8.values()),
        "int8_over_fp32": int8,
        "aligned_int8_1.5x_over_f32": all(rows[m]["int8_speedup_over_f32"]["1"] >= 1.5 for m in aligned),
        "int8_speedup_over_f32_1_thread": {m: rows[m]["int8_speedup_over_f32"]["1"] for m in aligned},
        # the goal compares the two at equal measured ms: a LIPS model that landed slower is not a win
        "lips_ms_over_uniform_ms_1.10_at_equal_ms": c["lips_ms_over_uniform_ms"]["ratio_median"] >= 1.10
        and abs(time_ratio - 1) <= EQUAL_MS,
        "lips_ms_over_uniform_ms": c["lips_ms_over_uniform_ms"]["ratio_median"],
        "lips_ms_time_over_uniform_ms": time_ratio,
    }


def write_report(result: dict, out: Path) -> None:
    write_json(out, result, portable_paths=True)
    b = result["rows"]["base"]
    table = []
    for m, r in result["rows"].items():
        lat = r["latency"]
        table.append(
            {
                "method": m,
                "GFLOPs": r["gflops"],
                "mAP50-95 (pt)": r["map50_95"],
                "OV int8 / f32 mAP": r["exported"]["openvino_int8"]["map50_95"]
                / max(r["exported"]["openvino_f32"]["map50_95"], 1e-9),
                **{f"{k} ms": v["median_ms"] for k, v in lat.items()},
                "time / GFLOPs saved": r.get("time_per_gflops_saved"),
            }
        )
    out.with_suffix(".md").write_text(
        f"# Deployment ({result['settings']['data']}, test split, mAP at {result['settings']['imgsz']} px; "
        f"latency at {result['settings']['latency_imgsz']} px)\n\n"
        + pd.DataFrame(table).to_markdown(index=False, floatfmt=".4f")
        + f"\n\nBase: {b['gflops']:.3f} GFLOPs. Goals: {json.dumps(result['goals'])}\n"
    )
    deploy_pareto(result, out.with_suffix(".png"))


if __name__ == "__main__":
    raise SystemExit(exit_code("bench_deploy", main))
