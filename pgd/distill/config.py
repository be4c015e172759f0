"""A run's ``distill`` section -> the mmdet model dict that distils (mmdet side).

The section itself (one typed model per KD method, its defaults, its checks) lives in
:mod:`pgd.config.run`; here it becomes a ``PGDDistiller`` dict (PGD and the feature KD
baselines) or mmdet's own ``KnowledgeDistillationSingleStageDetector`` for ``method: ld``.
The resolved section is handed to the model as plain data (an mmengine config must stay
serialisable, so a dumped config still runs with mmdet's tools) and validated back into its
typed model there.
"""

from __future__ import annotations

from pydantic import TypeAdapter

from pgd.config.run import DistillConfig, RunConfig, parse_run, resolve_run
from pgd.errors import ConfigError

_DISTILL = TypeAdapter(DistillConfig)


def parse_distill(data) -> object:
    """The typed distill section of plain data (the model side of the mmengine edge)."""
    from pgd.config.loading import format_errors

    try:
        return _DISTILL.validate_python(data)
    except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError, reworded
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            raise ConfigError(format_errors(exc, "distill section", "distill")) from None
        raise


def distiller_model_config(run: RunConfig, num_classes: int) -> dict:
    """The mmdet model dict of a resolved run with a ``distill`` section."""
    from pgd.detectors import model_config

    if run.distill is None:
        raise ConfigError("distiller_model_config needs a run with a distill section")
    d = run.distill
    student = model_config(run.model, num_classes, backbone_checkpoint=run.backbone_checkpoint,
                           frozen_backbone_bn=run.schedule.frozen_backbone_bn)
    if d.teacher_config is not None:
        teacher = dict(d.teacher_config)
    else:
        teacher = model_config(d.teacher, num_classes)
        teacher["backbone"]["init_cfg"] = None  # weights come from the teacher checkpoint
    ckpt = d.teacher_checkpoint
    if ckpt is not None:
        from pgd.paths import check_local_file

        check_local_file(ckpt, "distill.teacher_checkpoint")
    if d.method == "ld":
        return ld_model_config(student, teacher, ckpt, d.dump(), run.work_dir)
    return dict(
        type="PGDDistiller",
        detector=run.detector,
        student=student,
        teacher=teacher,
        teacher_checkpoint=ckpt,
        distill=d.dump(),
        data_preprocessor=student["data_preprocessor"],
    )


def distiller_config(student_name: str, num_classes: int, distill: dict, *, data_kind: str = "coco",
                     work_dir=None, backbone_checkpoint: str | None = None,
                     frozen_backbone_bn: bool | None = None) -> dict:
    """:func:`distiller_model_config` for a registry student and a distill section given as
    plain data (tests, benchmarks): the same validation and defaults as a run."""
    import tempfile

    data = {"kind": data_kind}
    if data_kind != "shapes":
        data["root"] = "unused"  # only the kind matters for the distill defaults
    run = resolve_run(parse_run(dict(
        model=student_name, distill=dict(distill), data=data,
        backbone_checkpoint=backbone_checkpoint,
        schedule={"frozen_backbone_bn": frozen_backbone_bn},
        work_dir=str(work_dir) if work_dir is not None else tempfile.mkdtemp(prefix="pgd-distill-"),
    ), "distill section"))
    return distiller_model_config(run, num_classes)


LD_TEACHER_CONFIG = "ld_teacher_config.py"  # written into the run's work_dir


def ld_model_config(student: dict, teacher: dict, teacher_ckpt: str | None, resolved: dict,
                    work_dir) -> dict:
    """The model dict of method ``ld`` (``resolved``: its resolved distill section): MMDetection's own ``KnowledgeDistillationSingleStageDetector``
    with an ``LDHead`` (Localization Distillation, GFL only), not a ``PGDDistiller``.

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
    params = resolved
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
                                         loss_weight=float(params["weight"]), T=float(params["temperature"]))
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
