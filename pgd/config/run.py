"""The run configuration: one training (or, with ``distill``, distillation) run as one typed
object, from YAML to the distiller.

- :class:`RunConfig` with its sections :class:`ScheduleConfig`, :class:`DataConfig`
  (:class:`ShapesConfig`) and ``distill``: a union discriminated by ``distill.method`` with one
  model per KD method (:class:`PGDDistill`; one generated model per KD baseline whose keys are
  that method's knobs in :data:`pgd.config.defaults.BASELINE_DEFAULTS`). A key that does not
  belong to the method (``distill.strategy`` of an FGD run) is an error.
- :func:`parse_run` validates plain data (a YAML mapping, ``--set`` overrides) into a
  RunConfig, with errors naming the source, the key path, the value and the choices.
- :func:`resolve_run` replaces every ``null`` that means "the default" (per detector, per data
  kind, derived from the schedule) and makes every path absolute under ``PGD_HOME``. A resolved
  run is what trains, what a sweep plan holds and what MLflow records.

Every key has one documented default (the comment beside it); sweeps vary them by dotted path
(``schedule.epochs``, ``distill.alpha``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Discriminator, Field, Tag, create_model, field_validator, model_validator

from pgd.config import defaults as D
from pgd.config.base import NonNegFloat, NonNegInt, PosFloat, PosInt, Strict, UnitFloat
from pgd.config.loading import register_union_tags, validate
from pgd.config.names import (
    BASELINES,
    BRANCHES,
    CHECK_IMAGES,
    DATA_KINDS,
    DEVICES,
    KD_METHODS,
    PGD_PRESETS,
    STRATEGIES,
    TOPK_SCOPES,
    model_names,
)
from pgd.errors import ConfigError

ModelName = Literal[tuple(model_names())]


def split_model(name: str) -> tuple[str, str]:
    """``atss_r50`` -> ``("atss", "r50")`` (the name is validated by the models)."""
    det, bb = name.rsplit("_", 1)
    return det, bb


# ----------------------------------------------------------------------------- schedule
class ScheduleConfig(Strict):
    """Optimisation schedule. Defaults are the paper's student 1x recipe (spec section 7)."""

    epochs: PosInt = 12
    batch_size: PosInt = 2  # images per worker
    base_lr: PosFloat = 0.02  # learning rate for base_batch_size images per step
    base_batch_size: PosInt = 32  # lr = base_lr * batch_size * workers / base_batch_size
    momentum: UnitFloat = 0.9
    weight_decay: NonNegFloat = 1e-4
    warmup_iters: NonNegInt = 500  # linear warm-up from warmup_ratio * lr
    warmup_ratio: Annotated[float, Field(gt=0, le=1)] = 0.001
    lr_steps: Optional[list[PosInt]] = None  # epochs where lr *= lr_gamma; null: 2/3 and 11/12 of epochs
    lr_gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    grad_clip: Optional[PosFloat] = 35.0  # max grad L2 norm; null disables clipping
    frozen_backbone_bn: Optional[bool] = None  # null: frozen iff the backbone is pretrained
    img_scale: list[Annotated[int, Field(ge=32)]] = [1333, 800]  # (long, short) max, px
    multiscale: Optional[list[Annotated[int, Field(ge=32)]]] = None  # [min, max] short side (teacher 3x)
    flip_prob: UnitFloat = 0.5
    val_interval: PosInt = 1  # evaluate every N epochs (and always after the last)
    checkpoint_interval: PosInt = 1
    max_keep_ckpts: PosInt = 2
    num_workers: NonNegInt = 2  # data-loading processes per worker
    log_interval: PosInt = 50  # iterations between mmengine log lines

    @field_validator("img_scale")
    @classmethod
    def _two_sides(cls, v):
        if len(v) != 2:
            raise ValueError(f"must be [long, short] (2 values), got {v}")
        return v

    @field_validator("multiscale")
    @classmethod
    def _range(cls, v):
        if v is not None and (len(v) != 2 or v[0] > v[1]):
            raise ValueError(f"must be [min, max] short sides with min <= max, got {v}")
        return v

    @model_validator(mode="after")
    def _steps_fit(self):
        s = self.lr_steps
        if s is not None:
            if sorted(set(s)) != list(s):
                raise ValueError(f"lr_steps={s} must be strictly increasing epochs")
            if s and s[-1] > self.epochs:
                raise ValueError(
                    f"lr_steps={s} has steps after the last epoch (epochs={self.epochs}); drop "
                    "them, raise epochs, or leave lr_steps null (2/3 and 11/12 of the epochs)")
        return self


