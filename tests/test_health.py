"""Health checks during training (issue 7 sections 2 and 4; docs/health.md): the teacher
checkpoint must fit, the student's inheritance is counted (a same-architecture skip is an
error, a mismatch a warning + MLflow tags), and every GT box that gets no foreground weight
is counted in the per-epoch mask-health metrics that reach Ray and MLflow."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pgd.core.mask_stats import box_mask_support
from pgd.errors import ConfigError

pytestmark = pytest.mark.usefixtures("scope")


class Log:
    """Records what a logger was told."""

    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append(("info", msg))

    def warning(self, msg):
        self.lines.append(("warning", msg))


# ----------------------------------------------------------------------------- core
def test_box_mask_support_counts_weighted_positions_inside_each_box():
    points = torch.tensor([[4.0, 4], [12, 4], [4, 12], [12, 12], [20, 20]])
    weights = torch.tensor([0.5, 0.0, 0.2, 1.0, 0.3])
    boxes = torch.tensor([
        [0.0, 0, 16, 16],  # holds positions 0-3, three weighted
        [10, 0, 16, 8],  # holds position 1 only, weight 0: no weight
        [21, 21, 30, 30],  # holds no position (20, 20 is on its corner, not strictly inside)
        [18, 18, 22, 22],  # holds position 4
    ])
    assert box_mask_support(weights, points, boxes).tolist() == [3, 0, 0, 1]
    assert box_mask_support(weights, points, torch.zeros(0, 4)).numel() == 0
    with pytest.raises(ValueError, match=r"weights \(4,\) must be \[A\] with A = points' 5 rows"):
        box_mask_support(weights[:4], points, boxes)


# ----------------------------------------------------------------------------- teacher checkpoint
def test_teacher_checkpoint_with_a_missing_key_fails_naming_it(tmp_path):
    from mmdet.registry import MODELS

    from pgd.detectors import model_config
    from pgd.integration.checkpoints import check_detector_checkpoint

    cfg = model_config("atss_tiny", 6)
    state = MODELS.build(cfg).state_dict()
    assert check_detector_checkpoint(_save(tmp_path / "ok.pth", state), cfg) == len(state)
    del state["bbox_head.atss_cls.weight"]
    with pytest.raises(ConfigError, match=r"teacher .*bad.pth' does not fit the model: 1 missing: "
                                          r"bbox_head.atss_cls.weight$"):
        check_detector_checkpoint(_save(tmp_path / "bad.pth", state), cfg, what="teacher")
    # a checkpoint of another model lists its keys both ways
    other = MODELS.build(model_config("fcos_tiny", 6)).state_dict()
    with pytest.raises(ConfigError, match=r"does not fit the model: \d+ missing: bbox_head\.atss_.*; "
                                          r"\d+ unexpected: bbox_head\.conv_"):
        check_detector_checkpoint(_save(tmp_path / "fcos.pth", other), cfg, what="teacher")


def _save(path, state):
    torch.save({"state_dict": state}, path)
    return str(path)


# ----------------------------------------------------------------------------- inheritance
def _pair(head_out: int):
    torch.manual_seed(0)
    student = nn.ModuleDict(dict(backbone=nn.Conv2d(3, 4, 1), neck=nn.Conv2d(4, 4, 1), bbox_head=nn.Conv2d(4, 2, 1)))
    teacher = nn.ModuleDict(dict(backbone=nn.Conv2d(3, 4, 1), neck=nn.Conv2d(4, 4, 1),
                                 bbox_head=nn.Conv2d(4, head_out, 1)))
    return student, teacher


def test_inheritance_copies_and_counts():
    from pgd.distill.health import inherit_neck_head

    student, teacher = _pair(2)
    log = Log()
    report = inherit_neck_head(student, teacher, same_arch=True, logger=log)
    assert (report.copied, report.skipped) == (4, [])  # neck and head weight + bias, not the backbone
    assert torch.equal(student.bbox_head.weight, teacher.bbox_head.weight)
    assert not torch.equal(student.backbone.weight, teacher.backbone.weight)
    assert report.result() == {"inherit/copied": 4, "inherit/skipped": 0, "inherit/same_architecture": 1}
    assert log.lines == [("info", "inherit_teacher_neck_head: student inherited all 4 neck/head tensors from the teacher")]


def test_a_skipped_tensor_in_a_same_architecture_pair_is_an_error():
    from pgd.distill.health import inherit_neck_head

    student, teacher = _pair(3)
    with pytest.raises(ConfigError, match=r"same architecture but 2 neck/head tensors could not be copied: "
                                          r"bbox_head.weight: student \(2, 4, 1, 1\) vs teacher \(3, 4, 1, 1\), "
                                          r"bbox_head.bias: student \(2,\) vs teacher \(3,\) .*inherit_teacher_neck_head: false"):
        inherit_neck_head(student, teacher, same_arch=True)


def test_a_mismatched_pair_warns_with_the_count():
    from pgd.distill.health import inherit_neck_head

    student, teacher = _pair(3)
    log = Log()
    report = inherit_neck_head(student, teacher, same_arch=False, logger=log)
    assert report.copied == 2 and len(report.skipped) == 2
    assert report.result() == {"inherit/copied": 2, "inherit/skipped": 2, "inherit/same_architecture": 0}
    (level, msg), = log.lines
    assert level == "warning" and msg.startswith("inherit_teacher_neck_head: student inherited 2 neck/head tensors "
                                                 "from the teacher, 2 skipped (architectures differ): bbox_head.weight")


def test_distiller_inheritance_same_and_mismatched_architecture():
    from pgd.testing import build_distiller

    same = build_distiller("atss_tiny", "atss_tiny")
    assert same._same_arch and same.inherit_report.copied > 0 and same.inherit_report.skipped == []
    # the same configured architecture with a teacher that is not that model: an error at init
    same.teacher.bbox_head.atss_cls = nn.Conv2d(same.teacher.bbox_head.atss_cls.in_channels, 2, 3, padding=1)
    with pytest.raises(ConfigError, match=r"2 neck/head tensors could not be copied: bbox_head.atss_cls.weight: "
                                          r"student \(\d+, \d+, 3, 3\) vs teacher \(2, \d+, 3, 3\)"):
        same.init_weights()
    wide = build_distiller("atss_tiny", "atss_r50")  # narrower student: only what fits is inherited
    report = wide.inherit_report
    assert not wide._same_arch and not report.same_architecture and len(report.skipped) > 0
    assert report.result()["inherit/skipped"] == len(report.skipped)
    assert report.copied + len(report.skipped) == sum(
        1 for k in wide.student.state_dict() if k.startswith(("neck.", "bbox_head.")))


# ----------------------------------------------------------------------------- mask health
def _runner(model, tmp_path, hooks=()):
    from mmengine.logging import MMLogger

    return SimpleNamespace(model=model, hooks=list(hooks), epoch=0, work_dir=str(tmp_path),
                           logger=MMLogger.get_instance("pgd-health-test"))


def test_a_box_without_foreground_weight_is_counted_and_reported(tmp_path):
    from pgd.distill.health import MaskHealthHook
    from pgd.testing import build_distiller, synthetic_batch

    torch.manual_seed(0)
    m = build_distiller("atss_tiny", "atss_tiny", branches=["neck", "reg"])
    # the second box (5 px, between the stride-8 prior centres of every level) holds no position
    batch = synthetic_batch(m, boxes=torch.tensor([[10.0, 20, 60, 90], [1, 1, 6, 6]]))
    for _ in range(2):  # two iterations of one epoch
        m(**batch, mode="loss")
    hook = MaskHealthHook()
    runner = _runner(m, tmp_path, [hook])
    hook.after_train_epoch(runner)
    last = hook.last
    assert last["mask/boxes"] == 8  # 2 iterations x 2 images x 2 boxes
    for branch in ("neck", "reg"):
        assert last[f"mask/{branch}_zero_boxes"] == 4
        assert last[f"mask/{branch}_zero_box_frac"] == 0.5
        k = m.distill_cfg["k_reg" if branch == "reg" else "k_cls"]
        assert last[f"mask/{branch}_pos_per_box"] == pytest.approx(k / 2)  # the big box: K positions
    assert "mask/cls_zero_boxes" not in last  # only the distilled branches report
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["event"] == "mask_health" and record["epoch"] == 1 and record["mask/reg_zero_boxes"] == 4
    reported = MaskHealthHook.report(runner)
    assert reported["mask/neck_zero_box_frac"] == 0.5 and reported["inherit/skipped"] == 0
    # the accumulator restarts every epoch
    hook.after_train_epoch(runner)
    assert hook.last == {}


def test_ray_report_carries_the_health_metrics(tmp_path, monkeypatch):
    import ray.train

    from pgd.distill.health import MaskHealthHook
    from pgd.sweep.ray_hook import RayReportHook
    from pgd.testing import build_distiller, synthetic_batch

    m = build_distiller("atss_tiny", "atss_tiny")
    m(**synthetic_batch(m), mode="loss")
    health = MaskHealthHook()
    runner = _runner(m, tmp_path, [health])
    runner.message_hub = SimpleNamespace(get_info=lambda key: None)
    health.after_train_epoch(runner)
    sent = []
    monkeypatch.setattr(ray.train, "get_context", lambda: SimpleNamespace(get_world_rank=lambda: 1))
    monkeypatch.setattr(ray.train, "report", lambda report, **kw: sent.append(report))
    RayReportHook().after_val_epoch(runner, metrics={"coco/AP": 1.5})
    (report,) = sent
    assert report["AP"] == 1.5 and report["mask/cls_zero_box_frac"] == 0.0 and report["mask/boxes"] == 4
    assert report["mask/reg_pos_per_box"] > 0 and report["inherit/copied"] == m.inherit_report.copied


def test_mlflow_callback_logs_mask_metrics_and_inheritance_tags():
    from pgd.sweep.tracking import MLflowSweepCallback, health_tags, is_metric

    assert is_metric("mask/cls_zero_box_frac", 0.25)
    assert health_tags({"inherit/copied": 0, "inherit/skipped": 3, "AP": 1.0}) == {
        "pgd.inherit.copied": "0", "pgd.inherit.skipped": "3"}

    class Client:
        def __init__(self):
            self.metrics, self.tags = [], {}

        def log_batch(self, rid, metrics=()):
            self.metrics += [(m.key, m.value, m.step) for m in metrics]

        def set_tag(self, rid, key, value):
            self.tags[key] = value

    cb = MLflowSweepCallback("sqlite:///unused.db", "0", "parent", "sweep")
    cb._client = Client()
    cb.run_id = lambda trial: "rid"
    from types import SimpleNamespace

    cb.on_trial_result(0, [], SimpleNamespace(trial_id="t"), {"epoch": 2, "AP": 3.0, "mask/reg_zero_box_frac": 0.5, "inherit/copied": 39,
                                     "inherit/skipped": 0, "inherit/same_architecture": 1, "pid": 7})
    assert sorted(cb._client.metrics) == [("AP", 3.0, 2), ("mask.reg_zero_box_frac", 0.5, 2)]
    assert cb._client.tags == {"pgd.inherit.copied": "39", "pgd.inherit.skipped": "0",
                               "pgd.inherit.same_architecture": "1", "pgd.logged_epoch": "2"}


@pytest.mark.slow
def test_a_pgd_run_writes_mask_health_every_epoch(tmp_path, monkeypatch):
    from pgd.config.run import parse_run
    from pgd.training import train

    monkeypatch.setenv("PGD_HOME", str(tmp_path))
    work = tmp_path / "run"
    train(parse_run(dict(
        model="atss_tiny", work_dir=str(work),
        data=dict(kind="shapes", shapes=dict(train=8, val=4, size=96, seed=0)),
        schedule=dict(epochs=2, batch_size=4, base_lr=0.01, base_batch_size=16, warmup_iters=2, lr_steps=[2],
                      img_scale=[96, 96], num_workers=0, log_interval=50),
        distill=dict(method="pgd", teacher="atss_tiny", allow_random_teacher=True),
    )))
    events = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    health = [e for e in events if e["event"] == "mask_health"]
    assert [e["epoch"] for e in health] == [1, 2]
    assert all(e["mask/boxes"] > 0 and 0 <= e["mask/cls_zero_box_frac"] <= 1 for e in health)
    logs = "".join(p.read_text() for p in work.rglob("*.log"))
    assert "inherit_teacher_neck_head: student inherited all" in logs and "[mask health epoch 2]" in logs
