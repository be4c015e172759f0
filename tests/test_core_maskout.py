"""Which positions the mask-out analysis removes: per GT box, the top ceil(X% |P_b|) of the
positions inside the box by quality, or as many at random (pgd.core.maskout)."""

from __future__ import annotations

import pytest
import torch

from pgd.core import maskout_counts, maskout_positions
from pgd.errors import ConfigError

# 7 positions, 2 GT boxes. Box 0 holds positions 0-3, box 1 holds 3-5; position 6 is inside
# no box (its quality 0.99 must never matter).
INSIDE = torch.tensor([[1, 0], [1, 0], [1, 0], [1, 1], [0, 1], [0, 1], [0, 0]], dtype=torch.bool)
Q = torch.tensor([[0.1, 0.0], [0.9, 0.0], [0.5, 0.0], [0.7, 0.2], [0.0, 0.8], [0.0, 0.6], [0.99, 0.99]])


def _set(mask):
    return set(torch.nonzero(mask).flatten().tolist())


def test_counts_are_ceil_of_x_percent_of_each_box():
    assert maskout_counts(INSIDE, 0).tolist() == [0, 0]
    assert maskout_counts(INSIDE, 0.5).tolist() == [1, 1]  # ceil(0.02), ceil(0.015)
    assert maskout_counts(INSIDE, 25).tolist() == [1, 1]  # 1.0 exactly stays 1; ceil(0.75) = 1
    assert maskout_counts(INSIDE, 50).tolist() == [2, 2]  # 2, ceil(1.5)
    assert maskout_counts(INSIDE, 100).tolist() == [4, 3]
    # 7 % of 100 positions is 7.000000000000001 in floating point: still 7
    assert maskout_counts(torch.ones(100, 1, dtype=torch.bool), 7).tolist() == [7]


def test_top_positions_by_hand():
    assert _set(maskout_positions(Q, INSIDE, 0)) == set()
    # box 0: highest q is position 1 (0.9); box 1: position 4 (0.8)
    assert _set(maskout_positions(Q, INSIDE, 25)) == {1, 4}
    # box 0: 1 (0.9), 3 (0.7); box 1: 4 (0.8), 5 (0.6)
    assert _set(maskout_positions(Q, INSIDE, 50)) == {1, 3, 4, 5}
    # box 0 takes 1, 3, 2 at 75 % (3 of 4); box 1 takes 4, 5, 3 (ceil 2.25 = 3)
    assert _set(maskout_positions(Q, INSIDE, 75)) == {1, 2, 3, 4, 5}
    assert _set(maskout_positions(Q, INSIDE, 100)) == {0, 1, 2, 3, 4, 5}  # never position 6


def test_ties_go_to_the_lower_index_and_empty_inputs():
    inside = torch.ones(4, 1, dtype=torch.bool)
    q = torch.tensor([[0.5], [0.7], [0.7], [0.7]])
    assert _set(maskout_positions(q, inside, 50)) == {1, 2}
    assert maskout_positions(torch.zeros(5, 0), torch.zeros(5, 0, dtype=torch.bool), 50).tolist() == [False] * 5


def test_random_control_draws_as_many_positions_from_the_same_box():
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(30):
        drop = maskout_positions(Q, INSIDE, 25, mode="random", generator=g)
        chosen = _set(drop)
        assert 6 not in chosen
        # one position of box 0 and one of box 1 (position 3 may serve both)
        assert chosen & {0, 1, 2, 3} and chosen & {3, 4, 5} and 1 <= len(chosen) <= 2
        seen.add(frozenset(chosen))
    assert len(seen) > 3  # really random
    a = maskout_positions(Q, INSIDE, 50, mode="random", generator=torch.Generator().manual_seed(7))
    b = maskout_positions(Q, INSIDE, 50, mode="random", generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)  # deterministic per seed


def test_bad_arguments():
    with pytest.raises(ConfigError, match="mask-out mode"):
        maskout_positions(Q, INSIDE, 10, mode="worst")
    with pytest.raises(ConfigError, match="percent"):
        maskout_positions(Q, INSIDE, 120)
    with pytest.raises(ConfigError, match=r"must both be \[A, G\]"):
        maskout_positions(Q[:, :1], INSIDE, 10)
