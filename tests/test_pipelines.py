"""The command-line entry points: clear errors (exit 2, one line) and the quality-map figure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args, env=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def test_train_cli_names_a_bad_model():
    out = run("pipelines/train.py", "--model", "yolo_r50")
    assert out.returncode == 2
    assert "error: command line: model='yolo_r50' is not one of the valid choices: atss_r101" in out.stderr
    assert "Traceback" not in out.stderr


def test_sweep_cli_names_a_missing_space():
    out = run("pipelines/sweep.py", "--space", "search_spaces/nope.yaml", "--dry-run")
    assert out.returncode == 2 and "space file" in out.stderr and "not found" in out.stderr


def test_quality_map_renders_for_a_trained_teacher(tmp_path, monkeypatch):
    import os

    from pgd.config.run import parse_run as run_config
    from pgd.training import train

    monkeypatch.setenv("PGD_HOME", str(tmp_path))
    cfg = dict(model="atss_tiny", work_dir=str(tmp_path / "t"),
               data=dict(kind="shapes", shapes=dict(train=16, val=4, size=128, seed=0)),
               schedule=dict(epochs=1, batch_size=4, base_lr=0.02, base_batch_size=16, warmup_iters=2,
                             lr_steps=[1], img_scale=[96, 96], num_workers=0))  # images are resized
    ckpt = train(run_config(cfg))["best_checkpoint"]
    import yaml

    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    png = tmp_path / "q.png"
    env = dict(os.environ, PGD_HOME=str(tmp_path))
    out = run("pipelines/analyze.py", "quality-map", "--config", str(tmp_path / "t.yaml"), "--checkpoint", ckpt,
              "--image-index", "1", "--strategy", "pgw", "--out", str(png), env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert png.stat().st_size > 10_000
    from PIL import Image

    w, h = Image.open(png).size
    assert w > 2 * h  # three panels side by side
    import json

    info = json.loads(out.stdout[out.stdout.index("{"):])
    assert info["img_shape"] == [96, 96] and info["num_gt"] >= 1
    # GT boxes are drawn and used in the resized image's coordinates (128 px -> 96 px)
    assert all(0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96 for x1, y1, x2, y2 in info["gt_boxes"])
    assert info["fg_positions"] > 0
    bad = run("pipelines/analyze.py", "quality-map", "--config", str(tmp_path / "t.yaml"), "--checkpoint", ckpt,
              "--image-index", "99", env=env)
    assert bad.returncode == 2 and "--image-index 99 is outside 0..3" in bad.stderr


def test_dry_run_of_the_main_job(tmp_path):
    import os

    out = run("pipelines/sweep.py", "--space", "search_spaces/smoke.yaml", "--dry-run",
              env=dict(os.environ, PGD_HOME=str(tmp_path)))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resources per trial" in out.stdout and "objective(s): AP (max)" in out.stdout
