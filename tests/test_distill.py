"""The PGD distiller on all five detectors, and the adapter bugs of the released code."""

from __future__ import annotations

import pytest
import torch

from pgd.config.run import parse_run, resolve_run
from pgd.detectors import model_config
from pgd.errors import ConfigError

pytestmark = pytest.mark.usefixtures("scope")

DETECTORS = ["atss", "fcos", "gfl", "ddod", "autoassign"]


def make_batch(model, n=2, h=160, w=192, empty_last=False):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(0)
    imgs = [torch.randint(0, 255, (3, h, w), dtype=torch.uint8, generator=g) for _ in range(n)]
    samples = []
    boxes = torch.tensor([[10.0, 20, 60, 90], [80, 70, 150, 150], [100, 10, 180, 60]])
    for i in range(n):
        s = DetDataSample()
        s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0)))
        k = 0 if (empty_last and i == n - 1) else 3 - i
        s.gt_instances = InstanceData(bboxes=boxes[:k] + i, labels=torch.tensor([1, 3, 5])[:k])
        samples.append(s)
    return model.data_preprocessor(dict(inputs=imgs, data_samples=samples), True)


def build_distiller(det, student="tiny", teacher="tiny", **distill):
    from pgd.testing import build_distiller as build

    return build(f"{det}_{student}", f"{det}_{teacher}", **distill)


def kd_terms(losses):
    return {k: v for k, v in losses.items() if k.startswith("loss_pgd_")}


@pytest.mark.parametrize("det", DETECTORS)
def test_distillation_step_and_imitation(det):
    torch.manual_seed(0)
    m = build_distiller(det)
    data = make_batch(m)
    teacher_before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    params = [p for p in m.parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in m.teacher.parameters())
    opt = torch.optim.SGD(params, lr=0.005, momentum=0.9)
    history = []
    for _ in range(20):
        losses = m(**data, mode="loss")
        kd = kd_terms(losses)
        assert set(kd) == {"loss_pgd_cls_fea", "loss_pgd_cls_att", "loss_pgd_reg_fea", "loss_pgd_reg_att"}
        assert all(torch.isfinite(v) and v > 0 for v in kd.values()), kd
        total = sum(v if isinstance(v, torch.Tensor) else sum(v) for k, v in losses.items() if "loss" in k)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 35)
        opt.step()
        history.append(float(sum(kd.values())))
        assert not m.teacher.training
    assert history[-1] < 0.5 * history[0], history
    for k, v in m.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), f"teacher tensor {k} changed"


def test_branches_and_channel_mismatch_adapter():
    # tiny student (64-channel head/FPN) <- mbv2 teacher (256 channels): 1x1 adapters
    m = build_distiller("atss", student="tiny", teacher="mbv2", branches=["neck", "reg"])
    assert sorted(m.kd.align.keys()) == sorted([f"neck_{i}" for i in range(5)] + [f"reg_{i}" for i in range(5)])
    losses = m(**make_batch(m), mode="loss")
    assert set(kd_terms(losses)) == {"loss_pgd_neck_fea", "loss_pgd_neck_att", "loss_pgd_reg_fea", "loss_pgd_reg_att"}
    sum(kd_terms(losses).values()).backward()
    assert m.kd.align["neck_0"].weight.grad.abs().sum() > 0


def test_teacher_not_in_checkpoint_and_kept_on_load(tmp_path):
    m = build_distiller("fcos")
    state = m.state_dict()
    assert state and not any(k.startswith("teacher.") for k in state)
    assert any(k.startswith("student.") for k in state)
    teacher = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    from mmengine.runner.checkpoint import load_state_dict

    load_state_dict(m, state, strict=True)  # no missing-key error for the teacher
    assert all(torch.equal(v, teacher[k]) for k, v in m.teacher.state_dict().items())


