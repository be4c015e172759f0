"""Datasets: the built-in synthetic shapes set, COCO validation, the CrowdHuman converter.

Names are imported lazily so that ``python -m pgd.data.shapes`` (or ``.crowdhuman``) runs
its module exactly once.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SHAPES_CLASSES": ("pgd.data.shapes", "CLASSES"),
    "ShapesDataset": ("pgd.data.shapes", "ShapesDataset"),
    "ensure_shapes": ("pgd.data.shapes", "ensure_shapes"),
    "generate_shapes": ("pgd.data.shapes", "generate_shapes"),
    "validate_coco": ("pgd.data.validate", "validate_coco"),
    "coco_categories": ("pgd.data.validate", "coco_categories"),
    "convert_crowdhuman": ("pgd.data.crowdhuman", "convert_crowdhuman"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'pgd.data' has no attribute {name!r}")
