"""Figures (seaborn/matplotlib, Agg backend so servers without a display can draw)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path


def importance_bar(importance: dict[str, float], path, title: str = "Layer importance (Stage I)") -> Path:
    """Horizontal bars, most important layer on top."""
    df = pd.DataFrame(sorted(importance.items(), key=lambda kv: -kv[1]), columns=["layer", "importance"])
    fig, ax = plt.subplots(figsize=(7, 0.26 * len(df) + 1.2))
    sns.barplot(data=df, y="layer", x="importance", hue="importance", palette="viridis", legend=False, ax=ax)
    ax.set(xlabel="importance (normalised mAP50-95 drop, max = 1)", ylabel="", title=title, xlim=(0, 1.05))
    ax.tick_params(axis="y", labelsize=8)
    return _save(fig, path)


def importance_scatter(ours: dict[str, float], reference: dict[str, float], path) -> float:
    """Ours vs a reference vector on the common layers; returns the Spearman rank correlation."""
    from scipy.stats import spearmanr

    common = sorted(set(ours) & set(reference))
    df = pd.DataFrame({"layer": common, "ours": [ours[k] for k in common], "reference": [reference[k] for k in common]})
    rho = float(spearmanr(df["ours"], df["reference"]).statistic) if len(common) > 1 else float("nan")
    fig, ax = plt.subplots(figsize=(5.5, 5))
    sns.scatterplot(data=df, x="reference", y="ours", ax=ax)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="reference importance (paper)", ylabel="our importance",
           title=f"Importance vs reference — Spearman ρ = {rho:.3f} ({len(common)} layers)")  # fmt: skip
    _save(fig, path)
    return rho
