"""Registry of ``<detector>_<backbone>`` names -> mmdet 3.3 model configs.

Each detector inherits mmdet's packaged 1x config (loaded from the installed mmdet, never
copied); we only replace the backbone (and, for ``tiny``, shrink the neck and head), set the
number of classes and point weight initialisation at a local path. Nothing is downloaded:
ResNets start from scratch unless ``backbone_checkpoint`` names a local file, MobileNetV2
loads the packaged ImageNet weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from pgd.config import names
from pgd.errors import ConfigError, unknown_name


@dataclass(frozen=True)
class DetectorSpec:
    mmdet_config: str  # path relative to mmdet's packaged configs
    anchor_based: bool
    caffe_style: bool  # the packaged config uses caffe-style ResNet and BGR pixel means


DETECTORS: dict[str, DetectorSpec] = {
    "atss": DetectorSpec("atss/atss_r50_fpn_1x_coco.py", True, False),
    "fcos": DetectorSpec("fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py", False, True),
    "gfl": DetectorSpec("gfl/gfl_r50_fpn_1x_coco.py", True, False),
    "ddod": DetectorSpec("ddod/ddod_r50_fpn_1x_coco.py", True, False),
    "autoassign": DetectorSpec("autoassign/autoassign_r50-caffe_fpn_1x_coco.py", False, True),
}

# Backbone variants. ``tiny`` is the CPU variant: ResNet-18 depth at half width (stages of
# 32..256 channels), a 64-channel FPN and a 2-conv 64-channel head; its inputs are <= 320 px
# (objects ~3-4x smaller than at COCO's 1333x800), so its anchors (octave_base_scale 8 -> 4)
# and FCOS regression ranges are halved.
BACKBONES: dict[str, dict] = {
    "r101": dict(kind="resnet", depth=101, channels=[256, 512, 1024, 2048]),
    "r50": dict(kind="resnet", depth=50, channels=[256, 512, 1024, 2048]),
    "mbv2": dict(kind="mobilenet_v2", out_indices=(2, 4, 6), channels=[32, 96, 320]),
    "tiny": dict(kind="resnet", depth=18, base_channels=32, channels=[32, 64, 128, 256],
                 fpn_channels=64, head_channels=64, stacked_convs=2, prior_scale=0.5),
}
PYTORCH_PIXELS = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)


def _scale_priors(head: dict, factor: float) -> None:
    """Shrink anchor sizes / FCOS regression ranges for small inputs."""
    if "anchor_generator" in head:
        head["anchor_generator"]["octave_base_scale"] *= factor
    if head["type"] == "FCOSHead":
        from mmdet.models.dense_heads.fcos_head import INF

        ranges = head.get("regress_ranges", ((-1, 64), (64, 128), (128, 256), (256, 512), (512, INF)))
        head["regress_ranges"] = tuple(
            (lo if lo < 0 else lo * factor, hi if hi >= INF else hi * factor) for lo, hi in ranges
        )


assert tuple(DETECTORS) == names.DETECTORS and tuple(BACKBONES) == names.BACKBONES
model_names = names.model_names


def parse_name(name: str) -> tuple[str, str]:
    """Split ``<detector>_<backbone>``; unknown names list the valid ones."""
    if not isinstance(name, str) or "_" not in name:
        raise unknown_name("model", name, model_names())
    det, bb = name.rsplit("_", 1)
    if det not in DETECTORS or bb not in BACKBONES:
        raise unknown_name("model", name, model_names())
    return det, bb


def mmdet_config_root() -> Path:
    import mmdet

    root = Path(mmdet.__file__).parent / ".mim" / "configs"
    if not root.is_dir():
        raise ConfigError(f"mmdet's packaged configs are missing at {root}; reinstall mmdet==3.3.0")
    return root


def packaged_config(detector: str):
    """The full packaged mmdet config (model, data, schedule) of a detector."""
    from mmengine.config import Config

    if detector not in DETECTORS:
        raise unknown_name("detector", detector, DETECTORS)
    return Config.fromfile(str(mmdet_config_root() / DETECTORS[detector].mmdet_config))


def has_pretrained_backbone(name: str, backbone_checkpoint: str | None = None) -> bool:
    _, bb = parse_name(name)
    return bb == "mbv2" or backbone_checkpoint is not None


def model_config(
    name: str,
    num_classes: int,
    *,
    backbone_checkpoint: str | None = None,
    frozen_backbone_bn: bool | None = None,
) -> dict:
    """The mmdet ``model`` dict (a ConfigDict) for a registry name.

    Args:
        name: ``<detector>_<backbone>``.
        num_classes: classes of the dataset.
        backbone_checkpoint: local path of backbone weights (ResNets); ``None`` trains from
            scratch. MobileNetV2 always loads the packaged ImageNet weights.
        frozen_backbone_bn: freeze the backbone's BatchNorm (statistics and affine, the
            paper's recipe for pretrained backbones). ``None``: frozen iff the backbone starts
            from pretrained weights (frozen BN on a random init would never learn).
    """
    from pgd.compat import apply

    apply()
    det, bb = parse_name(name)
    if int(num_classes) < 1:
        raise ConfigError(f"num_classes={num_classes!r} must be >= 1")
    if backbone_checkpoint is not None:
        if bb == "mbv2":
            raise ConfigError("mbv2 loads the packaged ImageNet weights; drop backbone_checkpoint")
        if not Path(backbone_checkpoint).expanduser().is_file():
            raise ConfigError(
                f"backbone_checkpoint {backbone_checkpoint!r} does not exist; pass the local path "
                "of a .pth state dict (nothing is downloaded)"
            )
    bspec = BACKBONES[bb]
    model = copy.deepcopy(packaged_config(det).model.to_dict())
    pretrained = has_pretrained_backbone(name, backbone_checkpoint)
    frozen = pretrained if frozen_backbone_bn is None else bool(frozen_backbone_bn)

    if bspec["kind"] == "resnet":
        backbone = model["backbone"]
        backbone.update(depth=bspec["depth"])
        if "base_channels" in bspec:
            backbone["base_channels"] = bspec["base_channels"]
        backbone["norm_cfg"] = dict(type="BN", requires_grad=not frozen)
        backbone["norm_eval"] = frozen
        backbone["frozen_stages"] = 1 if pretrained else -1
        backbone["init_cfg"] = (
            dict(type="Pretrained", checkpoint=str(Path(backbone_checkpoint).expanduser()))
            if backbone_checkpoint
            else None
        )
        if bb == "tiny":
            # scratch-trained: plain pytorch style and ImageNet-statistics pixel normalisation
            backbone["style"] = "pytorch"
            model["data_preprocessor"].update(PYTORCH_PIXELS)
    else:
        from pgd.detectors.mobilenet import MBV2_URI

        model["backbone"] = dict(
            type="MobileNetV2",
            out_indices=bspec["out_indices"],
            frozen_stages=-1,
            norm_cfg=dict(type="BN", requires_grad=not frozen),
            norm_eval=frozen,
            init_cfg=dict(type="Pretrained", checkpoint=MBV2_URI),
        )
        model["data_preprocessor"].update(PYTORCH_PIXELS)

    neck = model["neck"]
    neck["in_channels"] = list(bspec["channels"])
    neck["start_level"] = 1 if len(bspec["channels"]) == 4 else 0
    head = model["bbox_head"]
    head["num_classes"] = int(num_classes)
    if "fpn_channels" in bspec:
        neck["out_channels"] = bspec["fpn_channels"]
        head["in_channels"] = bspec["fpn_channels"]
        head["feat_channels"] = bspec["head_channels"]
        head["stacked_convs"] = bspec["stacked_convs"]
    if "prior_scale" in bspec:
        _scale_priors(head, bspec["prior_scale"])
    from mmengine.config import ConfigDict

    return ConfigDict(model)  # attribute access, as mmdet heads expect of test_cfg
