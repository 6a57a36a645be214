"""The training axis: does what allocation buys shrink, stay or grow with fine-tuning?

LIPS and uniform pruning at one budget, with the same channel choice and reconstruction (no distillation: it
fine-tunes 3.5× slower on a CPU, and a length axis multiplies that), at several fine-tuning lengths: one
bench_baselines.py run per length (its --epochs per LIPS iteration; the one-shot baselines get iterations ×
epochs), each in its own --work folder and record. This script runs the lengths that
have no record yet and collects them: per length, both models' mAP50-95 with 95 % intervals and LIPS / uniform
with its paired interval. Writes reports/bench/epochs.json and epochs.png. Not a test: about 10 minutes per 4
epochs of both models on 2 CPU cores.

    python benchmarks/bench_epochs.py [--budget 3.4] [--epochs 4,8,16] [--reuse 4=JSON]
    python benchmarks/bench_epochs.py --figure-only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from harness import machine, parse_floats

from lipslib.errors import LipsError, exit_code
from lipslib.files import write_json
from lipslib.pipeline.plots import epochs_figure

DEFAULT_OUT = "reports/bench/epochs.json"
METHODS = ("lips_recon_lsq", "uniform_recon_lsq")
ITERATIONS = 4


def record(epochs: int, budget: float, reuse: dict) -> Path:
    """The baselines record of a length: a reused one, or reports/bench/epochs/baselines_<epochs>.json (run if
    missing, resuming its --work folder)."""
    if epochs in reuse:
        return Path(reuse[epochs])
    out = Path(f"reports/bench/epochs/baselines_{epochs}.json")
    if not out.is_file():
        per_iteration = epochs // ITERATIONS
        cmd = [
            sys.executable,
            "benchmarks/bench_baselines.py",
            "--budgets",
            f"{budget:g}",
            "--epochs",
            str(per_iteration),
            "--iterations",
            str(ITERATIONS),
            "--methods",
            ",".join(METHODS),
            "--work",
            f"runs/bench_epochs/{epochs}",
            "--out",
            str(out),
        ]
        if subprocess.run(cmd, check=False).returncode:
            raise LipsError(f"the {epochs}-epoch run failed: {' '.join(cmd)}")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=3.4)
    p.add_argument("--epochs", default="4,8,16", help="total fine-tune epochs, multiples of 4 (4 LIPS iterations)")
    p.add_argument("--reuse", nargs="*", default=[], metavar="EPOCHS=JSON", help="a length's existing record")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--figure-only", action="store_true")
    a = p.parse_args()
    out = Path(a.out)
    if a.figure_only:
        epochs_figure(json.loads(out.read_text()), out.with_suffix(".png"))
        return
    lengths = [int(e) for e in parse_floats(a.epochs, "epochs", "4,8,16")]
    if any(e % ITERATIONS for e in lengths):
        raise LipsError(f"--epochs {a.epochs}: each must be a multiple of {ITERATIONS} (the loop's iterations)")
    reuse = {int(k): v for k, v in (pair.split("=", 1) for pair in a.reuse)}
    rows = []
    for e in sorted(lengths):
        path = record(e, a.budget, reuse)
        doc = json.loads(path.read_text())
        budget = next(b for b in doc["budgets"] if b["budget"] == a.budget)
        lips, uniform = (budget["methods"][m] for m in METHODS)
        rows.append(
            {
                "epochs": e,
                "record": str(path),
                "lips": {k: lips[k] for k in ("map50_95", "map50_95_ci95", "gflops")},
                "uniform": {k: uniform[k] for k in ("map50_95", "map50_95_ci95", "gflops")},
                "lips_over_uniform": uniform["lips_ratio"],
                "lips_over_uniform_ci95": uniform["lips_ratio_ci95"],
                "p_lips_beats_uniform": uniform.get("lips_p_a_beats_b"),
            }
        )
    result = {
        "what": "LIPS over uniform at one budget as fine-tuning lengthens (same lsq channels and refit)",
        "budget": a.budget,
        "methods": list(METHODS),
        "rows": rows,
        "machine": machine(),
    }
    write_json(out, result, portable_paths=True)
    epochs_figure(result, out.with_suffix(".png"))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    raise SystemExit(exit_code("bench_epochs", main))
