"""FKD (Zhang & Ma, ICLR 2021) on the FPN outputs: attention-masked imitation, attention
transfer, non-local relation; the math is :func:`pgd.core.baselines.fkd_loss_terms`."""

from __future__ import annotations

import torch
from torch import nn

from pgd.core.baselines import NonLocalBlock, fkd_loss_terms
from pgd.distill.methods.base import MethodContext, register_method
from pgd.distill.methods.common import NeckKD


@register_method("fkd")
class FKD(NeckKD):
    """Terms ``feat``, ``channel``, ``spatial``, ``relation``."""

    ADAPT = ("adapt", "nl_adapt")

    # FKD's code for 256-channel FPNs: non-local blocks with 64 inner channels pooled by 8 and
    # 4 on the two finest levels, C/2 pooled by 2 elsewhere; here 64 = C/4 so it scales with C.
    NL_STRIDES = (8, 4, 2, 2, 2)
    NL_INNER_DIV = (4, 4, 2, 2, 2)

    def __init__(self, ctx: MethodContext, *, temp: float, w_feat: float, w_channel: float, w_spatial: float,
                 w_relation: float, channel_mask: bool):
        super().__init__(ctx)
        self.temp, self.w_feat, self.w_channel, self.w_spatial = temp, w_feat, w_channel, w_spatial
        self.w_relation, self.channel_mask = w_relation, channel_mask
        L = self.num_levels
        stride = [self.NL_STRIDES[min(i, 4)] for i in range(L)]
        div = [self.NL_INNER_DIV[min(i, 4)] for i in range(L)]
        self.adapt = self.adapt_convs(1)
        self.nl_adapt = self.adapt_convs(1)
        self.channel_adapt = nn.ModuleList(nn.Linear(self.c_s, self.c_t) for _ in range(L))
        self.spatial_adapt = nn.ModuleList(nn.Conv2d(1, 1, kernel_size=3, padding=1) for _ in range(L))
        self.nl_s = nn.ModuleList(NonLocalBlock(self.c_s, self.c_s // div[i], stride[i]) for i in range(L))
        self.nl_t = nn.ModuleList(NonLocalBlock(self.c_t, self.c_t // div[i], stride[i]) for i in range(L))

    def init_weights(self) -> None:
        super().init_weights()
        for block in [*self.nl_s, *self.nl_t]:
            block.reset_parameters()

    def forward(self, records, data_samples) -> dict[str, torch.Tensor]:
        s_neck, t_neck = self.necks(records)
        return fkd_loss_terms(
            s_neck, t_neck, adapt=self.adapt, channel_adapt=self.channel_adapt, spatial_adapt=self.spatial_adapt,
            nl_s=self.nl_s, nl_t=self.nl_t, nl_adapt=self.nl_adapt, temp=self.temp, w_feat=self.w_feat,
            w_channel=self.w_channel, w_spatial=self.w_spatial, w_relation=self.w_relation,
            channel_mask=self.channel_mask,
        )
