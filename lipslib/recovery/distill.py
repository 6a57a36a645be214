"""Output distillation from the unpruned base during fine-tuning.

Ultralytics' own distillation (`distill_model`, `dis`) matches neck features through a projector that
starts random, because its teacher and student may differ in width. A pruned model was cut from its
teacher, so its head outputs have the teacher's exact shapes and meaning and can be matched directly:

    L_kd = Σ_a,c [BCE(s_ac, σ(t_ac)) − BCE(t_ac, σ(t_ac))] / Σ_a,c σ(t_ac)          (class logits, per anchor a)
         + Σ_a m_a · Σ_side KL(softmax(t_a,side) ‖ softmax(s_a,side)) / Σ_a m_a     (box distributions, DFL bins)

with m_a = max_c σ(t_ac), the teacher's confidence, so the box term follows what the teacher sees. The
class term is normalised like Ultralytics' own class loss (by the soft-target mass), and the total is
added to the detection loss as `weight × L_kd × batch size`, reported as `kd_loss`.

The criterion is installed by `OutputDistillation`, an Ultralytics callback on `on_pretrain_routine_end`
(after the EMA copy is made, so neither the EMA nor any saved checkpoint holds the teacher; a plain class,
so it travels to DDP workers with the trainer's callbacks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from ultralytics.utils.loss import v8DetectionLoss

from lipslib.cfg import DISTILL_MODES

MODES = DISTILL_MODES  # lipslib.cfg (the CLI's choices, without torch)


class OutputDistillationLoss(v8DetectionLoss):
    """Ultralytics' detection loss plus `weight` × the output-matching term against `teacher`."""

    def __init__(self, model, teacher: torch.nn.Module, weight: float):
        super().__init__(model)
        self.teacher, self.weight = teacher, float(weight)

    def loss(self, preds: dict, batch: dict):
        loss, items = super().loss(preds, batch)
        with torch.no_grad():
            target = self.parse_output(self.teacher(batch["img"]))
        kd = self.weight * output_divergence(preds, target)
        items = {**items, "kd_loss": kd.detach()}
        return torch.cat([loss, (kd * preds["boxes"].shape[0]).view(1)]), items


def output_divergence(student: dict, teacher: dict) -> torch.Tensor:
    """L_kd between two Detect training outputs ({'boxes': B×4·reg_max×A, 'scores': B×nc×A}) of one shape."""
    s_cls, t_cls = student["scores"].float(), teacher["scores"].float()
    p = t_cls.sigmoid()
    cls = (
        F.binary_cross_entropy_with_logits(s_cls, p, reduction="sum")
        - F.binary_cross_entropy_with_logits(t_cls, p, reduction="sum")
    ) / p.sum().clamp(min=1.0)
    b, _, a = student["boxes"].shape
    s_box = student["boxes"].float().view(b, 4, -1, a).log_softmax(2)
    t_box = teacher["boxes"].float().view(b, 4, -1, a).log_softmax(2)
    kl = (t_box.exp() * (t_box - s_box)).sum(2).sum(1)  # B×A: summed over bins and the four sides
    conf = p.max(1).values  # B×A
    box = (kl * conf).sum() / conf.sum().clamp(min=1e-6)
    return cls + box


class OutputDistillation:
    """Ultralytics trainer callback (on_pretrain_routine_end): train with `OutputDistillationLoss` against
    the checkpoint or model yaml `teacher`, on the trainer's device."""

    def __init__(self, teacher: str, weight: float = 1.0):
        self.teacher, self.weight = str(teacher), float(weight)

    def __call__(self, trainer) -> None:
        from ultralytics.utils.torch_utils import unwrap_model

        from lipslib.pruning.engine import load_model

        teacher = load_model(self.teacher).to(trainer.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        student = unwrap_model(trainer.model)
        student.criterion = OutputDistillationLoss(student, teacher, self.weight)
