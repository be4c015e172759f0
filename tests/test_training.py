"""Training pipeline without Ray: metrics on the paper's scale, checkpoints, resume (the torch
2.13 weights_only fix), seeded reproducibility, learning on the shapes data, bad data errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pgd.config.run import parse_run as run_config
from pgd.errors import AnnotationError
from pgd.training import train

TINY = dict(
    model="atss_tiny",
    data=dict(kind="shapes", shapes=dict(train=16, val=8, size=128, seed=0)),
    schedule=dict(epochs=2, batch_size=4, base_lr=0.02, base_batch_size=16, warmup_iters=4,
                  lr_steps=[2], img_scale=[128, 128], num_workers=0, log_interval=50),
)


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PGD_HOME", str(tmp_path))
    return tmp_path


def events(work_dir: Path, kind: str):
    lines = (work_dir / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def test_train_writes_metrics_and_checkpoints_then_resumes(home):
    work = home / "run"
    cfg = dict(TINY, work_dir=str(work))
    cfg["schedule"] = dict(TINY["schedule"], epochs=1, lr_steps=[1])
    result = train(run_config(cfg))
    for key in ("AP", "AP50", "AP75", "APS", "APM", "APL"):
        assert key in result and (result[key] != result[key] or 0 <= result[key] <= 100)
    assert result["epochs"] == 1 and (work / "epoch_1.pth").is_file()
    assert json.loads((work / "metrics.json").read_text())["AP"] == result["AP"]
    assert Path(result["best_checkpoint"]).is_file()
    # mmengine's own checkpoint (message hub, optimizer, numpy scalars) needs the full
    # unpickler: torch 2.13's weights_only default cannot load it
    with pytest.raises(Exception):  # noqa: B017 - torch raises UnpicklingError or RuntimeError
        torch.load(work / "epoch_1.pth")
    # extend the schedule to 2 epochs: the run resumes from epoch 1 (optimizer and all)
    cfg2 = dict(cfg, schedule=dict(TINY["schedule"], epochs=2, lr_steps=[2]))
    result2 = train(run_config(cfg2))
    assert result2["epochs"] == 2
    assert [e["epoch"] for e in events(work, "train_epoch")] == [1, 2]  # epoch 1 not retrained
    logs = "".join(p.read_text() for p in work.rglob("*.log"))
    assert "resuming from" in logs and "resumed epoch: 1" in logs


def test_same_seed_same_losses_other_seed_differs(home):
    losses = []
    for i, seed in enumerate((3, 3, 4)):
        cfg = dict(TINY, seed=seed, work_dir=str(home / f"r{i}"))
        cfg["schedule"] = dict(TINY["schedule"], epochs=1, lr_steps=[1])
        train(run_config(cfg))
        losses.append(events(home / f"r{i}", "train_epoch")[0]["train/loss"])
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]


def test_malformed_annotations_fail_before_training(home, tmp_path):
    from pgd.data.shapes import generate_shapes

    ds = generate_shapes(tmp_path / "bad", 4, 2, 64, 0)
    ann = json.loads(Path(ds.train_ann).read_text())
    ann["annotations"][0].pop("bbox")
    ann["annotations"][1]["category_id"] = 999
    Path(ds.train_ann).write_text(json.dumps(ann))
    cfg = dict(TINY, work_dir=str(home / "bad_run"),
               data=dict(kind="coco", root=str(tmp_path / "bad"), train_ann="annotations/instances_train.json",
                         train_img="train", val_ann="annotations/instances_val.json", val_img="val"))
    with pytest.raises(AnnotationError) as e:
        train(run_config(cfg))
    text = str(e.value)
    assert "bbox" in text and "999" in text and "instances_train.json" in text


# Measured on this 2-core machine (seed 0, ~100 s of training): AP50 18.7, AP 9.2 after 12
# epochs on 512 images; an untrained detector scores AP50 < 0.5. The threshold leaves room
# for CPU nondeterminism and slower CI machines.
LEARNING_AP50_THRESHOLD = 8.0


def test_tiny_atss_learns_the_shapes(home):
    cfg = dict(
        model="atss_tiny", seed=0, work_dir=str(home / "learn"),
        data=dict(kind="shapes", shapes=dict(train=512, val=64, size=160, seed=0)),
        schedule=dict(epochs=12, batch_size=8, base_lr=0.04, base_batch_size=16, warmup_iters=50,
                      lr_steps=[10], img_scale=[160, 160], num_workers=0, log_interval=200, val_interval=12),
    )
    result = train(run_config(cfg))
    print("tiny ATSS on shapes:", {k: round(result[k], 2) for k in ("AP", "AP50", "AP75")})
    assert result["AP50"] > LEARNING_AP50_THRESHOLD
