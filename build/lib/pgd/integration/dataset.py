"""``PGDCocoDataset``: mmdet's CocoDataset behind the platform's annotation validation, so a
malformed file fails with one error listing every bad entry instead of a KeyError deep in
mmdet, and zero-area boxes are skipped with a logged count."""

from __future__ import annotations

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from mmengine.logging import MMLogger


@DATASETS.register_module()
class PGDCocoDataset(CocoDataset):
    def __init__(self, *args, check_images: str = "exists", allow_outside: bool = False, **kwargs):
        self.check_images = check_images
        self.allow_outside = allow_outside
        super().__init__(*args, **kwargs)

    def load_data_list(self):
        from pgd.data.validate import validate_coco

        logger = MMLogger.get_current_instance()
        summary = validate_coco(
            self.ann_file,
            self.data_prefix.get("img", ""),
            check_images=self.check_images,
            allow_outside=self.allow_outside,
            logger=logger,
        )
        logger.info(
            f"{self.ann_file}: {summary['num_images']} images, {summary['num_annotations']} "
            f"boxes, {summary['num_categories']} classes, {summary['zero_area_skipped']} "
            "zero-area boxes skipped"
        )
        return super().load_data_list()
