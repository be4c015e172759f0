"""Shared parts of the feature-imitation baselines (FGD, DeFeat, FRS, FGFI, FKD, CrossKD)."""

from __future__ import annotations

import torch
from torch import nn

from pgd.distill.methods.base import KDMethod, MethodContext, kaiming


def gt_boxes(samples, device) -> list[torch.Tensor]:
    """Per image the GT boxes ``[G, 4]`` float32 on ``device``."""
    return [s.gt_instances.bboxes.to(device=device, dtype=torch.float32).reshape(-1, 4) for s in samples]


def padded_shape(samples) -> tuple[int, int]:
    """(h, w) of the padded batch input (DetDataPreprocessor's ``batch_input_shape``)."""
    meta = samples[0].metainfo
    shape = meta.get("batch_input_shape", meta.get("pad_shape"))
    if shape is None:
        raise RuntimeError("data samples carry no batch_input_shape / pad_shape; run the "
                           "detector's DetDataPreprocessor first")
    return int(shape[0]), int(shape[1])


class NeckKD(KDMethod):
    """A method on the FPN outputs: both necks' channels (``c_s``, ``c_t``), one adapt conv
    per level (:meth:`adapt_convs`), the level check."""

    #: attributes holding student-side adapt convs (one per level), Kaiming-initialised
    ADAPT: tuple[str, ...] = ()

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.c_s, self.c_t = ctx.channels("student", "neck"), ctx.channels("teacher", "neck")

    def adapt_convs(self, kernel: int) -> nn.ModuleList:
        """One ``C_s -> C_t`` conv per level."""
        return nn.ModuleList(
            nn.Conv2d(self.c_s, self.c_t, kernel_size=kernel, padding=kernel // 2) for _ in range(self.num_levels)
        )

    def init_weights(self) -> None:
        """Adapt convs as the distiller initialises its own (Kaiming-uniform, a=1, zero
        bias); subclasses reset their blocks as their authors do."""
        for name in self.ADAPT:
            for conv in getattr(self, name) or ():
                kaiming(conv)

    def necks(self, records) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The student's and teacher's FPN maps, checked to have this method's levels."""
        s, t = records.student.neck, records.teacher.neck
        if len(s) != self.num_levels or len(t) != self.num_levels:
            raise RuntimeError(
                f"captured {len(s)} student and {len(t)} teacher FPN levels, expected "
                f"{self.num_levels}: the two detectors must share FPN strides"
            )
        return s, t
