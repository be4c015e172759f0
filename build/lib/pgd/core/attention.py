"""Spatial and per-location channel attention (spec section 4, paper Eq. 7, FGD style).

Both carry gradient (the student's attention is distilled); the losses detach the
teacher's. Computed in float32, returned in the input dtype.
"""

from __future__ import annotations

import torch

from .quality import _check_tau, _check_tensor

__all__ = ["spatial_attention", "channel_attention"]


def _check_feat(name: str, feat) -> None:
    _check_tensor(name, feat, ndim=4)


def spatial_attention(feat: torch.Tensor, tau: float) -> torch.Tensor:
    """``P = H*W * softmax_(h,w)( mean_c |F| / tau )``: ``[N, C, H, W] -> [N, H, W]``.

    Each image's map sums to ``H*W``. The spec's ``mean_c`` (FGD's code) replaces the
    paper's ``sum_c``; the two differ only by the temperature (tau vs C*tau).
    """
    _check_feat("feat", feat)
    tau = _check_tau(tau)
    N, C, H, W = feat.shape
    s = feat.to(torch.float32).abs().mean(dim=1).reshape(N, H * W) / tau
    return (H * W * torch.softmax(s, dim=1)).reshape(N, H, W).to(feat.dtype)


def channel_attention(feat: torch.Tensor, tau: float) -> torch.Tensor:
    """``A = C * softmax_c( |F| / tau )`` at every location: ``[N, C, H, W] -> same``.

    Per-location (paper's modification of FGD's global channel attention); the channel
    weights of each (n, h, w) sum to ``C``.
    """
    _check_feat("feat", feat)
    tau = _check_tau(tau)
    C = feat.shape[1]
    return (C * torch.softmax(feat.to(torch.float32).abs() / tau, dim=1)).to(feat.dtype)
