"""Recovery right after a cut, in one call for every path that prunes: the LIPS loop, Stage I, the baselines and
`lips prune`. Two ways to restore what the removed channels contributed, before any training:

- bias repair (`lipslib.recovery.repair`): each consumer's mean, folded into its bias (or BatchNorm mean);
- least-squares reconstruction (`lipslib.recovery.lsq`): each consumer's kept weights and bias refit on its kept
  inputs. It contains bias repair (the fit of the bias alone), so with `reconstruct` on, `repair` adds nothing
  and is not applied.

Distillation while fine-tuning (`lipslib.recovery.distill`) is set here too, and passed to `finetune`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from lipslib.cfg import DISTILL_MODES
from lipslib.errors import LipsError
from lipslib.pruning.engine import PruneResult


@dataclass(frozen=True)
class Recovery:
    """The `recover:` settings of params.yaml, checked.

    Args:
        repair: fold the removed channels' mean contribution into the consumers' biases.
        reconstruct: refit the consumers by ridge least squares (supersedes `repair`).
        ridge: λ of the refit, relative to the mean diagonal of each conv's Gram; auto: chosen per conv on
            held-out calibration images.
        images: calibration images (the first of the dataset's `train` split).
        max_gib: bound on the Grams held at once during reconstruction (more passes beyond it).
        distill: none | outputs | features: distillation from the unpruned base while fine-tuning.
        distill_weight: weight of the distillation term.

    Raises:
        LipsError: a value of the wrong type or out of range, naming its `recover.` key.

    Examples:
        >>> Recovery(reconstruct=False).refits  # bias repair alone still changes the copy
        True
    """

    repair: bool = True
    reconstruct: bool = True
    ridge: float | str = 1e-3
    images: int = 64
    max_gib: float = 2.0
    distill: str = "none"
    distill_weight: float = 1.0

    def __post_init__(self):
        for key in ("repair", "reconstruct"):
            if not isinstance(getattr(self, key), bool):
                raise LipsError(f"recover.{key} must be true or false, got {getattr(self, key)!r}")
        if self.distill not in DISTILL_MODES:
            raise LipsError(f"recover.distill must be one of {', '.join(DISTILL_MODES)}, got {self.distill!r}")
        if not isinstance(self.images, int) or isinstance(self.images, bool) or self.images < 1:
            raise LipsError(f"recover.images must be an integer ≥ 1 (calibration images), got {self.images!r}")
        for key, low, strict in (("ridge", 0.0, False), ("max_gib", 0.0, True), ("distill_weight", 0.0, True)):
            if key == "ridge" and self.ridge == "auto":
                continue
            value = getattr(self, key)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value) == float(value)
            if not ok or (float(value) <= low if strict else float(value) < low):
                also = " or auto" if key == "ridge" else ""
                raise LipsError(f"recover.{key} must be a number {'>' if strict else '≥'} {low:g}{also}, got {value!r}")

    @classmethod
    def from_params(cls, recover: dict) -> Recovery:
        """From params.yaml's `recover:` mapping (load_params has refused unknown keys)."""
        return cls(**recover)

    @property
    def refits(self) -> bool:
        """Whether a pruned copy is changed after the cut (and so needs channel origins and images)."""
        return self.repair or self.reconstruct

    def as_dict(self) -> dict:
        return asdict(self)


def recover(
    res: PruneResult,
    base: nn.Module,
    images: torch.Tensor | None,
    settings: Recovery = Recovery(),
    *,
    donor: nn.Module | None = None,
    donor_origin: dict | None = None,
    gram_cache: dict | None = None,
    device=None,
) -> dict[str, float]:
    """Restore, in place, what the cut that made `res` removed: reconstruction or bias repair, as `settings` say.

    Args:
        res: a copy of `base` pruned with track=True.
        base: the model it was pruned from.
        images: calibration images (N×3×H×W in [0, 1], e.g. `calibration_images`).
        settings: the recovery settings (`Recovery.from_params(params["recover"])`).
        donor: for a warm copy, the fine-tuned model whose weights it inherited (pruned from `base` with
            channel origins `donor_origin`): its outputs are the reference instead of the base's.
        gram_cache: reconstruction's Grams of the reference, kept between calls on one reference and one set
            of images (see `lipslib.recovery.lsq.reconstruct`).
        device: where reconstruction runs its pass and its solves (params' `device`: cpu, 0, 0,1, …; None:
            where the reference is). The pruned copy stays where it is.

    Returns:
        Per conv: what the refit chose and its residuals (`reconstruct`), or the mean |δ| folded in (repair); {}
        when neither is on.

    Raises:
        LipsError: a copy pruned without channel origins (track=False), or calibration images that do not fit
            (see `lipslib.recovery.lsq.reconstruct`).

    Example:
        >>> res = prune(base, {"model.2.cv1.conv": 0.3}, track=True)                        # doctest: +SKIP
        >>> recover(res, base, calibration_images("coco128.yaml"), Recovery(reconstruct=True))  # doctest: +SKIP
    """
    if settings.reconstruct:
        from lipslib.recovery.lsq import reconstruct

        return reconstruct(
            res,
            base,
            images,
            ridge=settings.ridge,
            ref=donor,
            ref_origin=donor_origin,
            gram_cache=gram_cache,
            max_bytes=int(float(settings.max_gib) * 2**30),
            device=device,
        )
    if settings.repair:
        from lipslib.recovery.repair import repair_biases

        return repair_biases(res, base, images, donor=donor, donor_origin=donor_origin)
    return {}
