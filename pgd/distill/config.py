"""The ``distill`` section of a run: which teacher, which KD method, every PGD knob.

``null`` values are resolved from the per-detector defaults (pgd.distill.defaults) when the
run is built; the resolved values are what the distiller uses and what MLflow records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pgd.configs import from_dict, to_dict
from pgd.distill import defaults as D
from pgd.errors import ConfigError, check_range, unknown_name

METHODS = ("pgd", "fgd", "defeat", "frs", "fgfi", "fkd", "ld", "crosskd")
BRANCHES = ("neck", "cls", "reg")
STRATEGIES = ("box", "box_gauss", "centre", "quality", "topk_eq", "kde", "pgw")
TOPK_SCOPES = ("inside", "all")


@dataclass
class DistillConfig:
    method: str = "pgd"  # pgd | fgd | defeat | frs | fgfi | fkd | ld | crosskd
    teacher: str | None = None  # registry name, e.g. atss_r101 (required)
    teacher_checkpoint: str | None = None  # local .pth of the trained teacher
    teacher_config: dict | None = None  # an mmdet model dict replacing the registry config
    allow_random_teacher: bool = False  # tests/benchmarks only: no checkpoint needed
    strategy: str = "pgw"  # foreground strategy (paper Table 5)
    alpha: float | None = None  # fg weight; null: per-detector default
    beta: float | None = None  # bg weight; null: alpha / 2
    gamma: float | None = None  # reg feature weight; null: 1.6 alpha
    delta: float = D.DELTA  # attention weight
    tau: float | None = None  # attention temperature; null: per-detector default
    k: int | None = None  # top-K of both masks (paper's K); null: per-detector K
    k_cls: int | None = None  # top-K of the cls mask alone; null: k
    k_reg: int | None = None  # top-K of the reg mask alone; null: k
    xi_cls: float = D.XI_CLS
    xi_reg: float = D.XI_REG
    level_weights: list[float] = field(default_factory=lambda: list(D.LEVEL_WEIGHTS))
    branches: list[str] = field(default_factory=lambda: ["cls", "reg"])
    topk_scope: str = "inside"
    inherit_teacher_neck_head: bool | None = None  # null: true when teacher/student detectors match
    strategy_params: dict = field(default_factory=dict)  # box_gauss / kde / centre knobs
    method_params: dict = field(default_factory=dict)  # weights of the KD baselines

    def validate(self, path: str) -> None:
        if self.method not in METHODS:
            raise unknown_name("KD method", self.method, METHODS)
        if self.strategy not in STRATEGIES:
            raise unknown_name("foreground strategy", self.strategy, STRATEGIES)
        if self.topk_scope not in TOPK_SCOPES:
            raise unknown_name("topk_scope", self.topk_scope, TOPK_SCOPES)
        if not self.branches or any(b not in BRANCHES for b in self.branches):
            raise ConfigError(
                f"{path}.branches={self.branches!r} must be a non-empty subset of {list(BRANCHES)}"
            )
        if len(set(self.branches)) != len(self.branches):
            raise ConfigError(f"{path}.branches={self.branches!r} repeats a branch")
        for name in ("alpha", "beta", "gamma", "delta"):
            v = getattr(self, name)
            if v is not None:
                check_range(f"{path}.{name}", v, 0)
        if self.tau is not None:
            check_range(f"{path}.tau", self.tau, 0, lo_open=True)
        for name in ("k", "k_cls", "k_reg"):
            v = getattr(self, name)
            if v is not None:
                check_range(f"{path}.{name}", v, 1)
        check_range(f"{path}.xi_cls", self.xi_cls, 0, 1)
        check_range(f"{path}.xi_reg", self.xi_reg, 0, 1)
        if len(self.level_weights) != 5 or any(w < 0 for w in self.level_weights):
            raise ConfigError(
                f"{path}.level_weights={self.level_weights!r} must be 5 non-negative weights (P3..P7)"
            )
        if self.method == "pgd":
            if self.method_params:
                raise ConfigError(
                    f"{path}.method_params={self.method_params!r} applies to the KD baselines "
                    f"({', '.join(m for m in METHODS if m != 'pgd')}); method 'pgd' takes its "
                    f"knobs from the other keys of {path}"
                )
        else:
            from pgd.distill.baselines import check_method_params

            check_method_params(self.method, self.method_params, f"{path}.method_params")
        if self.teacher is None and self.teacher_config is None:
            raise ConfigError(f"{path}.teacher is required: a registry name such as atss_r101")
        if self.teacher_checkpoint is None and not self.allow_random_teacher:
            raise ConfigError(
                f"{path}.teacher_checkpoint is required (the trained teacher's .pth); set "
                f"{path}.allow_random_teacher: true only for tests and benchmarks"
            )


def distill_config(data: dict | DistillConfig | None) -> DistillConfig:
    return from_dict(DistillConfig, data, "distill")


def resolve_defaults(cfg: DistillConfig, student_detector: str, data_kind: str = "coco") -> dict:
    """The distill section with every ``null`` replaced by its default."""
    d = D.pgd_defaults(student_detector, data_kind)
    out = to_dict(cfg)
    out["alpha"] = d["alpha"] if cfg.alpha is None else cfg.alpha
    out["beta"] = out["alpha"] * D.BETA_OVER_ALPHA if cfg.beta is None else cfg.beta
    out["gamma"] = out["alpha"] * D.GAMMA_OVER_ALPHA if cfg.gamma is None else cfg.gamma
    out["tau"] = d["tau"] if cfg.tau is None else cfg.tau
    k = d["k"] if cfg.k is None else cfg.k
    out["k"] = k
    out["k_cls"] = k if cfg.k_cls is None else cfg.k_cls
    out["k_reg"] = k if cfg.k_reg is None else cfg.k_reg
    if cfg.inherit_teacher_neck_head is None:  # mmdet's LD detector cannot inherit
        out["inherit_teacher_neck_head"] = cfg.method != "ld"
    if cfg.method != "pgd":  # a KD baseline: its detector's defaults updated with method_params
        from pgd.distill.baselines import method_params

        out["method_params"] = method_params(cfg.method, student_detector, cfg.method_params)
    return out


def distiller_model_config(run, num_classes: int) -> dict:
    """The mmdet model dict of a run with a ``distill`` section (see :func:`distiller_config`)."""
    from pgd.paths import resolve

    return distiller_config(
        run.model, num_classes, run.distill, data_kind=run.data.kind, work_dir=resolve(run.work_dir),
        backbone_checkpoint=str(resolve(run.backbone_checkpoint)) if run.backbone_checkpoint else None,
        frozen_backbone_bn=run.schedule.frozen_backbone_bn,
    )


def distiller_config(student_name: str, num_classes: int, distill: dict | DistillConfig, *,
                     data_kind: str = "coco", work_dir=None, backbone_checkpoint: str | None = None,
                     frozen_backbone_bn: bool | None = None) -> dict:
    """The mmdet model dict that distils registry model ``student_name`` with the ``distill``
    section: a ``PGDDistiller`` (PGD and the feature KD baselines), or mmdet's own
    ``KnowledgeDistillationSingleStageDetector`` for ``method: ld``. Every default is resolved
    here (per detector, per data kind), so what the model gets is what MLflow records."""
    from pathlib import Path

    from pgd.detectors import model_config, parse_name
    from pgd.paths import resolve

    cfg = distill_config(distill)
    s_det, _ = parse_name(student_name)
    student = model_config(student_name, num_classes, backbone_checkpoint=backbone_checkpoint,
                           frozen_backbone_bn=frozen_backbone_bn)
    if cfg.teacher_config is not None:
        teacher = dict(cfg.teacher_config)
        t_det = cfg.teacher.rsplit("_", 1)[0] if cfg.teacher else s_det
    else:
        t_det, _ = parse_name(cfg.teacher)
        teacher = model_config(cfg.teacher, num_classes)
        teacher["backbone"]["init_cfg"] = None  # weights come from the teacher checkpoint
    if t_det != s_det:
        raise ConfigError(
            f"teacher {cfg.teacher!r} and student {student_name!r} are different detectors; PGD "
            "distils a detector into the same detector with a smaller backbone"
        )
    resolved = resolve_defaults(cfg, s_det, data_kind)
    ckpt = str(resolve(cfg.teacher_checkpoint)) if cfg.teacher_checkpoint else None
    if ckpt is not None and not Path(ckpt).is_file():
        raise ConfigError(f"distill.teacher_checkpoint {ckpt!r} does not exist")
    if cfg.method == "ld":
        if work_dir is None:
            raise ConfigError("method 'ld' needs a work_dir to write its teacher config into")
        return ld_model_config(student, teacher, ckpt, resolved, work_dir)
    return dict(
        type="PGDDistiller",
        detector=s_det,
        student=student,
        teacher=teacher,
        teacher_checkpoint=ckpt,
        distill=resolved,
        data_preprocessor=student["data_preprocessor"],
    )


LD_TEACHER_CONFIG = "ld_teacher_config.py"  # written into the run's work_dir


def ld_model_config(student: dict, teacher: dict, teacher_ckpt: str | None, resolved: dict,
                    work_dir) -> dict:
    """The model dict of method ``ld``: MMDetection's own ``KnowledgeDistillationSingleStageDetector``
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

    if resolved.get("inherit_teacher_neck_head"):
        raise ConfigError("distill.inherit_teacher_neck_head is not supported by method 'ld' "
                          "(mmdet's KnowledgeDistillationSingleStageDetector); set it to false or null")
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
    params = resolved["method_params"]
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
