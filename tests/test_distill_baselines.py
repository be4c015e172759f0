"""The KD baselines (FGD, DeFeat, FRS, FGFI, FKD via PGDDistiller; LD via mmdet's own
KnowledgeDistillationSingleStageDetector) on the tiny detectors with a random teacher."""

from __future__ import annotations

import pytest
import torch

from pgd.config.defaults import BASELINE_DEFAULTS
from pgd.config.run import parse_run, resolve_run
from pgd.detectors import model_config
from pgd.distill.baselines import build_baseline
from pgd.errors import ConfigError

pytestmark = pytest.mark.usefixtures("scope", "fresh_message_hub")

CASES = [(m, d) for m in ("fgd", "defeat", "frs", "fgfi", "fkd") for d in BASELINE_DEFAULTS[m]]
TERMS = {
    "fgd": {"fg", "bg", "att", "global"},
    "defeat": {"fg", "bg"},
    "frs": {"feat", "cls"},
    "fgfi": {"feat"},
    "fkd": {"feat", "channel", "spatial", "relation"},
}


def make_batch(model, n=2, h=128, w=160, empty_last=False):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(0)
    imgs = [torch.randint(0, 255, (3, h, w), dtype=torch.uint8, generator=g) for _ in range(n)]
    boxes = torch.tensor([[8.0, 16, 56, 80], [70, 60, 150, 124], [96, 8, 150, 50]])
    samples = []
    for i in range(n):
        s = DetDataSample()
        s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0)))
        k = 0 if empty_last and i == n - 1 else 3 - i
        s.gt_instances = InstanceData(bboxes=boxes[:k] + i, labels=torch.tensor([1, 3, 5])[:k])
        samples.append(s)
    return model.data_preprocessor(dict(inputs=imgs, data_samples=samples), True)


def build(det, method, teacher_cfg=None, **params):
    from pgd.testing import build_distiller

    extra = {"teacher_config": teacher_cfg} if teacher_cfg is not None else {}
    return build_distiller(f"{det}_tiny", f"{det}_tiny", method=method, **params, **extra)


# FRS ramps its terms in over 500 iterations and FGFI imitates only after 400 (their authors'
# schedules); the step tests below start at iteration 0, so they switch those off.
NO_WARMUP = {"frs": {"ramp_iters": 0}, "fgfi": {"warm_iters": 0}}


def kd_terms(losses, method):
    return {k: v for k, v in losses.items() if k.startswith(f"loss_{method}_")}


@pytest.mark.parametrize("method, det", CASES, ids=[f"{m}-{d}" for m, d in CASES])
def test_step_names_frozen_teacher_and_kd_loss_decreases(method, det):
    torch.manual_seed(0)
    m = build(det, method, **NO_WARMUP.get(method, {}))
    if method == "fgd":  # the distiller leaves FGD's zero-initialised GcBlock output conv at zero
        assert m.kd.gc_s[0].channel_add[-1].weight.abs().sum() == 0
    data = make_batch(m)
    teacher_before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    kd_params = list(m.kd.parameters())
    assert kd_params and {id(p) for p in kd_params} <= {id(p) for p in m.parameters()}
    trainable = [p for p in m.parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in m.teacher.parameters())
    opt = torch.optim.SGD(trainable, lr=0.02, momentum=0.9)
    history, scale = [], None
    for step in range(11):
        losses = m(**data, mode="loss")
        kd = kd_terms(losses, method)
        assert set(kd) == {f"loss_{method}_{t}" for t in TERMS[method]}
        assert all(torch.isfinite(v) and v >= 0 for v in kd.values()), kd
        total = sum(kd.values())
        history.append(float(total))
        scale = scale or float(total)
        opt.zero_grad()
        (total / scale).backward()  # SGD on the KD loss alone, made scale-free
        if step == 0:
            assert all(p.grad is not None for p in kd_params)  # adapters / blocks train
            assert m.student.neck.fpn_convs[0].conv.weight.grad.abs().sum() > 0
            assert all(p.grad is None for p in m.teacher.parameters())
        torch.nn.utils.clip_grad_norm_(trainable, 35)
        opt.step()
        assert not m.teacher.training
    assert history[0] > 0 and history[-1] < 0.8 * history[0], history
    for k, v in m.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), f"teacher tensor {k} changed"


