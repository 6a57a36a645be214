"""Which convolutions LIPS prunes: discovered from the model, so yolo11s/m work like yolo11n.

The paper's 29 targets of YOLO11n are the output conv of every backbone/neck block (`model.i.conv` for a
plain Conv, `model.i.cv2.conv` for C3k2 / SPPF / C2PSA, whose cv2 produces the block output) and the
hidden convs of each Detect branch (`model.23.cv2.s.j.conv`, and the pointwise `model.23.cv3.s.j.1.conv`
after each depthwise conv). The last conv of each head branch predicts boxes/classes and is never pruned.
"""

from __future__ import annotations

import difflib

import torch.nn as nn

from lipslib.errors import LipsError


def detect_head(model: nn.Module):
    """The model's Detect head (its last layer); a LipsError for any other kind of model."""
    from ultralytics.nn.modules.head import Detect

    head = model.model[-1]
    if not isinstance(head, Detect):
        raise LipsError(f"the model's last layer is {type(head).__name__}, not a Detect head; lipslib prunes detectors")
    return head


def _last_dense_conv(module: nn.Module, prefix: str) -> str | None:
    names = [f"{prefix}.{n}" if n else prefix for n, m in module.named_modules() if _dense(m)]
    return names[-1] if names else None


def _dense(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups == 1


def default_targets(model: nn.Module) -> list[str]:
    """The LIPS target set (29 convs for YOLO11), sorted by name as the authors' engine processes them.

    Args:
        model: a YOLO11 detection model (any size: n, s, m, …).

    Returns:
        The conv names: the output conv of every backbone/neck block and the hidden convs of each Detect branch.
    """
    head = detect_head(model)
    idx_head = len(model.model) - 1
    names: list[str] = []
    for i, block in enumerate(model.model[:-1]):
        out = getattr(block, "cv2", None) if not hasattr(block, "conv") else block
        if out is not None and (name := _last_dense_conv(out, f"model.{i}" + (".cv2" if out is not block else ""))):
            names.append(name)
    for branch in ("cv2", "cv3"):
        for s, seq in enumerate(getattr(head, branch)):
            for j, child in enumerate(list(seq)[:-1]):  # the last child predicts: keep its outputs
                if name := _last_dense_conv(child, f"model.{idx_head}.{branch}.{s}.{j}"):
                    names.append(name)
    return sorted(names)


def prunable_convs(model: nn.Module) -> list[str]:
    """Every conv whose output channels may be removed: dense convs outside the head's prediction layers.

    Args:
        model: a YOLO detection model.

    Returns:
        The conv names, sorted.
    """
    head = detect_head(model)
    idx_head = len(model.model) - 1
    keep = {
        f"model.{idx_head}.{b}.{s}.{len(seq) - 1}" for b in ("cv2", "cv3") for s, seq in enumerate(getattr(head, b))
    }
    return sorted(
        n
        for n, m in model.named_modules()
        if _dense(m) and n not in keep and ".dfl" not in n and n.startswith("model.")
    )


def validate_layers(model: nn.Module, names) -> list[str]:
    """Check layer names against the model's prunable convs.

    Args:
        model: a YOLO detection model.
        names: the conv names to check.

    Returns:
        The names, as a list.

    Raises:
        LipsError: an unknown name (the message suggests the nearest and lists the valid ones).
    """
    valid = prunable_convs(model)
    valid_set = set(valid)
    for name in names:
        if name not in valid_set:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise LipsError(f"unknown layer '{name}'{hint}; valid layers: {', '.join(valid)}")
    return list(names)
