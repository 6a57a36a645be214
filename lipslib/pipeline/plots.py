"""Figures (seaborn/matplotlib). Each function saves its figure and returns it, so a notebook shows the
same figure inline (the value of a cell). Outside Jupyter the Agg backend draws without a display; inside,
ipykernel's inline backend (MPLBACKEND) is kept."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

if not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _save(fig, path):
    """Save and close (pyplot forgets it; the Figure still renders when a notebook displays it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return fig


def importance_bar(importance: dict[str, float], path, title: str = "Layer importance (Stage I)"):
    """Horizontal bars, most important layer on top."""
    df = pd.DataFrame(sorted(importance.items(), key=lambda kv: -kv[1]), columns=["layer", "importance"])
    fig, ax = plt.subplots(figsize=(7, 0.26 * len(df) + 1.2))
    sns.barplot(data=df, y="layer", x="importance", hue="importance", palette="viridis", legend=False, ax=ax)
    ax.set(xlabel="importance (normalised mAP50-95 drop, max = 1)", ylabel="", title=title, xlim=(0, 1.05))
    ax.tick_params(axis="y", labelsize=8)
    return _save(fig, path)


def spearman(ours: dict[str, float], reference: dict[str, float]) -> float:
    """Spearman rank correlation of two {layer: value} vectors on their common layers (nan below two)."""
    from scipy.stats import spearmanr

    common = sorted(set(ours) & set(reference))
    if len(common) < 2:
        return float("nan")
    return float(spearmanr([ours[k] for k in common], [reference[k] for k in common]).statistic)


def importance_scatter(ours: dict[str, float], reference: dict[str, float], path):
    """Ours vs a reference vector on the common layers, titled with their Spearman rank correlation."""
    common = sorted(set(ours) & set(reference))
    df = pd.DataFrame({"layer": common, "ours": [ours[k] for k in common], "reference": [reference[k] for k in common]})
    rho = spearman(ours, reference)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    sns.scatterplot(data=df, x="reference", y="ours", ax=ax)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(
        xlabel="reference importance (paper)",
        ylabel="our importance",
        title=f"Importance vs reference — Spearman ρ = {rho:.3f} ({len(common)} layers)",
    )
    return _save(fig, path)


def layer_iteration(
    wide: pd.DataFrame, importance: dict[str, float], path, title: str = "Pruning ratio per iteration", ax=None
):
    """Every layer's ratio per iteration (rows: iteration, columns: layer), coloured and labelled by its
    importance, like the paper's Fig. 5."""
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(10, 6.5))
    cmap = plt.get_cmap("viridis")
    order = sorted(wide.columns, key=lambda k: -importance.get(k, 0))
    for name in order:
        imp = importance.get(name, float("nan"))
        ax.plot(wide.index, wide[name], marker=".", ms=3, lw=1.1, color=cmap(imp), label=f"{name} (imp={imp:.3f})")
    ax.set(xlabel="iteration", ylabel="pruning ratio", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if own:
        ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        return _save(fig, path)
    return None


def replay_trajectories(long: pd.DataFrame, importance: dict[str, float], path):
    """The authors' ratios and our rule's replay of their measurements, side by side on one scale."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 6), sharey=True)
    for ax, col, title in zip(axes, ("paper", "replay"), ("Authors' ratios", "Our rule on their measurements")):
        layer_iteration(long.pivot(index="iteration", columns="layer", values=col), importance, None, title, ax=ax)
    sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=axes, label="layer importance", fraction=0.025, pad=0.01)
    return _save(fig, path)


def benchmark_figure(df: pd.DataFrame, path, title: str = "mAP50-95 vs GFLOPs"):
    """Published points (filled circles, COCO val2017) and measured points (crosses, with their data)
    on one scatter; the two kinds are never drawn alike."""
    fig, ax = plt.subplots(figsize=(9, 6))
    pub, meas = df[df.kind == "published"], df[df.kind == "measured"]
    ax.scatter(pub.gflops, pub.map50_95, s=50, c="tab:blue", label="published (COCO val2017)", zorder=3)
    for n, (_, r) in enumerate(pub.sort_values("gflops").iterrows()):  # alternate above/below: neighbours are close
        ax.annotate(
            r.model, (r.gflops, r.map50_95), xytext=(5, 5 if n % 2 else -12), textcoords="offset points", fontsize=8
        )
    for i, (source, group) in enumerate(meas.groupby("source", sort=False)):
        ax.scatter(
            group.gflops,
            group.map50_95,
            s=70,
            marker="X",
            color=plt.get_cmap("Set1")(i),
            zorder=4,
            label=f"measured here: {source}",
        )
        for _, r in group.iterrows():  # measured labels to the left, published ones to the right
            ax.annotate(
                r.model,
                (r.gflops, r.map50_95),
                xytext=(-7, -3),
                textcoords="offset points",
                fontsize=8,
                ha="right",
                color=plt.get_cmap("Set1")(i),
            )
    ax.set_xlim(left=min(df.gflops.min() - 1.6, ax.get_xlim()[0]), right=df.gflops.max() + 1.2)
    ax.set(xlabel="GFLOPs (640×640; measured: 2 × MACs, fused)", ylabel="mAP50-95", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, path)


def pareto_figure(table: pd.DataFrame, path):
    """Best model per GFLOPs target: mAP50-95 (report split) vs GFLOPs, each point labelled by its target."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    t = table.sort_values("gflops")
    ax.plot(t.gflops, t.map50_95, marker="o")
    for _, r in t.iterrows():
        ax.annotate(
            f"target {r.target_gflops:g}", (r.gflops, r.map50_95), xytext=(5, 5), textcoords="offset points", fontsize=8
        )
    ax.set(
        xlabel="GFLOPs (640×640)",
        ylabel=f"mAP50-95 ({t.split_report.iloc[0]} split)",
        title="LIPS sweep over GFLOPs targets",
    )
    ax.grid(alpha=0.3)
    return _save(fig, path)


def baselines_pareto(result: dict, path) -> Path:
    """mAP50-95 vs GFLOPs from the baselines benchmark's JSON: one line per method over the budgets, 95 %
    bootstrap intervals as bars, the base as a point."""
    rows = [
        {
            "method": m,
            "gflops": r["gflops"],
            "map": r["map50_95"],
            "lo": r["map50_95_ci95"][0],
            "hi": r["map50_95_ci95"][1],
        }
        for b in result["budgets"]
        for m, r in b["methods"].items()
    ]
    df = pd.DataFrame(rows).sort_values("gflops")
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    # colour: the schedule (the part before the first _); line: the channel choice and recovery
    kinds = list(dict.fromkeys(m.partition("_")[0] for m in df.method))
    palette = dict(zip(kinds, sns.color_palette("tab10", len(kinds))))
    recon = any("recon" in m for m in df.method)
    for method, g in df.groupby("method"):  # by name: the legend lists each schedule's variants together
        suffix = method.partition("_")[2]
        # with reconstructed rows, they are the lines to read; the others (plain, repair) are drawn faint
        faint = recon and "recon" not in method
        # a basic bootstrap interval need not contain the point (a skewed resample distribution): bars stop at it
        err = [(g["map"] - g.lo).clip(lower=0), (g.hi - g["map"]).clip(lower=0)]
        ax.errorbar(
            g.gflops,
            g["map"],
            yerr=err,
            marker="s" if "recover" in suffix or "distill" in suffix else "o",
            capsize=3,
            color=palette[method.partition("_")[0]],
            ls="-" if suffix.startswith("recon_lsq") else "--" if suffix.startswith("recon") else ":",
            alpha=0.4 if faint else 1.0,
            label=method,
        )
    base = result["base"]
    ax.scatter(
        [base["gflops"]],
        [base["map50_95"]],
        marker="*",
        s=160,
        color="black",
        zorder=5,
        label=f"base ({Path(base['weights']).stem})",
    )
    if result.get("control"):
        c = result["control"]
        ax.axhline(
            c["map50_95"], color="black", ls="-.", lw=1, label=f"control: base, same fine-tune ({c['map50_95']:.3f})"
        )
    s = result["settings"]
    ax.set(
        xlabel="GFLOPs (640, fused)",
        ylabel=f"mAP50-95, {s['report_split']} split ({s['report_images']} images)",
        title=f"Equal cost, equal epochs ({s['iterations'] * s['epochs_per_iteration']}): "
        f"{Path(s['data']).stem} @ {s['imgsz']}",
    )
    # beside the axes: with a dozen methods a legend inside covers their points
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def allocation_strip(result: dict, path):
    """The allocation benchmark's JSON as mAP50-95 / uniform per draw, one column per spread: the shuffled
    vectors in grey, the Stage I order in red, the authors' iter-24 order in blue, 95 % paired-bootstrap bars;
    uniform (1) and the goal as lines."""
    df = pd.DataFrame(result["draws"])
    spreads = sorted(df.spread.unique())
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, spread in enumerate(spreads):
        g = df[df.spread == spread].reset_index(drop=True)
        x = i + (g.index - (len(g) - 1) / 2) * min(0.6 / max(len(g), 1), 0.08)  # draws side by side, in draw order
        for vector, color, label in (
            ("shuffled", "0.55", "Stage I values shuffled"),
            ("stage1", "tab:red", "Stage I order"),
            ("paper_iter24", "tab:blue", "authors' iter-24 order"),
        ):
            h = g[g.vector == vector]
            lo, hi = zip(*h.vs_uniform_ci95) if len(h) else ((), ())
            err = [
                (h.vs_uniform - pd.Series(lo, index=h.index)).clip(lower=0),
                (pd.Series(hi, index=h.index) - h.vs_uniform).clip(lower=0),
            ]
            ax.errorbar(
                x[h.index],
                h.vs_uniform,
                yerr=err,
                fmt="o",
                color=color,
                capsize=2,
                ms=5,
                label=label if i == 0 else None,
            )
    ax.axhline(1.0, color="black", lw=1, label=f"uniform ({result['uniform']['map50_95']:.4f})")
    goal = result["goal_vs_uniform"]
    ax.axhline(goal, color="tab:green", ls="--", lw=1, label=f"goal ({goal:g} × uniform)")
    s = result["settings"]
    ax.set_xticks(range(len(spreads)), [f"spread {v:g}" for v in spreads])
    ax.set(
        ylabel="mAP50-95 ÷ uniform's (95 % bars)",
        title=f"Per-layer allocation at {s['budget']:g} GFLOPs, {s['epochs']} epochs"
        + (f", recovery {s['recovery']}" if s.get("recovery", "none") != "none" else "")
        + f": {Path(s['data']).stem} {s['report_split']} ({s['report_images']} images)",
    )
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, frameon=False)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def deploy_pareto(result: dict, path):
    """mAP50-95 vs measured milliseconds from the deployment benchmark's JSON: each model in the runtime and
    precision its goals speak of (circles, PyTorch fp32 mAP) and as an INT8 OpenVINO export (squares, that
    export's mAP and time), joined; 95 % bootstrap intervals as bars."""
    headline = result["settings"]["headline"]
    runtime, _, threads = headline.split("/")
    int8_key = f"{runtime}/int8/{threads}"
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    palette = sns.color_palette("tab10", len(result["rows"]))
    for colour, (method, r) in zip(palette, result["rows"].items()):
        x, y, (lo, hi) = r["latency"][headline]["median_ms"], r["map50_95"], r["map50_95_ci95"]
        ax.errorbar(
            [x],
            [y],
            yerr=[[max(y - lo, 0)], [max(hi - y, 0)]],
            marker="o",
            capsize=3,
            color=colour,
            label=f"{method} ({r['gflops']:.2f} GFLOPs)",
        )
        q = r["exported"]["openvino_int8"]
        x8 = r["latency"][int8_key]["median_ms"]
        ax.plot([x, x8], [y, q["map50_95"]], color=colour, ls=":", alpha=0.6)
        ax.scatter([x8], [q["map50_95"]], marker="s", color=colour)
    ran = result["rows"]["base"]["latency"][headline].get("precision", "")
    ax.set(
        xlabel=f"ms per {result['settings']['latency_imgsz']}-px frame, {runtime} ({ran}), {threads} thread(s); "
        "squares: INT8",
        ylabel="mAP50-95 (test images)",
        title="Deployed: accuracy against measured time",
    )
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return _save(fig, path)


