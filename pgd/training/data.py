"""Dataset section -> concrete files (generating the built-in data when needed) and the mmdet
dataloader / evaluator configs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pgd.config.run import DataConfig, RunConfig, ScheduleConfig
from pgd.errors import ConfigError


@dataclass(frozen=True)
class DataFiles:
    train_ann: Path
    train_img: Path
    val_ann: Path
    val_img: Path
    classes: tuple[str, ...]


def _resolved(data: DataConfig) -> DataConfig:
    if data.train_ann is None or data.root is None:  # not resolved yet
        from pgd.config.run import resolve_run

        return resolve_run(RunConfig(data=data)).data
    return data


def data_classes(data: DataConfig) -> tuple[str, ...]:
    """Class names in label order (shapes: the generator's; else the train annotations')."""
    if data.kind == "shapes":
        from pgd.data.shapes import CLASSES

        return tuple(CLASSES)
    from pgd.data.validate import coco_categories

    return tuple(coco_categories(_resolved(data).train_ann))


def check_data_files(data: DataConfig) -> None:
    """The data a run reads exists: COCO / CrowdHuman files and folders; shapes either absent
    (generated on first use) or made with the same parameters (never silently replaced)."""
    data = _resolved(data)
    if data.kind == "shapes":
        from pgd.data.shapes import check_shapes_replaceable

        s = data.shapes
        check_shapes_replaceable(data.root, s.train, s.val, s.size, s.seed)
        return
    for key in ("train_ann", "val_ann"):
        p = Path(getattr(data, key))
        if not p.is_file():
            raise ConfigError(f"data.{key}: annotation file {p} does not exist; check data.root "
                              f"({data.root}) or set data.{key}")
    for key in ("train_img", "val_img"):
        p = Path(getattr(data, key))
        if not p.is_dir():
            raise ConfigError(f"data.{key}: image folder {p} does not exist")


def resolve_data(data: DataConfig, *, overwrite: bool = False) -> DataFiles:
    """Absolute file paths of a data section; generates the shapes data on first use (an
    existing different data set is replaced only with ``overwrite``)."""
    from pgd.data.validate import coco_categories

    data = _resolved(data)
    if data.kind == "shapes":
        from pgd.data.shapes import ensure_shapes

        s = data.shapes
        ensure_shapes(data.root, s.train, s.val, s.size, s.seed, overwrite=overwrite)
    else:
        check_data_files(data)
    paths = {k: Path(getattr(data, k)) for k in ("train_ann", "train_img", "val_ann", "val_img")}
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
    data = _resolved(data)
    filter_empty, allow_outside = data.filter_empty_gt, data.allow_outside
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
