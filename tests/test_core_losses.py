"""Attention maps and the PGD cls / reg losses (spec sections 4-5)."""

from __future__ import annotations

import math

import pytest
import torch

from pgd.core import (
    channel_attention,
    pgd_cls_loss,
    pgd_cls_loss_terms,
    pgd_reg_loss,
    pgd_reg_loss_terms,
    spatial_attention,
)
from pgd.errors import ConfigError


def _feats(N=2, C=4, H=3, W=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    fs = torch.randn(N, C, H, W, generator=g)
    ft = torch.randn(N, C, H, W, generator=g)
    return fs, ft


def _masks(N=2, H=3, W=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    fg = torch.rand(N, H, W, generator=g) * (torch.rand(N, H, W, generator=g) > 0.5)
    bg = (fg == 0).float()
    return fg, bg / bg.sum(dim=(1, 2), keepdim=True)


# ----------------------------------------------------------------------------- reference
def _ref_cls(fs, ft, fg, bg, alpha, beta, delta, tau, lw):
    """Spec section 5 written element by element (tiny tensors only)."""
    N, C, H, W = fs.shape

    def att(f):
        P = torch.zeros(N, H, W)
        A = torch.zeros(N, C, H, W)
        for n in range(N):
            s = [[sum(abs(f[n, c, h, w].item()) for c in range(C)) / C / tau for w in range(W)]
                 for h in range(H)]
            z = sum(math.exp(v) for row in s for v in row)
            for h in range(H):
                for w in range(W):
                    P[n, h, w] = H * W * math.exp(s[h][w]) / z
                    zc = sum(math.exp(abs(f[n, c, h, w].item()) / tau) for c in range(C))
                    for c in range(C):
                        A[n, c, h, w] = C * math.exp(abs(f[n, c, h, w].item()) / tau) / zc
        return P, A

    Ps, As = att(fs)
    Pt, At = att(ft)
    fgs = bgs = 0.0
    for n in range(N):
        for h in range(H):
            for w in range(W):
                e = sum(Pt[n, h, w] * At[n, c, h, w] * (fs[n, c, h, w] - ft[n, c, h, w]) ** 2
                        for c in range(C)).item()
                fgs += fg[n, h, w].item() * e
                bgs += bg[n, h, w].item() * e
    fea = lw * (alpha * fgs / N + beta * bgs / N)
    a = (As - At).abs().sum().item() / (N * H * W) + (Ps - Pt).abs().sum().item() / N
    return fea, delta * a


def _ref_reg(fs, ft, imp, gamma, delta, tau):
    N, C, H, W = fs.shape
    At = C * torch.softmax(ft.abs() / tau, dim=1)
    As = C * torch.softmax(fs.abs() / tau, dim=1)
    fea = att = 0.0
    count = 0
    for n in range(N):
        for h in range(H):
            for w in range(W):
                if imp[n, h, w].item() != 0:
                    count += 1
                    fea += imp[n, h, w].item() * sum(
                        At[n, c, h, w].item() * (fs[n, c, h, w] - ft[n, c, h, w]).item() ** 2
                        for c in range(C)) / C
                    att += sum(abs(As[n, c, h, w].item() - At[n, c, h, w].item()) for c in range(C))
    if count == 0:
        return 0.0, 0.0
    return gamma * fea / count, delta * att / count


# ----------------------------------------------------------------------------- attention
def test_spatial_attention_hand_value_and_sums():
    f = torch.tensor([[[[1.0, 0.0]], [[-3.0, 0.0]]]])  # N=1, C=2, H=1, W=2
    P = spatial_attention(f, 1.0)
    # mean_c |F| = (2, 0) (the paper's sum_c would give (4, 0))
    e2 = math.exp(2.0)
    torch.testing.assert_close(P, torch.tensor([[[2 * e2 / (e2 + 1), 2 / (e2 + 1)]]]))
    fs, _ = _feats(N=3, C=6, H=4, W=7)
    P = spatial_attention(fs, 0.8)
    assert P.shape == (3, 4, 7)
    torch.testing.assert_close(P.sum(dim=(1, 2)), torch.full((3,), 28.0))
    assert not torch.allclose(P, torch.ones_like(P))


def test_channel_attention_hand_value_and_sums():
    f = torch.tensor([[[[1.0]], [[-2.0]], [[0.0]]]])  # N=1, C=3, H=W=1
    A = channel_attention(f, 0.5)
    z = math.exp(2) + math.exp(4) + 1
    exp = torch.tensor([3 * math.exp(2) / z, 3 * math.exp(4) / z, 3 / z]).reshape(1, 3, 1, 1)
    torch.testing.assert_close(A, exp)
    fs, _ = _feats(N=2, C=5, H=3, W=4)
    A = channel_attention(fs, 0.8)
    assert A.shape == fs.shape
    torch.testing.assert_close(A.sum(dim=1), torch.full((2, 3, 4), 5.0))


def test_attention_fp16_finite_and_errors():
    f = torch.randn(2, 8, 4, 4).half() * 30
    assert spatial_attention(f, 0.4).dtype == torch.float16
    assert torch.isfinite(spatial_attention(f, 0.4)).all()
    assert torch.isfinite(channel_attention(f, 0.4)).all()
    for tau in (0, -1.0):
        with pytest.raises(ConfigError, match="tau"):
            spatial_attention(f, tau)
        with pytest.raises(ConfigError, match="tau"):
            channel_attention(f, tau)
    with pytest.raises(ConfigError, match="feat"):
        channel_attention(torch.rand(3, 4, 5), 0.8)


# ----------------------------------------------------------------------------- cls loss
def test_cls_loss_matches_elementwise_reference():
    fs, ft = _feats(N=2, C=3, H=2, W=3)
    fg, bg = _masks(N=2, H=2, W=3)
    terms = pgd_cls_loss_terms(fs, ft, fg, bg, 0.08, 0.04, 8e-4, 0.8, level_weight=1.25)
    fea, att = _ref_cls(fs, ft, fg, bg, 0.08, 0.04, 8e-4, 0.8, 1.25)
    assert set(terms) == {"fea", "att"}
    assert terms["fea"].item() == pytest.approx(fea, rel=1e-5)
    assert terms["att"].item() == pytest.approx(att, rel=1e-5)
    assert fea > 0 and att > 0
    loss = pgd_cls_loss(fs, ft, fg, bg, 0.08, 0.04, 8e-4, 0.8, level_weight=1.25)
    assert torch.equal(loss, terms["fea"] + terms["att"])


def test_cls_loss_weights_act_on_their_terms():
    fs, ft = _feats()
    fg, bg = _masks()
    base = pgd_cls_loss_terms(fs, ft, fg, bg, 1.0, 0.0, 1.0, 0.8)
    only_bg = pgd_cls_loss_terms(fs, ft, fg, bg, 0.0, 1.0, 1.0, 0.8)
    both = pgd_cls_loss_terms(fs, ft, fg, bg, 2.0, 3.0, 5.0, 0.8, level_weight=1.5)
    exp_fea = 1.5 * (2.0 * base["fea"] + 3.0 * only_bg["fea"])
    torch.testing.assert_close(both["fea"], exp_fea)
    torch.testing.assert_close(both["att"], 5.0 * base["att"])  # level weight not on att


def test_reg_loss_matches_elementwise_reference_and_uses_raw_importance():
    fs, ft = _feats(N=2, C=3, H=2, W=3)
    imp = torch.zeros(2, 2, 3)
    imp[0, 0, 1] = 0.7
    imp[0, 1, 2] = 1.0
    imp[1, 1, 0] = 0.3
    terms = pgd_reg_loss_terms(fs, ft, imp, 0.128, 8e-4, 0.8)
    fea, att = _ref_reg(fs, ft, imp, 0.128, 8e-4, 0.8)
    assert terms["fea"].item() == pytest.approx(fea, rel=1e-5)
    assert terms["att"].item() == pytest.approx(att, rel=1e-5)
    assert torch.equal(pgd_reg_loss(fs, ft, imp, 0.128, 8e-4, 0.8), terms["fea"] + terms["att"])
    # doubling I doubles fea but not att (S and |S| are unchanged)
    t2 = pgd_reg_loss_terms(fs, ft, 2 * imp, 0.128, 8e-4, 0.8)
    torch.testing.assert_close(t2["fea"], 2 * terms["fea"])
    torch.testing.assert_close(t2["att"], terms["att"])


def test_identical_features_give_exactly_zero():
    fs, _ = _feats()
    fg, bg = _masks()
    imp = (fg > 0).float() * 0.5
    assert pgd_cls_loss(fs, fs.clone(), fg, bg, 0.08, 0.04, 8e-4, 0.8, 2.0).item() == 0.0
    assert pgd_reg_loss(fs, fs.clone(), imp, 0.128, 8e-4, 0.8).item() == 0.0
    assert pgd_cls_loss(fs, fs + 0.1, fg, bg, 0.08, 0.04, 8e-4, 0.8).item() > 0


def test_reg_loss_empty_selection_is_zero_with_grad_path():
    fs, ft = _feats()
    fs.requires_grad_(True)
    terms = pgd_reg_loss_terms(fs, ft, torch.zeros(2, 3, 5), 0.128, 8e-4, 0.8)
    loss = terms["fea"] + terms["att"]
    assert loss.item() == 0.0 and terms["fea"].item() == 0.0 and terms["att"].item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert fs.grad is not None and torch.equal(fs.grad, torch.zeros_like(fs))


def test_gradients_reach_only_student():
    fs, ft = _feats()
    fs.requires_grad_(True)
    ft.requires_grad_(True)
    fg, bg = _masks()
    fg.requires_grad_(True)
    imp = (fg.detach() > 0).float()
    loss = pgd_cls_loss(fs, ft, fg, bg, 0.08, 0.04, 8e-4, 0.8) + pgd_reg_loss(
        fs, ft, imp, 0.128, 8e-4, 0.8)
    loss.backward()
    assert ft.grad is None and fg.grad is None
    assert fs.grad is not None and fs.grad.abs().sum() > 0


def test_student_attention_carries_gradient():
    # with alpha = beta = 0 only the attention term is left: it must still train the student
    fs, ft = _feats()
    fs.requires_grad_(True)
    fg, bg = _masks()
    pgd_cls_loss(fs, ft, fg, bg, 0.0, 0.0, 1.0, 0.8).backward()
    assert fs.grad.abs().sum() > 0
    fs.grad = None
    pgd_reg_loss(fs, ft, (fg > 0).float(), 0.0, 1.0, 0.8).backward()
    assert fs.grad.abs().sum() > 0
    # C = 1: channel attention is identically 1, so any gradient comes from P^S
    f1 = fs.detach()[:, :1].clone().requires_grad_(True)
    pgd_cls_loss(f1, ft[:, :1], fg, bg, 0.0, 0.0, 1.0, 0.8).backward()
    assert f1.grad.abs().sum() > 0


def test_masks_do_not_mix_across_the_batch():
    fs, ft = _feats(N=2)
    ft[0] = fs[0]  # image 0: student == teacher; image 1 differs
    fg = torch.zeros(2, 3, 5)
    fg[0] = 1.0 / 15  # only image 0 has foreground
    bg = torch.zeros(2, 3, 5)
    t = pgd_cls_loss_terms(fs, ft, fg, bg, 1.0, 1.0, 0.0, 0.8)
    assert t["fea"].item() == 0.0  # a mask broadcast over the batch would pick up image 1
    fg2 = torch.zeros(2, 3, 5)
    fg2[1] = 1.0 / 15
    t2 = pgd_cls_loss_terms(fs, ft, fg2, bg, 1.0, 1.0, 0.0, 0.8)
    t_single = pgd_cls_loss_terms(fs[1:], ft[1:], fg2[1:], bg[1:], 1.0, 1.0, 0.0, 0.8)
    torch.testing.assert_close(t2["fea"], t_single["fea"] / 2)  # (1/N) sum over images
    imp = torch.zeros(2, 3, 5)
    imp[0] = 1.0
    assert pgd_reg_loss_terms(fs, ft, imp, 1.0, 0.0, 0.8)["fea"].item() == 0.0
    imp1 = torch.zeros(2, 3, 5)
    imp1[1] = 1.0
    assert pgd_reg_loss_terms(fs, ft, imp1, 1.0, 0.0, 0.8)["fea"].item() > 0.0
    with pytest.raises(ConfigError, match=r"fg.*\(1, 3, 5\)"):
        pgd_cls_loss(fs, ft, fg[:1], bg, 1.0, 1.0, 0.0, 0.8)


def test_losses_fp16_finite():
    fs, ft = _feats(N=2, C=16, H=6, W=6)
    fs, ft = (fs * 5).half().requires_grad_(True), (ft * 5).half()
    fg, bg = _masks(N=2, H=6, W=6)
    c = pgd_cls_loss(fs, ft, fg.half(), bg.half(), 0.08, 0.04, 8e-4, 0.4)
    r = pgd_reg_loss(fs, ft, (fg > 0).half(), 0.128, 8e-4, 0.4)
    assert c.dtype == torch.float16 and r.dtype == torch.float16
    assert torch.isfinite(c) and torch.isfinite(r) and c.item() > 0 and r.item() > 0
    (c + r).backward()
    assert torch.isfinite(fs.grad).all()
    c32 = pgd_cls_loss(fs.detach().float(), ft.float(), fg, bg, 0.08, 0.04, 8e-4, 0.4)
    assert c.item() == pytest.approx(c32.item(), rel=1e-2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(alpha=-0.1), "alpha"),
        (dict(beta=-1), "beta"),
        (dict(delta=-8e-4), "delta"),
        (dict(level_weight=-1.0), "level_weight"),
        (dict(tau=0.0), "tau"),
        (dict(tau=-0.8), "tau"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(feat_t=torch.rand(2, 4, 3, 4)), "feat_t"),
        (dict(feat_s=torch.rand(4, 3, 5)), "feat_s"),
        (dict(bg=torch.rand(2, 5, 3)), "bg"),
    ],
)
def test_cls_loss_errors(kwargs, match):
    fs, ft = _feats()
    fg, bg = _masks()
    args = dict(feat_s=fs, feat_t=ft, fg=fg, bg=bg, alpha=0.08, beta=0.04, delta=8e-4, tau=0.8)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        pgd_cls_loss(**args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gamma=-0.1), "gamma"),
        (dict(delta=-1.0), "delta"),
        (dict(tau=0), "tau"),
        (dict(reg_importance=torch.rand(2, 3)), "reg_importance"),
        (dict(feat_t=torch.rand(2, 4, 3, 6)), "feat_t"),
    ],
)
def test_reg_loss_errors(kwargs, match):
    fs, ft = _feats()
    args = dict(feat_s=fs, feat_t=ft, reg_importance=torch.rand(2, 3, 5), gamma=0.1,
                delta=8e-4, tau=0.8)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        pgd_reg_loss(**args)