def epochs_figure(result: dict, path):
    """LIPS and uniform mAP50-95 against fine-tune epochs (95 % intervals), and LIPS / uniform with its paired
    interval: does the allocation's gain shrink, stay or grow with training?"""
    df = pd.DataFrame(result["rows"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, colour in (("lips", "tab:red"), ("uniform", "tab:blue")):
        y = df[key].map(lambda r: r["map50_95"])
        lo = df[key].map(lambda r: r["map50_95_ci95"][0])
        hi = df[key].map(lambda r: r["map50_95_ci95"][1])
        a.errorbar(
            df.epochs,
            y,
            yerr=[(y - lo).clip(lower=0), (hi - y).clip(lower=0)],
            marker="o",
            capsize=3,
            color=colour,
            label=key,
        )
    a.set(xlabel="fine-tune epochs", ylabel="mAP50-95 (test images)", title=f"{result['budget']:g} GFLOPs")
    a.legend(fontsize=8)
    r = df.lips_over_uniform
    lo = df.lips_over_uniform_ci95.map(lambda c: c[0])
    hi = df.lips_over_uniform_ci95.map(lambda c: c[1])
    b.errorbar(df.epochs, r, yerr=[(r - lo).clip(lower=0), (hi - r).clip(lower=0)], marker="s", capsize=3, color="k")
    b.axhline(1.0, ls="--", c="grey", lw=0.8)
    b.set(xlabel="fine-tune epochs", ylabel="LIPS / uniform", title="the allocation's gain")
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(df.epochs), [str(e) for e in df.epochs])
    fig.tight_layout()
    return _save(fig, path)
