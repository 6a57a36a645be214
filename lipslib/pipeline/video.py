"""Stage V: the original and the pruned detector side by side on a video (the authors' comparison.py).

Latency is the wall time of one `YOLO.predict` call on one frame — letterbox, forward, NMS — with CUDA
synchronised, excluding drawing and video I/O; the first `warmup` processed frames are left out of it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from lipslib.errors import LipsError, first_line
from lipslib.files import check_writable, write_json
from lipslib.runtime import keep_threads, select_device
from lipslib.train.validator import device_arg

INFERENCE_KEYS = ("imgsz", "conf", "iou", "device", "half", "max_det", "classes")


def inference_args(args_yaml: str | os.PathLike | None) -> dict:
    """Inference settings from an Ultralytics args.yaml, as the authors' script reads them (conf null → 0.25)."""
    import yaml

    args = {}
    if args_yaml:
        path = Path(args_yaml)
        try:
            args = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise LipsError(f"cannot read args yaml {path}: {' '.join(str(e).split())[:120]}") from None
        if not isinstance(args, dict):
            raise LipsError(f"args yaml {path} is not a mapping of Ultralytics arguments")
    out = {k: args.get(k) for k in INFERENCE_KEYS}
    out["imgsz"] = out["imgsz"] or 640
    out["conf"] = 0.25 if out["conf"] is None else out["conf"]
    out["iou"] = 0.7 if out["iou"] is None else out["iou"]
    out["device"] = device_arg(out["device"])  # None: Ultralytics' choice, the first GPU when present
    out["half"] = bool(out["half"])
    out["max_det"] = out["max_det"] or 300
    return out


def _detector(path):
    from ultralytics import YOLO

    from lipslib.assets.resolve import resolve_weights
    from lipslib.deploy import exported_model

    weights = exported_model(path) or resolve_weights(path)  # a checkpoint, or an export (OpenVINO, ONNX)
    try:
        model = YOLO(str(weights))
    except Exception as e:
        raise LipsError(f"could not load {weights}: {' '.join(str(e).split())[:160]}") from None
    if model.task != "detect":
        raise LipsError(f"{weights} is a '{model.task}' model; compare-video needs detection checkpoints")
    return model, weights


def _gflops(weights) -> float:
    from lipslib.deploy import export_record, exported_model
    from lipslib.pruning.engine import cost, load_model

    exported = exported_model(weights)
    if exported is not None:  # the checkpoint it was exported from, as its record says
        return export_record(exported).get("gflops", float("nan"))
    return cost(load_model(weights)).gflops


def match_share(ref_boxes, ref_cls, boxes, cls, iou: float = 0.5) -> tuple[int, int]:
    """(matched, total): reference detections matched one-to-one by a same-class detection at IoU ≥ iou."""
    if len(ref_boxes) == 0:
        return 0, 0
    if len(boxes) == 0:
        return 0, len(ref_boxes)
    import torch
    from torchvision.ops import box_iou

    ious = box_iou(torch.as_tensor(ref_boxes), torch.as_tensor(boxes)).numpy()
    ious[np.asarray(ref_cls)[:, None] != np.asarray(cls)[None, :]] = 0
    matched, used = 0, np.zeros(ious.shape[1], bool)
    for i in np.argsort(-ious.max(1)):  # most certain pairs first
        candidates = np.where(used, -1.0, ious[i])
        j = int(candidates.argmax())
        if candidates[j] >= iou:
            used[j] = True
            matched += 1
    return matched, len(ref_boxes)


