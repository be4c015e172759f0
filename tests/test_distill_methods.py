"""The KD-method interface: one registry keyed by pgd.config.names.KD_METHODS, and a new
method registered in a test is trained through the same path as every other
(docs/adding-a-kd-method.md)."""

from __future__ import annotations

import pytest
import torch

from pgd.config import defaults as D
from pgd.config.names import KD_METHODS
from pgd.config.run import DistillCommon, method_keys
from pgd.errors import ConfigError

pytestmark = pytest.mark.usefixtures("scope", "fresh_message_hub")


def test_the_registry_covers_every_method_name():
    from pgd.distill.methods import METHODS, KDMethod

    assert set(METHODS) == set(KD_METHODS)
    common = set(DistillCommon.model_fields) | {"method"}
    for name, cls in METHODS.items():
        assert issubclass(cls, KDMethod) and cls.name == name
        if name in D.BASELINE_DEFAULTS:  # a baseline's constructor takes exactly its config keys
            knobs = set().union(*(cls.knob_names(det) for det in D.BASELINE_DEFAULTS[name]))
            assert knobs == set(method_keys(name)) - common, name
    assert [n for n, c in METHODS.items() if c.external] == ["ld"]


def test_a_method_name_outside_the_name_list_or_twice_is_refused():
    from pgd.distill.methods import KDMethod, register_method

    with pytest.raises(ConfigError, match="'pgdx' is not in pgd.config.names.KD_METHODS"):
        register_method("pgdx")(type("X", (KDMethod,), {}))
    with pytest.raises(ConfigError, match="'fgd' is already registered"):
        register_method("fgd")(type("Y", (KDMethod,), {}))


def test_a_toy_method_trains_through_the_same_path(monkeypatch):
    """A toy method (one constructor knob, the neck MSE) registered in place of DeFeat, whose
    typed config section it reads: built by the distiller, its term named, its value the hand
    computation on one fixed batch, its gradient reaching the student, measured by the KD
    diagnostics, the teacher kept out of the checkpoint."""
    from pgd.distill.methods import METHODS, KDMethod, MethodContext, register_method
    from pgd.testing import build_distiller, synthetic_batch

    monkeypatch.setitem(METHODS, "defeat", METHODS["defeat"])  # restored after the test

    @register_method("defeat", replace=True)
    class NeckMSE(KDMethod):
        def __init__(self, ctx: MethodContext, *, weight: float):
            super().__init__(ctx)
            self.weight = weight

        @classmethod
        def from_config(cls, distill, ctx):
            return cls(ctx, weight=distill.w_fg)

        def forward(self, records, data_samples):
            pairs = zip(records.student.neck, records.teacher.neck)
            return {"mse": self.weight * sum(((s - t) ** 2).mean() for s, t in pairs)}

    torch.manual_seed(0)
    m = build_distiller("atss_tiny", "atss_tiny", method="defeat", w_fg=2.0, diagnostics_interval=1)
    assert isinstance(m.kd, NeckMSE) and m.kd.weight == 2.0
    data = synthetic_batch(m, n=2, h=96, w=128)
    losses = m(**data, mode="loss")
    assert {"loss_cls", "loss_bbox", "loss_defeat_mse"} <= set(losses)
    with torch.no_grad():
        s = m.student.extract_feat(data["inputs"])
        t = m.teacher.extract_feat(m.teacher_inputs(data["inputs"], data["data_samples"]))
        want = 2.0 * sum(((a - b) ** 2).mean() for a, b in zip(s, t))
    assert float(losses["loss_defeat_mse"]) == pytest.approx(float(want), rel=1e-5)
    losses["loss_defeat_mse"].backward()
    assert m.student.neck.fpn_convs[0].conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.teacher.parameters())
    diag = m.diagnostics.pop_epoch()
    assert diag["kd/ratio_loss_defeat_mse"] > 0 and "kd/fg_frac_p3" not in diag  # no fg / bg split
    assert m.mask_health is None
    assert not any(k.startswith("teacher.") for k in m.state_dict())


def test_every_pgd_key_reaches_the_core_parameters():
    """A PGD config key that no parameter object takes would be silently ignored: every key of
    PGDDistill (but the ones resolve_run folds into others) is a field of PGDMaskParams or
    PGDLossParams, and PGD.from_config copies each value."""
    from dataclasses import fields

    from pgd.config.run import PGDDistill, StrategyParams, parse_run, resolve_run
    from pgd.core.pgd_method import PGDLossParams, PGDMaskParams
    from pgd.detectors import model_config
    from pgd.distill.methods import MethodContext, method_class

    folded = {"method", "preset", "k", "strategy_params"}  # preset -> alpha, k -> k_cls / k_reg
    keys = set(PGDDistill.model_fields) - set(DistillCommon.model_fields) - folded
    core = {f.name for f in fields(PGDMaskParams)} | {f.name for f in fields(PGDLossParams)}
    assert keys | set(StrategyParams.model_fields) == core
    d = resolve_run(parse_run(dict(model="atss_tiny", distill=dict(
        teacher="atss_tiny", allow_random_teacher=True, strategy="box_gauss", alpha=0.3, k=5, xi_reg=0.4,
        branches=["neck", "reg"], topk_scope="all", strategy_params=dict(box_gauss_sigma=0.25))))).distill
    cfg = model_config("atss_tiny", 6)
    pgd = method_class("pgd").from_config(d, MethodContext("atss", cfg, cfg))
    got = {**vars(pgd.mask_params), **vars(pgd.loss_params)}
    want = {**d.model_dump(), **d.strategy_params.model_dump()}
    for key in core:
        value = want[key]
        assert got[key] == (tuple(value) if isinstance(value, list) else value), key
    assert (got["alpha"], got["beta"], got["k_cls"], got["box_gauss_sigma"]) == (0.3, 0.15, 5, 0.25)
