"""Fixes for known breakages of mmdet 3.3 / mmengine 0.10.7 on torch 2.13, applied on import.

Every fix here is idempotent, documented in docs/architecture.md ("Compatibility fixes") and
covered by tests/test_compat.py.

1. ``torch.load`` defaults to ``weights_only=True`` since torch 2.6. mmengine 0.10.7 loads its
   own checkpoints (which pickle the message hub, numpy scalars and config dicts) with a bare
   ``torch.load``, so ``resume`` fails with an ``UnpicklingError``. We re-register mmengine's
   local-file checkpoint loader: it tries ``weights_only=True`` first and falls back to
   ``weights_only=False`` only for local files (checkpoints this platform wrote or a path the
   user named; never for anything fetched).
2. No model hub is reachable (and none may be used): mmengine's download schemes
   (``torchvision://``, ``open-mmlab://``, ``http(s)://``, ...) are replaced by a loader that
   raises a ConfigError telling the user to pass a local checkpoint path instead.
3. ``pgd://`` names the weights the platform packages (see pgd.detectors.mobilenet).
4. mmcv 2.1's ``DeformConv2dPack.forward`` (DDOD's head) skips the zero-padding that its parent
   ``DeformConv2d.forward`` applies to maps smaller than the kernel, so the C++ op fails with
   "input image is smaller than kernel" on the 2x2 P7 map of a 160-px image. We route it
   through the parent's forward, which pads and crops back (identical output otherwise).
"""

from __future__ import annotations

import logging
import os.path as osp
import pickle

import torch

from pgd.errors import ConfigError

_PATCHED = False
DOWNLOAD_SCHEMES = (
    "http://",
    "https://",
    "torchvision://",
    "modelzoo://",
    "open-mmlab://",
    "openmmlab://",
    "mmcls://",
    "pavi://",
    "s3://",
)

log = logging.getLogger(__name__)


def torch_load_trusted(filename: str, map_location=None):
    """Load a local checkpoint written by mmengine/torch, whatever torch's default for
    ``weights_only``: the safe loader first, the full unpickler for files that need it."""
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as exc:
        log.debug("weights_only load of %s failed (%s); loading it as a trusted file", filename, exc)
        return torch.load(filename, map_location=map_location, weights_only=False)


def _load_from_local(filename, map_location):
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(
            f"checkpoint {filename!r} not found; pass the path of an existing .pth file"
        )
    return torch_load_trusted(filename, map_location=map_location)


def _refuse_download(filename, map_location):
    raise ConfigError(
        f"checkpoint {filename!r} would be downloaded, and this platform never downloads "
        "weights at run time; download it yourself and pass its local path "
        "(e.g. backbone_checkpoint: /data/weights/resnet50.pth)"
    )


def apply() -> None:
    """Apply every fix once (called when :mod:`pgd.integration` is imported)."""
    global _PATCHED
    if _PATCHED:
        return
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes="", loader=_load_from_local, force=True)
    CheckpointLoader.register_scheme(prefixes=DOWNLOAD_SCHEMES, loader=_refuse_download, force=True)
    from pgd.detectors.mobilenet import load_packaged_weights

    CheckpointLoader.register_scheme(prefixes="pgd://", loader=load_packaged_weights, force=True)

    from mmcv.ops.deform_conv import DeformConv2d, DeformConv2dPack

    def _pack_forward(self, x):
        return DeformConv2d.forward(self, x, self.conv_offset(x))

    DeformConv2dPack.forward = _pack_forward
    _PATCHED = True
