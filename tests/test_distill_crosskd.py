"""CrossKD (+ PKD) through PGDDistiller on the tiny GFL / ATSS / FCOS detectors."""

from __future__ import annotations

import pytest
import torch

from pgd.config.defaults import BASELINE_DEFAULTS
from pgd.config.run import parse_run, resolve_run
from pgd.detectors import model_config
from pgd.distill.baselines import build_baseline
from pgd.errors import ConfigError

pytestmark = pytest.mark.usefixtures("scope")

TERMS = {"gfl": {"cls", "reg"}, "atss": {"cls", "reg", "center"}, "fcos": {"cls", "reg"}}


def build(det, **params):
    from pgd.testing import build_distiller

    return build_distiller(f"{det}_tiny", f"{det}_tiny", method="crosskd", **params)


def batch(model, n=2, h=96, w=128):
    from pgd.testing import synthetic_batch

    return synthetic_batch(model, n=n, h=h, w=w, boxes=torch.tensor([[8.0, 16, 56, 80], [60, 40, 120, 90]]))


def kd_terms(losses):
    return {k: v for k, v in losses.items() if k.startswith("loss_crosskd_")}


@pytest.mark.parametrize("det", ["gfl", "atss", "fcos"])
def test_crosskd_step_frozen_teacher_and_kd_loss_decreases(det):
    # the tiny heads have 2 tower layers: reuse the teacher's from layer 1 on (its last conv)
    torch.manual_seed(0)
    m = build(det, reused_head_idx=1, pkd=True)
    data = batch(m)
    teacher_before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    trainable = [p for p in m.parameters() if p.requires_grad]
    assert not list(m.kd.parameters())  # CrossKD owns no parameters
    opt = torch.optim.SGD(trainable, lr=0.02, momentum=0.9)
    history, scale = [], None
    for step in range(20):
        kd = kd_terms(m(**data, mode="loss"))
        assert set(kd) == {f"loss_crosskd_{t}" for t in TERMS[det] | {"pkd"}}
        assert all(torch.isfinite(v) and v >= 0 for v in kd.values()), kd
        total = sum(kd.values())
        history.append(float(total))
        scale = scale or float(total)
        opt.zero_grad()
        (total / scale).backward()
        if step == 0:
            head = m.student.bbox_head
            # the student's layers before the reused one learn from the cross-head predictions;
            # its own layers from the reused one on are not on the KD path
            assert head.cls_convs[0].conv.weight.grad.abs().sum() > 0
            assert head.reg_convs[0].conv.weight.grad.abs().sum() > 0
            assert head.cls_convs[1].conv.weight.grad is None
            assert m.student.neck.fpn_convs[0].conv.weight.grad.abs().sum() > 0
            assert all(p.grad is None for p in m.teacher.parameters())
        torch.nn.utils.clip_grad_norm_(trainable, 35)
        opt.step()
        assert not m.teacher.training
    assert history[0] > 0 and history[-1] < 0.8 * history[0], history
    for k, v in m.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), f"teacher tensor {k} changed"


@pytest.mark.parametrize("det, idx", [("gfl", 0), ("gfl", 2), ("atss", 1), ("fcos", 1)])
def test_a_student_identical_to_its_teacher_mimics_it_exactly(det, idx):
    # same weights, same input: the cross-head predictions are the teacher's own (align_scale is
    # the identity up to its 1e-6, the ReLU does nothing on post-ReLU features), so the
    # prediction-mimicking losses vanish
    m = build(det, reused_head_idx=idx)
    m.student.load_state_dict(m.teacher.state_dict())
    m.eval()  # the same BN statistics on both sides
    data = batch(m)
    with torch.no_grad():
        kd = kd_terms(m.loss(data["inputs"], data["data_samples"]))
    assert kd["loss_crosskd_cls"].item() == pytest.approx(0.0, abs=1e-6)
    assert kd["loss_crosskd_reg"].item() == pytest.approx(0.0, abs=1e-6)  # ~0.02-0.07 for a random student


def test_the_reused_feature_is_the_layers_output_after_relu_as_the_authors_code():
    # CrossKD's code holds `cls_conv(x, activate=False)` and then calls `cls_conv.activate` on the
    # same tensor: mmcv's in-place ReLU turns the held feature into the post-ReLU output
    m = build("gfl", reused_head_idx=1)
    pre = build("gfl", reused_head_idx=1, pre_activation=True)
    pre.student.load_state_dict(m.student.state_dict())
    data = batch(m)
    m.eval()
    pre.eval()
    head = m.student.bbox_head
    with torch.no_grad():
        x = m.student.extract_feat(data["inputs"])
        held = []
        for f in x:  # the authors' procedure, on mmdet's own ConvModule
            y = head.cls_convs[0](f, activate=False)
            head.cls_convs[0].activate(y)
            held.append(y)
        with m.s_adapter.capture() as got:
            head(x)
        with pre.s_adapter.capture() as got_pre:
            pre.student.bbox_head(x)
    cap, cap_pre = got.tower[("cls", 0)], got_pre.tower[("cls", 0)]
    assert len(cap) == len(x) == 5
    assert all(torch.equal(a, b) and a.min() >= 0 for a, b in zip(cap, held))
    assert all(b.min() < 0 and torch.equal(a, b.clamp(min=0)) for a, b in zip(cap, cap_pre))


def test_crosskd_configuration_errors():
    c = model_config("gfl_tiny", 6)
    with pytest.raises(ConfigError, match="reused_head_idx=3 but the student head has 2 tower layers"):
        build_baseline("crosskd", dict(BASELINE_DEFAULTS["crosskd"]["gfl"]), c, c, "gfl")  # the released index assumes 4-conv heads
    narrow = model_config("gfl_tiny", 6)
    narrow["bbox_head"]["feat_channels"] = 32
    with pytest.raises(ConfigError, match="same feat_channels; student 32, teacher 64"):
        build_baseline("crosskd", {**BASELINE_DEFAULTS["crosskd"]["gfl"], "reused_head_idx": 1}, narrow, c, "gfl")

    def run(det):
        return parse_run(dict(model=f"{det}_tiny", distill=dict(teacher=f"{det}_tiny", allow_random_teacher=True,
                                                              method="crosskd", w_center=1.0)))

    with pytest.raises(ConfigError, match="w_center of method 'crosskd' do not apply to detector 'gfl'"):
        run("gfl")
    assert resolve_run(run("atss")).distill.w_center == 1.0
