"""A run's ``distill`` section -> the mmdet model dict that distils (mmdet side).

The section itself (one typed model per KD method, its defaults, its checks) lives in
:mod:`pgd.config.run`; here it becomes a ``PGDDistiller`` dict (every registered
:class:`pgd.distill.methods.KDMethod`) or, for an ``external`` method (LD), that method's own
model dict (mmdet's ``KnowledgeDistillationSingleStageDetector``, :mod:`pgd.distill.methods.ld`).
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
    from pgd.distill.methods import method_class

    method = method_class(d.method)
    if method.external:  # LD: mmdet's own distilling detector
        return method.model_config(student, teacher, ckpt, d, run.work_dir)
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

