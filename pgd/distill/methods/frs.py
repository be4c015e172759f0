"""FRS (Du et al., NeurIPS 2021): FPN imitation (3x3 adapt) and cls-score BCE, weighted by
the teacher's richness; the math is :func:`pgd.core.baselines.frs_loss_terms`."""

from __future__ import annotations

import torch

from pgd.core.baselines import frs_loss_terms
from pgd.distill.methods.base import MethodContext, register_method
from pgd.distill.methods.common import NeckKD


@register_method("frs")
class FRS(NeckKD):
    """Terms ``feat``, ``cls``.

    The KD terms ramp linearly from 0 over the first ``ramp_iters`` training iterations
    (:meth:`KDMethod.current_iter`: mmengine's ``MessageHub`` ``iter``, restored on resume;
    outside a Runner a counter of this module's training forwards, not checkpointed)."""

    ADAPT = ("adapt",)

    def __init__(self, ctx: MethodContext, *, w_feat: float, w_cls: float, ramp_iters: int, bce_from_logits: bool):
        super().__init__(ctx)
        self.w_feat, self.w_cls, self.ramp_iters, self.bce_from_logits = w_feat, w_cls, ramp_iters, bce_from_logits
        self.adapt = self.adapt_convs(3)

    def ramp(self) -> float:
        n = int(self.ramp_iters)
        return 1.0 if n <= 0 else min(1.0, self.current_iter() / n)

    def forward(self, records, data_samples) -> dict[str, torch.Tensor]:
        s_neck, t_neck = self.necks(records)
        if records.student.head is None:
            raise RuntimeError("FRS needs the student's head outputs; the adapter captured none")
        s_logits, t_logits = records.student.head[0], records.teacher.head[0]
        fs = [self.adapt[i](f) for i, f in enumerate(s_neck)]
        terms = frs_loss_terms(fs, t_neck, s_logits, t_logits, w_feat=self.w_feat, w_cls=self.w_cls,
                               ramp=self.ramp(), bce_from_logits=self.bce_from_logits)
        self.count_forward()
        return terms
