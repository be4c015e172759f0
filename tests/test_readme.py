"""Every command of the README's "Everyday use" section runs, in order, in a fresh home,
with tiny overrides appended (the substitutions are listed in ``adapt``): a README example
that no longer works fails CI."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_DATA = ["--set", "data.shapes={train: 8, val: 4, size: 64, seed: 0}"]
TINY_RUN = ["--set", "schedule.img_scale=[64, 64]", "--set", "schedule.batch_size=4",
            "--set", "schedule.num_workers=0", "--set", "schedule.warmup_iters=2"]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Everyday use"):]
    section = section[:section.index("\n## ", 3)]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", block)
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def adapt(cmd: str, coco_tiny: Path | None, weights: Path) -> list[str] | None:
    """The README command with the test's substitutions: this interpreter, 1 epoch instead of
    N (checkpoint names follow; 1 epoch where the command sets none), coco-tiny for /data/coco, generated ResNet-50 weights, tiny
    data and image sizes. None: the command needs coco-tiny and it is absent."""
    if "/data/coco" in cmd and coco_tiny is None:
        return None
    cmd = re.sub(r"--epochs \d+", "--epochs 1", cmd).replace("epoch_12", "epoch_1")
    cmd = cmd.replace("/data/coco", str(coco_tiny)).replace("/weights/resnet50.pth", str(weights))
    args = shlex.split(cmd)
    assert args[0] == ".venv/bin/python", cmd
    args[0] = sys.executable
    script = args[1]
    if script == "pipelines/train.py":
        args += ([] if "--data" in args else TINY_DATA) + TINY_RUN
        if "--epochs" not in args and "--eval-only" not in args:  # e.g. the ResNet-50 example's 12
            args += ["--epochs", "1"]
    elif script == "pipelines/analyze.py":
        args += TINY_DATA + TINY_RUN[:2]
    return args


def fake_sweep_record(home: Path) -> None:
    """A recorded smoke sweep (parent + a student and a PGD child) for the report example."""
    from pgd.plan import build_plan
    from pgd.sweep import tracking as T

    plan = build_plan(ROOT / "search_spaces" / "smoke.yaml")
    c = T.client(plan.tracking_uri)
    exp = T.ensure_experiment(c, "smoke", str(home / "mlartifacts"))
    parent = T.parent_run(c, exp, plan.sweep_id, space_text="x", space_name="smoke", project_dir=ROOT)
    first_seed = [t for t in plan.trials if t.seed == plan.trials[0].seed]  # a student and a PGD trial
    for trial, ap in zip(first_seed, (5.0, 6.0)):
        name, params, _, tags = T.describe_trial(trial)
        run = c.create_run(exp, run_name=name, tags={T.TAG_SWEEP: plan.sweep_id, T.TAG_ROLE: "trial",
                                                     T.TAG_PARENT: parent, T.TAG_TRIAL: trial.key,
                                                     **{k: str(v) for k, v in tags.items()}})
        T.log_params(c, run.info.run_id, params)
        c.log_dict(run.info.run_id, trial.run.dump(), "resolved_config.yaml")
        for k in ("AP", "AP50", "AP75", "APS", "APM", "APL"):
            c.log_metric(run.info.run_id, k, ap, step=1)
        c.set_terminated(run.info.run_id, "FINISHED")


def test_readme_everyday_examples_run(tmp_path):
    import torch

    from pgd.detectors import model_config  # noqa: F401  (the registry imports mmdet)

    coco = ROOT.parent / "shared" / "data" / "coco-tiny"
    coco = coco if (coco / "annotations" / "instances_val2017.json").is_file() else None
    home = tmp_path / "home"
    home.mkdir()
    from mmdet.models.backbones import ResNet

    weights = tmp_path / "resnet50.pth"
    torch.save(ResNet(depth=50).state_dict(), weights)
    env = dict(os.environ, PGD_HOME=str(home))
    commands = readme_commands()
    assert len(commands) >= 8 and any("report.py" in c for c in commands)
    for cmd in commands:
        if "pipelines/report.py" in cmd:
            os.environ["PGD_HOME"] = str(home)
            try:
                fake_sweep_record(home)
            finally:
                del os.environ["PGD_HOME"]
        args = adapt(cmd, coco, weights)
        if args is None:
            continue
        out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
        assert out.returncode == 0, f"README command failed: {cmd}\n{out.stderr[-3000:]}"
    assert (home / "q.png").is_file() or (ROOT / "q.png").is_file()


@pytest.fixture(autouse=True)
def _no_stray_outputs():
    yield
    (ROOT / "q.png").unlink(missing_ok=True)
