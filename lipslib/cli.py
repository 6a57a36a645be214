"""`lips` — a thin argparse front over lipslib; every command calls the same functions as the notebooks."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from lipslib.cfg import (
    CALIBRATED_CRITERIA,
    CRITERION_NAMES,
    DEPLOY_FORMATS,
    DISTILL_MODES,
    EXECUTORS,
    PRECISIONS,
    RECIPES,
    RUNTIMES,
    SENSITIVITY_MODES,
)
from lipslib.errors import LipsError, exit_code
from lipslib.pipeline.notebooks import NOTEBOOKS

WEIGHTS_HELP = "a checkpoint or model yaml, LABEL= optional (default label: the file's stem)"
DEVICE_HELP = "cpu, 0, 0,1 … (default: Ultralytics' choice, the first GPU when present)"


def _from_config(key: str, help: str, type=None, choices=None) -> dict:
    """add_argument keywords of a flag whose default is the config's value at the dotted `key` (lipslib's
    default.yaml), said in its help."""
    from lipslib.cfg import default

    value = default(key)
    where = f"default: {key} = {value}".replace("%", "%%")
    return {"type": type, "default": value, "choices": choices, "help": f"{help} ({where})" if help else where}


def _overrides(pairs: list[str]) -> dict:
    """--set `key=value` pairs: dotted config keys (schedule.target_gflops=3.8), values parsed as YAML scalars
    (numbers, booleans, null). The same in every command; `load_params` refuses unknown keys."""
    import yaml

    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise LipsError(f"--set expects key=value, got '{pair}'")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise LipsError(f"--set {pair}: the value is not a YAML scalar; quote text, e.g. {key}='{value}'") from None
    return out


def cmd_info(a):
    if a.weights is None:  # both given is argparse's error; neither, this one (argparse's would read as a usage)
        raise LipsError("which checkpoint? give --weights W (or W alone), e.g. lips info --weights yolo11n.pt")
    from lipslib.pruning.engine import info

    with _quiet(a.json):
        rec = info(a.weights, a.imgsz)
    if a.json:
        print(json.dumps(rec, indent=2))
        return
    print(
        f"{a.weights}: {rec['gflops']:.3f} GFLOPs at {a.imgsz} (fused), {rec['params'] / 1e6:.3f} M params, "
        f"{'with' if rec['batchnorm'] else 'no'} BatchNorm"
    )
    for name, (o, i) in rec["convs"].items():
        print(f"  {name:32s} [{o:4d}, {i:4d}]")


def ridge_value(text: str):
    """--ridge: a number, or auto."""
    return text if text == "auto" else float(text)


def cmd_prune(a):
    from lipslib.cfg import default
    from lipslib.datasets import calibration_images
    from lipslib.files import check_writable
    from lipslib.pruning import engine
    from lipslib.pruning.layers import default_targets
    from lipslib.pruning.spec import read_spec
    from lipslib.recovery import Recovery, recover
    from lipslib.recovery.lsq import channel_criterion

    for path in filter(None, (a.out, a.log)):
        check_writable(path)
    # recovery as the config says when there are images to calibrate on (--data), else none unless asked for
    reconstruct = default("recover.reconstruct") and bool(a.data) if a.reconstruct is None else a.reconstruct
    repair = default("recover.repair") and bool(a.data) if a.repair is None else a.repair
    recovery = Recovery(repair=repair, reconstruct=reconstruct, ridge=a.ridge, images=a.images)
    calibrates = recovery.refits or a.criterion in CALIBRATED_CRITERIA
    if calibrates and not a.data:
        what = "--reconstruct" if reconstruct else "--repair" if repair else f"--criterion {a.criterion}"
        raise LipsError(f"{what} calibrates on images: add --data D (its train split, e.g. --data coco_val2193.yaml)")
    images = calibration_images(a.data, a.split, a.images, a.calibration_imgsz) if calibrates else None
    model = engine.load_model(a.weights)
    ratios = read_spec(a.ratios, default_layers=default_targets(model))
    found: dict = {}  # the base's Grams, for the criterion and the refit alike
    criterion = channel_criterion(a.criterion, model, images, found, recovery.ridge, a.device)
    res = engine.prune(
        model, ratios, criterion=criterion, round_to=a.round_to, imgsz=a.imgsz, log=bool(a.log), track=recovery.refits
    )
    fitted = recover(res, model, images, recovery, gram_cache=found, device=a.device) if recovery.refits else {}
    before, after = engine.cost(model, a.imgsz), engine.cost(res.model, a.imgsz)
    engine.save_checkpoint(
        res.model,
        a.out,
        meta={
            "base": str(a.weights),
            "ratios": ratios,
            "criterion": a.criterion,
            "round_to": a.round_to,
            "gflops": after.gflops,
            "recover": recovery.as_dict() if recovery.refits else None,
            "calibration": a.data if recovery.refits else None,
        },
    )
    if a.log:
        engine.write_log(res.log, a.log)
    how = (
        ("; reconstructed" if reconstruct else "; bias-repaired") + f" {len(fitted)} convs on {len(images)} "
        f"'{a.split}' images"
        if recovery.refits
        else ""
    )
    print(
        f"pruned {len(ratios)} layers: {before.gflops:.3f} → {after.gflops:.3f} GFLOPs, "
        f"{before.params / 1e6:.3f} → {after.params / 1e6:.3f} M params{how}; saved {a.out}"
    )


def cmd_inflate(a):
    from lipslib.datasets import calibration_images
    from lipslib.files import check_writable
    from lipslib.pruning.engine import cost, has_batchnorm, save_checkpoint
    from lipslib.pruning.inflate import inflate

    check_writable(a.out)
    images = calibration_images(a.data, a.split, a.images, a.imgsz) if a.data else None
    model = inflate(a.weights, a.yaml, images)
    save_checkpoint(
        model,
        a.out,
        meta={
            "inflated_from": str(a.weights),
            "yaml": a.yaml,
            "data": a.data,
            "split": a.split,
            "images": a.images if a.data else 0,
        },
    )
    print(
        f"{a.weights} inside {a.yaml}: {cost(model).gflops:.3f} GFLOPs, "
        f"{'with' if has_batchnorm(model) else 'no'} BatchNorm, same outputs; saved {a.out}"
    )


def cmd_latency(a):
    if a.ops and (a.runtime != "torch" or a.batch != 1):
        raise LipsError("--ops profiles PyTorch's CPU ops at batch 1: use it with --runtime torch --batch 1")
    models = _models(a.weights)
    from lipslib.pruning.latency import block_table, check_runtime, op_breakdown, time_models

    check_runtime(a.runtime, a.threads, a.imgsz, a.batch, a.runs, a.precision)  # before any model is read
    with _quiet(a.json):
        times = time_models(
            models, a.runtime, a.image, a.imgsz, a.batch, a.threads, a.runs, precision=a.precision, data=a.data
        )
        tables = {
            k: block_table(w, a.runtime, a.imgsz, a.batch, a.threads, a.runs, precision=a.precision)
            for k, w in models.items()
            if a.table
        }
        ops = {k: op_breakdown(w, a.image, a.imgsz, a.threads) for k, w in models.items() if a.ops}
    first = next(iter(times.values()))["median_ms"]
    rec = {
        k: {
            **t,
            "ratio": t["median_ms"] / first,
            **({"table_ms": sum(r["ms"] for r in tables[k]), "blocks": tables[k]} if a.table else {}),
            **({"ops_ms": ops[k]} if a.ops else {}),
        }
        for k, t in times.items()
    }
    if a.json:
        print(
            json.dumps(
                {
                    "runtime": a.runtime,
                    "precision": a.precision,
                    "imgsz": a.imgsz,
                    "batch": a.batch,
                    "threads": a.threads,
                    "models": rec,
                },
                indent=2,
            )
        )
        return
    print(
        f"{a.runtime} ({a.precision} precision asked), {a.threads} thread(s), batch {a.batch}, {a.imgsz}×{a.imgsz}, "
        f"median of {a.runs} interleaved runs"
    )
    for k, r in rec.items():
        extra = f"; block table {r['table_ms']:.2f} ms ({r['table_ms'] / r['median_ms'] - 1:+.1%})" if a.table else ""
        print(
            f"  {k}: {r['median_ms']:.2f} ms (quartiles {r['p25_ms']:.2f}–{r['p75_ms']:.2f}), ran in "
            f"{r['precision']}, {r['ratio']:.3f} × the first{extra}"
        )
        if a.ops:
            o = r["ops_ms"]
            print(
                "    profiled ops: "
                + ", ".join(f"{kind} {o[kind]:.2f} ms ({o[kind] / o['total']:.0%})" for kind in o if kind != "total")
            )


def cmd_export(a):
    from lipslib.deploy import export

    if a.int8 and not a.data:
        raise LipsError("--int8 calibrates on images: add --data D (its train split, e.g. --data coco_val2193.yaml)")
    with _quiet(a.json):
        path = export(
            a.weights,
            a.format,
            int8=a.int8,
            data=a.data,
            split=a.split,
            images=a.images,
            imgsz=a.imgsz,
            batch=a.batch,
            out=a.out,
        )
    if a.json:
        print(json.dumps({"exported": str(path)}))
    else:
        how = f"INT8, calibrated on {a.images} '{a.split}' images of {a.data}" if a.int8 else "fp32"
        print(f"exported {a.weights} to {a.format} ({how}, {a.imgsz}×{a.imgsz}): {path}")


def cmd_align(a):
    from lipslib.files import check_writable
    from lipslib.pruning.align import align
    from lipslib.pruning.engine import save_checkpoint
    from lipslib.pruning.latency import check_runtime

    check_writable(a.out)
    check_runtime(a.runtime, a.threads, a.imgsz, runs=a.runs, precision=a.precision)
    model, report = align(
        a.weights,
        a.multiple,
        runtime=a.runtime,
        imgsz=a.imgsz,
        threads=a.threads,
        runs=a.runs,
        precision=a.precision,
        tol=a.tol,
    )
    save_checkpoint(model, a.out, meta={"aligned": report})
    padded = ", ".join(f"{k} {w[0]}→{w[1]}" for k, w in report["padded"].items()) or "none"
    print(
        f"{a.runtime} block table: {report['before_ms']:.2f} → {report['after_ms']:.2f} ms; padded "
        f"{len(report['padded'])} of {len(report['tried'])} layers not in multiples of {a.multiple} ({padded}); "
        f"same outputs; saved {a.out}"
    )


# --set keys each command that is not a loop reads (a loop command reads them all): a key outside these is refused
READS = {
    "finetune": ("finetune.", "recipes.", "imgsz", "device", "threads", "recover.distill", "recover.distill_weight"),
}
# flags that are shortcuts for a config key: given both ways, the command refuses
FLAG_KEYS = {
    "finetune": {
        "epochs": "finetune.epochs",
        "imgsz": "imgsz",
        "batch": "finetune.batch",
        "device": "device",
        "recipe": "finetune.recipe",
        "distill": "recover.distill",
        "distill_weight": "recover.distill_weight",
    },
}


def _config(a) -> dict:
    """The config a single-step command runs with: lipslib's defaults, its --set pairs (dotted config keys, as in
    every command), then the flags it was given. A --set key the command does not read, or one that a flag also
    gives, is refused in one line."""
    from lipslib.cfg import load_params

    sets = _overrides(a.set)
    reads = READS[a.command]
    for key in sets:
        if not key.startswith(reads) and key not in reads:
            near = next((f"{r}{key}" for r in reads if r.endswith(".") and "." not in key), None)
            hint = f" (did you mean {near}?)" if near else ""
            raise LipsError(
                f"--set {key}: `lips {a.command}` does not read it{hint}; it reads "
                + ", ".join(r + "*" if r.endswith(".") else r for r in reads)
            )
    flags = {}
    for dest, key in FLAG_KEYS[a.command].items():
        value = getattr(a, dest)
        if value is None:
            continue
        if key in sets:
            raise LipsError(f"{key} given both as --{dest.replace('_', '-')} and in --set; give it once")
        flags[key] = value
    return load_params(None, overrides={**sets, **flags})


def cmd_finetune(a):
    from lipslib.train.trainer import finetune

    cfg = _config(a)
    ft, r = cfg["finetune"], cfg["recover"]
    with _quiet(a.json):
        rec = finetune(
            a.weights,
            a.data,
            a.out,
            recipe=ft["recipe"],
            recipes=cfg["recipes"],
            imgsz=cfg["imgsz"],
            device=cfg["device"],
            threads=cfg["threads"],
            distill=r["distill"],
            teacher=a.teacher,
            distill_weight=r["distill_weight"],
            **{k: v for k, v in ft.items() if k != "recipe"},
        )
    if a.json:
        print(json.dumps(rec, indent=2))
    else:
        print(
            f"fine-tuned {a.weights} for {rec['epochs']} epochs: mAP50-95 {rec['map50_95']:.4f}, "
            f"{rec['params'] / 1e6:.3f} M params (architecture kept); final weights {rec['weights']}"
        )


def cmd_val(a):
    from lipslib.cfg import default
    from lipslib.deploy import export_record, exported_model
    from lipslib.train.validator import evaluate

    exported = exported_model(a.weights)
    imgsz = a.imgsz or (export_record(exported).get("imgsz") if exported else None) or default("imgsz")
    with _quiet(a.json):
        rec = evaluate(a.weights, a.data, imgsz=imgsz, batch=a.batch, device=a.device, split=a.split, out=a.out)
    if a.json:
        print(json.dumps(rec, indent=2))
    else:
        params = "?" if rec["params"] is None else f"{rec['params'] / 1e6:.3f}"
        print(
            f"{a.weights}: mAP50-95 {rec['map50_95']:.4f}, mAP50 {rec['map50']:.4f} on {rec['images']} images "
            f"({rec['split']}, imgsz {imgsz}); {rec['gflops']:.3f} GFLOPs, {params} M params"
        )


def cmd_sensitivity(a):
    from lipslib.cfg import default
    from lipslib.recovery import Recovery
    from lipslib.sensitivity import run_sensitivity

    layers = [x.strip() for x in a.layers.split(",") if x.strip()] if a.layers else None
    res = run_sensitivity(
        a.weights,
        a.data,
        ratio=a.ratio,
        layers=layers,
        imgsz=a.imgsz,
        batch=a.batch,
        device=a.device,
        split=a.split,
        criterion=a.criterion,
        mode=a.mode,
        threads=a.threads,
        workers=a.workers,
        memo_gib=a.memo_gib,
        out=a.out,
        reference=a.reference,
        recovery=Recovery(**{**default("recover"), "images": a.images}) if a.recover else None,
    )
    top = sorted(res["importance"].items(), key=lambda kv: -kv[1])[:5]
    print(
        f"base mAP50-95 {res['base']['mAP_50_95']:.4f} on {res['base']['images']} images; "
        f"{len(res['importance'])} layers in {res['seconds']:.1f} s → {a.out}/layer_importance.json"
    )
    print("most important: " + ", ".join(f"{k} {v:.3f}" for k, v in top))


def cmd_replay_paper(a):
    from lipslib.assets.resolve import paper_dir
    from lipslib.pipeline.replay import replay_paper
    from lipslib.schedule import Targets

    res = replay_paper(
        a.paper_dir or paper_dir(), a.out, Targets(a.target_gflops, a.target_map), initial_ratio=a.initial
    )
    print(
        f"replayed {res['moves_compared']} moves: Spearman of final ratios {res['spearman_final']:.3f}, "
        f"direction agreement {res['direction_agreement']:.3f}; wrote {a.out}/replay.json, replay_ratios.csv, "
        "layer_iteration.png, replay.png"
    )
    for p in res["phases"]:
        print(
            f"  {p['gate']:8s} gate, iterations {p['from_iteration']}→{p['to_iteration']}: "
            f"{p['layers_same_direction']:.0%} of layers move in the paper's direction"
        )


def cmd_optimize(a):
    from lipslib.cfg import load_params
    from lipslib.pipeline.loop import optimize

    params = load_params(a.params, a.profile, _overrides(a.set))
    res = optimize(params, a.out)
    b = res["best"]
    print(res["history"].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(
        f"best: iteration {b['iteration']}, {b['gflops']:.3f} GFLOPs, mAP50-95 {b['map50_95']:.4f} on the "
        f"{b['split_report']} split (chosen on {b['split_select']}); {a.out}/best.pt, {a.out}/best.json"
    )


def cmd_compare_video(a):
    from lipslib.pipeline.video import compare_video

    rec = compare_video(
        a.video,
        a.model_orig,
        a.model_pruned,
        a.args_yaml,
        a.gflops_orig,
        a.gflops_pruned,
        a.frame_step,
        a.save,
        a.show,
        a.max_frames,
        a.summary,
        device=a.device,
    )
    if rec.get("truncated"):
        print(f"note: {rec['video']} is truncated ({rec['truncated']}); processed what decodes")
    o, p = rec["orig"], rec["pruned"]
    agreement = rec["agreement"] if rec["agreement"] is None else round(rec["agreement"], 3)
    print(
        f"{rec['frames_processed']} frames: original {o['latency_ms_median']:.1f} ms ({o['fps']:.1f} FPS, "
        f"{o['gflops']:.2f} GFLOPs) | pruned {p['latency_ms_median']:.1f} ms ({p['fps']:.1f} FPS, "
        f"{p['gflops']:.2f} GFLOPs); agreement {agreement}" + (f"; saved {a.save}" if a.save else "")
    )


def cmd_benchmark(a):
    models = _models(a.weights)
    from lipslib.pipeline.benchmark import run_benchmark

    table, lat = run_benchmark(
        models,
        a.data,
        a.out,
        imgsz=a.imgsz,
        split=a.split,
        base=a.base,
        image=a.image,
        latency_imgsz=a.latency_imgsz,
        runs=a.runs,
        threads=a.threads,
        device=a.device,
    )
    print(table[table.kind == "measured"].to_string(index=False))
    print(lat[["model", "gflops", "gflops_ratio", "torch_cpu_ms", "torch_cpu_ratio"]].to_string(index=False))
    print(f"wrote {a.out}/tables/benchmark.csv, {a.out}/figures/benchmark.png, {a.out}/tables/latency.csv")


def labelled(text: str) -> tuple[str, str]:
    """--weights [LABEL=]WEIGHTS (latency, benchmark) → (label, weights); the label defaults to the file's stem.
    Text before the first `=` that holds a path separator is a path (runs/lr=0.01/best.pt), not a label."""
    label, sep, weights = text.partition("=")
    if not sep or "/" in label or os.sep in label:
        label, weights = Path(text).stem, text
    label, weights = label.strip(), weights.strip()
    if not label or not weights:
        raise argparse.ArgumentTypeError(f"expected [LABEL=]WEIGHTS, got '{text}'")
    return label, weights


def _models(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """label → weights in the order given; one label twice is refused (the second would replace the first)."""
    models: dict[str, str] = {}
    for label, weights in pairs:
        if label in models:
            raise LipsError(
                f"two models labelled '{label}' ({models[label]}, {weights}): "
                f"name them, e.g. --weights {label}2={weights}"
            )
        models[label] = weights
    return models


class _Weights(argparse._AppendAction):
    """--weights [LABEL=]WEIGHTS, repeatable, as (label, weights) pairs; `benchmark --model`, its former name, still
    works, with a warning."""

    warned = False

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string == "--model" and not self.warned:
            print(f"{parser.prog}: warning: --model is deprecated; use --weights [LABEL=]WEIGHTS", file=sys.stderr)
            self.warned = True
        super().__call__(parser, namespace, values, option_string)


class _GivenOnly(argparse.Action):
    """`info`'s positional WEIGHTS, which shares its dest with --weights: it stores only a value actually given
    (argparse also consumes an absent optional positional, with its default, possibly after --weights)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values is not None:
            setattr(namespace, self.dest, values)


