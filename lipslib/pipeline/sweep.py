"""Sweeps over GFLOPs targets: one target = one run folder = one DVC experiment (or one submitit job); Stage I shared.

Three executors run the same per-target work (the stage notebooks with the target, a device and a thread count):

- `dvc` (default): DVC's experiment queue. Stage I is brought up to date once in the workspace (the `sensitivity`
  stage), then each target is queued as one experiment (`dvc exp run --queue -s -S … config <stages>`: `-s` so no
  experiment reruns Stage I, whose parameters include the device), `dvc queue start -j W` runs W at once, and
  `dvc exp show --json` gives each target's best mAP, GFLOPs and iteration. DVC's queue takes any free worker for
  the next experiment and fixes an experiment's parameters (its device) when it is queued, so with more targets
  than workers the sweep queues one wave of W targets at a time (one per device) and waits for it: two
  experiments never share a device. A queued experiment runs in a temporary copy that DVC deletes, and DVC
  deletes a stage's outputs before it runs, so a failed or killed experiment restarts its loop from iteration 1
  on the rerun; finished experiments (by name) are not redone.
- `local` (`--direct`): submitit's LocalExecutor, one process per worker on this machine, each running its
  targets one after another in `<out>/<target>/` (no DVC). The loop resumes from its run folder; a finished
  target (`result.json`) is not redone.
- `slurm`: submitit's SlurmExecutor, one job per target (`--gpus-per-job` GPUs: DDP fine-tuning inside the job).
  The job is `Checkpointable`: on preemption or time-out Slurm requeues it and the loop resumes.

Workers are explicit (`plan_workers`): `--devices cpu,cpu` is two CPU workers, `0,1` two GPU workers, `0+1,2+3`
two DDP workers of two GPUs; each gets cores / W threads (recorded as the `threads` parameter and
OMP_NUM_THREADS); a GPU named twice or more threads than cores is refused.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lipslib.cfg import EXECUTORS, flatten, load_params
from lipslib.errors import LipsError

try:  # submitit (optional: the local and slurm executors) requeues a Checkpointable job with its arguments
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover
    _Checkpointable = object

RESULT_KEYS = ("iteration", "gflops", "map50_95", "selection_map50_95", "split_report")
NOT_STAGE_I = ("device", "threads")  # where Stage I runs, not what it measures


@dataclass(frozen=True)
class Worker:
    """One slot of a sweep: the `device` its runs get (params.yaml's syntax), its CPU threads, and for a local
    worker the GPUs it may see (CUDA_VISIBLE_DEVICES; its device then counts from 0 inside)."""

    index: int
    device: str
    threads: int
    gpus: tuple[int, ...] = ()

    def local_device(self) -> str:
        """The device inside a process that sees only this worker's GPUs."""
        return ",".join(str(i) for i in range(len(self.gpus))) if self.gpus else "cpu"


def parse_targets(text: str) -> list[float]:
    try:
        targets = [float(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise LipsError(f"--targets expects comma-separated GFLOPs, got '{text}'") from None
    if not targets:
        raise LipsError("--targets needs at least one GFLOPs value, e.g. 3.0,3.4,3.8")
    if len({f"{t:g}" for t in targets}) != len(targets):
        raise LipsError(f"--targets lists a target twice: {text}")
    return targets


def plan_workers(devices: str | list[str] | None, threads: int | None = None, cores: int | None = None) -> list[Worker]:
    """Workers from `--devices` (comma-separated: `cpu`, a GPU index, or GPUs joined by `+` for one DDP worker),
    each with `threads` CPU threads (default: cores // workers). Refuses a GPU given to two workers and more
    threads in all than the machine has cores (nothing oversubscribes silently)."""
    cores = cores or os.cpu_count() or 1
    items = [d.strip() for d in (devices.split(",") if isinstance(devices, str) else devices or ["cpu"]) if d.strip()]
    if not items:
        raise LipsError("--devices needs at least one device: cpu, 0, 0+1, e.g. --devices 0,1 or cpu,cpu")
    n = len(items)
    if threads is None:
        threads = cores // n
        if threads < 1:
            raise LipsError(f"{n} workers on {cores} cores: at most {cores} CPU workers (one thread each)")
    if threads < 1:
        raise LipsError(f"--threads must be ≥ 1, got {threads}")
    if n * threads > cores:
        raise LipsError(
            f"{n} workers × {threads} threads = {n * threads} > {cores} cores: lower --threads or use fewer --devices"
        )
    workers, seen = [], set()
    for i, item in enumerate(items):
        if item.lower() == "cpu":
            workers.append(Worker(i, "cpu", threads))
            continue
        try:
            gpus = tuple(int(g) for g in item.split("+"))
        except ValueError:
            raise LipsError(f"--devices: '{item}' is not cpu, a GPU index or GPUs joined by + (e.g. 0+1)") from None
        shared = seen & set(gpus)
        if shared or len(set(gpus)) != len(gpus):
            raise LipsError(f"--devices: GPU {min(shared or gpus)} is given twice; one worker per GPU")
        seen |= set(gpus)
        workers.append(Worker(i, ",".join(map(str, gpus)), threads, gpus))
    return workers


def describe(workers: list[Worker]) -> str:
    return ", ".join(f"worker {w.index}: device {w.device}, {w.threads} thread{'s' * (w.threads > 1)}" for w in workers)


def label(target: float) -> str:
    return f"{target:g}"


# ------------------------------------------------------------------ one target (what every executor runs)


def run_target(spec: dict) -> dict:
    """Run the sweep's notebooks for one target in its folder (resuming the loop there) and return its record;
    a finished target (result.json) is returned as it is, not redone."""
    from lipslib.files import write_json
    from lipslib.pipeline.notebooks import run_notebook

    folder = Path(spec["root"]) / spec["folder"]
    done = folder / "result.json"
    settings = {k: spec[k] for k in ("profile", "overrides", "notebooks")}
    if done.is_file():
        record = json.loads(done.read_text())
        if record.get("settings") != json.loads(json.dumps(settings)):
            raise LipsError(
                f"{spec['folder']} holds a finished sweep target with other settings "
                f"({record.get('settings')}); use another --out or delete it"
            )
        return record
    (folder / "failed.json").unlink(missing_ok=True)  # from an earlier attempt
    os.chdir(spec["root"])
    threads = str(spec["threads"])
    os.environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)  # the notebook kernels inherit it
    t0 = time.perf_counter()
    overrides = {
        **spec["overrides"],
        "schedule.target_gflops": spec["target"],
        "device": spec["device"],
        "threads": spec["threads"],
    }
    for name in spec["notebooks"]:
        mine = {k: v for k, v in overrides.items() if k.replace(".", "_") in spec["declared"][name]}
        run_notebook(
            name, spec["profile"], mine, runs_dir=f"{spec['folder']}/runs", reports_dir=spec["folder"], progress=False
        )
    best = json.loads((folder / "runs" / "optimize" / "best.json").read_text())
    record = {
        "target_gflops": spec["target"],
        "name": spec["name"],
        "status": "done",
        **{k: best[k] for k in RESULT_KEYS},
        "device": spec["device"],
        "threads": spec["threads"],
        "visible_gpus": spec.get("visible_gpus"),
        "folder": spec["folder"],
        "seconds": round(time.perf_counter() - t0, 1),
        "settings": settings,
    }
    write_json(done, record)
    return record


class Lane(_Checkpointable):
    """A submitit job: one worker's targets, one after another; a failing target is recorded and the next one
    runs. Checkpointable (submitit): a preempted or timed-out job is resubmitted with the same targets, finished
    ones are skipped (result.json) and the loop of the interrupted one resumes from its state.json."""

    def __call__(self, specs: list[dict]) -> list[dict]:
        import torch

        from lipslib.files import write_json

        out = []
        for spec in specs:
            torch.set_num_threads(int(spec["threads"]))
            try:
                out.append(run_target(spec))
            except Exception as e:  # noqa: BLE001 — recorded, the other targets go on
                error = " ".join(f"{type(e).__name__}: {e}".split())
                folder = Path(spec["root"]) / spec["folder"]
                folder.mkdir(parents=True, exist_ok=True)
                write_json(folder / "failed.json", {"error": error})
                out.append(
                    {
                        "target_gflops": spec["target"],
                        "name": spec["name"],
                        "status": "failed",
                        "error": error,
                        "device": spec["device"],
                        "threads": spec["threads"],
                    }
                )
        return out


# ------------------------------------------------------------------ the sweep


def sweep(
    targets: list[float],
    profile: str | None = None,
    overrides: dict | None = None,
    notebooks=None,
    root_dir: str = "reports/sweeps",
    progress: bool = True,
    executor: str = "dvc",
    devices=None,
    threads: int | None = None,
    name: str | None = None,
    slurm: dict | None = None,
) -> Path:
    """Run the stage notebooks once per GFLOPs target, concurrently on the given workers, and draw one Pareto
    table and figure over the targets' best models into `root_dir` (pareto.csv, pareto.png, sweep.json).

    Args:
        targets: GFLOPs targets.
        profile: params.yaml profile (default: its `profile:` key).
        overrides: more values, dotted keys (`{'optimize.iterations': 1}`), for every target.
        notebooks: the notebooks per target (default 02 to 05; Stage I runs once and is shared).
        root_dir: where the table and figure go (and, without DVC, each target's run folder `<root_dir>/<t>/`).
        executor: `dvc` (DVC's queue), `local` (submitit processes on this machine) or `slurm`.
        devices: one per worker: `cpu`, `0`, `0+1` (DDP); `dvc`/`local` only (slurm: `slurm['gpus_per_job']`).
        threads: CPU threads per worker (default: cores // workers).
        name: experiment / job name prefix (default `sweep-<profile>`).
        slurm: `partition`, `gpus_per_job`, `cpus_per_job`, `time` (minutes), `max_requeue`.

    Raises:
        LipsError: bad arguments, oversubscribed workers, or (after every other target finished) the targets that
            failed, each with where to read why.
    """
    from lipslib.pipeline.notebooks import NOTEBOOKS, declared_parameters, repo_root

    if executor not in EXECUTORS:
        raise LipsError(f"--executor must be one of {', '.join(EXECUTORS)}, got '{executor}'")
    targets = [float(t) for t in targets]
    if not targets:
        raise LipsError("--targets needs at least one GFLOPs value, e.g. 3.0,3.4,3.8")
    notebooks = list(notebooks or NOTEBOOKS[1:])
    unknown = [n for n in notebooks if n not in NOTEBOOKS]
    if unknown:
        raise LipsError(f"unknown notebook '{unknown[0]}'; choose among {', '.join(NOTEBOOKS[1:])}")
    if "01_sensitivity" in notebooks:
        raise LipsError("01_sensitivity is Stage I: it runs once per sweep and is shared, not once per target")
    if "03_optimize" not in notebooks:
        raise LipsError("a sweep needs 03_optimize (the loop whose best model each target reports)")
    root = repo_root()
    overrides = dict(overrides or {})
    params = load_params(root / "params.yaml", profile, overrides)  # refuses unknown keys before any work
    profile = params["profile"]
    declared = {n: set(declared_parameters(n)) for n in NOTEBOOKS}
    unused = sorted(
        k for k in overrides if not any(k.replace(".", "_") in declared[n] for n in ("01_sensitivity", *notebooks))
    )
    if unused:
        raise LipsError(f"no notebook of the sweep (Stage I, {', '.join(notebooks)}) takes {', '.join(unused)}")
    prefix = name or f"sweep-{profile}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", prefix):
        raise LipsError(f"--name '{prefix}': letters, digits, '.', '_' and '-' only")
    check_targets(params, targets, root)
    out = root / root_dir
    out.mkdir(parents=True, exist_ok=True)
    if executor == "slurm":
        workers = None
    else:
        if devices is None:  # one worker on the profile's device
            device = str(params["device"] if params["device"] is not None else "cpu")
            devices = ["cpu" if device == "cpu" else device.replace(",", "+")]
        workers = plan_workers(devices, threads)
        print(f"sweep: {len(targets)} targets on {len(workers)} workers ({describe(workers)})", flush=True)
    ctx = {
        "root": root,
        "out": out,
        "root_dir": root_dir,
        "profile": profile,
        "overrides": overrides,
        "notebooks": notebooks,
        "declared": declared,
        "prefix": prefix,
        "params": params,
        "progress": progress,
    }
    if executor == "dvc":
        rows = _sweep_dvc(targets, workers, ctx)
    else:
        rows = _sweep_submitit(targets, workers, ctx, executor, slurm or {})
    return _finish(rows, out, executor)


def check_targets(params: dict, targets: list[float], root: Path) -> float:
    """Every target through the loop's own checks (`settings.loop_settings`) against the base's GFLOPs, before
    anything runs or is queued: a bad value, or a target at or above the base, stops the whole sweep in one line
    instead of failing in its own run after Stage I. Returns the base's GFLOPs (a second to count)."""
    from lipslib.cfg.settings import loop_settings
    from lipslib.pruning.engine import cost, load_model

    if params["schedule"]["target_ms"] is not None:
        raise LipsError(
            f"a sweep varies schedule.target_gflops, but profile {params['profile']} sets schedule.target_ms "
            f"({params['schedule']['target_ms']}), which the loop follows instead: --set schedule.target_ms=null"
        )
    base = Path(str(params["base"]))
    base_gflops = cost(load_model(root / base if (root / base).exists() else params["base"])).gflops
    for t in targets:
        loop_settings({**params, "schedule": {**params["schedule"], "target_gflops": t}}, base_gflops)
    return base_gflops


def _finish(rows: list[dict], out: Path, executor: str) -> Path:
    import pandas as pd

    from lipslib.files import write_json
    from lipslib.pipeline.plots import pareto_figure

    rows = sorted(rows, key=lambda r: r["target_gflops"])
    write_json(out / "sweep.json", {"executor": executor, "targets": rows}, portable_paths=True)
    done = [r for r in rows if r["status"] == "done"]
    if done:
        columns = ["target_gflops", *RESULT_KEYS, "device", "threads", "name"]
        table = pd.DataFrame(done)[columns]
        table.to_csv(out / "pareto.csv", index=False, float_format="%.6f")
        pareto_figure(table, out / "pareto.png")
    failed = [r for r in rows if r["status"] != "done"]
    if failed:
        raise LipsError(
            f"{len(failed)} of {len(rows)} targets failed (the others are in {out}/pareto.csv): "
            + "; ".join(f"{label(r['target_gflops'])}: {r.get('error', r['status'])}" for r in failed)
        )
    return out


def _target_overrides(ctx: dict, target: float, device: str, threads: int) -> dict:
    return {**ctx["overrides"], "schedule.target_gflops": float(target), "device": device, "threads": int(threads)}


# ------------------------------------------------------------------ DVC's queue


def _dvc(ctx: dict, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)  # `lips` and `dvc` of this environment, in the workers too
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        **(env or {}),
    }
    dvc = Path(bin_dir) / "dvc"
    cmd = [str(dvc) if dvc.exists() else "dvc", *args]
    if args[:2] == ("queue", "start"):  # its workers outlive it: they must not hold a pipe this call waits on
        with open(ctx["out"] / "dvc-queue.log", "a") as log:
            proc = subprocess.run(
                cmd,
                cwd=ctx["root"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        proc.stdout = proc.stderr = ""
    else:
        proc = subprocess.run(cmd, cwd=ctx["root"], env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode:
        tail = " ".join((proc.stderr or proc.stdout or f"exit {proc.returncode}").split())[-600:]
        raise LipsError(f"dvc {' '.join(args[:3])} failed: {tail}")
    return proc


def hydra_value(value) -> str:
    """A value as Hydra's override grammar reads it back (what `dvc exp run -S` takes): strings quoted, so
    `0,1` stays one device and is not a sweep over two."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise LipsError(f"cannot pass {value!r} to dvc exp run -S")


def set_params(profile: str, values: dict) -> list[str]:
    """`-S` arguments setting dotted keys of `profiles.<profile>` (`++`: added when the profile lacks them)."""
    args = ["-S", f"profile={hydra_value(profile)}"]
    for key, value in values.items():
        args += ["-S", f"++profiles.{profile}.{key}={hydra_value(value)}"]
    return args


def notebook_stages(root: Path) -> dict[str, str]:
    """{notebook: its dvc.yaml stage}, from the stages' `lips notebook NAME` commands."""
    import yaml

    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    out = {}
    for stage, body in stages.items():
        words = str(body.get("cmd", "")).split()
        if words[:2] == ["lips", "notebook"] and len(words) > 2:
            out[words[2]] = stage
    return out


def _stage_i(ctx: dict, workers: list[Worker]) -> None:
    """Bring Stage I (the `sensitivity` stage) up to date in the workspace for the sweep's settings, once, so the
    queued experiments (which do not run it: -s) find its outputs in dvc.lock and the cache."""
    import yaml

    from lipslib.pipeline.notebooks import declared_parameters

    root, profile = ctx["root"], ctx["profile"]
    first = workers[0]
    flat = flatten(load_params(root / "params.yaml", profile, {**ctx["overrides"], "device": first.device}))
    wanted = {k: flat[k] for k in declared_parameters("01_sensitivity") if k in flat and k not in NOT_STAGE_I}
    lock_file = root / "dvc.lock"
    lock = yaml.safe_load(lock_file.read_text()) if lock_file.is_file() else {}
    stage = (lock or {}).get("stages", {}).get("sensitivity", {})
    had = {
        k: v
        for k, v in (stage.get("params", {}).get("params/01_sensitivity.yaml") or {}).items()
        if k not in NOT_STAGE_I
    }
    status = json.loads(_dvc(ctx, "status", "sensitivity", "--json").stdout or "{}") if had == wanted else None
    if had == wanted and not status:
        print("sweep: Stage I is up to date in the workspace (dvc.lock): shared by every target", flush=True)
    else:
        stage_values = {k: v for k, v in ctx["overrides"].items() if k.replace(".", "_") in wanted or k == "device"}
        args = ["exp", "run", *set_params(profile, {**stage_values, "device": first.device}), "sensitivity"]
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "params.yaml", "params", "dvc.lock"],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if dirty:  # never rewrite a user's uncommitted settings
            raise LipsError(
                "Stage I must run in the workspace for this sweep, which rewrites params.yaml, params/ and "
                "dvc.lock, and they hold uncommitted changes: commit them, or run Stage I yourself "
                f"(dvc {' '.join(args)}) and rerun the sweep; or sweep without DVC: --direct"
            )
        print(f"sweep: Stage I once, in the workspace, for profile {profile}: dvc {' '.join(args)}", flush=True)
        _dvc(ctx, *args)
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", "dvc.lock"], cwd=root, capture_output=True, check=False
    )
    if tracked.returncode:
        raise LipsError(
            "dvc.lock is not tracked by git, so queued experiments would not see Stage I: "
            "git add dvc.lock && git commit -m 'Stage I', then rerun the sweep"
        )


def queue_status(root: Path) -> dict[str, set[str]]:
    """{experiment name: its queue statuses (Queued, Running, Success, Failed)} from DVC's queue."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        entries = repo.experiments.celery_queue.status()
    out: dict[str, set[str]] = {}
    for e in entries:
        out.setdefault(e.get("name") or "", set()).add(e["status"])
    return out


def experiments(ctx: dict) -> dict[str, dict]:
    """{name: record} of the baseline's finished experiments in `dvc exp show --json`."""
    shown = json.loads(_dvc(ctx, "exp", "show", "--json").stdout or "[]")
    out = {}
    for baseline in shown:
        for group in baseline.get("experiments") or []:
            for rev in group.get("revs") or []:
                if rev.get("name") and rev.get("data"):
                    out[rev["name"]] = _exp_record(rev)
    return out


def _exp_record(rev: dict) -> dict:
    data = rev["data"]
    metrics = ((data.get("metrics") or {}).get("reports/dvclive/metrics.json") or {}).get("data") or {}
    opt = ((data.get("params") or {}).get("params/03_optimize.yaml") or {}).get("data") or {}
    best = metrics.get("best") or {}
    return {
        "experiment": rev["rev"][:7],
        "target": opt.get("schedule_target_gflops"),
        "device": opt.get("device"),
        "threads": opt.get("threads"),
        "iteration": best.get("iteration"),
        "gflops": best.get("gflops"),
        "map50_95": best.get("map50_95"),
        "selection_map50_95": best.get("selection_map50_95"),
    }


def _sweep_dvc(targets: list[float], workers: list[Worker], ctx: dict) -> list[dict]:
    root = ctx["root"]
    if not (root / ".dvc").is_dir() or not (root / ".git").exists():
        raise LipsError(
            f"{root} is not a git + DVC repository (DVC's queue needs both): run `git init && dvc init` "
            f"and commit, or sweep without DVC: --direct"
        )
    stages = notebook_stages(root)
    missing = [n for n in ctx["notebooks"] if n not in stages]
    if missing or "01_sensitivity" not in stages:
        raise LipsError(f"dvc.yaml has no stage running {', '.join(missing or ['01_sensitivity'])}")
    ordered = [stages[n] for n in ctx["notebooks"]]
    names = {t: f"{ctx['prefix']}-{label(t)}" for t in targets}
    done = experiments(ctx)
    for t in targets:
        rec = done.get(names[t])
        if rec and rec["target"] is not None and abs(float(rec["target"]) - t) > 1e-9:
            raise LipsError(f"experiment {names[t]} holds target {rec['target']}, not {label(t)}: use another --name")
    todo = [t for t in targets if names[t] not in done]
    for t in targets:
        if t not in todo:
            print(f"sweep: {names[t]} finished earlier (dvc exp show): not redone", flush=True)
    if todo:
        _stage_i(ctx, workers)
        env = {"OMP_NUM_THREADS": str(workers[0].threads), "MKL_NUM_THREADS": str(workers[0].threads)}
        pending = {names[t] for t in todo}
        busy = [n for n, s in queue_status(root).items() if n in pending and s & {"Queued", "Running"}]
        if busy:  # left by a sweep that was stopped while they ran: let them finish first (their devices are set)
            print(f"sweep: waiting for {', '.join(sorted(busy))}, already in DVC's queue", flush=True)
            _dvc(ctx, "queue", "start", "-j", str(len(workers)), env=env)
            _wait(root, set(busy))
            done = experiments(ctx)
            todo = [t for t in todo if names[t] not in done and names[t] not in busy]
        for start in range(0, len(todo), len(workers)):
            wave = todo[start : start + len(workers)]
            for t, w in zip(wave, workers):
                values = _target_overrides(ctx, t, w.device, w.threads)
                args = [
                    "exp",
                    "run",
                    "--queue",
                    "-n",
                    names[t],
                    "-s",
                    *set_params(ctx["profile"], values),
                    "config",
                    *ordered,
                ]
                _dvc(ctx, *args)
                print(f"sweep: queued {names[t]} ({describe([w]).split(': ', 1)[1]})", flush=True)
            _dvc(ctx, "queue", "start", "-j", str(len(wave)), env=env)
            _wait(root, {names[t] for t in wave})
        done = experiments(ctx)
    rows, split = [], _report_split(ctx["params"])
    for t in targets:
        rec = done.get(names[t])
        if rec and rec["map50_95"] is not None:
            rows.append(
                {
                    "target_gflops": t,
                    "name": names[t],
                    "status": "done",
                    "iteration": rec["iteration"],
                    "gflops": rec["gflops"],
                    "map50_95": rec["map50_95"],
                    "selection_map50_95": rec["selection_map50_95"],
                    "split_report": split,
                    "device": rec["device"],
                    "threads": rec["threads"],
                    "experiment": rec["experiment"],
                }
            )
        else:
            rows.append(
                {
                    "target_gflops": t,
                    "name": names[t],
                    "status": "failed",
                    "error": f"{_queue_error(ctx, names[t])} (`dvc queue logs {names[t]}`)",
                }
            )
    return rows


def _queue_error(ctx: dict, name: str) -> str:
    """The failed experiment's own one-line error, from its queue log."""
    log = _dvc(ctx, "queue", "logs", name, check=False).stdout or ""
    lines = [ln.strip() for ln in log.splitlines() if "error:" in ln.lower()]
    return re.sub(r" \(see [^)]*\)$", "", lines[0]) if lines else "no finished experiment"


def _report_split(params: dict) -> str:
    from lipslib.cfg.settings import REPORTS

    return REPORTS[params["optimize"]["report"]][2]


def _wait(root: Path, names: set[str], poll: float = 3.0) -> None:
    """Until none of `names` is queued or running."""
    last = None
    while True:
        status = queue_status(root)
        busy = sorted(n for n in names if status.get(n, set()) & {"Queued", "Running"})
        if busy != last:
            print(f"sweep: {len(busy)} running or queued{': ' + ', '.join(busy) if busy else ''}", flush=True)
            last = busy
        if not busy:
            return
        time.sleep(poll)


# ------------------------------------------------------------------ submitit (local processes, Slurm)


def _stage_i_direct(ctx: dict, device: str) -> dict:
    """Without DVC: Stage I once into <out>/stage1/ when the loop reads an importance from runs/sensitivity;
    every target is then pointed at it. Returns the overrides that point there."""
    from lipslib.pipeline.notebooks import run_notebook

    importance = str(ctx["params"]["optimize"]["importance"])
    if not importance.startswith("runs/sensitivity/"):
        return {}  # the authors' vector or a file of the user's: nothing to compute
    folder = f"{ctx['root_dir']}/stage1"
    path = f"{folder}/runs/{importance[len('runs/') :]}"
    if not (ctx["root"] / path).is_file():
        print(f"sweep: Stage I once, into {folder}/ (shared by every target)", flush=True)
        mine = {
            k: v
            for k, v in {**ctx["overrides"], "device": device}.items()
            if k.replace(".", "_") in ctx["declared"]["01_sensitivity"]
        }
        run_notebook(
            "01_sensitivity", ctx["profile"], mine, runs_dir=f"{folder}/runs", reports_dir=folder, progress=False
        )
    return {"optimize.importance": path}


def _spec(ctx: dict, target: float, device: str, threads: int, extra: dict, gpus=None) -> dict:
    return {
        "root": str(ctx["root"]),
        "folder": f"{ctx['root_dir']}/{label(target)}",
        "target": float(target),
        "name": f"{ctx['prefix']}-{label(target)}",
        "profile": ctx["profile"],
        "overrides": {**ctx["overrides"], **extra},
        "notebooks": ctx["notebooks"],
        "declared": {n: sorted(d) for n, d in ctx["declared"].items()},
        "device": device,
        "threads": int(threads),
        "visible_gpus": list(gpus) if gpus else None,
    }


def slurm_parameters(slurm: dict, job_name: str) -> dict:
    """SlurmExecutor.update_parameters' arguments: one node, one task, `gpus_per_job` GPUs (DDP inside the job
    when more than one), `cpus_per_job` CPUs (the loop's threads), `time` minutes; USR2 two minutes before the
    limit, so submitit checkpoints and requeues the job."""
    if not slurm.get("partition"):
        raise LipsError("--executor slurm needs --partition")
    gpus, cpus = int(slurm.get("gpus_per_job", 1)), int(slurm.get("cpus_per_job", 8))
    minutes = int(slurm.get("time", 60 * 24))
    if gpus < 0 or cpus < 1 or minutes < 1:
        raise LipsError(f"--gpus-per-job ≥ 0, --cpus-per-job ≥ 1 and --time ≥ 1 min, got {gpus}, {cpus}, {minutes}")
    return {
        "partition": slurm["partition"],
        "nodes": 1,
        "ntasks_per_node": 1,
        "gpus_per_node": gpus,
        "cpus_per_task": cpus,
        "time": minutes,
        "job_name": job_name,
        "signal_delay_s": 120,
    }


def parse_time(text) -> int:
    """Minutes from Slurm's time forms: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+(?::\d+){0,2})", str(text).strip())
    if not m:
        raise LipsError(f"--time expects minutes, HH:MM:SS or D-HH:MM:SS, got '{text}'")
    days, parts = int(m[1] or 0), [int(x) for x in m[2].split(":")]
    if m[1]:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    else:
        hours, minutes, seconds = {1: (0, parts[0], 0), 2: (0, *parts), 3: tuple(parts)}[len(parts)]
    total = days * 1440 + hours * 60 + minutes + (seconds > 0)
    if total < 1:
        raise LipsError(f"--time must be at least a minute, got '{text}'")
    return total


def _sweep_submitit(
    targets: list[float], workers: list[Worker] | None, ctx: dict, executor: str, slurm: dict
) -> list[dict]:
    import submitit

    lane = Lane()
    logs = ctx["out"] / "submitit"
    jobs = []
    if executor == "slurm":
        params = slurm_parameters(slurm, ctx["prefix"])
        gpus, cpus = params["gpus_per_node"], params["cpus_per_task"]
        device = ",".join(str(i) for i in range(gpus)) if gpus else "cpu"
        ex = submitit.SlurmExecutor(str(logs), max_num_timeout=int(slurm.get("max_requeue", 5)))
        ex.update_parameters(**params)
        extra = _stage_i_slurm(ctx, ex, lane, device, cpus)
        for t in targets:
            spec = _spec(ctx, t, device, cpus, extra)
            jobs.append((ex.submit(lane, [spec]), [spec]))
            print(
                f"sweep: submitted {spec['name']} as Slurm job {jobs[-1][0].job_id} ({gpus} GPUs, {cpus} CPUs)",
                flush=True,
            )
    else:
        extra = _stage_i_direct(ctx, workers[0].device)
        lanes: dict[int, list[dict]] = {w.index: [] for w in workers}
        for i, t in enumerate(targets):
            w = workers[i % len(workers)]
            lanes[w.index].append(_spec(ctx, t, w.local_device(), w.threads, extra, w.gpus))
        for w in workers:
            if not lanes[w.index]:
                continue
            ex = submitit.LocalExecutor(str(logs))
            ex.update_parameters(
                timeout_min=int(slurm.get("time", 60 * 24 * 30)), gpus_per_node=len(w.gpus), visible_gpus=list(w.gpus)
            )
            job = ex.submit(lane, lanes[w.index])
            jobs.append((job, lanes[w.index]))
            print(
                f"sweep: worker {w.index} ({describe([w]).split(': ', 1)[1]}, process {job.job_id}): "
                f"targets {', '.join(label(s['target']) for s in lanes[w.index])}",
                flush=True,
            )
    rows = []
    for job, specs in jobs:
        try:
            rows += job.result()
        except Exception as e:  # noqa: BLE001 — the job died (killed, out of time): what it finished is on disk
            error = " ".join(str(e).split())[-300:]
            for spec in specs:
                done = Path(spec["root"]) / spec["folder"] / "result.json"
                rows.append(
                    json.loads(done.read_text())
                    if done.is_file()
                    else {
                        "target_gflops": spec["target"],
                        "name": spec["name"],
                        "status": "failed",
                        "error": f"job {job.job_id} ended: {error}",
                    }
                )
    return rows


def _stage_i_slurm(ctx: dict, ex, lane, device: str, cpus: int) -> dict:
    """On Slurm, Stage I (when the loop reads it from runs/sensitivity) is one job of its own before the targets."""
    importance = str(ctx["params"]["optimize"]["importance"])
    if not importance.startswith("runs/sensitivity/"):
        return {}
    job = ex.submit(_StageI(), ctx["root"], ctx["root_dir"], ctx["profile"], ctx["overrides"], ctx["declared"], device)
    print(f"sweep: Stage I as Slurm job {job.job_id}; the targets follow when it ends", flush=True)
    return job.result()


class _StageI:
    def __call__(self, root, root_dir, profile, overrides, declared, device) -> dict:
        os.chdir(root)
        ctx = {
            "root": Path(root),
            "root_dir": root_dir,
            "profile": profile,
            "overrides": overrides,
            "declared": {n: set(d) for n, d in declared.items()},
            "params": load_params(Path(root) / "params.yaml", profile, overrides),
        }
        return _stage_i_direct(ctx, device)


__all__ = [
    "EXECUTORS",
    "check_targets",
    "Lane",
    "Worker",
    "experiments",
    "hydra_value",
    "notebook_stages",
    "parse_targets",
    "parse_time",
    "plan_workers",
    "queue_status",
    "run_target",
    "set_params",
    "slurm_parameters",
    "sweep",
]
