"""Statistics of seed-repeated results: pure functions on numbers (numpy / scipy).

A sweep repeats each configuration over seeds; a seed fixes the data order and the
initialisation, so the run of a row and the run of its baseline with the same seed form a
*pair*. Comparisons are paired: with ``d_i = x_i - y_i`` over the ``n`` seeds both share,

* mean delta          ``dbar = (1/n) sum_i d_i``
* sample std          ``s_d = sqrt( sum_i (d_i - dbar)^2 / (n - 1) )``
* 95% CI              ``dbar -/+ t_{n-1, 1-alpha/2} * s_d / sqrt(n)``       (Student t)
* paired t-test       ``T = dbar / (s_d / sqrt(n))``, ``p = 2 * (1 - F_{t, n-1}(|T|))``
* exact sign flip     ``p = #{s in {-1,+1}^n : |mean(s * d)| >= |dbar|} / 2^n``

The table's decision test is the paired t-test (``TEST_T``): its p is below ``alpha``
exactly when the CI excludes 0, so the star and the interval of a cell always agree, and it
has power with the 3-5 seeds a sweep affords. The exact sign-flip test needs no normality
assumption but cannot go below ``2 / 2^n`` (0.25 with 3 seeds, 0.0625 with 5): it is always
computed (``p_exact``) and can be chosen as the decision test (``TEST_SIGN_FLIP``).

``n = 1`` has no spread, so neither a CI nor a t p-value exists; identical differences in
every seed (zero variance) have no t statistic either. Both give NaN with the reason, never a
number made up to fill the cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

TEST_T = "t"  # paired t-test
TEST_SIGN_FLIP = "sign-flip"  # exact sign-flip permutation test (falls back to t above EXACT_MAX_N)
TESTS = (TEST_T, TEST_SIGN_FLIP)
TEST_NAMES = {TEST_T: "paired t-test (two-sided)",
              TEST_SIGN_FLIP: "exact sign-flip permutation test (two-sided, all 2^n sign vectors)"}

CORRECTION_HOLM = "holm"
CORRECTION_NONE = "none"
CORRECTIONS = (CORRECTION_HOLM, CORRECTION_NONE)

EXACT_MAX_N = 16  # 2^16 = 65536 sign vectors: enumerated in milliseconds
SEEDS_HINT_MAX = 1000  # the seed-count hint gives up beyond this many seeds


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (``ddof=1``; NaN for ``n < 2``) and count of finite values."""

    mean: float
    std: float
    n: int


def summarize(values) -> Summary:
    """``mean = sum x / n``, ``std = sqrt(sum (x - mean)^2 / (n - 1))`` over finite values."""
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Summary(math.nan, math.nan, 0)
    return Summary(float(x.mean()), float(x.std(ddof=1)) if n > 1 else math.nan, n)


@dataclass(frozen=True)
class Paired:
    """A paired comparison of ``x`` against ``y`` (``d = x - y``); see the module docstring.

    ``ci_low``/``ci_high``/``p_t`` are NaN when ``n < 2`` or the differences have zero
    variance, ``p_exact`` when ``n == 0`` or ``n > EXACT_MAX_N``; ``reason`` says why.
    """

    n: int
    delta: float
    sd: float
    ci_low: float
    ci_high: float
    p_t: float
    p_exact: float
    confidence: float
    reason: str | None = None

    @property
    def half_width(self) -> float:
        """Half-width of the CI: ``t_{n-1, 1-alpha/2} * s_d / sqrt(n)``."""
        return (self.ci_high - self.ci_low) / 2

    def p(self, test: str = TEST_T) -> float:
        """The p-value of ``test``: ``p_t``, or for the sign flip ``p_exact`` (``p_t`` when
        ``n > EXACT_MAX_N``, where the t-test's normal approximation is good)."""
        if test not in TESTS:
            raise ValueError(f"unknown test {test!r}; valid tests are: {', '.join(TESTS)}")
        if test == TEST_SIGN_FLIP and not math.isnan(self.p_exact):
            return self.p_exact
        return self.p_t


