"""Fail fast, never overwrite silently: ``pipelines/train.py`` and the data tools check their
inputs before an mmengine Runner exists and answer bad ones in one line (exit 2, no
traceback, no mmengine set-up output before it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "data.shapes={train: 8, val: 4, size: 64, seed: 0}", "--set", "schedule.img_scale=[64, 64]",
        "--set", "schedule.batch_size=4", "--set", "schedule.num_workers=0", "--set", "schedule.warmup_iters=2"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("ffhome")


def cli(home: Path, *args, ok: bool = False):
    env = dict(os.environ, PGD_HOME=str(home))
    out = subprocess.run([sys.executable, "pipelines/train.py", *args], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=600)
    if ok:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def one_line_error(out, *fragments):
    assert out.returncode == 2, (out.stdout[-2000:], out.stderr[-2000:])
    err = out.stderr.strip()
    assert "Traceback" not in out.stderr and err.startswith("error: "), err[-2000:]
    assert "Environment info" not in out.stdout and "Config:" not in out.stdout  # before mmengine set-up
    for f in fragments:
        assert f in err, err
    return err


@pytest.fixture(scope="module")
def trained(home):
    """One tiny atss run (1 epoch) in runs/atss through the CLI."""
    cli(home, "--model", "atss_tiny", "--epochs", "1", "--work-dir", "runs/atss", *TINY, ok=True)
    ckpt = next((home / "runs" / "atss").glob("best_coco_AP_epoch_1.pth"), None) or home / "runs/atss/epoch_1.pth"
    return ckpt


def test_another_models_work_dir_is_refused_then_overwritten(home, trained):
    out = cli(home, "--model", "fcos_tiny", "--epochs", "1", "--work-dir", "runs/atss", *TINY)
    one_line_error(out, f"work_dir {home}/runs/atss holds a run of another config (model: 'atss_tiny' -> "
                        "'fcos_tiny'", "pass --overwrite")
    metrics = json.loads((home / "runs/atss/metrics.json").read_text())
    assert metrics["epochs"] == 1  # untouched
    again = cli(home, "--model", "atss_tiny", "--epochs", "1", "--work-dir", "runs/atss", "--no-resume", *TINY)
    one_line_error(again, "holds checkpoints of this run and resume is off", "--overwrite")


def test_eval_only_works_and_checks_the_checkpoint(home, trained):
    out = cli(home, "--model", "atss_tiny", "--work-dir", "runs/eval", "--eval-only", str(trained), *TINY, ok=True)
    assert "| atss_tiny |" in out.stdout and "AP50" in out.stdout
    assert not list((home / "runs/eval").glob("*.pth"))  # evaluation saves no checkpoint
    wrong = cli(home, "--model", "fcos_tiny", "--work-dir", "runs/eval2", "--eval-only", str(trained), *TINY)
    one_line_error(wrong, "checkpoint for fcos_tiny", "does not fit the model:", "missing:")


@pytest.mark.parametrize("make, fragment", [
    (lambda h: h / "nope.pth", "backbone_checkpoint '{h}/nope.pth' does not exist"),
    (lambda h: (h / "text.pth").write_text("I am no checkpoint\n") and h / "text.pth",
     "backbone_checkpoint '{h}/text.pth' is not a PyTorch checkpoint"),
    (lambda h: "https://example.org/r18.pth", "would be downloaded"),
])
def test_bad_weights_fail_in_one_line(home, make, fragment):
    path = make(home)
    out = cli(home, "--model", "atss_tiny", "--epochs", "1", "--work-dir", "runs/w", "--backbone-checkpoint",
              str(path), *TINY)
    one_line_error(out, fragment.format(h=home))


def test_bad_teacher_checkpoint_fails_in_one_line(home, trained):
    base = ["--model", "fcos_tiny", "--epochs", "1", "--work-dir", "runs/kd", *TINY,
            "--set", "distill={method: pgd, teacher: fcos_tiny, teacher_checkpoint: " + str(trained) + "}"]
    one_line_error(cli(home, *base), "distill.teacher_checkpoint (teacher fcos_tiny)", "does not fit the model")


def test_existing_shapes_set_is_replaced_only_with_overwrite(home, tmp_path):
    from pgd.data.shapes import generate_shapes

    generate_shapes(tmp_path / "set", 4, 2, 64, 0)
    args = ["--model", "atss_tiny", "--epochs", "1", "--work-dir", str(tmp_path / "run"), "--data", "shapes",
            "--data-root", str(tmp_path / "set"), *TINY]
    one_line_error(cli(home, *args), f"refusing to replace {tmp_path}/set: it holds a shapes data set made with "
                                     "other parameters: n_train=4 (wanted 8)", "--overwrite")
    assert json.loads((tmp_path / "set/manifest.json").read_text())["n_train"] == 4
    cli(home, *args, "--overwrite", ok=True)
    assert json.loads((tmp_path / "set/manifest.json").read_text())["n_train"] == 8


def test_bad_config_values_fail_in_one_line(home, tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("model: atss_tiny\nschedule:\n  epochs: 1\n  epochs: 2\n")
    one_line_error(cli(home, "--config", str(bad)), f"{bad}: duplicate key 'epochs' at line 4 (first at line 3)")
    one_line_error(cli(home, "--model", "atss_tiny", "--set", "schedule.lr_stepz=[1]"),
                   "command line: schedule: unknown key(s) lr_stepz; valid keys are:")
