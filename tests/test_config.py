"""Run configuration models: defaults, errors naming the key path, value and choices, the
per-method distill union, resolution of every default, strict YAML."""

from __future__ import annotations

import pytest

from pgd.config.loading import parse_yaml
from pgd.config.run import key_owners, method_keys, parse_run, resolve_run, run_hash
from pgd.errors import ConfigError
from pgd.training.build import build_config, effective_lr

TEACHER = {"teacher": "atss_tiny", "allow_random_teacher": True}


def test_defaults_are_the_paper_recipe():
    run = parse_run({})
    s = run.schedule
    assert (s.epochs, s.base_lr, s.base_batch_size, s.momentum, s.weight_decay) == (12, 0.02, 32, 0.9, 1e-4)
    assert (s.warmup_iters, s.grad_clip, s.img_scale) == (500, 35.0, [1333, 800])
    assert s.lr_steps is None and resolve_run(run).schedule.lr_steps == [8, 11]
    assert run.model == "atss_tiny" and run.data.kind == "shapes" and run.data.check_images == "header"


@pytest.mark.parametrize("epochs, steps", [(12, [8, 11]), (6, [4, 5]), (8, [5, 7]), (24, [16, 22]), (2, [1]), (1, [])])
def test_default_lr_steps_follow_the_epochs(epochs, steps):
    assert resolve_run(parse_run({"schedule": {"epochs": epochs}})).schedule.lr_steps == steps


def test_lr_scales_linearly_with_total_batch():
    s = parse_run({"schedule": {"batch_size": 4, "base_lr": 0.02, "base_batch_size": 32}}).schedule
    assert effective_lr(s, 1) == pytest.approx(0.0025)
    assert effective_lr(s, 8) == pytest.approx(0.02)


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"model": "yolo_r50"}, "model='yolo_r50' is not one of the valid choices: atss_r101, atss_r50"),
        ({"schedule": {"epochs": 0}}, "schedule.epochs=0: Input should be greater than or equal to 1"),
        ({"schedule": {"epochs": "ten"}}, "schedule.epochs='ten': Input should be a valid integer"),
        ({"schedule": {"epochs": 6.5}}, "schedule.epochs=6.5: Input should be a valid integer"),
        ({"schedule": {"lr_stepz": [1]}}, "schedule: unknown key(s) lr_stepz; valid keys are: epochs,"),
        ({"schedule": {"epochs": 4, "lr_steps": [8, 11]}}, "lr_steps=[8, 11] has steps after the last epoch"),
        ({"schedule": {"momentum": 1.5}}, "schedule.momentum=1.5: Input should be less than or equal to 1"),
        ({"data": {"kind": "voc"}}, "data.kind='voc' is not one of the valid choices: shapes, coco, crowdhuman"),
        ({"data": {"kind": "coco"}}, "data: root is required for kind='coco'"),
        ({"device": "tpu"}, "device='tpu' is not one of the valid choices: auto, cpu, cuda"),
        ({"schedule": {"img_scale": [16, 16]}}, "schedule.img_scale[0]=16"),
        ({"distill": {"method": "fgx"}}, "distill: unknown KD method; valid methods are: pgd, fgd"),
        ({"distill": {"teacher": "atss_tiny"}}, "teacher_checkpoint is required"),
        ({"distill": {**TEACHER, "k": 0}}, "distill.k=0: Input should be greater than or equal to 1"),
        ({"distill": {**TEACHER, "strategy": "gauss"}}, "distill.strategy='gauss' is not one of the valid choices: box,"),
        ({"distill": {**TEACHER, "branches": ["cls", "cls"]}}, "distill.branches=['cls', 'cls']: must be a non-empty subset"),
        ({"distill": {**TEACHER, "method": "fgd", "strategy": "pgw"}},
         "distill: unknown key(s) strategy for method 'fgd' (strategy is a key of pgd"),
        ({"distill": {**TEACHER, "method": "fgd", "temp": 0}}, "distill.temp=0: Input should be greater than 0"),
        ({"model": "fcos_tiny", "distill": {"method": "fgfi", "teacher": "fcos_tiny", "allow_random_teacher": True}},
         "KD method 'fgfi' does not apply to detector 'fcos'; valid detectors for fgfi are: atss, ddod"),
        ({"distill": {"teacher": "fcos_r50", "allow_random_teacher": True}}, "are different detectors"),
        ({"model": "gfl_tiny", "distill": {"method": "ld", "teacher": "gfl_tiny", "allow_random_teacher": True,
                                           "inherit_teacher_neck_head": True}}, "not supported by method 'ld'"),
        ({"model": "atss_mbv2", "backbone_checkpoint": "x.pth"}, "mbv2 loads the packaged ImageNet weights"),
    ],
)
def test_bad_values_are_named(cfg, message):
    with pytest.raises(ConfigError) as e:
        parse_run(cfg, "my.yaml")
    assert message in str(e.value), str(e.value)
    assert str(e.value).startswith("my.yaml: ")


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as e:
        parse_run({"schedule": {"epochs": 0, "momentum": 2}, "seed": "x"})
    text = str(e.value)
    assert "3 problems" in text and "schedule.epochs=0" in text and "schedule.momentum=2" in text and "seed='x'" in text