def test_teacher_checkpoint_and_inheritance(tmp_path):
    from mmdet.registry import MODELS

    teacher = MODELS.build(model_config("gfl_tiny", 6))
    teacher.init_weights()
    ckpt = tmp_path / "teacher.pth"
    torch.save({"state_dict": teacher.state_dict(), "meta": {}}, ckpt)
    m = build_distiller("gfl", teacher_checkpoint=str(ckpt))  # inherit_teacher_neck_head: default
    assert m.distill_cfg["inherit_teacher_neck_head"] is True
    for k, v in teacher.state_dict().items():
        assert torch.equal(m.teacher.state_dict()[k], v)
    # neck and head inherited, backbone not
    assert torch.equal(m.student.bbox_head.gfl_cls.weight, teacher.bbox_head.gfl_cls.weight)
    assert torch.equal(m.student.neck.fpn_convs[0].conv.weight, teacher.neck.fpn_convs[0].conv.weight)
    assert not torch.equal(m.student.backbone.conv1.weight, teacher.backbone.conv1.weight)


def test_teacher_inputs_are_renormalised():
    # fcos_r50 (caffe: BGR, mean only) teacher for an fcos_tiny (RGB, mean/std) student
    from mmdet.registry import MODELS

    m = build_distiller("fcos", teacher="r50")
    raw = [torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8) for _ in range(2)]
    from mmdet.structures import DetDataSample

    samples = []
    for hw in ((64, 96), (50, 70)):
        smp = DetDataSample()
        smp.set_metainfo(dict(img_shape=hw, ori_shape=hw, scale_factor=(1.0, 1.0)))
        samples.append(smp)
    raw[1] = raw[1][:, :50, :70]
    s_batch = m.data_preprocessor(dict(inputs=raw, data_samples=samples), False)
    t_pre = MODELS.build(model_config("fcos_r50", 6)["data_preprocessor"])
    t_batch = t_pre(dict(inputs=raw, data_samples=samples), False)
    mine = m.teacher_inputs(s_batch["inputs"], s_batch["data_samples"])
    assert torch.allclose(mine, t_batch["inputs"], atol=1e-3)


def _pgd(det="atss", data=None, **distill):
    return resolve_run(parse_run(dict(model=f"{det}_r50", data=data or {"kind": "coco", "root": "/d"},
                                      distill=dict(teacher=f"{det}_r101", allow_random_teacher=True, **distill)))).distill


def test_unknown_strategy_and_branch_rejected():
    with pytest.raises(ConfigError, match="distill.strategy='gauss' is not one of the valid choices: box, box_gauss"):
        _pgd(strategy="gauss")
    with pytest.raises(ConfigError, match=r"distill.branches\[0\]='head' is not one of the valid choices: neck, cls, reg"):
        _pgd(branches=["head"])
    with pytest.raises(ConfigError, match="teacher_checkpoint is required"):
        parse_run(dict(model="atss_r50", distill=dict(teacher="atss_r101")))


def test_defaults_follow_the_spec_table():
    r = _pgd()
    assert (r.alpha, r.beta, r.gamma, r.tau, r.k_cls, r.delta) == (0.08, 0.04, 0.08 * 1.6, 0.8, 9, 8e-4)
    r = _pgd("autoassign", alpha=0.1)
    assert (r.alpha, r.beta, r.tau, r.k_reg) == (0.1, 0.05, 0.4, 30)
    assert _pgd("ddod", data={"kind": "crowdhuman", "root": "/d"}).alpha == 0.001


@pytest.mark.parametrize("teacher", ["tiny", "mbv2"])
def test_a_seed_gives_the_pgd_student_the_plain_students_init(teacher):
    """Paired seeds (docs/main-job.md): building the teacher and the KD modules does not move
    the RNG the student's init_weights() draws from, so a PGD run of seed s starts from the
    plain student of seed s (before neck/head inheritance), with or without channel adapters."""
    from mmdet.registry import MODELS

    torch.manual_seed(7)
    plain = MODELS.build(model_config("atss_tiny", 6))
    plain.init_weights()
    torch.manual_seed(7)
    m = build_distiller("atss", teacher=teacher, inherit_teacher_neck_head=False)
    for k, v in plain.state_dict().items():
        assert torch.equal(v, m.student.state_dict()[k]), k
