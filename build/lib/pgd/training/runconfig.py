"""The run configuration: what one training or distillation run needs, as validated data.

Every key has a documented default; sweeps vary them by dotted path (``schedule.epochs``,
``distill.alpha``). Paths are resolved against the platform home (see :func:`pgd.paths.home`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pgd.configs import from_dict, merge, to_dict
from pgd.errors import ConfigError, check_range, unknown_name

DATA_KINDS = ("shapes", "coco", "crowdhuman")
CHECK_IMAGES = ("none", "exists", "decode")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class ScheduleConfig:
    """Optimisation schedule. Defaults are the paper's student 1x recipe (spec section 7)."""

    epochs: int = 12
    batch_size: int = 2  # images per worker
    base_lr: float = 0.02  # learning rate for base_batch_size images per step
    base_batch_size: int = 32  # lr = base_lr * batch_size * workers / base_batch_size
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500  # linear warm-up from warmup_ratio * lr
    warmup_ratio: float = 0.001
    lr_steps: list[int] = field(default_factory=lambda: [8, 11])  # epochs where lr *= lr_gamma
    lr_gamma: float = 0.1
    grad_clip: float | None = 35.0  # max grad L2 norm; null disables clipping
    frozen_backbone_bn: bool | None = None  # null: frozen iff the backbone is pretrained
    img_scale: list[int] = field(default_factory=lambda: [1333, 800])  # (long, short) max
    multiscale: list[int] | None = None  # [min, max] short side, e.g. [480, 960] (teacher 3x)
    flip_prob: float = 0.5
    val_interval: int = 1  # evaluate every N epochs (and always after the last)
    checkpoint_interval: int = 1
    max_keep_ckpts: int = 2
    num_workers: int = 2  # data-loading processes per worker
    log_interval: int = 50  # iterations between mmengine log lines

    def validate(self, path: str) -> None:
        check_range(f"{path}.epochs", self.epochs, 1)
        check_range(f"{path}.batch_size", self.batch_size, 1)
        check_range(f"{path}.base_lr", self.base_lr, 0, lo_open=True)
        check_range(f"{path}.base_batch_size", self.base_batch_size, 1)
        check_range(f"{path}.momentum", self.momentum, 0, 1)
        check_range(f"{path}.weight_decay", self.weight_decay, 0)
        check_range(f"{path}.warmup_iters", self.warmup_iters, 0)
        check_range(f"{path}.warmup_ratio", self.warmup_ratio, 0, 1, lo_open=True)
        check_range(f"{path}.lr_gamma", self.lr_gamma, 0, 1, lo_open=True)
        check_range(f"{path}.flip_prob", self.flip_prob, 0, 1)
        check_range(f"{path}.val_interval", self.val_interval, 1)
        check_range(f"{path}.checkpoint_interval", self.checkpoint_interval, 1)
        check_range(f"{path}.num_workers", self.num_workers, 0)
        check_range(f"{path}.log_interval", self.log_interval, 1)
        if self.grad_clip is not None:
            check_range(f"{path}.grad_clip", self.grad_clip, 0, lo_open=True)
        if sorted(self.lr_steps) != list(self.lr_steps) or any(s < 1 for s in self.lr_steps):
            raise ConfigError(f"{path}.lr_steps={self.lr_steps!r} must be increasing epochs >= 1")
        if len(self.img_scale) != 2 or min(self.img_scale) < 32:
            raise ConfigError(
                f"{path}.img_scale={self.img_scale!r} must be [long, short] with both >= 32 px"
            )
        if self.multiscale is not None and (
            len(self.multiscale) != 2 or not 32 <= self.multiscale[0] <= self.multiscale[1]
        ):
            raise ConfigError(f"{path}.multiscale={self.multiscale!r} must be [min, max] >= 32 px")


@dataclass
class ShapesConfig:
    """The built-in synthetic dataset (pgd.data.shapes), generated on first use."""

    train: int = 256
    val: int = 64
    size: int = 160
    seed: int = 0

    def validate(self, path: str) -> None:
        check_range(f"{path}.train", self.train, 1)
        check_range(f"{path}.val", self.val, 1)
        check_range(f"{path}.size", self.size, 64, 1024)


@dataclass
class DataConfig:
    """Where the images and COCO-format annotations are.

    ``kind: shapes`` generates the built-in dataset under ``root`` (default
    ``<home>/data/shapes-<size>px-<train>-<val>-s<seed>``); ``coco`` / ``crowdhuman`` read
    ``root`` with the COCO layout unless the four paths are given (relative to ``root``).
    """

    kind: str = "shapes"
    root: str | None = None
    train_ann: str | None = None
    train_img: str | None = None
    val_ann: str | None = None
    val_img: str | None = None
    shapes: ShapesConfig = field(default_factory=ShapesConfig)
    filter_empty_gt: bool | None = None  # null: False for shapes (empty images on purpose)
    check_images: str = "exists"  # none | exists | decode (open every image once)
    allow_outside: bool | None = None  # boxes beyond the image; null: True for crowdhuman

    def validate(self, path: str) -> None:
        if self.kind not in DATA_KINDS:
            raise unknown_name("data kind", self.kind, DATA_KINDS)
        if self.check_images not in CHECK_IMAGES:
            raise unknown_name("check_images mode", self.check_images, CHECK_IMAGES)
        if self.kind != "shapes" and not self.root and not (self.train_ann and self.val_ann):
            raise ConfigError(
                f"{path}.root is required for kind={self.kind!r} (the folder holding "
                "annotations/ and the image folders), or give train_ann/train_img/val_ann/val_img"
            )


@dataclass
class RunConfig:
    """One training (or, with ``distill``, distillation) run."""

    model: str = "atss_tiny"  # <detector>_<backbone>, see pgd.detectors.model_names()
    backbone_checkpoint: str | None = None  # local backbone weights (ResNets)
    load_from: str | None = None  # full detector checkpoint to start from
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    distill: dict | None = None  # PGD / KD section (pgd.distill.config), null = plain training
    seed: int = 0
    work_dir: str = "runs/train"
    resume: bool = True  # continue from work_dir's last checkpoint when there is one
    device: str = "auto"  # auto (cuda when available) | cpu | cuda
    find_unused_parameters: bool = False  # DDP option for heads with unused branches
    latency_images: int = 0  # >0: measure inference ms/image (batch 1) on that many val images

    def validate(self, path: str) -> None:
        from pgd.detectors import parse_name

        parse_name(self.model)
        if self.device not in DEVICES:
            raise unknown_name("device", self.device, DEVICES)
        if self.schedule.lr_steps and self.schedule.lr_steps[-1] > self.schedule.epochs:
            raise ConfigError(
                f"schedule.lr_steps={self.schedule.lr_steps} has steps after the last epoch "
                f"(epochs={self.schedule.epochs}); drop them or raise epochs"
            )


def run_config(data: dict | RunConfig | None = None, **overrides) -> RunConfig:
    """Validated RunConfig from a dict (YAML) plus keyword overrides."""
    if isinstance(data, RunConfig):
        data = to_dict(data)
    return from_dict(RunConfig, merge(data or {}, overrides), "run")
