"""Bootstrap statistics on per-image matches: mAP over any set of images, paired resamples, ratio intervals."""

from __future__ import annotations

import numpy as np

from lipslib.errors import LipsError


def map50_95(images: list[dict]) -> float:
    """mAP50-95 over these images, by Ultralytics' ap_per_class (classes present in their labels)."""
    from ultralytics.utils.metrics import ap_per_class

    cat = {k: np.concatenate([im[k] for im in images], 0) for k in ("tp", "conf", "pred_cls", "target_cls")}
    ap = ap_per_class(cat["tp"], cat["conf"], cat["pred_cls"], cat["target_cls"])[5]
    return float(ap.mean()) if len(ap) else 0.0


def bootstrap_maps(
    matches: dict[str, list[dict]], resamples: int = 1000, seed: int = 0, progress: bool = False
) -> dict[str, np.ndarray]:
    """Each model's mAP50-95 (`evaluate.image_matches` per model, the same images) over the same `resamples`
    resamples of the images with replacement: paired, so any two rows give a ratio's distribution."""
    from tqdm.auto import tqdm

    sizes = {len(m) for m in matches.values()}
    if len(sizes) != 1 or not sizes.pop():
        counts = ", ".join(f"{k}: {len(m)}" for k, m in matches.items())
        raise LipsError(f"a paired bootstrap needs the same images for every model (got {counts})")
    n = len(next(iter(matches.values())))
    rng = np.random.default_rng(seed)
    out = {k: np.empty(resamples) for k in matches}
    for r in tqdm(range(resamples), desc="bootstrap", disable=not progress):
        idx = rng.integers(0, n, n)
        for k, m in matches.items():
            out[k][r] = map50_95([m[i] for i in idx])
    return out


def pool_seeds(runs: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """One method fine-tuned with several training seeds, as one bootstrap distribution of its mean mAP.
    `runs`: per seed, `bootstrap_maps`' array for that run (all over the same image resamples). Each resample
    also draws the seeds with replacement, so intervals built from the result hold the spread between
    training runs as well as between images; a single seed is returned as it is."""
    stack = np.stack(runs)  # seeds × resamples
    if len(stack) == 1:
        return stack[0]
    pick = np.random.default_rng(seed).integers(0, len(stack), stack.shape)
    return np.take_along_axis(stack, pick, 0).mean(0)


def ratio_interval(a: np.ndarray, b: np.ndarray) -> dict:
    """How sure is "a beats b", from paired bootstrap mAPs: the ratio a/b's 2.5/50/97.5 percentiles and
    the share of resamples where a > b."""
    ratios = a / np.maximum(b, 1e-9)
    lo, mid, hi = np.percentile(ratios, [2.5, 50, 97.5])
    return {
        "ratio_ci95": [float(lo), float(hi)],
        "ratio_median": float(mid),
        "p_a_beats_b": float(np.mean(a > b)),
        "resamples": len(a),
    }


def paired_bootstrap(a: list[dict], b: list[dict], resamples: int = 1000, seed: int = 0) -> dict:
    """`ratio_interval` of models a and b (`evaluate.image_matches` on the same images)."""
    maps = bootstrap_maps({"a": a, "b": b}, resamples, seed)
    return {**ratio_interval(maps["a"], maps["b"]), "images": len(a)}