def cmd_notebook(a):
    from lipslib.pipeline.notebooks import run_notebook

    out = run_notebook(
        a.name,
        a.profile,
        _overrides(a.set),
        runs_dir=a.runs_dir,
        reports_dir=a.reports_dir,
        docs_dir=a.docs,
        figures_dir=a.figures,
    )
    print(f"executed {a.name} → {out}")


def cmd_stage_params(a):
    from lipslib.pipeline.notebooks import write_stage_params

    if a.cells:  # the notebooks themselves: outside DVC, whose stages depend on them
        from lipslib.pipeline.notebooks import write_parameters_cells

        changed = write_parameters_cells(a.profile or "demo")
        print(f"parameters cells rewritten from profile {a.profile or 'demo'}: {', '.join(changed) or 'none changed'}")
        return
    paths = write_stage_params(a.out, a.profile, _overrides(a.set))
    print(f"wrote {len(paths)} stage parameter files to {a.out}")


def cmd_sweep(a):
    from lipslib.pipeline.sweep import parse_targets, parse_time, sweep

    targets = parse_targets(a.targets)
    executor = "local" if a.direct else a.executor
    if a.direct and a.executor not in ("dvc", "local"):
        raise LipsError(f"--direct runs local processes; it does not combine with --executor {a.executor}")
    notebooks = [n.strip() for n in a.notebooks.split(",")] if a.notebooks else None
    slurm = {
        "partition": a.partition,
        "gpus_per_job": a.gpus_per_job,
        "cpus_per_job": a.cpus_per_job,
        "max_requeue": a.max_requeue,
        **({"time": parse_time(a.time)} if a.time else {}),
    }
    out = sweep(
        targets,
        a.profile,
        _overrides(a.set),
        notebooks=notebooks,
        root_dir=a.out,
        executor=executor,
        devices=a.devices,
        threads=a.threads,
        name=a.name,
        slurm=slurm,
    )
    print(f"swept {len(targets)} targets ({executor}) → {out}/pareto.csv, {out}/pareto.png, {out}/sweep.json")


