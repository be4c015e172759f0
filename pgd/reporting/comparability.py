"""The comparability guard: which runs a delta may be taken between.

A row is compared with its baseline only when both were trained and evaluated the same way:
same dataset, split, image scale, schedule and student model, and for a KD row against a KD
baseline the same teacher. ``ASPECTS`` is the one list of the keys that decide it, as
columns of :func:`pgd.reporting.tables.runs_frame` (``param.<dotted run-config key>`` for the
params MLflow holds per run, ``tag.<name>`` for its tags).

Values are compared as MLflow stores them (strings). A key absent from both sides (or the
string ``None``) counts as equal; absent on one side only is a difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

PARAM = "param."
TAG = "tag."
TAG_TEACHER_HASH = "pgd.teacher_hash"  # the teacher's config hash (KD runs and teacher runs)


@dataclass(frozen=True)
class Aspect:
    """One thing two compared rows must share, and the run-frame columns that define it."""

    name: str
    keys: tuple[str, ...]
    kd_only: bool = False  # checked only when both rows distil from a teacher


ASPECTS: tuple[Aspect, ...] = (
    Aspect("dataset", tuple(PARAM + k for k in (
        "data.kind", "data.root", "data.train_ann", "data.train_img", "data.shapes.train",
        "data.shapes.size", "data.shapes.seed", "data.filter_empty_gt", "data.allow_outside"))),
    Aspect("split", tuple(PARAM + k for k in ("data.val_ann", "data.val_img", "data.shapes.val"))),
    Aspect("image scale", tuple(PARAM + k for k in (
        "schedule.img_scale", "schedule.multiscale", "schedule.flip_prob"))),
    Aspect("schedule", (*(PARAM + k for k in (
        "schedule.epochs", "schedule.batch_size", "schedule.base_lr", "schedule.base_batch_size",
        "schedule.momentum", "schedule.weight_decay", "schedule.warmup_iters", "schedule.warmup_ratio",
        "schedule.lr_steps", "schedule.lr_gamma", "schedule.grad_clip", "schedule.frozen_backbone_bn")),
        TAG + "pgd.world_size")),  # workers scale the batch (linear-scaling rule)
    Aspect("student model", tuple(PARAM + k for k in ("model", "backbone_checkpoint", "load_from"))),
    Aspect("teacher", (TAG + TAG_TEACHER_HASH,), kd_only=True),
)
ASPECT_NAMES = tuple(a.name for a in ASPECTS)


@dataclass(frozen=True)
class Difference:
    """A guard key whose values differ between a row's runs and its baseline's runs (or,
    with ``base_values`` empty, among the runs of one row)."""

    aspect: str
    key: str
    values: tuple
    base_values: tuple = ()

    def describe(self) -> str:
        key = _label(self.key)
        if not self.base_values:
            return f"{self.aspect} mixed within the row: {key} = {' / '.join(map(_show, self.values))}"
        return (f"{self.aspect} differs: {key} = {' / '.join(map(_show, self.values))} vs baseline "
                f"{' / '.join(map(_show, self.base_values))}")


def norm(v):
    """A stored value, or None when the run does not define it (absent, NaN, 'None', '')."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    s = str(v).strip()
    return None if s in ("", "None", "nan") else s


def values(runs: pd.DataFrame, key: str) -> tuple:
    """The distinct values of ``key`` over ``runs`` (None for a run that lacks it), sorted."""
    col = runs[key] if key in runs else pd.Series([None] * len(runs), index=runs.index)
    return tuple(sorted({norm(v) for v in col}, key=lambda v: (v is not None, v or "")))


def differences(runs: pd.DataFrame, base: pd.DataFrame, *, kd: bool,
                aspects: tuple[Aspect, ...] = ASPECTS) -> list[Difference]:
    """Guard keys on which the runs of a row and of its baseline differ (``kd``: both rows
    distil from a teacher, so the teacher must match too)."""
    out = []
    for a in aspects:
        if a.kd_only and not kd:
            continue
        for key in a.keys:
            v, b = values(runs, key), values(base, key)
            if v != b:
                out.append(Difference(a.name, key, v, b))
    return out


def mixed(runs: pd.DataFrame, *, kd: bool, aspects: tuple[Aspect, ...] = ASPECTS) -> list[Difference]:
    """Guard keys that take more than one value among the runs of one row."""
    out = []
    for a in aspects:
        if a.kd_only and not kd:
            continue
        out.extend(Difference(a.name, key, v) for key in a.keys if len(v := values(runs, key)) > 1)
    return out


def aspects_named(*names: str) -> tuple[Aspect, ...]:
    """The aspects with these names (e.g. ``dataset``, ``split`` for teacher vs student)."""
    unknown = set(names) - set(ASPECT_NAMES)
    if unknown:
        raise ValueError(f"unknown aspects {sorted(unknown)}; valid: {', '.join(ASPECT_NAMES)}")
    return tuple(a for a in ASPECTS if a.name in names)


def _label(key: str) -> str:
    return key[len(PARAM):] if key.startswith(PARAM) else f"tag {key[len(TAG):]}" if key.startswith(TAG) else key


def _show(v) -> str:
    return "(not set)" if v is None else str(v)