def _overlay(img, lines):
    """White text on a translucent dark banner at the bottom-left, clear of the detection labels."""
    import cv2

    font, scale, step = cv2.FONT_HERSHEY_SIMPLEX, 0.55, 22
    width = max(cv2.getTextSize(t, font, scale, 1)[0][0] for t in lines) + 16
    top = img.shape[0] - step * len(lines) - 10
    banner = img[top:, :width].copy()
    cv2.rectangle(banner, (0, 0), (width, banner.shape[0]), (0, 0, 0), -1)
    img[top:, :width] = cv2.addWeighted(banner, 0.6, img[top:, :width], 0.4, 0)
    for i, text in enumerate(lines):
        cv2.putText(img, text, (8, top + 18 + i * step), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def compare_video(
    video,
    model_orig,
    model_pruned,
    args_yaml=None,
    gflops_orig: float | None = None,
    gflops_pruned: float | None = None,
    frame_step: int = 5,
    save=None,
    show: bool = False,
    max_frames: int | None = None,
    summary=None,
    warmup: int = 3,
    progress: bool = True,
    device=None,
) -> dict:
    """Run the original and the pruned detector on a video, side by side (the authors' comparison.py).

    Args:
        video: a video file (a path, or a name under `$LIPS_ASSETS/videos/`).
        model_orig: the original checkpoint (left in the side-by-side video).
        model_pruned: the pruned checkpoint (right); either may be an export (`lips export`: an OpenVINO folder
            or an ONNX file), run by Ultralytics in its runtime.
        args_yaml: an Ultralytics args.yaml whose inference settings (imgsz, conf, iou, device, half, max_det,
            classes) both models use; conf null → 0.25, as the authors' script reads it.
        gflops_orig: the banner's GFLOPs for the original (default: counted).
        gflops_pruned: the same for the pruned model.
        frame_step: process every n-th frame.
        save: write the side-by-side mp4 here (checked writable first).
        show: open a window while running.
        max_frames: stop after this many processed frames.
        summary: write the JSON summary here (checked writable first).
        warmup: processed frames left out of the latency statistics.
        progress: show a progress bar.
        device: overrides the device of `args_yaml`.

    Returns:
        The summary: frames decoded and processed, per model latency mean / median / p95 (ms per
        `YOLO.predict` call), FPS, GFLOPs, detections per frame, and the agreement (share of the original's
        detections matched one-to-one by a same-class pruned detection at IoU ≥ 0.5).

    Raises:
        LipsError: a missing or unreadable video or checkpoint, a non-detection model, or frame_step < 1.

    Examples:
        >>> compare_video("crosswalk.mp4", "lips_iter01_best.pt", "runs/demo/best.pt", frame_step=5,
        ...               save="cmp.mp4", summary="summary.json")  # doctest: +SKIP
    """
    import cv2
    import torch
    from tqdm.auto import tqdm

    if frame_step < 1:
        raise LipsError(f"--frame_step must be ≥ 1, got {frame_step}")
    for target in filter(None, (save, summary)):
        check_writable(target)
    from lipslib.assets.resolve import resolve_video

    path = resolve_video(video)
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise LipsError(f"{path} is not a video OpenCV can open; give an .mp4/.avi file")
    header = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    ok, frame = cap.read()
    if not ok:
        raise LipsError(f"{path}: no frame could be decoded; is it a video file?")
    settings = inference_args(args_yaml)
    if device is not None:
        settings["device"] = device_arg(device)

    try:  # Ultralytics' own check, before both models are loaded
        select_device(settings["device"], verbose=False)
    except ValueError as e:
        raise LipsError(f"compare-video: {first_line(e)}") from None
    models = {}
    for key, weights, g in (("orig", model_orig, gflops_orig), ("pruned", model_pruned, gflops_pruned)):
        model, resolved = _detector(weights)
        models[key] = {
            "model": model,
            "weights": str(resolved),
            "gflops": g if g is not None else _gflops(resolved),
            "ms": [],
            "dets": [],
        }
    cuda = False  # known after the first predict: where Ultralytics put the model
    writer, decoded, processed, matched, total = None, 0, 0, 0, 0
    budget = max_frames or (header // frame_step + 1 if header > 0 else None)
    bar = tqdm(total=budget, desc="compare-video", unit="frame", disable=not progress)
    with keep_threads():  # the predictor's select_device sets Ultralytics' own count, which the frames run on
        try:
            while ok:
                decoded += 1
                if (decoded - 1) % frame_step == 0:
                    panels, results = [], {}
                    for key, m in models.items():
                        if cuda:
                            torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        res = m["model"].predict(frame, verbose=False, **settings)[0]
                        cuda = cuda or m["model"].predictor.device.type == "cuda"
                        if cuda:
                            torch.cuda.synchronize()
                        if processed >= warmup:
                            m["ms"].append(1e3 * (time.perf_counter() - t0))
                        m["dets"].append(len(res.boxes))
                        results[key] = res
                    for key, m in models.items():
                        avg = float(np.mean(m["ms"])) if m["ms"] else float("nan")
                        label = "original" if key == "orig" else "pruned"
                        panels.append(
                            _overlay(
                                results[key].plot(),
                                [
                                    f"{label}  frame {decoded}",
                                    f"{m['gflops']:.2f} GFLOPs",
                                    f"{avg:.1f} ms/frame  {1e3 / avg:.1f} FPS" if m["ms"] else "warming up",
                                ],
                            )
                        )
                    b = results["orig"].boxes
                    p = results["pruned"].boxes
                    got, n = match_share(b.xyxy.cpu(), b.cls.cpu(), p.xyxy.cpu(), p.cls.cpu())
                    matched, total = matched + got, total + n
                    canvas = np.hstack(panels)
                    if save:
                        if writer is None:
                            Path(save).parent.mkdir(parents=True, exist_ok=True)
                            h, w = canvas.shape[:2]
                            writer = cv2.VideoWriter(
                                str(save), cv2.VideoWriter_fourcc(*"mp4v"), fps / frame_step, (w, h)
                            )
                        writer.write(canvas)
                    if show:
                        cv2.imshow("LIPS: original | pruned", canvas)
                        if cv2.waitKey(1) & 0xFF == ord("q"):
                            break
                    processed += 1
                    bar.update()
                    if max_frames and processed >= max_frames:
                        break
                ok, frame = cap.read()
        finally:
            predict_threads = torch.get_num_threads()
            bar.close()
            cap.release()
            if writer is not None:
                writer.release()
            if show:
                cv2.destroyAllWindows()
    rec = {
        "video": str(path),
        "frames_in_header": header,
        "frames_decoded": decoded,
        "frames_processed": processed,
        "frame_step": frame_step,
        "warmup_frames_excluded": min(warmup, processed),
        "timing": "wall time of YOLO.predict per frame (letterbox + forward + NMS), CUDA synchronised; "
        "drawing and video I/O excluded",
        "settings": settings,
        "cpu_threads": predict_threads,
        "agreement": matched / total if total else None,
        "agreement_definition": "share of original detections matched one-to-one by a same-class pruned "
        "detection at IoU >= 0.5",
        "saved": str(save) if save else None,
    }
    if header > 0 and decoded < header and not (max_frames and processed >= max_frames):
        rec["truncated"] = f"header announces {header} frames, {decoded} decoded"
    for key, m in models.items():
        ms = np.asarray(m["ms"]) if m["ms"] else np.asarray([np.nan])
        rec[key] = {
            "weights": m["weights"],
            "gflops": m["gflops"],
            "latency_ms_mean": float(ms.mean()),
            "latency_ms_median": float(np.median(ms)),
            "latency_ms_p95": float(np.percentile(ms, 95)),
            "fps": float(1e3 / ms.mean()),
            "detections_per_frame": float(np.mean(m["dets"])),
        }
    if summary:
        write_json(summary, rec, portable_paths=True)
    return rec
