"""Shared test fixtures: seeds, the real coco-tiny data when present, temporary homes."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
COCO_TINY = Path(os.environ.get("PGD_COCO_TINY", ROOT.parent / "shared" / "data" / "coco-tiny"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def scope():
    """mmdet's registry scope with the platform's registrations (``pgd.integration``). Opt-in
    (``pytestmark = pytest.mark.usefixtures("scope")``): pure-torch tests never import mmdet."""
    import pgd.integration

    pgd.integration.init_scope()


@pytest.fixture
def fresh_message_hub(request):
    """A MessageHub of our own, so no Runner of another test leaves an ``iter`` behind (opt-in,
    like :func:`scope`)."""
    from mmengine.logging import MessageHub

    return MessageHub.get_instance(f"pgd-test-{request.node.name}")


@pytest.fixture(scope="session")
def coco_tiny() -> Path:
    """The 80+80 real COCO images beside the checkout; skipped cleanly when absent."""
    ann = COCO_TINY / "annotations" / "instances_val2017.json"
    if not ann.is_file():
        pytest.skip(f"coco-tiny not found at {COCO_TINY} (set PGD_COCO_TINY to its folder)")
    return COCO_TINY


def tiny_run_config(work_dir, data_root, *, epochs: int, seed: int = 0, distill: dict | None = None) -> dict:
    """A run-config dict of a seconds-long atss_tiny run on a small shapes set (96 px)."""
    cfg = dict(
        model="atss_tiny", work_dir=str(work_dir), seed=seed,
        data=dict(kind="shapes", root=str(data_root), shapes=dict(train=16, val=4, size=96, seed=0)),
        schedule=dict(epochs=epochs, batch_size=4, base_lr=0.02, base_batch_size=16, warmup_iters=2,
                      lr_steps=[epochs], img_scale=[96, 96], num_workers=0, log_interval=50),
    )
    if distill is not None:
        cfg["distill"] = distill
    return cfg


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict:
    """One tiny atss teacher (2 epochs) and one student distilled from it with PGD (1 epoch),
    trained once per session: ``{"teacher": (run_config, checkpoint), "student": (...)}``.
    Absolute paths throughout, so no test's PGD_HOME matters."""
    from pgd.config.run import parse_run as run_config
    from pgd.training import train

    root = tmp_path_factory.mktemp("tiny_runs")
    data = root / "shapes"
    teacher = tiny_run_config(root / "teacher", data, epochs=2)
    t_ckpt = train(run_config(teacher))["best_checkpoint"]
    student = tiny_run_config(root / "student", data, epochs=1, seed=1,
                              distill=dict(method="pgd", teacher="atss_tiny", teacher_checkpoint=t_ckpt))
    s_ckpt = train(run_config(student))["best_checkpoint"]
    return {"teacher": (teacher, t_ckpt), "student": (student, s_ckpt)}
