"""The table statistics against scipy and numbers computed by hand on fixed arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from pgd.reporting.stats import (
    TEST_SIGN_FLIP,
    TEST_T,
    adjust,
    min_sign_flip_p,
    paired,
    seeds_needed,
    sign_flip_p,
    summarize,
)

STUDENT = np.array([6.13, 3.66, 5.37])  # the seed spread of issue 12's plain student


def test_summary_is_mean_and_sample_std():
    s = summarize([39.0, 40.0, float("nan")])
    assert (s.mean, s.n) == (39.5, 2)
    assert s.std == pytest.approx(math.sqrt(0.5))  # ddof=1: ((0.5^2 + 0.5^2) / 1) ** 0.5
    one = summarize([7.4])
    assert one.n == 1 and one.mean == 7.4 and math.isnan(one.std)


def test_paired_by_hand():
    # d = (1, 2, 3): mean 2, sd 1, T = 2 / (1 / sqrt 3) = sqrt 12; for 2 degrees of freedom
    # the t CDF is 1/2 + t / (2 sqrt(t^2 + 2)), so p = 1 - sqrt(12 / 14)
    r = paired([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    assert (r.n, r.delta, r.sd) == (3, 2.0, 1.0)
    assert r.p_t == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-9)
    half = 4.302652729911275 / math.sqrt(3)  # t_{2, 0.975} from tables
    assert (r.ci_low, r.ci_high) == pytest.approx((2 - half, 2 + half), rel=1e-9)
    assert r.half_width == pytest.approx(half)
    # sums of (+-1, +-2, +-3) reach |6| only with all signs equal: 2 of 8 vectors
    assert r.p_exact == 0.25 and r.reason is None


def test_paired_matches_scipy():
    rng = np.random.default_rng(0)
    y = rng.normal(40, 1.5, 6)
    x = y + rng.normal(0.4, 0.3, 6)
    r = paired(x, y)
    ref = st.ttest_rel(x, y)
    assert r.p_t == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    perm = st.permutation_test((x, y), lambda a, b, axis: np.mean(a - b, axis=axis), vectorized=True,
                               permutation_type="samples", alternative="two-sided", n_resamples=np.inf)
    assert r.p_exact == pytest.approx(perm.pvalue, rel=1e-12)
    assert r.p(TEST_SIGN_FLIP) == r.p_exact and r.p(TEST_T) == r.p_t


def test_sign_flip_by_hand_and_against_scipy():
    # |d| = (1, 1, 2, 3), sum 5: +-1 +-1 +-2 +-3 reaches >= 5 with all plus (7) or one 1 flipped
    # (5, twice): 3 vectors, and their mirror images: 6 of 16
    d = np.array([1.0, -1.0, 2.0, 3.0])
    assert sign_flip_p(d) == 6 / 16
    perm = st.permutation_test((d,), lambda a, axis: np.mean(a, axis=axis), vectorized=True,
                               permutation_type="samples", alternative="two-sided", n_resamples=np.inf)
    assert sign_flip_p(d) == pytest.approx(perm.pvalue)
    assert sign_flip_p([0.0, 0.0, 0.0]) == 1.0
    assert sign_flip_p([0.1 + 0.2, 0.3]) == 0.5  # 0.1 + 0.2 != 0.3 in floats: the tie still counts
    assert min_sign_flip_p(3) == 0.25 and min_sign_flip_p(6) == 2 / 64


def test_paired_is_significant_where_unpaired_is_not():
    pgd = STUDENT + np.array([0.5, 0.6, 0.4])  # a small gain, the same in every seed
    unpaired = st.ttest_ind(pgd, STUDENT)
    assert unpaired.pvalue > 0.5  # the seed spread (std 1.3) swamps a 0.5 gain
    r = paired(pgd, STUDENT)
    assert r.p_t == pytest.approx(st.ttest_rel(pgd, STUDENT).pvalue)
    assert r.p_t < 0.05 and r.ci_low > 0
    assert r.delta == pytest.approx(0.5) and r.sd == pytest.approx(0.1)


def test_one_seed_gives_no_p_value_and_says_why():
    r = paired([42.5], [38.2])
    assert r.n == 1 and r.delta == pytest.approx(4.3)
    assert math.isnan(r.p_t) and math.isnan(r.ci_low) and math.isnan(r.ci_high)
    assert "one shared seed" in r.reason
    assert r.p_exact == 1.0  # the sign flip of one pair: both signs reach |d|


def test_zero_variance_gives_no_t_and_says_why():
    r = paired([6.0, 7.0, 8.0], [5.0, 6.0, 7.0])
    assert r.sd == 0.0 and math.isnan(r.p_t) and math.isnan(r.ci_low)
    assert "zero variance" in r.reason
    assert r.p_exact == 0.25  # still exact: only the two all-equal sign vectors reach 3


def test_nan_pairs_are_dropped_and_nothing_shared_says_so():
    r = paired([1.0, float("nan"), 3.0], [0.0, 1.0, float("nan")])
    assert r.n == 1 and r.delta == 1.0
    none = paired([float("nan")], [1.0])
    assert none.n == 0 and "no seed shared" in none.reason
    with pytest.raises(ValueError, match="equal length"):
        paired([1.0, 2.0], [1.0])


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.20 -> 4 * 0.01, 3 * 0.03, max(0.09, 2 * 0.04), max(0.09, 0.20)
    assert adjust([0.01, 0.04, 0.03, 0.20]) == pytest.approx([0.04, 0.09, 0.09, 0.20])
    adj = adjust([0.01, float("nan"), 0.04])  # NaN does not count in m
    assert adj[0] == pytest.approx(0.02) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.04)
    assert adjust([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert adjust([0.01, 0.04], "none") == pytest.approx([0.01, 0.04])
    with pytest.raises(ValueError, match="bonferroni"):
        adjust([0.1], "bonferroni")


def test_seed_count_hint_by_hand():
    # delta = sd = 1: t_{n-1, 0.975} / sqrt(n) = 8.98, 2.48, 1.59, 1.24, 1.05, 0.925 for n = 2..7
    assert seeds_needed(1.0, 1.0) == 7
    assert seeds_needed(-1.0, 1.0) == 7
    assert seeds_needed(4.5, 0.1) == 2
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(1.0, float("nan")) is None
    assert seeds_needed(0.01, 10.0) is None  # more than 1000 seeds
