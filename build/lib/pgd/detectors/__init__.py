"""Detector registry: ``<detector>_<backbone>`` names -> mmdet model configs."""

from pgd.detectors.registry import (
    BACKBONES,
    DETECTORS,
    has_pretrained_backbone,
    model_config,
    model_names,
    packaged_config,
    parse_name,
)

__all__ = [
    "BACKBONES",
    "DETECTORS",
    "has_pretrained_backbone",
    "model_config",
    "model_names",
    "packaged_config",
    "parse_name",
]
