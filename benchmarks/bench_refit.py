"""Does refitting on the pruned copy's own inputs pay? The independent refit against the sequential one.

`reconstruct` fits every conv on the base's inputs (independent, seconds); `refit_sequential` fits them in
network order on the pruned copy's own inputs with the base's outputs as targets, so later convs correct the
error of earlier ones (one pass of both models per conv). One cut — the authors' iter-01, uniform at `--budget`
GFLOPs, channels chosen by `lsq` — refit both ways on the same `--images` fine-tune images at 320 px and scored
before any fine-tuning on coco_val2193's 1,000 `test` images. Writes reports/bench/refit.json. Not a test: about
20 minutes on 2 cores.

    python benchmarks/bench_refit.py [--budget 3.4] [--images 256] [--ridges 0.001,0.01,0.1]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

from harness import machine, parse_floats

from lipslib.datasets import calibration_images
from lipslib.errors import exit_code
from lipslib.files import write_json
from lipslib.pruning.baselines import at_gflops
from lipslib.pruning.engine import load_model, prune, save_checkpoint
from lipslib.recovery.lsq import channel_criterion, reconstruct, refit_sequential
from lipslib.train.validator import evaluate

DEFAULT_OUT = "reports/bench/refit.json"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="lips_iter01_best.pt")
    p.add_argument("--data", default="coco_val2193.yaml")
    p.add_argument("--budget", type=float, default=3.4)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--ridges", default="0.001,0.01,0.1", help="λ of the sequential refit")
    p.add_argument("--out", default=DEFAULT_OUT)
    a = p.parse_args()
    base = load_model(a.base)
    images = calibration_images(a.data, "train", a.images, a.imgsz)
    grams: dict = {}
    criterion = channel_criterion("lsq", base, images, grams)
    ratios = at_gflops("uniform", base, a.budget, criterion=criterion)["ratios"]
    rows = {}

    def score(label: str, model, seconds: float, **extra):
        with tempfile.TemporaryDirectory() as tmp:
            path = save_checkpoint(model, Path(tmp) / "m.pt")
            rec = evaluate(path, a.data, split="test", imgsz=a.imgsz)
        rows[label] = {"map50_95_before_ft": rec["map50_95"], "gflops": rec["gflops"], "seconds": seconds, **extra}
        print(label, rows[label], flush=True)

    plain = prune(base, ratios, criterion=criterion, log=False, track=True)
    score("no refit", plain.model, 0.0)
    res = copy.deepcopy(plain)
    t0 = time.perf_counter()
    reconstruct(res, base, images, ridge=1e-3, gram_cache=grams)
    score("independent, λ 0.001", res.model, round(time.perf_counter() - t0, 1), ridge=1e-3)
    for ridge in parse_floats(a.ridges, "ridges", "0.001,0.01,0.1"):
        res = copy.deepcopy(plain)
        t0 = time.perf_counter()
        residuals = refit_sequential(res, base, images, ridge=ridge)
        score(
            f"sequential, λ {ridge:g}",
            res.model,
            round(time.perf_counter() - t0, 1),
            ridge=ridge,
            mean_residual=sum(residuals.values()) / max(len(residuals), 1),
        )
    write_json(
        a.out,
        {
            "what": "independent vs sequential least-squares refit of one cut, before fine-tuning",
            "machine": machine(),
            "settings": {
                "base": a.base,
                "data": a.data,
                "budget": a.budget,
                "criterion": "lsq",
                "ratios": ratios,
                "calibration_images": a.images,
                "imgsz": a.imgsz,
                "report_split": "test",
            },
            "rows": rows,
        },
        portable_paths=True,
    )


if __name__ == "__main__":
    raise SystemExit(exit_code("bench_refit", main))