@pytest.mark.parametrize("method", ["fgd", "defeat", "frs", "fgfi", "fkd"])
def test_narrower_teacher_and_an_image_without_boxes(method):
    t = model_config("atss_tiny", 6)
    t["neck"]["out_channels"] = 96
    t["bbox_head"]["in_channels"] = 96
    m = build("atss", method, teacher_cfg=t, **NO_WARMUP.get(method, {}))
    adapt = m.kd.align if method == "fgd" else m.kd.adapt
    assert len(adapt) == 5 and adapt[0].out_channels == 96 and adapt[0].in_channels == 64
    kd = kd_terms(m(**make_batch(m, empty_last=True), mode="loss"), method)
    assert kd and all(torch.isfinite(v) and v > 0 for v in kd.values()), kd


def _samples(boxes, img_shape, batch_shape):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    s = DetDataSample()
    s.set_metainfo(dict(img_shape=img_shape, batch_input_shape=batch_shape, pad_shape=batch_shape))
    s.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32), labels=torch.zeros(len(boxes)).long())
    return [s]


def test_fgd_masks_use_the_padded_batch_shape():
    cfg = model_config("atss_tiny", 6)
    kd = build_baseline("fgd", dict(BASELINE_DEFAULTS["fgd"]["atss"]), cfg, cfg, "atss")
    # a 32x64 image padded to 64x64; the P3 map is 8x8. Box (0, 0, 16, 16) -> cells (0, 0, 2, 2):
    # FGD's inclusive rule covers rows and columns 0..2, 9 cells of 1/9.
    feats = [torch.zeros(1, 64, 8, 8), torch.zeros(1, 64, 4, 4)]
    samples = _samples([[0, 0, 16, 16]], (32, 64), (64, 64))
    fg, bg = kd.masks(samples, feats)
    expect = torch.zeros(8, 8)
    expect[:3, :3] = 1 / 9
    assert torch.allclose(fg[0][0], expect)
    p4 = torch.zeros(4, 4)
    p4[:2, :2] = 1 / 4  # (0, 0, 1, 1) on P4: cells 0..1
    assert torch.allclose(fg[1][0], p4)
    assert bg[0][0].sum().item() == pytest.approx(1.0) and bg[0][0, 0, 0] == 0
    # the authors' code maps y with the unpadded height 32: y2 = 16 / 32 * 8 = 4 -> rows 0..4
    # (a box twice too tall), weight 1 / (5 * 3)
    code = build_baseline("fgd", {**BASELINE_DEFAULTS["fgd"]["atss"], "padded_shape": False}, cfg, cfg, "atss")
    fg_code, _ = code.masks(samples, feats)
    expect = torch.zeros(8, 8)
    expect[:5, :3] = 1 / 15
    assert torch.allclose(fg_code[0][0], expect)


