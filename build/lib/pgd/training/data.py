"""Dataset section -> concrete files (generating the built-in data when needed) and the mmdet
dataloader / evaluator configs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pgd.errors import ConfigError
from pgd.paths import home, resolve
from pgd.training.runconfig import DataConfig, ScheduleConfig

COCO_LAYOUT = {
    "train_ann": "annotations/instances_train2017.json",
    "train_img": "train2017",
    "val_ann": "annotations/instances_val2017.json",
    "val_img": "val2017",
}
SHAPES_LAYOUT = {
    "train_ann": "annotations/instances_train.json",
    "train_img": "train",
    "val_ann": "annotations/instances_val.json",
    "val_img": "val",
}


@dataclass(frozen=True)
class DataFiles:
    train_ann: Path
    train_img: Path
    val_ann: Path
    val_img: Path
    classes: tuple[str, ...]


def shapes_root(data: DataConfig) -> Path:
    s = data.shapes
    default = f"data/shapes-{s.size}px-{s.train}-{s.val}-s{s.seed}"
    return resolve(data.root or default)


def resolve_data(data: DataConfig, *, generate: bool = True) -> DataFiles:
    """Absolute file paths of a data section; generates the shapes data on first use."""
    from pgd.data.validate import coco_categories

    if data.kind == "shapes":
        root = shapes_root(data)
        if generate:
            from pgd.data.shapes import ensure_shapes

            s = data.shapes
            ensure_shapes(root, s.train, s.val, s.size, s.seed)
        layout = SHAPES_LAYOUT
    else:
        root = resolve(data.root) if data.root else home()
        layout = COCO_LAYOUT
    paths = {k: resolve(getattr(data, k) or layout[k], root) for k in layout}
    for key in ("train_ann", "val_ann"):
        if not paths[key].is_file():
            raise ConfigError(
                f"data.{key}: annotation file {paths[key]} does not exist; check data.root "
                f"({root}) or set data.{key}"
            )
    for key in ("train_img", "val_img"):
        if not paths[key].is_dir():
            raise ConfigError(f"data.{key}: image folder {paths[key]} does not exist")
    classes = tuple(coco_categories(paths["train_ann"]))
    val_classes = tuple(coco_categories(paths["val_ann"]))
    if classes != val_classes:
        raise ConfigError(
            f"train and val annotation files have different categories: {classes} vs {val_classes}"
        )
    return DataFiles(classes=classes, **paths)


def _pipelines(schedule: ScheduleConfig):
    scale = tuple(schedule.img_scale)
    if schedule.multiscale:
        lo, hi = schedule.multiscale
        resize = dict(
            type="RandomResize", scale=[(scale[0], lo), (scale[0], hi)], keep_ratio=True
        )
    else:
        resize = dict(type="Resize", scale=scale, keep_ratio=True)
    train = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", with_bbox=True),
        resize,
        dict(type="RandomFlip", prob=schedule.flip_prob),
        dict(type="PackDetInputs"),
    ]
    test = [
        dict(type="LoadImageFromFile"),
        dict(type="Resize", scale=scale, keep_ratio=True),
        dict(type="LoadAnnotations", with_bbox=True),
        dict(
            type="PackDetInputs",
            meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"),
        ),
    ]
    return train, test


def dataloaders(data: DataConfig, files: DataFiles, schedule: ScheduleConfig, seed: int) -> dict:
    """train_dataloader / val_dataloader / val_evaluator entries of an mmengine config."""
    train_pipe, test_pipe = _pipelines(schedule)
    filter_empty = data.filter_empty_gt if data.filter_empty_gt is not None else data.kind != "shapes"
    allow_outside = data.allow_outside if data.allow_outside is not None else data.kind == "crowdhuman"
    common = dict(
        type="PGDCocoDataset",
        metainfo=dict(classes=files.classes),
        data_root="",
        check_images=data.check_images,
        allow_outside=allow_outside,
    )
    workers = schedule.num_workers
    loader = dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=False)
    train_dataset = dict(
        common,
        ann_file=str(files.train_ann),
        data_prefix=dict(img=str(files.train_img) + "/"),
        filter_cfg=dict(filter_empty_gt=filter_empty, min_size=1),
        pipeline=train_pipe,
    )
    val_dataset = dict(
        common,
        ann_file=str(files.val_ann),
        data_prefix=dict(img=str(files.val_img) + "/"),
        test_mode=True,
        pipeline=test_pipe,
    )
    return dict(
        train_dataloader=dict(
            loader,
            batch_size=schedule.batch_size,
            sampler=dict(type="DefaultSampler", shuffle=True, seed=seed),
            batch_sampler=dict(type="AspectRatioBatchSampler"),
            dataset=train_dataset,
        ),
        val_dataloader=dict(
            loader,
            batch_size=schedule.batch_size,
            drop_last=False,
            sampler=dict(type="DefaultSampler", shuffle=False, seed=seed),
            dataset=val_dataset,
        ),
        val_evaluator=dict(
            type="PGDCocoMetric",
            ann_file=str(files.val_ann),
            classes=list(files.classes),
            kind="crowdhuman" if data.kind == "crowdhuman" else "coco",
        ),
    )
