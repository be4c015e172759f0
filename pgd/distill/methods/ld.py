"""LD (Zheng et al., CVPR 2022): MMDetection's own ``KnowledgeDistillationSingleStageDetector``
with an ``LDHead`` (Localization Distillation, GFL only), not a ``PGDDistiller``.

Registered like every method (so the registry covers every name of
:data:`pgd.config.names.KD_METHODS`), but :attr:`LD.external`: its model dict comes from
:meth:`LD.model_config` instead of a wrapper around a :class:`KDMethod`. Its defaults are in
:data:`pgd.config.defaults.BASELINE_DEFAULTS` with the others.
"""

from __future__ import annotations

from pgd.distill.methods.base import KDMethod, MethodContext, register_method
from pgd.errors import ConfigError


@register_method("ld")
class LD(KDMethod):
    """Marker of the LD method; building it as a distiller module is an error."""

    external = True

    def __init__(self, ctx: MethodContext, **_knobs):  # noqa: D107 - never built
        raise ConfigError(
            "method 'ld' is MMDetection's KnowledgeDistillationSingleStageDetector with an LDHead, "
            "not a PGDDistiller: build its model dict with pgd.distill.config.distiller_model_config"
        )

    @classmethod
    def from_config(cls, distill, ctx: MethodContext):
        return cls(ctx)

    @classmethod
    def model_config(cls, student: dict, teacher: dict, teacher_ckpt: str | None, distill, work_dir) -> dict:
        """The model dict of a typed, resolved LD section (:func:`ld_model_config`)."""
        return ld_model_config(student, teacher, teacher_ckpt, distill.weight, distill.temperature, work_dir)


LD_TEACHER_CONFIG = "ld_teacher_config.py"  # written into the run's work_dir


def ld_model_config(student: dict, teacher: dict, teacher_ckpt: str | None, weight: float, temperature: float,
                    work_dir) -> dict:
    """The model dict of method ``ld``: MMDetection's own ``KnowledgeDistillationSingleStageDetector``
    with an ``LDHead`` whose ``KnowledgeDistillationKLDivLoss`` has ``weight`` and ``T = temperature``.

    mmdet's detector reads its teacher from a config *file*: the teacher's model dict is
    dumped to ``<work_dir>/ld_teacher_config.py`` (``model = ...``). The detector builds the
    teacher itself, loads ``teacher_ckpt`` (``None``: random weights, tests only), keeps it in
    eval mode and out of its parameters / state dict (so the optimizer never sees it and
    checkpoints never hold it), and runs it under ``torch.no_grad``. It feeds the teacher the
    student's normalised batch, so both pixel normalisations must be equal (checked when both
    model dicts carry a ``data_preprocessor``).
    """
    from pathlib import Path

    from mmengine.config import Config

    keys = ("mean", "std", "bgr_to_rgb")
    s_pre, t_pre = student.get("data_preprocessor") or {}, teacher.get("data_preprocessor") or {}
    if s_pre and t_pre and any(s_pre.get(k) != t_pre.get(k) for k in keys):
        raise ConfigError(
            "method 'ld' feeds the teacher the student's normalised inputs, but their pixel "
            f"normalisations differ (student {[s_pre.get(k) for k in keys]}, teacher "
            f"{[t_pre.get(k) for k in keys]}); pick a teacher with the student's normalisation"
        )
    if teacher_ckpt is not None:
        _check_plain_detector_checkpoint(teacher_ckpt)
    teacher = Config(dict(teacher)).to_dict()
    if isinstance(teacher.get("backbone"), dict):
        teacher["backbone"]["init_cfg"] = None  # weights come from teacher_ckpt
    teacher.pop("init_cfg", None)
    path = Path(work_dir) / LD_TEACHER_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    Config(dict(model=teacher)).dump(str(path))
    model = Config(dict(student)).to_dict()
    model.pop("init_cfg", None)  # the KD detector takes no init_cfg (its parts keep theirs)
    model["type"] = "KnowledgeDistillationSingleStageDetector"
    model["bbox_head"]["type"] = "LDHead"
    model["bbox_head"]["loss_ld"] = dict(type="KnowledgeDistillationKLDivLoss",
                                         loss_weight=float(weight), T=float(temperature))
    model.update(teacher_config=str(path), teacher_ckpt=teacher_ckpt, eval_teacher=True)
    return model


def _check_plain_detector_checkpoint(path: str) -> None:
    """mmdet's KD detector loads the teacher checkpoint non-strictly and without renaming
    keys, so a checkpoint of a wrapper (``student.backbone...``, ``module.`` is fine) would
    silently leave the teacher random: refuse it here."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except RuntimeError:  # not a zip-format file: no mmap
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
    keys = [k[len("module."):] if k.startswith("module.") else k for k in state]
    if not any(k.startswith("backbone.") for k in keys):
        prefixes = sorted({k.split(".", 1)[0] for k in keys})[:8]
        raise ConfigError(
            f"distill.teacher_checkpoint {path!r} is not a plain detector checkpoint (no "
            f"'backbone.*' keys; top-level names: {prefixes}); method 'ld' loads it into the "
            "bare teacher detector, so export the teacher's own weights first"
        )
