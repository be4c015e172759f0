"""CrossKD (Wang et al., CVPR 2024) + optional PKD: the student's head features after tower
layer ``reused_head_idx`` run through the teacher's remaining head layers
(:mod:`pgd.distill.crosskd`), the cross-head predictions mimicking the teacher's own
(:mod:`pgd.core.crosskd`, one recipe per head)."""

from __future__ import annotations

import torch

from pgd.distill.methods.base import MethodContext, register_method
from pgd.distill.methods.common import NeckKD
from pgd.errors import ConfigError


@register_method("crosskd")
class CrossKD(NeckKD):
    """Terms ``cls``, ``reg``, ``center`` (ATSS) and, with ``pkd``, ``pkd`` (PKD on every FPN
    level). No trainable parameters of its own. ``kl_temp`` is GFL's, ``w_center`` ATSS's."""

    def __init__(self, ctx: MethodContext, *, reused_head_idx: int, w_cls: float, w_reg: float, beta: float,
                 pkd: bool, w_pkd: float, pre_activation: bool, kl_temp: float | None = None,
                 w_center: float | None = None):
        super().__init__(ctx)
        self.w_cls, self.w_reg, self.beta, self.kl_temp, self.w_center = w_cls, w_reg, beta, kl_temp, w_center
        self.pkd, self.w_pkd, self.pre_activation = pkd, w_pkd, pre_activation
        idx = int(reused_head_idx)
        s_head, t_head = ctx.student["bbox_head"], ctx.teacher["bbox_head"]
        cs = int(s_head.get("feat_channels", 256))
        ct = int(t_head.get("feat_channels", 256))
        if cs != ct:
            raise ConfigError(
                f"CrossKD feeds the student's head features into the teacher's head, so both heads "
                f"need the same feat_channels; student {cs}, teacher {ct}"
            )
        if self.pkd and self.c_s != self.c_t:
            raise ConfigError(f"PKD compares the FPN maps channel by channel; student has {self.c_s} "
                              f"channels, teacher {self.c_t} (set distill.pkd: false)")
        for side, head in (("student", s_head), ("teacher", t_head)):
            n = int(head.get("stacked_convs", 4))
            if not 0 <= idx <= n:
                raise ConfigError(
                    f"distill.reused_head_idx={idx} but the {side} head has {n} tower "
                    f"layers per branch; choose 0..{n} (CrossKD's released value assumes 4)"
                )
        self.reused_head_idx = idx

    def attach(self, s_adapter, t_adapter) -> None:
        """Checks both heads and asks both adapters to record the reused tower layer."""
        from pgd.distill.crosskd import check_head

        for side, adapter in (("student", s_adapter), ("teacher", t_adapter)):
            check_head(adapter.head, self.reused_head_idx, side)
            if self.reused_head_idx > 0:
                adapter.watch_tower(self.reused_head_idx - 1, self.pre_activation)

    def _held(self, feats, side: str):
        if self.reused_head_idx == 0:
            return feats.neck, feats.neck
        key = self.reused_head_idx - 1
        cls, reg = feats.tower.get(("cls", key), []), feats.tower.get(("reg", key), [])
        if len(cls) != self.num_levels or len(reg) != self.num_levels:
            raise RuntimeError(f"captured {len(cls)}/{len(reg)} {side} head features of tower layer {key}, "
                               f"expected {self.num_levels} (one per FPN level)")
        return cls, reg

    def forward(self, records, data_samples) -> dict[str, torch.Tensor]:
        from pgd.core.crosskd import (
            align_scale,
            crosskd_atss_terms,
            crosskd_fcos_terms,
            crosskd_gfl_terms,
            pkd_loss_terms,
        )
        from pgd.distill.crosskd import flatten_levels, reuse_teacher_head, student_targets

        s_neck, t_neck = self.necks(records)
        s_cls, s_reg = self._held(records.student, "student")
        t_cls, t_reg = self._held(records.teacher, "teacher")
        s_head, t_head = records.head("student"), records.head("teacher")
        head_outs = records.teacher.head
        reused = [reuse_teacher_head(t_head, align_scale(s_cls[lvl], t_cls[lvl]), align_scale(s_reg[lvl], t_reg[lvl]),
                                     lvl, self.reused_head_idx) for lvl in range(self.num_levels)]
        r_cls, r_box, r_ctr = (list(x) for x in zip(*reused))
        t_cls_scores, t_box = list(head_outs[0]), list(head_outs[1])
        K = s_head.cls_out_channels
        sizes = [tuple(c.shape[-2:]) for c in t_cls_scores]
        targets = student_targets(s_head, sizes, data_samples, t_cls_scores[0].device)
        rc, tc = flatten_levels(r_cls, K), flatten_levels(t_cls_scores, K)
        if self.detector == "gfl":
            width = 4 * (s_head.reg_max + 1)
            terms = crosskd_gfl_terms(rc, tc, flatten_levels(r_box, width), flatten_levels(t_box, width),
                                      targets["label_weights"], targets["avg_factor"], beta=self.beta,
                                      temp=self.kl_temp, w_cls=self.w_cls, w_reg=self.w_reg)
        elif self.detector == "atss":
            anchors, coder = targets["anchors"], s_head.bbox_coder
            rb = coder.decode(anchors, flatten_levels(r_box, coder.encode_size))
            tb = coder.decode(anchors, flatten_levels(t_box, coder.encode_size))
            labels = targets["labels"]
            terms = crosskd_atss_terms(rc, tc, rb, tb, flatten_levels(r_ctr, 1), flatten_levels(list(head_outs[2]), 1),
                                       targets["label_weights"], (labels >= 0) & (labels < s_head.num_classes),
                                       targets["avg_factor"], beta=self.beta, w_cls=self.w_cls, w_reg=self.w_reg,
                                       w_center=self.w_center)
        else:  # fcos
            points, coder = targets["points"], s_head.bbox_coder
            rb = coder.decode(points, flatten_levels(r_box, 4))
            tb = coder.decode(points, flatten_levels(t_box, 4))
            terms = crosskd_fcos_terms(rc, tc, rb, tb, targets["denorm"], beta=self.beta, w_cls=self.w_cls,
                                       w_reg=self.w_reg)
        if self.pkd:
            terms["pkd"] = pkd_loss_terms(s_neck, t_neck, weight=self.w_pkd)["feat"]
        return terms