def test_each_method_has_only_its_keys():
    assert "strategy" in method_keys("pgd") and "strategy" not in method_keys("fgd")
    assert set(key_owners("alpha")) == {"pgd", "fgd"}
    assert key_owners("lambda_") == ("fgd",)
    assert "method_params" not in method_keys("fgd")


def test_resolution_fills_every_default_once():
    pgd = resolve_run(parse_run({"model": "atss_r50", "data": {"kind": "coco", "root": "/d"},
                                 "distill": {"teacher": "atss_r101", "teacher_checkpoint": "/t.pth"}})).distill
    assert (pgd.alpha, pgd.beta, pgd.gamma, pgd.tau, pgd.k, pgd.k_cls, pgd.k_reg) == (0.08, 0.04, pytest.approx(0.128), 0.8, 9, 9, 9)
    assert pgd.inherit_teacher_neck_head is True
    ch = resolve_run(parse_run({"model": "ddod_r50", "data": {"kind": "crowdhuman", "root": "/d"},
                                "distill": {"teacher": "ddod_r101", "teacher_checkpoint": "/t.pth", "beta": 0.3}})).distill
    assert ch.alpha == 0.001 and ch.beta == 0.3 and ch.k == 30
    fgd = resolve_run(parse_run({"model": "fcos_r50", "data": {"kind": "coco", "root": "/d"},
                                 "distill": {"method": "fgd", "teacher": "fcos_r101", "teacher_checkpoint": "/t.pth",
                                             "alpha": 2e-3}})).distill
    assert (fgd.temp, fgd.alpha, fgd.beta, fgd.lambda_) == (0.8, 2e-3, 8e-4, 8e-6)
    ld = resolve_run(parse_run({"model": "gfl_tiny", "distill": {"method": "ld", **TEACHER, "teacher": "gfl_tiny"}})).distill
    assert ld.inherit_teacher_neck_head is False and (ld.weight, ld.temperature) == (0.25, 10.0)


def test_resolution_is_idempotent_and_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.setenv("PGD_HOME", str(tmp_path))
    r = resolve_run(parse_run({"work_dir": "runs/x", "schedule": {"epochs": 6}}))
    assert r.work_dir == str(tmp_path / "runs" / "x")
    assert r.data.root == str(tmp_path / "data" / "shapes-160px-256-64-s0")
    assert r.data.train_ann.endswith("shapes-160px-256-64-s0/annotations/instances_train.json")
    assert (r.schedule.frozen_backbone_bn, r.data.filter_empty_gt, r.data.allow_outside) == (False, False, False)
    assert resolve_run(r) == r
    assert run_hash(r) == run_hash(parse_run({"work_dir": "elsewhere", "schedule": {"epochs": 6}}))
    assert run_hash(r) != run_hash(parse_run({"schedule": {"epochs": 7}}))


def test_duplicate_yaml_keys_are_an_error():
    with pytest.raises(ConfigError, match=r"s.yaml: duplicate key 'grid' at line 3 \(first at line 1\)"):
        parse_yaml("grid: {method: [student]}\nname: x\ngrid: {method: [pgd]}\n", "s.yaml")
    with pytest.raises(ConfigError, match="duplicate key 'epochs' at line 3"):
        parse_yaml("schedule:\n  epochs: 1\n  epochs: 2\n", "r.yaml")
    assert parse_yaml("a: &x {b: 1}\nc:\n  <<: *x\n  b: 2\n", "ok.yaml") == {"a": {"b": 1}, "c": {"b": 2}}


def test_missing_dataset_files_are_named(tmp_path):
    run = parse_run({"data": {"kind": "coco", "root": str(tmp_path)}})
    with pytest.raises(ConfigError, match="instances_train2017.json does not exist"):
        build_config(run)


def test_coco_tiny_resolves_with_80_classes(coco_tiny, tmp_path):
    from pgd.training.data import resolve_data

    run = parse_run({"data": {"kind": "coco", "root": str(coco_tiny)}, "work_dir": str(tmp_path)})
    files = resolve_data(run.data)
    assert len(files.classes) == 80 and files.classes[0] == "person"
    cfg = build_config(run)
    assert cfg.train_dataloader.dataset.type == "PGDCocoDataset"
    assert cfg.val_evaluator.type == "PGDCocoMetric"
    assert cfg.model.bbox_head.num_classes == 80