# ----------------------------------------------------------------------------- data
class ShapesConfig(Strict):
    """The built-in synthetic dataset (pgd.data.shapes), generated on first use."""

    train: PosInt = 256  # training images
    val: PosInt = 64  # validation images
    size: Annotated[int, Field(ge=64, le=1024)] = 160  # image side, px
    seed: int = 0  # generator seed


class DataConfig(Strict):
    """Where the images and COCO-format annotations are.

    ``kind: shapes`` generates the built-in dataset under ``root`` (default
    ``<home>/data/shapes-<size>px-<train>-<val>-s<seed>``); ``coco`` / ``crowdhuman`` read
    ``root`` with the COCO layout unless the four paths are given (relative to ``root``).
    """

    kind: Literal[DATA_KINDS] = "shapes"
    root: Optional[str] = None  # null: the shapes default folder / required for coco & crowdhuman
    train_ann: Optional[str] = None  # null: the kind's layout under root (docs/data.md)
    train_img: Optional[str] = None
    val_ann: Optional[str] = None
    val_img: Optional[str] = None
    shapes: ShapesConfig = ShapesConfig()
    filter_empty_gt: Optional[bool] = None  # null: False for shapes (empty images on purpose), else True
    check_images: Literal[CHECK_IMAGES] = "header"  # none | exists | header (size, format, truncation) | decode
    allow_outside: Optional[bool] = None  # boxes beyond the image; null: True for crowdhuman

    @model_validator(mode="after")
    def _where(self):
        if self.kind != "shapes" and not self.root and not (self.train_ann and self.val_ann):
            raise ValueError(
                f"root is required for kind={self.kind!r} (the folder holding annotations/ and the "
                "image folders), or give train_ann/train_img/val_ann/val_img")
        return self


# ----------------------------------------------------------------------------- distill
class DistillCommon(Strict):
    """Keys every KD method has: the teacher and how the student starts."""

    teacher: Optional[ModelName] = None  # registry name, e.g. atss_r101 (required)
    teacher_checkpoint: Optional[str] = None  # local .pth of the trained teacher (required)
    teacher_config: Optional[dict[str, Any]] = None  # an mmdet model dict replacing the registry config
    allow_random_teacher: bool = False  # tests/benchmarks only: no checkpoint needed
    inherit_teacher_neck_head: Optional[bool] = None  # null: true (same detector), false for ld
    # KD diagnostics every N training iterations (pgd/distill/diagnostics.py); 0 = off; not for ld
    diagnostics_interval: NonNegInt = D.KD_DIAGNOSTICS_INTERVAL

    @classmethod
    def _unknown_hint(cls, data: dict, unknown: list[str]) -> str:
        owners = {k: key_owners(k) for k in unknown}
        hint = "; ".join(f"{k} is a key of {', '.join(o)}" for k, o in owners.items() if o)
        where = f" for method {data.get('method', 'pgd')!r}"
        return where + (f" ({hint}: limit that axis with when: {{method: [...]}})" if hint else "")

    @model_validator(mode="after")
    def _teacher_given(self):
        if self.teacher is None and self.teacher_config is None:
            raise ValueError("teacher is required: a registry name such as atss_r101")
        if self.teacher_checkpoint is None and not self.allow_random_teacher:
            raise ValueError("teacher_checkpoint is required (the trained teacher's .pth); set "
                             "allow_random_teacher: true only for tests and benchmarks")
        return self


class StrategyParams(Strict):
    """Parameters of the Table 5 strategies the paper leaves open (docs/core.md)."""

    box_gauss_sigma: PosFloat = D.BOX_GAUSS_SIGMA  # box_gauss: std = sigma * (w, h)
    centre_ratio: Annotated[float, Field(gt=0, le=1)] = D.CENTRE_RATIO  # centre: side fraction
    kde_bandwidth: Optional[PosFloat] = None  # kde: h; null = Scott's rule K^(-1/6)


