"""KD diagnostics (pgd/distill/diagnostics.py): gradient ratios against hand computations,
mask fractions, the interval (0 = off), the report columns."""

from __future__ import annotations

import math

import pytest
import torch

from pgd.distill.diagnostics import KDDiagnostics, gradient_ratios, mask_fractions

pytestmark = pytest.mark.usefixtures("scope", "fresh_message_hub")


def test_gradient_ratio_equals_the_hand_computation():
    # theta = (w, b); L_det = (w.x + b)^2 as a list over two "levels" (x and 2x halves),
    # KD term t1 = 3 w.y (b unused), t2 = b^2
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    b = torch.tensor([0.5], requires_grad=True)
    x, y = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 4.0])
    det = {"loss_cls": [(w @ x + b).sum() ** 2, torch.zeros(())], "acc": torch.tensor(9.0)}
    kd = {"loss_x_t1": 3 * (w @ y), "loss_x_t2": (b ** 2).sum()}
    out = gradient_ratios(det, kd, [w, b])
    s = float(w @ x + b)  # 0.5
    g_det = torch.cat([2 * s * x, torch.tensor([2 * s])])  # d/dw, d/db of (w.x+b)^2
    g1 = torch.cat([3 * y, torch.zeros(1)])
    g2 = torch.tensor([0.0, 0.0, 2 * 0.5])
    assert out["gnorm_det"] == pytest.approx(float(g_det.norm()))
    assert out["ratio_loss_x_t1"] == pytest.approx(float(g1.norm() / g_det.norm()))
    assert out["ratio_loss_x_t2"] == pytest.approx(float(g2.norm() / g_det.norm()))
    assert out["ratio_kd"] == pytest.approx(float((g1 + g2).norm() / g_det.norm()))
    assert w.grad is None and b.grad is None  # autograd.grad: .grad untouched


def test_mask_fractions_per_level():
    fg = [torch.tensor([[[0.0, 0.2], [0.0, 0.0]]]), torch.zeros(1, 1, 1)]
    bg = [torch.tensor([[[0.5, 0.0], [0.3, 0.2]]]), torch.ones(1, 1, 1)]
    assert mask_fractions(fg, bg) == {"fg_frac_p3": 0.25, "bg_frac_p3": 0.75, "fg_frac_p4": 0.0, "bg_frac_p4": 1.0}


def _batch(model):
    from tests.test_distill_baselines import make_batch

    return make_batch(model)


@pytest.mark.parametrize("method", ["pgd", "fgd"])
def test_distiller_records_the_ratio_of_each_term(method):
    from pgd.testing import build_distiller, total_loss

    torch.manual_seed(0)
    m = build_distiller("atss_tiny", "atss_tiny", method=method, diagnostics_interval=1)
    data = _batch(m)
    losses = m(**data, mode="loss")
    values = m.diagnostics.pop_epoch()
    kd = {k: v for k, v in losses.items() if k.startswith(f"loss_{method}_")}
    det = {k: v for k, v in losses.items() if k not in kd}
    params = [p for p in m.student.parameters() if p.requires_grad]

    def norm(loss):
        gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return math.sqrt(sum(float((g ** 2).sum()) for g in gs if g is not None))

    n_det = norm(total_loss(det))
    assert values["kd/gnorm_det"] == pytest.approx(n_det, rel=1e-4)
    for name, v in kd.items():
        assert values[f"kd/ratio_{name}"] == pytest.approx(norm(v) / n_det, rel=1e-4, abs=1e-9)
    assert values["kd/ratio_kd"] == pytest.approx(norm(sum(kd.values())) / n_det, rel=1e-4)
    for lvl in range(3, 8):
        assert 0 <= values[f"kd/bg_frac_p{lvl}"] <= 1  # FGD's inclusive boxes can cover all of P7
        assert 0 <= values[f"kd/fg_frac_p{lvl}"] <= 1
    assert values["kd/fg_frac_p3"] > 0  # boxes of 50-80 px cover P3 cells under both methods
    assert m.diagnostics.pop_epoch() == {}  # reset


def test_interval_zero_is_off_and_the_interval_is_kept():
    from pgd.testing import build_distiller

    off = build_distiller("atss_tiny", "atss_tiny", diagnostics_interval=0)
    assert off.diagnostics is None
    diag = KDDiagnostics(2)
    assert [diag.due() for _ in range(5)] == [True, False, True, False, True]  # iterations 0..4


def test_first_iteration_of_every_epoch_is_measured():
    """Epochs shorter than the interval still get a value: the hook flags each epoch's start."""
    from types import SimpleNamespace

    from pgd.distill.diagnostics import KDDiagnosticsHook

    diag = KDDiagnostics(200)
    runner = SimpleNamespace(model=SimpleNamespace(diagnostics=diag))
    seen = []
    for _epoch in range(3):  # 48 iterations per epoch, as the smoke scale
        KDDiagnosticsHook().before_train_epoch(runner)
        seen.append(sum(diag.due() for _ in range(48)))
    assert seen == [1, 1, 1]  # iteration 0 (also a multiple of 200), then 48 and 96: epoch starts
    diag = KDDiagnostics(200)
    assert sum(diag.due() for _ in range(401)) == 3  # no epoch flag: iterations 0, 200, 400


def test_default_interval_is_documented_and_resolved():
    from pgd.config import defaults as D
    from pgd.config.run import parse_run, resolve_run

    run = resolve_run(parse_run({"model": "atss_tiny", "distill": {"teacher": "atss_tiny",
                                                                    "allow_random_teacher": True}}))
    assert run.distill.diagnostics_interval == D.KD_DIAGNOSTICS_INTERVAL > 0


def test_report_diagnostics_columns_and_column_check():
    import pandas as pd

    from pgd.config.space import ReportSpec
    from pgd.errors import ConfigError
    from pgd.reporting.tables import _metric_name, diagnostic_columns

    df = pd.DataFrame(columns=["AP", "kd/bg_frac_p3", "kd/ratio_loss_fgd_fg", "kd/fg_frac_p3", "kd/ratio_kd",
                               "kd/gnorm_det", "train/loss_cls"])
    assert diagnostic_columns(df) == ["kd/ratio_kd", "kd/ratio_loss_fgd_fg", "kd/fg_frac_p3", "kd/bg_frac_p3"]
    assert _metric_name("kd.ratio_kd") == "kd/ratio_kd" and _metric_name("train.loss_cls") == "train/loss_cls"
    assert ReportSpec(columns=["AP", "kd/ratio_kd"], diagnostics=True).diagnostics
    with pytest.raises((ValueError, ConfigError), match="kd/ratio_kd"):
        ReportSpec(columns=["AP", "ratio_kd"])
