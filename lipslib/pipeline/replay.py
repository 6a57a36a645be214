"""Replay of the authors' published run through our update rule.

From their logs: per iteration k the ratios they pruned with (prune_spec.txt), the GFLOPs that pruning
gave (2 × the last GMACs_after of prune_directed_log.csv) and the mAP50-95 after fine-tuning (last row
of finetune_results.csv). Starting from uniform 0.3 we feed their measurements of iteration k into
`schedule.update` and compare our ratios for k + 1 with theirs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lipslib.errors import LipsError
from lipslib.files import write_json
from lipslib.pruning.spec import read_spec
from lipslib.schedule import RuleParams, Targets, initial_schedule, update

MOVE_RESOLUTION = 1e-4  # the authors' specs are rounded to 4 decimals: smaller moves are not moves


def load_paper(paper_dir: str | os.PathLike) -> tuple[dict[str, float], pd.DataFrame]:
    """The authors' importance and a table: iteration, gflops, map50_95, ratios (dict)."""
    import json

    paper_dir = Path(paper_dir)
    if not (paper_dir / "layer_importance.json").is_file():
        raise LipsError(f"{paper_dir} has no layer_importance.json; point --paper-dir at the lips_paper folder")
    importance = json.loads((paper_dir / "layer_importance.json").read_text())
    rows = []
    for d in sorted(paper_dir.glob("iter_[0-9][0-9]")):
        log = pd.read_csv(d / "prune_directed_log.csv")
        ft = pd.read_csv(d / "finetune_results.csv", skipinitialspace=True)
        rows.append(
            {
                "iteration": int(d.name[5:]),
                "ratios": read_spec(d / "prune_spec.txt"),
                "gflops": 2 * float(log["GMACs_after"].iloc[-1]),
                "map50_95": float(ft["metrics/mAP50-95(B)"].iloc[-1]),
            }
        )
    if len(rows) < 2:
        raise LipsError(f"{paper_dir}: need at least two iter_XX folders to replay, found {len(rows)}")
    return importance, pd.DataFrame(rows)


def replay_paper(
    paper_dir,
    out=None,
    targets: Targets = Targets(4.5, 0.35),
    params: RuleParams = RuleParams(),
    initial_ratio: float = 0.3,
) -> dict:
    importance, runs = load_paper(paper_dir)
    ours = initial_schedule(importance, "uniform", initial_ratio)
    state, long, gates = None, [], []
    for k, row in runs.iterrows():
        long += [{"iteration": row.iteration, "layer": n, "paper": row.ratios[n], "replay": ours[n]} for n in ours]
        if k + 1 < len(runs):
            ours, state = update(
                ours, importance, {"cost": row.gflops, "map50_95": row.map50_95}, targets, state, params
            )
            gates.append({"iteration": row.iteration, "gate": state["gate"], "a": state["a"], "b": state["b"]})
    df = pd.DataFrame(long)
    summary = compare(df, pd.DataFrame(gates))
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "replay_ratios.csv", index=False, float_format="%.6f")
        write_json(out / "replay.json", {**summary, "targets": vars(targets), "params": vars(params)})
        from lipslib.pipeline.plots import layer_iteration, replay_trajectories

        wide = df.pivot(index="iteration", columns="layer", values="paper")
        layer_iteration(wide, importance, out / "layer_iteration.png", title="Authors' ratios per iteration (Fig. 5)")
        replay_trajectories(df, importance, out / "replay.png")
    return {"table": df, **summary}


def compare(df: pd.DataFrame, gates: pd.DataFrame) -> dict:
    """Spearman of the final ratios, share of (layer, iteration) moves with the paper's sign, and per phase
    (consecutive iterations under one gate) the share of layers whose net move has the paper's sign."""
    from scipy.stats import spearmanr

    wide = {c: df.pivot(index="iteration", columns="layer", values=c) for c in ("paper", "replay")}
    last = wide["paper"].index.max()
    rho = float(spearmanr(wide["paper"].loc[last], wide["replay"].loc[last]).statistic)
    moves = {c: w.diff().iloc[1:] for c, w in wide.items()}
    moved = moves["paper"].abs() > MOVE_RESOLUTION
    agree = (np.sign(moves["paper"]) == np.sign(moves["replay"]))[moved]
    phases = []
    gates = gates.assign(phase=(gates.gate != gates.gate.shift()).cumsum())
    for _, g in gates.groupby("phase"):
        first, end = int(g.iteration.min()), int(g.iteration.max()) + 1
        net = {c: w.loc[end] - w.loc[first] for c, w in wide.items()}
        same = np.sign(net["paper"]) == np.sign(net["replay"])
        phases.append(
            {
                "gate": g.gate.iloc[0],
                "from_iteration": first,
                "to_iteration": end,
                "layers_same_direction": float(same.mean()),
                "layers_opposite": sorted(same.index[~same]),
            }
        )
    return {
        "spearman_final": rho,
        "direction_agreement": float(agree.stack().mean()),
        "moves_compared": int(moved.values.sum()),
        "phases": phases,
        "gates": gates.drop(columns="phase").to_dict("records"),
    }