class PGDDistill(DistillCommon):
    """PGD (spec sections 1-6). ``null`` = the detector's default (spec section 5)."""

    method: Literal["pgd"] = "pgd"
    strategy: Literal[STRATEGIES] = "pgw"  # foreground strategy (paper Table 5)
    # weight preset: paper (the released configs) | small (tiny detectors at 160 px: alpha x1/4)
    preset: Literal[PGD_PRESETS] = "paper"
    alpha: Optional[NonNegFloat] = None  # fg weight; null: per-detector default x the preset's scale
    beta: Optional[NonNegFloat] = None  # bg weight; null: alpha / 2
    gamma: Optional[NonNegFloat] = None  # reg feature weight; null: 1.6 alpha
    delta: NonNegFloat = D.DELTA  # attention weight
    tau: Optional[PosFloat] = None  # attention temperature; null: per-detector default
    k: Optional[PosInt] = None  # top-K of both masks (paper's K); null: per-detector K
    k_cls: Optional[PosInt] = None  # top-K of the cls mask alone; null: k
    k_reg: Optional[PosInt] = None  # top-K of the reg mask alone; null: k
    xi_cls: UnitFloat = D.XI_CLS  # quality exponent of the cls mask
    xi_reg: UnitFloat = D.XI_REG  # ... of the reg mask
    level_weights: list[NonNegFloat] = list(D.LEVEL_WEIGHTS)  # P3..P7
    branches: list[Literal[BRANCHES]] = ["cls", "reg"]  # distilled branches (Table 7)
    topk_scope: Literal[TOPK_SCOPES] = "inside"  # inside: top-K among positions in the box
    strategy_params: StrategyParams = StrategyParams()

    @field_validator("level_weights")
    @classmethod
    def _five(cls, v):
        if len(v) != 5:
            raise ValueError(f"must be 5 non-negative weights (P3..P7), got {len(v)}")
        return v

    @field_validator("branches")
    @classmethod
    def _subset(cls, v):
        if not v or len(set(v)) != len(v):
            raise ValueError(f"must be a non-empty subset of {list(BRANCHES)} without repeats, got {v}")
        return v


def _knob_type(key: str, example):
    if isinstance(example, bool):
        return bool
    if isinstance(example, int):
        return NonNegInt
    if key in D.POSITIVE_KNOBS:
        return PosFloat
    if key in D.RATIO_KNOBS:
        return Annotated[float, Field(gt=0, le=1)]
    if key in D.AT_LEAST_ONE_KNOBS:
        return Annotated[float, Field(ge=1, allow_inf_nan=False)]
    return NonNegFloat


def _baseline_model(method: str):
    """The config model of a KD baseline: its knobs (keys of BASELINE_DEFAULTS[method]), each
    ``null`` = the student detector's default from that table."""
    fields = {k: (Optional[_knob_type(k, v)], None) for k, v in D.baseline_knobs(method).items()}
    return create_model(
        f"{method.upper()}Distill", __base__=DistillCommon,
        __doc__=f"KD baseline {method!r}: knobs default to BASELINE_DEFAULTS[{method!r}][detector].",
        method=(Literal[method], method), **fields,
    )


#: method -> its config model
DISTILL_MODELS: dict[str, type[DistillCommon]] = {"pgd": PGDDistill, **{m: _baseline_model(m) for m in BASELINES}}
assert tuple(DISTILL_MODELS) == KD_METHODS
register_union_tags(*KD_METHODS)


def _method_tag(v):
    if isinstance(v, dict):
        return v.get("method", "pgd")
    return getattr(v, "method", None)


DistillConfig = Annotated[
    Union[tuple(Annotated[m, Tag(name)] for name, m in DISTILL_MODELS.items())],
    Discriminator(_method_tag, custom_error_type="unknown_method",
                  custom_error_message=f"unknown KD method; valid methods are: {', '.join(KD_METHODS)}"),
]


def method_keys(method: str) -> tuple[str, ...]:
    """The ``distill`` keys of a KD method."""
    return tuple(DISTILL_MODELS[method].model_fields)


