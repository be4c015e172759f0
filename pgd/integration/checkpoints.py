"""Checkpoints checked before they are used: a file that is no checkpoint, or a checkpoint of
another model, fails in one line naming it instead of deep inside mmengine.

``load_state`` reads a checkpoint's state dict (mmap, no copy); ``compare_state`` lists the
missing, unexpected and shape-mismatched keys against a model; ``check_detector_checkpoint``
builds the named detector (no weights loaded) and refuses a checkpoint that does not fit it
exactly (issue 7: a teacher that did not load is a wrong answer).
"""

from __future__ import annotations

import re

import torch

from pgd.errors import ConfigError
from pgd.paths import check_local_file

#: wrapper prefixes removed from checkpoint keys (DDP, a distiller's student)
REVISE_KEYS = ((r"^module\.", ""), (r"^student\.", ""))


def load_state(path: str, what: str = "checkpoint") -> dict:
    """The state dict of a local checkpoint (mmengine's ``state_dict`` entry or a bare one)."""
    from pgd.compat import torch_load_trusted

    p = check_local_file(path, what)
    try:
        ckpt = torch.load(str(p), map_location="cpu", mmap=True, weights_only=True)
    except Exception:  # noqa: BLE001 - fall back to the trusted loader (local files only)
        try:
            ckpt = torch_load_trusted(str(p), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any failure means: not a checkpoint
            first = (str(exc).splitlines() or [""])[0][:200]
            raise ConfigError(f"{what} {str(p)!r} is not a PyTorch checkpoint ({type(exc).__name__}: {first})") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{what} {str(p)!r} holds no state dict of tensors")
    return state


def revise(state: dict, rules=REVISE_KEYS) -> dict:
    out = {}
    for k, v in state.items():
        for pat, rep in rules:
            k = re.sub(pat, rep, k)
        out[k] = v
    return out


def compare_state(expected: dict, given: dict) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, shape-mismatched) keys of ``given`` against ``expected``."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
                    for k in set(expected) & set(given) if tuple(given[k].shape) != tuple(expected[k].shape))
    return missing, unexpected, shapes


def mismatch_message(what: str, path: str, missing, unexpected, shapes, limit: int = 8) -> str:
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", shapes)):
        if keys:
            more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
            parts.append(f"{len(keys)} {label}: {', '.join(keys[:limit])}{more}")
    return f"{what} {path!r} does not fit the model: " + "; ".join(parts)


def check_detector_checkpoint(path: str, model_cfg: dict, what: str = "checkpoint") -> int:
    """Refuse ``path`` unless its weights load into the detector ``model_cfg`` with zero
    missing, unexpected or shape-mismatched keys. Returns the number of tensors."""
    import copy

    from mmdet.registry import MODELS

    import pgd.integration

    pgd.integration.init_scope()
    cfg = copy.deepcopy(model_cfg)
    if isinstance(cfg.get("backbone"), dict):
        cfg["backbone"]["init_cfg"] = None
    model = MODELS.build(cfg)
    given = revise(load_state(path, what))
    missing, unexpected, shapes = compare_state(model.state_dict(), given)
    if missing or unexpected or shapes:
        raise ConfigError(mismatch_message(what, path, missing, unexpected, shapes))
    return len(given)


#: checkpoint keys a backbone may leave unused: the ImageNet classifier of a torchvision file
IGNORABLE_BACKBONE_KEYS = ("fc.", "classifier.")


def check_backbone_checkpoint(path: str, model_cfg: dict, what: str = "backbone_checkpoint") -> int:
    """Refuse backbone weights (a local file, or the packaged ``pgd://`` weights) that leave a
    key of the backbone unmatched or bring keys it has no place for (other than the ImageNet
    classifier): mmengine's ``Pretrained`` init loads non-strictly and would only warn, leaving
    the backbone partly random. Returns the number of tensors loaded."""
    import copy

    from mmdet.registry import MODELS

    import pgd.integration

    pgd.integration.init_scope()
    cfg = copy.deepcopy(dict(model_cfg["backbone"]))
    cfg["init_cfg"] = None
    backbone = MODELS.build(cfg)
    if str(path).startswith("pgd://"):
        from pgd.detectors.mobilenet import load_packaged_weights

        given = dict(load_packaged_weights(str(path)))
    else:
        given = load_state(path, what)
    expected = {k: v for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {k: v for k, v in given.items() if not k.endswith("num_batches_tracked")}
    missing, unexpected, shapes = compare_state(expected, given)
    unexpected = [k for k in unexpected if not k.startswith(IGNORABLE_BACKBONE_KEYS)]
    if missing or unexpected or shapes:
        raise ConfigError(mismatch_message(f"{what} (for the {cfg.get('type')} backbone)", path,
                                           missing, unexpected, shapes))
    return len(expected)
