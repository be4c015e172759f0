"""Which prior positions the mask-out analysis removes (paper Fig. 3, docs/analyses.md).

A *position* is one feature-map location of one FPN level (all anchors and all classes at
that location); positions of every level are concatenated in one index ``a = 0..A-1``.
For a GT box ``b`` let ``P_b = {a : centre(a) strictly inside b}`` (over all levels) and
``q(a, b)`` the location quality of paper Eq. 1 (max over the location's anchors). Then

    n_b(X)   = ceil(X / 100 * |P_b|)                       (at least one position if X > 0)
    T_b(X)   = the n_b(X) positions of P_b with the highest q(a, b)      ("top")
    R_b(X)   = n_b(X) positions drawn uniformly without replacement from P_b ("random")
    removed  = union over the image's GT boxes b of T_b(X) (or R_b(X))

so "top-X%" is taken per GT box over the positions bounded by that box, the paper's
"top-X% of all anchor positions bounded by the GT box"; the random control removes the same
number of positions from the same box. Ties in ``q`` are broken towards the lower index.
Pure torch.
"""

from __future__ import annotations

import torch

from pgd.errors import ConfigError, check_range, unknown_name

MASKOUT_MODES = ("top", "random")

__all__ = ["MASKOUT_MODES", "maskout_counts", "maskout_positions"]


def maskout_counts(inside: torch.Tensor, percent: float) -> torch.Tensor:
    """``n_b = ceil(percent / 100 * |P_b|)`` per GT box (``[G]`` long) from ``inside [A, G]``.

    ``percent`` is clamped to the box: never more positions than ``|P_b|``. A tiny relative
    tolerance keeps ``ceil`` from rounding 1.0000000001 up to 2.
    """
    check_range("percent", percent, 0.0, 100.0)
    sizes = inside.sum(dim=0).to(torch.float64)
    raw = sizes * float(percent) / 100.0
    n = torch.ceil(raw - 1e-9 * torch.clamp(raw, min=1.0))
    return torch.minimum(n, sizes).clamp(min=0).to(torch.long)


def maskout_positions(quality: torch.Tensor, inside: torch.Tensor, percent: float, *,
                      mode: str = "top", generator: torch.Generator | None = None) -> torch.Tensor:
    """``[A]`` bool: the positions to remove for one image (module docstring).

    Args:
        quality: ``[A, G]`` location quality ``q(a, b)`` of every position for every GT box
            (values outside ``P_b`` are not looked at).
        inside: ``[A, G]`` bool, ``centre(a)`` strictly inside box ``b``.
        percent: X in ``[0, 100]``.
        mode: ``top`` (highest quality first) or ``random`` (the control: as many positions,
            drawn uniformly from ``P_b`` with ``generator``).
    """
    if mode not in MASKOUT_MODES:
        raise unknown_name("mask-out mode", mode, MASKOUT_MODES)
    if quality.dim() != 2 or tuple(quality.shape) != tuple(inside.shape):
        raise ConfigError(
            f"quality {tuple(quality.shape)} and inside {tuple(inside.shape)} must both be [A, G]"
        )
    A, G = quality.shape
    drop = torch.zeros(A, dtype=torch.bool, device=quality.device)
    if A == 0 or G == 0:
        return drop
    inside = inside.bool()
    counts = maskout_counts(inside, percent)
    for g in range(G):
        n = int(counts[g])
        if n == 0:
            continue
        members = torch.nonzero(inside[:, g], as_tuple=False).flatten()
        if mode == "top":
            q = quality[members, g].detach().float()
            # stable descending sort: equal scores keep index order (lower index first)
            order = torch.sort(-q, stable=True).indices
            chosen = members[order[:n]]
        else:
            perm = torch.randperm(len(members), generator=generator).to(members.device)
            chosen = members[perm[:n]]
        drop[chosen] = True
    return drop
