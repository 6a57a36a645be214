"""The LIPS loop as a DVCLive run, so DVC compares experiments by it.

One DVCLive step per iteration (the step is the iteration number), from the loop's own record
(history.csv), plus the chosen iteration under `best` in the summary:

  <dir>/metrics.json               step and the last iteration's values, and best.{iteration, cost, gflops, map50_95, …}
  <dir>/plots/metrics/<name>.tsv   one row per iteration: gflops, params, map50_95, map50, report_map50_95, …

`dvc exp show` lists the summary per experiment (best.map50_95, best.gflops, best.iteration) and
`dvc plots diff` overlays the experiments' per-iteration histories. Written after the loop, from what
it recorded, so a resumed loop logs exactly what an uninterrupted one does. DVCLive writes no dvc.yaml
(dvc.yaml declares these files) and saves no experiment of its own (`dvc exp run` does).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

# history.csv columns logged per iteration (the rule's step size is `rule_step`: DVCLive owns `step`)
LOGGED = {
    "cost": "cost",
    "gflops": "gflops",
    "params": "params",
    "map50_95": "map50_95",
    "map50": "map50",
    "report_map50_95": "report_map50_95",
    "report_map50": "report_map50",
    "step": "rule_step",
}
BEST = ("iteration", "gflops", "params", "map50_95", "map50", "selection_map50_95", "cost", "target_cost")


def log_loop(history: pd.DataFrame, best: dict, out: str | os.PathLike) -> Path:
    """Write the loop (`history`: history.csv's rows; `best`: best.json's record) as a DVCLive run in `out`,
    replacing what a previous run left there. Returns `out`."""
    from dvclive import Live

    out = Path(out)
    with Live(str(out), save_dvc_exp=False, dvcyaml=False, report=None) as live:
        for row in history.itertuples(index=False):
            live.step = int(row.iteration)
            for column, name in LOGGED.items():
                live.log_metric(name, _plain(column, getattr(row, column)))
        live.summary["best"] = {k: _plain(k, best[k]) for k in BEST} | {"within_target": int(best["within_target"])}
    return out


def _plain(key: str, value) -> int | float:
    """JSON/TSV-ready numbers (numpy scalars out); counts as integers."""
    return int(value) if key in ("iteration", "params") else float(value)