def paired(x, y, confidence: float = 0.95) -> Paired:
    """Paired comparison of two equally long sequences (the same seeds in the same order).

    Pairs where either value is NaN are dropped first.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired() needs two 1-d sequences of equal length, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    d = x[keep] - y[keep]
    n = len(d)
    nan = math.nan
    if n == 0:
        return Paired(0, nan, nan, nan, nan, nan, nan, confidence, "no seed shared with the baseline")
    delta = float(d.mean())
    p_exact = sign_flip_p(d) if n <= EXACT_MAX_N else nan
    if n == 1:
        return Paired(1, delta, nan, nan, nan, nan, p_exact, confidence,
                      "one shared seed: no spread, so no CI and no t-test")
    sd = float(d.std(ddof=1))
    if _constant(d):
        return Paired(n, delta, 0.0, nan, nan, nan, p_exact, confidence,
                      f"the {n} differences are identical (zero variance): no CI and no t-test")
    half = float(_st.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    t = delta / (sd / math.sqrt(n))
    p_t = float(2 * _st.t.sf(abs(t), n - 1))
    return Paired(n, delta, sd, delta - half, delta + half, p_t, p_exact, confidence)


def sign_flip_p(d) -> float:
    """Exact two-sided sign-flip p-value of the mean of ``d`` under H0 "d is symmetric about 0":

    ``p = #{s in {-1,+1}^n : |sum_i s_i d_i| >= |sum_i d_i|} / 2^n`` (the observed signs count).
    Ties are judged with a relative tolerance of 1e-9 so floating-point rounding of equal sums
    does not drop them. All ``d == 0`` gives ``p = 1``.
    """
    d = _finite(d)
    n = len(d)
    if n == 0:
        raise ValueError("sign_flip_p() needs at least one finite difference")
    if n > EXACT_MAX_N:
        raise ValueError(f"sign_flip_p() enumerates 2^n sign vectors; n={n} > {EXACT_MAX_N}")
    signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1)  # (2^n, n)
    sums = np.abs(signs @ d)
    obs = abs(float(d.sum()))
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    return float(np.count_nonzero(sums >= obs - tol) / 2 ** n)


def min_sign_flip_p(n: int) -> float:
    """The smallest p the exact sign-flip test can give with ``n`` pairs: ``2 / 2^n``."""
    return min(1.0, 2.0 / 2 ** n)


def adjust(pvalues, correction: str = CORRECTION_HOLM) -> np.ndarray:
    """Adjusted p-values of one family; NaN entries stay NaN and do not count in ``m``.

    ``holm``: sort the ``m`` finite p ascending, ``p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``
    (Holm 1979; rejecting ``p~ < alpha`` controls the family-wise error rate at ``alpha``).
    ``none``: the raw p-values.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; valid corrections are: {', '.join(CORRECTIONS)}")
    p = np.asarray(pvalues, dtype=float).copy()
    if correction == CORRECTION_NONE:
        return p
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m == 0:
        return p
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    p[order] = np.maximum.accumulate(scaled)
    return p


def seeds_needed(delta: float, sd: float, alpha: float = 0.05, n_max: int = SEEDS_HINT_MAX) -> int | None:
    """Rough planning figure: the smallest ``n >= 2`` with ``t_{n-1, 1-alpha/2} * sd / sqrt(n) < |delta|``,
    i.e. the seeds a paired t-test would need to call ``delta`` significant if the observed
    delta and std of the differences were the true ones (they are estimates: treat the answer
    as an order of magnitude). ``None`` when ``delta == 0``, ``sd`` is unknown, or more than
    ``n_max`` seeds would be needed.
    """
    if not (math.isfinite(delta) and math.isfinite(sd)) or delta == 0:
        return None
    for n in range(2, n_max + 1):
        if _st.t.ppf(1 - alpha / 2, n - 1) * sd / math.sqrt(n) < abs(delta):
            return n
    return None


def _finite(values) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    return x[np.isfinite(x)]


def _constant(d: np.ndarray) -> bool:
    return float(np.ptp(d)) <= 1e-12 * max(1.0, float(np.abs(d).max()))