def cmd_assets(a):
    from lipslib.assets import catalog
    from lipslib.assets.resolve import ENV

    if a.action == "fetch":
        done = catalog.fetch(a.names, a.to)
        for d in done:
            new, kept = d["fetched"], d["present"]
            if new + kept == 1:
                got = "fetched" if new else "already there"
            else:
                got = ", ".join(filter(None, [new and f"fetched {new} files", kept and f"{kept} already there"]))
            print(f"{d['name']}: {got}, sha256 ok → {d['where']}")
        root = (Path(a.to).expanduser() if a.to else catalog.default_root()).resolve()
        env = os.environ.get(ENV)
        if not env or Path(env).expanduser().resolve() != root:
            print(f"lipslib finds them with: export {ENV}={root}")
        return
    if a.action == "build":
        rec = catalog.build(a.name, a.coco, a.out, link=a.link)
        how = "linked" if rec["linked"] else "copied"
        print(f"built {rec['name']}: {rec['images']} images, {rec['labels']} labels ({how}) → {rec['yaml']}")
        if rec["labels_identical"]:
            print(f"labels identical to the reference copy's (sha256 {rec['labels_sha256'][:16]}…)")
        else:
            print(
                f"labels DIFFER from the reference copy's (sha256 {rec['labels_sha256'][:16]}…, reference "
                f"{catalog.manifest(a.name)['labels_sha256'][:16]}…): other Ultralytics labels? The dataset works; "
                "its mAPs may differ from the authors'"
            )
        return
    report = catalog.check()
    print(json.dumps(report, indent=2) if a.json else catalog.describe(report))
    if not report["ok"]:  # missing or different assets: the listing says which; the exit status says so to scripts
        sys.stdout.flush()
        raise SystemExit(1)