def key_owners(key: str) -> tuple[str, ...]:
    """The KD methods whose ``distill`` section has ``key`` (first path part)."""
    return tuple(m for m, cls in DISTILL_MODELS.items() if key in cls.model_fields)


# ----------------------------------------------------------------------------- run
class RunConfig(Strict):
    """One training (or, with ``distill``, distillation) run."""

    model: ModelName = "atss_tiny"  # <detector>_<backbone>, see pgd.config.names.model_names()
    backbone_checkpoint: Optional[str] = None  # local backbone weights (ResNets); null: scratch
    load_from: Optional[str] = None  # full detector checkpoint to start from
    data: DataConfig = DataConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    distill: Optional[DistillConfig] = None  # KD section; null = plain training
    seed: int = 0  # data order, initialisation and augmentation
    work_dir: str = "runs/train"
    resume: bool = True  # continue from work_dir's last checkpoint (same config only)
    device: Literal[DEVICES] = "auto"  # auto (cuda when available) | cpu | cuda
    find_unused_parameters: bool = False  # DDP option for heads with unused branches
    latency_images: NonNegInt = 0  # >0: measure inference ms/image (batch 1) on that many val images

    @property
    def detector(self) -> str:
        return split_model(self.model)[0]

    @property
    def backbone(self) -> str:
        return split_model(self.model)[1]

    @property
    def method(self) -> str:
        """``student`` for plain training, else the KD method."""
        return "student" if self.distill is None else self.distill.method

    @model_validator(mode="after")
    def _consistent(self):
        if self.backbone == "mbv2" and self.backbone_checkpoint is not None:
            raise ValueError("mbv2 loads the packaged ImageNet weights; drop backbone_checkpoint")
        d = self.distill
        if d is None:
            return self
        if d.teacher is not None and split_model(d.teacher)[0] != self.detector:
            raise ValueError(
                f"teacher {d.teacher!r} and student {self.model!r} are different detectors; "
                "distillation here is detector -> same detector with another backbone")
        if d.method != "pgd":
            table = D.BASELINE_DEFAULTS[d.method]
            if self.detector not in table:
                raise ValueError(
                    f"KD method {d.method!r} does not apply to detector {self.detector!r}; valid "
                    f"detectors for {d.method} are: {', '.join(sorted(table))}")
            foreign = sorted(k for k in D.baseline_knobs(d.method)
                             if getattr(d, k) is not None and k not in table[self.detector])
            if foreign:
                raise ValueError(
                    f"distill key(s) {', '.join(foreign)} of method {d.method!r} do not apply to detector "
                    f"{self.detector!r}; its keys are: {', '.join(table[self.detector])}")
        if d.method == "ld" and d.inherit_teacher_neck_head:
            raise ValueError("distill.inherit_teacher_neck_head is not supported by method 'ld' "
                             "(mmdet's KnowledgeDistillationSingleStageDetector); set it to false or null")
        return self


def parse_run(data: Any, source: str = "run config") -> RunConfig:
    """A RunConfig from plain data; errors name ``source`` and the key paths."""
    if isinstance(data, RunConfig):
        return data
    return validate(RunConfig, data, source)


# ----------------------------------------------------------------------------- resolution
def _abs(path: str | None, base=None) -> str | None:
    """Absolute under PGD_HOME (or ``base``); URLs stay as written (the checks refuse them)."""
    from pgd.paths import DOWNLOAD_PREFIXES, resolve

    if path is None or str(path).startswith(DOWNLOAD_PREFIXES):
        return path
    return str(resolve(path, base))


def shapes_root(data: DataConfig) -> str:
    """The default folder of a shapes data set (its parameters are in its name)."""
    s = data.shapes
    return f"data/shapes-{s.size}px-{s.train}-{s.val}-s{s.seed}"


#: where the annotation files and image folders are under ``data.root``, per data kind
DATA_LAYOUTS = {
    "shapes": dict(train_ann="annotations/instances_train.json", train_img="train",
                   val_ann="annotations/instances_val.json", val_img="val"),
    "coco": dict(train_ann="annotations/instances_train2017.json", train_img="train2017",
                 val_ann="annotations/instances_val2017.json", val_img="val2017"),
}
DATA_LAYOUTS["crowdhuman"] = DATA_LAYOUTS["coco"]


