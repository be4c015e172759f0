"""The level-concatenated PGD losses equal the per-level sums (values and gradients)."""

from __future__ import annotations

import pytest
import torch

from pgd.core import pgd_cls_loss_terms, pgd_reg_loss_terms
from pgd.core.losses import pgd_cls_loss_levels, pgd_reg_loss_levels
from pgd.errors import ConfigError

SIZES = [(10, 12), (5, 6), (3, 3), (2, 2), (1, 1)]


def _feats(seed, N=2, C=8):
    g = torch.Generator().manual_seed(seed)
    fs = [torch.randn(N, C, h, w, generator=g, dtype=torch.float64).float().requires_grad_() for h, w in SIZES]
    ft = [torch.randn(N, C, h, w, generator=g) * 1.5 for h, w in SIZES]
    P = sum(h * w for h, w in SIZES)
    return fs, ft, g, P


def _split(m, N):
    out, i = [], 0
    for h, w in SIZES:
        out.append(m[:, i:i + h * w].reshape(N, h, w))
        i += h * w
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cls_levels_equal_sum_of_levels(seed):
    fs, ft, g, P = _feats(seed)
    fg = torch.rand(2, P, generator=g) * (torch.rand(2, P, generator=g) > 0.7)
    bg = torch.rand(2, P, generator=g)
    lw = [1.0, 0.5, 2.0, 0.0, 1.5]
    got = pgd_cls_loss_levels(fs, ft, fg, bg, 0.08, 0.04, 0.03, 0.8, lw)
    ref = {"fea": 0.0, "att": 0.0}
    for lvl, (m_fg, m_bg) in enumerate(zip(_split(fg, 2), _split(bg, 2))):
        t = pgd_cls_loss_terms(fs[lvl], ft[lvl], m_fg, m_bg, 0.08, 0.04, 0.03, 0.8, level_weight=lw[lvl])
        ref = {k: ref[k] + t[k] for k in ref}
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-7)
    g1 = torch.autograd.grad(got["fea"] + got["att"], fs)
    g2 = torch.autograd.grad(ref["fea"] + ref["att"], fs)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1])
def test_reg_levels_equal_sum_of_levels_with_empty_levels(seed):
    fs, ft, g, P = _feats(seed)
    imp = torch.rand(2, P, generator=g) * (torch.rand(2, P, generator=g) > 0.8)
    imp[:, 120:150] = 0  # level 1 empty
    got = pgd_reg_loss_levels(fs, ft, imp, 1.6, 0.03, 0.8)
    ref = {"fea": 0.0, "att": 0.0}
    for lvl, m in enumerate(_split(imp, 2)):
        t = pgd_reg_loss_terms(fs[lvl], ft[lvl], m, 1.6, 0.03, 0.8)
        ref = {k: ref[k] + t[k] for k in ref}
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-7)
    g1 = torch.autograd.grad(got["fea"] + got["att"], fs)
    g2 = torch.autograd.grad(ref["fea"] + ref["att"], fs)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    zero = pgd_reg_loss_levels(fs, ft, torch.zeros(2, P), 1.6, 0.03, 0.8)
    assert zero["fea"].item() == 0 and zero["att"].item() == 0 and zero["fea"].requires_grad


def test_levels_refuse_bad_masks():
    fs, ft, g, P = _feats(0)
    with pytest.raises(ConfigError, match="levels concatenated"):
        pgd_reg_loss_levels(fs, ft, torch.zeros(2, P - 1), 1.0, 1.0, 1.0)
    with pytest.raises(ConfigError, match="level_weights"):
        pgd_cls_loss_levels(fs, ft, torch.zeros(2, P), torch.zeros(2, P), 1, 1, 1, 1, [1.0])


@pytest.mark.parametrize("branch", ["cls", "reg"])
def test_levels_gradient_of_each_term_equals_per_level(branch):
    """The hand-written backward of ``_FeatureAttentionTerms``: each term's own gradient."""
    fs, ft, g, P = _feats(3)
    if branch == "cls":
        fg = torch.rand(2, P, generator=g) * (torch.rand(2, P, generator=g) > 0.7)
        bg = torch.rand(2, P, generator=g)
        lw = [1.0, 0.5, 2.0, 0.0, 1.5]
        got = pgd_cls_loss_levels(fs, ft, fg, bg, 0.08, 0.04, 0.03, 0.8, lw)
        per = [pgd_cls_loss_terms(fs[i], ft[i], a, b, 0.08, 0.04, 0.03, 0.8, level_weight=lw[i])
               for i, (a, b) in enumerate(zip(_split(fg, 2), _split(bg, 2)))]
    else:
        imp = torch.rand(2, P, generator=g) * (torch.rand(2, P, generator=g) > 0.8)
        got = pgd_reg_loss_levels(fs, ft, imp, 1.6, 0.03, 0.8)
        per = [pgd_reg_loss_terms(fs[i], ft[i], m, 1.6, 0.03, 0.8) for i, m in enumerate(_split(imp, 2))]
    for term in ("fea", "att"):
        g1 = torch.autograd.grad(2.5 * got[term], fs, retain_graph=True)
        g2 = torch.autograd.grad(2.5 * sum(t[term] for t in per), fs, retain_graph=True)
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("spatial", [True, False])
def test_feature_attention_terms_gradcheck(spatial):
    from pgd.core.losses import _FeatureAttentionTerms, _spatial_from_abs

    g = torch.Generator().manual_seed(0)
    sizes = [6, 4, 1]
    N, C, P = 2, 3, sum(sizes)
    fs = torch.randn(N, C, P, generator=g, dtype=torch.float64).requires_grad_()
    ft = torch.randn(N, C, P, generator=g, dtype=torch.float64)
    s_t = torch.softmax(ft.abs() / 0.7, dim=1)
    w_fea = torch.rand(N, P, generator=g, dtype=torch.float64)
    w_att = torch.rand(P, generator=g, dtype=torch.float64) if spatial else torch.rand(N, P, generator=g,
                                                                                       dtype=torch.float64)
    p_t = _spatial_from_abs(ft.abs(), sizes, 0.7)[0] if spatial else None

    def fn(x):
        return _FeatureAttentionTerms.apply(x, ft, s_t, w_fea, w_att, p_t, 0.3, sizes, 0.7)

    assert torch.autograd.gradcheck(fn, (fs,), eps=1e-6, atol=1e-6)
