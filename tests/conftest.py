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


@pytest.fixture(scope="session")
def coco_tiny() -> Path:
    """The 80+80 real COCO images beside the checkout; skipped cleanly when absent."""
    ann = COCO_TINY / "annotations" / "instances_val2017.json"
    if not ann.is_file():
        pytest.skip(f"coco-tiny not found at {COCO_TINY} (set PGD_COCO_TINY to its folder)")
    return COCO_TINY
