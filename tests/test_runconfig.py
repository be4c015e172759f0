"""Run configuration: defaults, validation errors naming the bad value, data resolution."""

from __future__ import annotations

import pytest

from pgd.errors import ConfigError
from pgd.training import run_config
from pgd.training.build import build_config, effective_lr


def test_defaults_are_the_paper_recipe():
    run = run_config({})
    s = run.schedule
    assert (s.epochs, s.base_lr, s.base_batch_size, s.momentum, s.weight_decay) == (12, 0.02, 32, 0.9, 1e-4)
    assert (s.warmup_iters, s.lr_steps, s.grad_clip, s.img_scale) == (500, [8, 11], 35.0, [1333, 800])
    assert run.model == "atss_tiny" and run.data.kind == "shapes"


def test_lr_scales_linearly_with_total_batch():
    s = run_config({"schedule": {"batch_size": 4, "base_lr": 0.02, "base_batch_size": 32}}).schedule
    assert effective_lr(s, 1) == pytest.approx(0.0025)
    assert effective_lr(s, 8) == pytest.approx(0.02)


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"model": "yolo_r50"}, "unknown model 'yolo_r50'"),
        ({"schedule": {"epochs": 0}}, "schedule.epochs=0 is out of range"),
        ({"schedule": {"epochs": "ten"}}, "schedule.epochs must be an integer"),
        ({"schedule": {"lr_stepz": [1]}}, "unknown key\\(s\\) lr_stepz in run.schedule"),
        ({"schedule": {"epochs": 4}}, "lr_steps=\\[8, 11\\] has steps after the last epoch"),
        ({"schedule": {"momentum": 1.5}}, "momentum=1.5 is out of range"),
        ({"data": {"kind": "voc"}}, "unknown data kind 'voc'"),
        ({"data": {"kind": "coco"}}, "data.root is required"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"schedule": {"img_scale": [16, 16]}}, "img_scale"),
    ],
)
def test_bad_values_are_named(cfg, message):
    with pytest.raises(ConfigError, match=message):
        run_config(cfg)


def test_missing_dataset_files_are_named(tmp_path):
    run = run_config({"data": {"kind": "coco", "root": str(tmp_path)}})
    with pytest.raises(ConfigError, match="instances_train2017.json does not exist"):
        build_config(run)


def test_coco_tiny_resolves_with_80_classes(coco_tiny, tmp_path):
    from pgd.training.data import resolve_data

    run = run_config({"data": {"kind": "coco", "root": str(coco_tiny)}, "work_dir": str(tmp_path)})
    files = resolve_data(run.data)
    assert len(files.classes) == 80 and files.classes[0] == "person"
    cfg = build_config(run)
    assert cfg.train_dataloader.dataset.type == "PGDCocoDataset"
    assert cfg.val_evaluator.type == "PGDCocoMetric"
    assert cfg.model.bbox_head.num_classes == 80