def resolve_distill(d: dict, detector: str, data_kind: str) -> dict:
    """A distill section's plain data with every ``null`` default filled (spec section 5)."""
    d = dict(d)
    method = d.get("method", "pgd")
    d["method"] = method
    if d.get("inherit_teacher_neck_head") is None:  # mmdet's LD detector cannot inherit
        d["inherit_teacher_neck_head"] = method != "ld"
    if d.get("teacher_checkpoint") is not None:
        d["teacher_checkpoint"] = _abs(d["teacher_checkpoint"])
    if method == "pgd":
        p = D.pgd_defaults(detector, data_kind)
        if d.get("alpha") is None:
            d["alpha"] = p["alpha"] * D.PGD_PRESET_ALPHA_SCALE[d.get("preset", "paper")]
        if d.get("beta") is None:
            d["beta"] = d["alpha"] * D.BETA_OVER_ALPHA
        if d.get("gamma") is None:
            d["gamma"] = d["alpha"] * D.GAMMA_OVER_ALPHA
        if d.get("tau") is None:
            d["tau"] = p["tau"]
        if d.get("k") is None:
            d["k"] = p["k"]
        for key in ("k_cls", "k_reg"):
            if d.get(key) is None:
                d[key] = d["k"]
    else:
        table = D.BASELINE_DEFAULTS[method].get(detector)
        if table is not None:  # else RunConfig's check names the valid detectors
            for key, value in table.items():
                if d.get(key) is None:
                    d[key] = value
    return d


def resolve_run(run: RunConfig) -> RunConfig:
    """The run with every default resolved and every path absolute (idempotent).

    Resolved: ``schedule.lr_steps`` (null: 2/3 and 11/12 of the epochs),
    ``schedule.frozen_backbone_bn`` (null: frozen iff the backbone is pretrained: mbv2 or a
    backbone_checkpoint), ``data.root`` and the four data paths (the kind's layout),
    ``data.filter_empty_gt`` (null: not for shapes), ``data.allow_outside`` (null: crowdhuman),
    every ``distill`` default (per student detector and data kind) and every path (under
    ``PGD_HOME``).
    """
    d = run.model_dump()
    sch, data = d["schedule"], d["data"]
    if sch["lr_steps"] is None:
        sch["lr_steps"] = D.default_lr_steps(sch["epochs"])
    if sch["frozen_backbone_bn"] is None:
        sch["frozen_backbone_bn"] = run.backbone == "mbv2" or run.backbone_checkpoint is not None
    if data["root"] is None and data["kind"] == "shapes":
        data["root"] = shapes_root(run.data)
    root = _abs(data["root"]) if data["root"] is not None else None
    data["root"] = root
    for key, rel in DATA_LAYOUTS[data["kind"]].items():
        data[key] = _abs(data[key] or rel, root)
    if data["filter_empty_gt"] is None:
        data["filter_empty_gt"] = data["kind"] != "shapes"
    if data["allow_outside"] is None:
        data["allow_outside"] = data["kind"] == "crowdhuman"
    for key in ("backbone_checkpoint", "load_from", "work_dir"):
        d[key] = _abs(d[key])
    if d["distill"] is not None:
        d["distill"] = resolve_distill(d["distill"], run.detector, data["kind"])
    return validate(RunConfig, d, "resolved run")


#: run keys that do not change the trained model (left out of :func:`run_hash`)
BOOKKEEPING_KEYS = ("work_dir", "resume", "latency_images")


def run_hash(run: RunConfig) -> str:
    """12 hex digits identifying what a resolved run trains (bookkeeping keys left out): the
    teacher cache key, the resume guard, the comparability of table rows."""
    d = resolve_run(run).dump()
    for k in BOOKKEEPING_KEYS:
        d.pop(k, None)
    d["schedule"].pop("log_interval", None)
    blob = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def changed_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain-data configs."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += changed_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


def check_resolved(run: RunConfig) -> RunConfig:
    """ConfigError unless ``run`` is resolved (what a plan hands to a trial)."""
    if resolve_run(run) != run:
        raise ConfigError("run config is not resolved; call pgd.config.run.resolve_run first")
    return run