@contextlib.contextmanager
def _quiet(enabled: bool):
    """Send library logging to stderr so that --json leaves stdout parseable."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        from ultralytics.utils import LOGGER

        handlers = [(h, getattr(h, "stream", None)) for h in LOGGER.handlers]
        for h, _ in handlers:
            if hasattr(h, "setStream"):
                h.setStream(sys.stderr)
        try:
            yield
        finally:
            for h, s in handlers:
                if s is not None:
                    h.setStream(s)


def build_parser() -> argparse.ArgumentParser:
    from lipslib.cfg import default

    p = argparse.ArgumentParser(prog="lips", description="LIPS: layer-importance pruning schedules for YOLO11")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="GFLOPs, params and conv shapes of a checkpoint or model yaml")
    given = s.add_mutually_exclusive_group()  # one of them: cmd_info says so when neither is given
    given.add_argument("--weights", help=".pt checkpoint or model yaml (e.g. yolo11n.yaml)")
    given.add_argument(
        "weights", nargs="?", action=_GivenOnly, metavar="WEIGHTS", help="the same, given positionally (instead)"
    )
    s.add_argument("--imgsz", type=int, default=640)
    s.add_argument("--json", action="store_true", help="print JSON (keys gflops, params, convs)")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("prune", help="structurally prune layers by {layer: ratio}")
    s.add_argument("--weights", required=True)
    s.add_argument(
        "--ratios",
        required=True,
        help="YAML/JSON {layer: ratio}, the paper's prune_spec.txt, or one number (uniform on the targets)",
    )
    s.add_argument("--out", required=True, help="output .pt (a plain Ultralytics checkpoint)")
    s.add_argument(
        "--criterion",
        **_from_config(
            "optimize.criterion",
            "channel choice: by weight, or lsq / lsq_greedy (what the rest cannot predict; needs --data)",
            choices=CRITERION_NAMES,
        ),
    )
    s.add_argument("--round-to", type=int, default=None, help="round kept channels to a multiple of N")
    s.add_argument("--imgsz", type=int, default=640, help="image size for GFLOPs (default 640)")
    s.add_argument("--log", default=None, help="write the per-layer prune_directed_log.csv here")
    s.add_argument(
        "--reconstruct",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="refit the consumers of removed channels by ridge least squares on --data's images (default: "
        "recover.reconstruct when --data is given, else off)",
    )
    s.add_argument(
        "--repair",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bias repair (needs --data; --reconstruct contains it) (default: recover.repair when --data is given)",
    )
    s.add_argument("--data", default=None, help="dataset whose images calibrate --reconstruct / --repair")
    s.add_argument("--split", default="train", help="its split to calibrate on (default train)")
    s.add_argument("--images", **_from_config("recover.images", "calibration images", int))
    s.add_argument("--calibration-imgsz", type=int, default=640, help="their size (default 640)")
    s.add_argument(
        "--ridge",
        **_from_config(
            "recover.ridge",
            "λ of the refit, or auto: chosen per conv on held-out calibration images",
            ridge_value,
        ),
    )
    s.add_argument("--device", default=None, help="where the refit runs: cpu, 0, … (default: Ultralytics' choice)")
    s.set_defaults(func=cmd_prune)

    s = sub.add_parser("inflate", help="a pruned checkpoint inside its full-width yaml, with BatchNorm, same outputs")
    s.add_argument("--weights", required=True, help="a BN-free pruned checkpoint, e.g. lips_iter01_best.pt")
    s.add_argument("--yaml", default="yolo11n.yaml", help="the unpruned architecture (default yolo11n.yaml)")
    s.add_argument("--data", default=None, help="dataset whose images give BatchNorm its running statistics")
    s.add_argument("--split", default="train")
    s.add_argument("--images", type=int, default=64, help="calibration images (default 64)")
    s.add_argument("--imgsz", type=int, default=640)
    s.add_argument("--out", required=True, help="output .pt (a plain Ultralytics checkpoint)")
    s.set_defaults(func=cmd_inflate)

    s = sub.add_parser("latency", help="measured latency of checkpoints on a runtime (interleaved, median, quartiles)")
    s.add_argument(
        "--weights",
        action=_Weights,
        type=labelled,
        required=True,
        metavar="[LABEL=]WEIGHTS",
        help=f"{WEIGHTS_HELP}; repeat to compare (ratios are to the first)",
    )
    s.add_argument(
        "--runtime",
        **_from_config(
            "latency.runtime",
            "torch (fused fp32, CPU), onnxruntime or openvino (Ultralytics' exports, CPU), cuda (PyTorch, GPU 0)",
            choices=RUNTIMES,
        ),
    )
    s.add_argument("--imgsz", **_from_config("latency.imgsz", "", int))
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--threads", **_from_config("latency.threads", "", int))
    s.add_argument("--runs", **_from_config("latency.runs", "interleaved runs after warm-up", int))
    s.add_argument(
        "--precision",
        **_from_config(
            "latency.precision",
            "the runtime's own precision (OpenVINO: bf16 where the CPU has it), f32, or int8 (openvino, onnxruntime)",
            choices=PRECISIONS,
        ),
    )
    s.add_argument(
        "--data",
        default=None,
        help="int8: calibrate on this dataset's train split (default: Ultralytics' two sample images, to time only)",
    )
    s.add_argument("--image", default=None, help="a real frame to time on (default: Ultralytics' bus.jpg)")
    s.add_argument("--table", action="store_true", help="also the per-block table (cached) and its sum's error")
    s.add_argument(
        "--ops",
        action="store_true",
        help="also where PyTorch's CPU time goes: conv, activation, pooling, memory, other (torch.profiler)",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_latency)

    s = sub.add_parser("export", help="export for deployment with Ultralytics: OpenVINO or ONNX, fp32 or INT8")
    s.add_argument("--weights", required=True, help="the (pruned) checkpoint")
    s.add_argument("--format", choices=DEPLOY_FORMATS, default="openvino", help="(default openvino)")
    s.add_argument(
        "--int8", action="store_true", help="INT8: NNCF for OpenVINO, ONNX Runtime static QDQ for ONNX (needs --data)"
    )
    s.add_argument("--data", default=None, help="dataset whose --split images calibrate INT8")
    s.add_argument("--split", default="train", help="the calibration split: the fine-tune images (default train)")
    s.add_argument("--images", type=int, default=300, help="calibration images, the first of the split (default 300)")
    s.add_argument("--imgsz", type=int, default=640, help="the exported (static) input size (default 640)")
    s.add_argument("--batch", type=int, default=1, help="the exported (static) batch (default 1)")
    s.add_argument("--out", required=True, help="a new folder for the exported model and its lips_export.json")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("align", help="pad layers to multiples of N channels where a runtime runs them faster")
    s.add_argument("--weights", required=True, help="a pruned checkpoint")
    s.add_argument("--multiple", type=int, default=16, help="pad widths up to multiples of this (default 16)")
    s.add_argument("--runtime", choices=RUNTIMES, default="openvino", help="timed on (default openvino)")
    s.add_argument("--precision", choices=("default", "f32"), default="default")
    s.add_argument("--imgsz", **_from_config("latency.imgsz", "", int))
    s.add_argument("--threads", **_from_config("latency.threads", "", int))
    s.add_argument("--runs", **_from_config("latency.runs", "", int))
    s.add_argument("--tol", type=float, default=0.01, help="the smallest relative saving that keeps a padding")
    s.add_argument("--out", required=True, help="the aligned checkpoint")
    s.set_defaults(func=cmd_align)

    s = sub.add_parser("finetune", help="fine-tune a pruned checkpoint, keeping its architecture")
    s.add_argument("--weights", required=True)
    s.add_argument("--data", required=True, help="dataset yaml (looked up under $LIPS_ASSETS/datasets too)")
    s.add_argument("--epochs", type=int, default=None, help="(default: finetune.epochs)")
    s.add_argument("--imgsz", type=int, default=None, help="(default: imgsz)")
    s.add_argument("--batch", type=int, default=None, help="(default: finetune.batch)")
    s.add_argument("--device", default=None, help=DEVICE_HELP)
    s.add_argument(
        "--recipe",
        default=None,
        choices=RECIPES,
        help="the train arguments it starts from: paper, bn-free, or auto (bn-free for a model without BatchNorm, "
        "else paper) (default: finetune.recipe)",
    )
    s.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config keys, as in every command: finetune.* (any Ultralytics train argument, e.g. finetune.seed=1), "
        "recipes.*, imgsz, device, threads, recover.distill, recover.distill_weight",
    )
    s.add_argument(
        "--distill",
        default=None,
        choices=DISTILL_MODES,
        help="outputs: match the teacher's head outputs; features: Ultralytics' distill_model (default: "
        "recover.distill)",
    )
    s.add_argument("--teacher", default=None, help="the unpruned model the checkpoint was pruned from")
    s.add_argument("--distill-weight", type=float, default=None, help="(default: recover.distill_weight)")
    s.add_argument("--json", action="store_true", help="print the result as JSON (training log on stderr)")
    s.add_argument("--out", required=True, help="run folder (args.yaml, results.csv, weights/)")
    s.set_defaults(func=cmd_finetune)

    s = sub.add_parser("val", help="mAP (Ultralytics validator) + GFLOPs/params of a checkpoint or an export")
    s.add_argument("--weights", required=True, help="a checkpoint, or an export (lips export's --out folder)")
    s.add_argument("--data", required=True)
    s.add_argument(
        "--imgsz",
        type=int,
        default=None,
        help="validation size (an export's own size for an export, else the config's imgsz)",
    )
    s.add_argument("--batch", type=int, default=16)
    s.add_argument("--device", default=None, help=DEVICE_HELP)
    s.add_argument("--split", default="val")
    s.add_argument("--json", action="store_true")
    s.add_argument("--out", default=None, help="also write the record to this JSON file")
    s.set_defaults(func=cmd_val)

    s = sub.add_parser("sensitivity", help="Stage I: prune each layer alone, importance from the mAP drops")
    s.add_argument("--weights", required=True)
    s.add_argument("--data", required=True, help="dataset yaml whose --split images measure the drops")
    s.add_argument("--imgsz", **_from_config("imgsz", "", int))
    s.add_argument("--ratio", **_from_config("sensitivity.ratio", "share of channels removed per layer", float))
    s.add_argument("--layers", default=None, help="comma-separated layer names (default: the 29 LIPS targets)")
    s.add_argument("--batch", **_from_config("sensitivity.batch", "", int))
    s.add_argument("--device", default=None, help=DEVICE_HELP)
    s.add_argument("--split", **_from_config("sensitivity.split", ""))
    s.add_argument(
        "--criterion",
        **_from_config(
            "optimize.criterion",
            "channel choice (lsq, lsq_greedy: calibrated on --data's train split)",
            choices=CRITERION_NAMES,
        ),
    )
    s.add_argument(
        "--mode",
        **_from_config(
            "sensitivity.mode",
            "fast: reuse the base's activations where unchanged",
            choices=SENSITIVITY_MODES,
        ),
    )
    s.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    s.add_argument(
        "--workers", type=int, default=None, help="processes for --mode fast (default: one per CPU core; 1 on a GPU)"
    )
    s.add_argument(
        "--memo-gib",
        **_from_config(
            "sensitivity.memo_gib",
            "bound on the base activations --mode fast holds (one batch; the batch is lowered to fit)",
            float,
        ),
    )
    s.add_argument("--reference", default=None, help="a reference layer_importance.json (e.g. the paper's)")
    s.add_argument(
        "--recover",
        "--reconstruct",
        action=argparse.BooleanOptionalAction,
        default=default("sensitivity.recover"),
        help="recover each cut as the config's recover: says (reconstruction) before measuring, calibrated on "
        f"--data's train split (default: sensitivity.recover = {default('sensitivity.recover')})",
    )
    s.add_argument("--images", **_from_config("recover.images", "calibration images for --recover", int))
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_sensitivity)

    s = sub.add_parser("replay-paper", help="redraw the paper's Fig. 5 and replay its measurements through our rule")
    s.add_argument(
        "--paper-dir", default=None, help="the authors' lips_paper folder (default: $LIPS_ASSETS/lips_paper)"
    )
    s.add_argument("--target-gflops", type=float, default=4.5)
    s.add_argument("--target-map", type=float, default=0.35)
    s.add_argument("--initial", type=float, default=0.3, help="uniform initial ratio (paper: 0.3)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_replay_paper)

    s = sub.add_parser("optimize", help="the LIPS loop: prune → fine-tune → evaluate → update, with resume")
    s.add_argument("--params", default="params.yaml")
    s.add_argument("--profile", default=None, help="paper, demo, smoke … (default: the file's profile key)")
    s.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override, e.g. schedule.target_gflops=3.8")
    s.add_argument("--out", default="runs")
    s.set_defaults(func=cmd_optimize)

    s = sub.add_parser("compare-video", help="original vs pruned side by side on a video, with latency/FPS")
    # the authors' comparison.py spelled these with underscores: those spellings stay, as aliases
    s.add_argument("--video", required=True)
    s.add_argument("--model-orig", "--model_orig", required=True, help="the original (unpruned) weights")
    s.add_argument("--model-pruned", "--model_pruned", required=True, help="the pruned weights")
    s.add_argument(
        "--args-yaml",
        "--args_yaml",
        default=None,
        help="Ultralytics args.yaml: imgsz, conf, iou, device, half, max_det, classes",
    )
    s.add_argument(
        "--gflops-orig", "--gflops_orig", type=float, default=None, help="shown on the overlay (default: measured)"
    )
    s.add_argument("--gflops-pruned", "--gflops_pruned", type=float, default=None)
    s.add_argument(
        "--frame-step",
        "--frame_step",
        **_from_config("video.frame_step", "process every N-th frame", int),
    )
    s.add_argument("--save", default=None, help="write the side-by-side mp4 here")
    s.add_argument("--show", action="store_true", help="open a window (needs a display)")
    s.add_argument("--max-frames", "--max_frames", type=int, default=None)
    s.add_argument("--summary", default=None, help="write the JSON summary here")
    s.add_argument(
        "--device", default=None, help="overrides the args yaml's device (default: it, else Ultralytics' choice)"
    )
    s.set_defaults(func=cmd_compare_video)

    s = sub.add_parser("benchmark", help="mAP vs GFLOPs against the YOLO family, and measured latency")
    s.add_argument(
        "--weights",
        "--model",
        action=_Weights,
        type=labelled,
        required=True,
        metavar="[LABEL=]WEIGHTS",
        help=f"{WEIGHTS_HELP}; repeat per model (--model: its former name, deprecated)",
    )
    s.add_argument("--base", default=None, help="label the latency ratios refer to (default: the first)")
    s.add_argument("--data", required=True)
    s.add_argument("--split", default="val")
    s.add_argument("--imgsz", **_from_config("imgsz", "evaluation image size", int))
    s.add_argument("--latency-imgsz", **_from_config("latency.imgsz", "", int))
    s.add_argument("--image", default=None, help="real frame for latency (default: first image of the split)")
    s.add_argument("--runs", **_from_config("latency.runs", "interleaved latency runs", int))
    s.add_argument("--threads", **_from_config("latency.threads", "latency threads", int))
    s.add_argument("--device", default=None, help=DEVICE_HELP)
    s.add_argument("--out", default="reports")
    s.set_defaults(func=cmd_benchmark)

    s = sub.add_parser("notebook", help="execute a stage notebook through papermill with params.yaml values")
    s.add_argument("name", choices=NOTEBOOKS, help="the stage notebook")
    s.add_argument("--profile", default=None)
    s.add_argument("--set", nargs="*", metavar="KEY=VALUE")
    s.add_argument("--runs-dir", default="runs")
    s.add_argument("--reports-dir", default="reports")
    s.add_argument("--docs", default=None, metavar="DIR", help="also write a copy for readers there (docs/notebooks)")
    s.add_argument(
        "--figures", default=None, metavar="DIR", help="also copy the figures the docs show there (docs/figures)"
    )
    s.set_defaults(func=cmd_notebook)

    s = sub.add_parser("stage-params", help="resolve params.yaml per notebook (what each DVC stage depends on)")
    s.add_argument("--profile", default=None)
    s.add_argument("--set", nargs="*", metavar="KEY=VALUE")
    s.add_argument("--out", default="params")
    s.add_argument(
        "--cells",
        action="store_true",
        help="instead, rewrite the notebooks' parameters cells from the profile (default demo)",
    )
    s.set_defaults(func=cmd_stage_params)

    s = sub.add_parser("sweep", help="one experiment (or job) per GFLOPs target, run concurrently; a Pareto table")
    s.add_argument("--targets", required=True, help="comma-separated GFLOPs targets, e.g. 3.0,3.4,3.8")
    s.add_argument("--profile", default=None)
    s.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="for every target, e.g. optimize.iterations=2")
    s.add_argument("--notebooks", default=None, help="comma-separated subset (default: 02 to 05; Stage I is shared)")
    s.add_argument("--out", default="reports/sweeps", help="pareto.csv/png, sweep.json (without DVC: <out>/<target>/)")
    s.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="dvc",
        help="dvc: DVC's experiment queue (default); local: submitit processes here; slurm: one job per target",
    )
    s.add_argument("--direct", action="store_true", help="no DVC: the same as --executor local")
    s.add_argument(
        "--devices",
        default=None,
        help="one per worker: cpu, a GPU index, GPUs joined by + for DDP (cpu,cpu; 0,1,2,3; 0+1,2+3); "
        "default: one worker on the profile's device",
    )
    s.add_argument("--threads", type=int, default=None, help="CPU threads per worker (default: cores / workers)")
    s.add_argument("--name", default=None, help="experiment / job name prefix (default: sweep-<profile>)")
    s.add_argument("--partition", default=None, help="slurm: the partition")
    s.add_argument("--gpus-per-job", type=int, default=1, help="slurm: GPUs per job (DDP fine-tuning when > 1)")
    s.add_argument("--cpus-per-job", type=int, default=8, help="slurm: CPUs per job (the loop's threads)")
    s.add_argument("--time", default=None, help="slurm: time limit per job (minutes or D-HH:MM:SS); default 1 day")
    s.add_argument("--max-requeue", type=int, default=5, help="slurm: requeues after preemption or time-out")
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("assets", help="what the demo, benchmarks and tests need, where it comes from; fetch, build")
    s.add_argument("--json", action="store_true", help="list as JSON")
    s.set_defaults(func=cmd_assets)
    actions = s.add_subparsers(dest="action", metavar="{list,fetch,build}", help="(default: list)")
    t = actions.add_parser(
        "list", help="each asset: where lipslib looks, found, sha256 ok, where it comes from (exit 1: not all there)"
    )
    t.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    t = actions.add_parser("fetch", help="download the authors' checkpoints and logs, sha256-checked")
    t.add_argument(
        "names", nargs="*", metavar="NAME", help="(default: all: lips_iter01_best.pt, lips_iter24_best.pt, lips_paper)"
    )
    t.add_argument("--to", default=None, metavar="DIR", help="the asset folder (default: $LIPS_ASSETS, else ./assets)")
    t = actions.add_parser("build", help="make coco_val2193 or coco128 from a COCO 2017 folder (Ultralytics' layout)")
    t.add_argument("name", metavar="NAME", help="coco_val2193 or coco128")
    t.add_argument(
        "--coco",
        required=True,
        metavar="DIR",
        help="COCO 2017 in Ultralytics' layout: DIR/images/val2017/*.jpg, DIR/labels/val2017/*.txt (and train2017 "
        "for coco128), as `yolo val data=coco.yaml` downloads it",
    )
    t.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="datasets folder (default: $LIPS_ASSETS/datasets, else ./assets/datasets)",
    )
    t.add_argument("--link", action="store_true", help="symlink the images and labels instead of copying them")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return exit_code(f"lips {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