def test_defeat_masks_put_each_box_on_its_fpn_level():
    cfg = model_config("atss_tiny", 6)
    kd = build_baseline("defeat", dict(BASELINE_DEFAULTS["defeat"]["atss"]), cfg, cfg, "atss")
    sizes = [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    feats = [torch.zeros(1, 64, h, w) for h, w in sizes]
    strides = [(8.0, 8.0), (16.0, 16.0), (32.0, 32.0), (64.0, 64.0), (128.0, 128.0)]
    # sqrt(area) 40 -> P3 (< 112), 150 -> P4 ([112, 224))
    masks = kd.masks(_samples([[8, 8, 48, 48], [96, 96, 246, 246]], (256, 256), (256, 256)), feats, strides)
    p3 = torch.zeros(32, 32)
    p3[1:6, 1:6] = 1  # x 1..6 cells -> columns 1..5
    assert torch.equal(masks[0][0], p3)
    p4 = torch.zeros(16, 16)
    p4[6:16, 6:16] = 1  # 96/16 = 6 .. 246/16 = 15.4 -> 6..15
    assert torch.equal(masks[1][0], p4)
    assert all(m.sum() == 0 for m in masks[2:])


def test_fgfi_mask_of_the_distiller_matches_the_anchors():
    m = build("atss", "fgfi")
    data = make_batch(m, n=1)
    feats = [torch.zeros(1, 64, 16, 20), torch.zeros(1, 64, 8, 10), torch.zeros(1, 64, 4, 5),
             torch.zeros(1, 64, 2, 3), torch.zeros(1, 64, 1, 2)]
    masks = m.kd.masks(data["data_samples"], feats, m.s_adapter)
    # tiny ATSS anchors are 32 x 2^l px squares at the cell centres; each GT's best anchor is on
    anchors = torch.cat(m.student.bbox_head.prior_generator.grid_priors([f.shape[-2:] for f in feats], device="cpu"))
    flat = torch.cat([mk[0].flatten() for mk in masks]).bool()
    g = data["data_samples"][0].gt_instances.bboxes
    # the authors' IoU (+1 pixel on every width, height and intersection), written out
    iw = (torch.minimum(anchors[:, None, 2], g[:, 2]) - torch.maximum(anchors[:, None, 0], g[:, 0]) + 1).clamp(min=0)
    ih = (torch.minimum(anchors[:, None, 3], g[:, 3]) - torch.maximum(anchors[:, None, 1], g[:, 1]) + 1).clamp(min=0)
    area = lambda b: (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)  # noqa: E731
    iou = iw * ih / (area(anchors)[:, None] + area(g)[None] - iw * ih)
    assert flat[iou.argmax(0)].all()
    assert torch.equal(flat, (iou > 0.5 * iou.max(0).values).any(1))
    # with the plain IoU (option) the mask follows the plain IoU
    from pgd.core import box_iou_pairs

    plain = build("atss", "fgfi", legacy_iou=False).kd.masks(data["data_samples"], feats, m.s_adapter)
    flat_plain = torch.cat([mk[0].flatten() for mk in plain]).bool()
    piou = box_iou_pairs(anchors, g)
    assert torch.equal(flat_plain, (piou > 0.5 * piou.max(0).values).any(1))


def test_fgfi_imitates_only_after_its_warm_up(fresh_message_hub):
    m = build("atss", "fgfi")  # default warm_iters 400 (FGFI's --ws)
    assert m.kd.warm_iters == 400 and m.kd.legacy_iou is True
    data = make_batch(m, n=1)
    m.eval()
    for it, on in ((0, False), (399, False), (400, True)):
        fresh_message_hub.update_info("iter", it)
        with torch.no_grad():
            v = float(m.loss(data["inputs"], data["data_samples"])["loss_fgfi_feat"])
        assert (v > 0) == on, (it, v)


def test_frs_ramp_follows_the_message_hub_iter_and_a_counter_without_it(fresh_message_hub):
    m = build("gfl", "frs")  # default ramp_iters 500
    assert m.kd.ramp_iters == 500 and m.kd.w_feat == 0.1
    data = make_batch(m, n=1)
    m.eval()  # no counting while we probe the hub

    def kd_at(it):
        fresh_message_hub.update_info("iter", it)
        with torch.no_grad():
            return {k: float(v) for k, v in kd_terms(m.loss(data["inputs"], data["data_samples"]), "frs").items()}

    full, half, zero = kd_at(1000), kd_at(250), kd_at(0)
    assert all(v > 0 for v in full.values()) and all(v == 0 for v in zero.values())
    assert all(half[k] == pytest.approx(0.5 * full[k], rel=1e-5) for k in full)
    # outside a Runner (no 'iter' in the hub): counts this module's training forwards
    from mmengine.logging import MessageHub

    MessageHub.get_instance("pgd-test-frs-no-iter")
    m.train()
    m.kd.ramp_iters = 4
    assert m.kd.ramp() == 0.0
    for _ in range(2):
        m(**data, mode="loss")
    assert m.kd.ramp() == 0.5


def _distill(method, det="atss", **params):
    return parse_run(dict(model=f"{det}_tiny", distill=dict(teacher=f"{det}_tiny", allow_random_teacher=True,
                                                          method=method, **params)), "test")


@pytest.mark.parametrize(
    "method, params, match",
    [
        ("fgd", dict(alpah=1.0), r"unknown key\(s\) alpah for method 'fgd'; valid keys are: .*temp, alpha, beta, gamma, "
                                 r"lambda_, padded_shape, inclusive_cells, clipped_area"),
        ("fgd", dict(padded_shape=1), r"distill.padded_shape=1: Input should be a valid boolean"),
        ("crosskd", dict(reused_head_idx=-1), r"distill.reused_head_idx=-1: Input should be greater than or equal to 0"),
        ("crosskd", dict(kl_temp=0.5), r"distill.kl_temp=0.5: Input should be greater than or equal to 1"),
        ("frs", dict(w_feat=0.1, ramp=3), r"unknown key\(s\) ramp for method 'frs'; valid keys are: .*w_feat, w_cls, ramp_iters"),
        ("fkd", dict(temp=0), r"distill.temp=0: Input should be greater than 0"),
        ("frs", dict(ramp_iters=2.5), r"distill.ramp_iters=2.5: Input should be a valid integer"),
        ("defeat", dict(w_bg=-1), r"distill.w_bg=-1: Input should be greater than or equal to 0"),
        ("fgfi", dict(iou_ratio=1.5), r"distill.iou_ratio=1.5: Input should be less than or equal to 1"),
        ("pgd", dict(method_params={"alpha": 1.0}), r"unknown key\(s\) method_params for method 'pgd'"),
    ],
)
def test_bad_knobs_raise(method, params, match):
    with pytest.raises(ConfigError, match=match):
        _distill(method, **params)


def test_defaults_per_detector_are_resolved_and_overridable():
    def resolved(method, det, **params):
        d = resolve_run(_distill(method, det, **params)).distill.dump()
        return {k: d[k] for k in BASELINE_DEFAULTS[method][det]}

    conventions = dict(padded_shape=True, inclusive_cells=True, clipped_area=False)
    assert resolved("fgd", "fcos") == dict(temp=0.8, alpha=1.6e-3, beta=8e-4, gamma=8e-4, lambda_=8e-6, **conventions)
    assert resolved("fgd", "autoassign")["temp"] == 0.8 and resolved("fgd", "ddod")["alpha"] == 1e-3
    assert resolved("fgd", "gfl", alpha=2e-3) == dict(temp=0.5, alpha=2e-3, beta=5e-4, gamma=5e-4, lambda_=5e-6,
                                                      **conventions)
    assert resolved("frs", "fcos")["w_feat"] == 0.01 and resolved("frs", "atss")["w_feat"] == 0.1
    assert resolved("defeat", "atss") == dict(w_fg=3.0, w_bg=12.0, finest_scale=56.0)
    assert resolved("fkd", "gfl")["w_channel"] == 0.024 and resolved("fgfi", "ddod")["weight"] == 0.01
    assert resolved("fkd", "atss")["channel_mask"] is True and resolved("frs", "gfl")["bce_from_logits"] is False
    assert resolved("fgfi", "atss") == dict(weight=0.01, iou_ratio=0.5, warm_iters=400, legacy_iou=True,
                                            zero_without_gt=True)
    # CrossKD's released recipes (configs/crosskd/*, configs/crosskd+pkd/*)
    common = dict(beta=1.0, pkd=False, pre_activation=False)
    assert resolved("crosskd", "gfl") == dict(reused_head_idx=3, w_cls=1.0, w_reg=4.0, kl_temp=1.0, w_pkd=6.0, **common)
    assert resolved("crosskd", "atss") == dict(reused_head_idx=3, w_cls=1.0, w_reg=1.0, w_center=1.0, w_pkd=1.0,
                                               **common)
    assert resolved("crosskd", "fcos", pkd=True) == dict(reused_head_idx=2, w_cls=0.4, w_reg=0.75, w_pkd=2.0,
                                                         **dict(common, pkd=True))


@pytest.mark.parametrize("method, det, valid", [("fgfi", "fcos", "atss, ddod"), ("fgfi", "gfl", "atss, ddod"),
                                                ("ld", "atss", "gfl"), ("crosskd", "ddod", "atss, fcos, gfl"),
                                                ("crosskd", "autoassign", "atss, fcos, gfl")])
def test_method_on_a_detector_it_does_not_apply_to(method, det, valid):
    with pytest.raises(ConfigError, match=f"{method!r} does not apply to detector {det!r}; valid detectors "
                                          f"for {method} are: {valid}"):
        _distill(method, det)


def test_ld_is_not_a_pgd_distiller_module():
    with pytest.raises(ConfigError, match="KnowledgeDistillationSingleStageDetector"):
        c = model_config("gfl_tiny", 6)
        build_baseline("ld", {}, c, c, "gfl")


def test_ld_is_mmdets_kd_detector_with_a_frozen_teacher(tmp_path):
    from mmdet.registry import MODELS
    from mmengine.config import Config

    from pgd.distill.config import distiller_model_config

    torch.manual_seed(0)
    teacher = MODELS.build(model_config("gfl_tiny", 6))
    teacher.init_weights()
    ckpt = tmp_path / "teacher.pth"
    torch.save({"state_dict": teacher.state_dict(), "meta": {}}, ckpt)
    run = resolve_run(parse_run(dict(model="gfl_tiny", work_dir=str(tmp_path / "work"),
                                     distill=dict(method="ld", teacher="gfl_tiny", teacher_checkpoint=str(ckpt),
                                                  weight=0.5))))
    cfg = distiller_model_config(run, 6)
    assert cfg["type"] == "KnowledgeDistillationSingleStageDetector" and "init_cfg" not in cfg
    assert cfg["bbox_head"]["type"] == "LDHead"
    assert cfg["bbox_head"]["loss_ld"] == dict(type="KnowledgeDistillationKLDivLoss", loss_weight=0.5, T=10.0)
    assert cfg["teacher_ckpt"] == str(ckpt) and cfg["eval_teacher"] is True
    t_cfg = Config.fromfile(cfg["teacher_config"])  # a file the runner can read
    assert t_cfg.model.type == "GFL" and t_cfg.model.backbone.init_cfg is None

    m = MODELS.build(cfg)
    m.init_weights()
    m.train()
    assert not m.teacher_model.training
    for k, v in teacher.state_dict().items():  # the KD detector loaded the checkpoint itself
        assert torch.equal(m.teacher_model.state_dict()[k], v)
    assert not any(k.startswith("teacher") for k in m.state_dict())  # never checkpointed
    t_ids = {id(p) for p in m.teacher_model.parameters()}
    params = list(m.parameters())
    assert not t_ids & {id(p) for p in params}  # never optimised
    data = make_batch(m)
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    history, scale = [], None
    for _ in range(11):
        losses = m(**data, mode="loss")
        assert {"loss_cls", "loss_bbox", "loss_dfl", "loss_ld"} <= set(losses)
        ld = sum(losses["loss_ld"])
        assert torch.isfinite(ld) and ld > 0
        history.append(float(ld))
        scale = scale or float(ld)
        opt.zero_grad()
        (ld / scale).backward()
        torch.nn.utils.clip_grad_norm_(params, 35)
        opt.step()
    assert history[-1] < 0.9 * history[0], history
    for k, v in teacher.state_dict().items():
        assert torch.equal(m.teacher_model.state_dict()[k], v), f"teacher tensor {k} changed"

    # a wrapper's checkpoint (student.* keys) would load nothing into mmdet's bare teacher
    wrapped = tmp_path / "distiller.pth"
    torch.save({"state_dict": {f"student.{k}": v for k, v in teacher.state_dict().items()}}, wrapped)
    d = run.dump()
    d["distill"]["teacher_checkpoint"] = str(wrapped)
    run = parse_run(d)
    with pytest.raises(ConfigError, match="not a plain detector checkpoint"):
        distiller_model_config(run, 6)
