"""``PGDCocoMetric``: collects a detector's predictions and scores them with the platform's
pycocotools evaluator (pgd.evaluation), on the paper's 0-100 scale."""

from __future__ import annotations

from collections.abc import Sequence

from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger


@METRICS.register_module()
class PGDCocoMetric(BaseMetric):
    """Keys: ``coco/AP, coco/AP50, coco/AP75, coco/APS, coco/APM, coco/APL`` (and, for
    ``kind='crowdhuman'``, ``coco/MR`` and ``coco/JI`` besides)."""

    default_prefix = "coco"

    def __init__(self, ann_file: str, classes: Sequence[str], kind: str = "coco",
                 collect_device: str = "cpu", prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        from pycocotools.coco import COCO

        from pgd.evaluation.coco import quiet

        self.ann_file = ann_file
        self.kind = kind
        with quiet():
            self._gt = COCO(ann_file)
        # the same label -> category id order as mmdet's CocoDataset
        self.cat_ids = self._gt.getCatIds(catNms=list(classes))

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        # exactly one result per image: mmengine truncates the gathered results to the
        # dataset length, so per-box entries would be silently cut off
        for sample in data_samples:
            pred = sample["pred_instances"]
            boxes = pred["bboxes"].detach().cpu().numpy()
            scores = pred["scores"].detach().cpu().numpy()
            labels = pred["labels"].detach().cpu().numpy()
            image_id = int(sample["img_id"])
            dets = [
                dict(image_id=image_id, category_id=int(self.cat_ids[int(lab)]),
                     bbox=[float(x1), float(y1), float(x2 - x1), float(y2 - y1)], score=float(s))
                for (x1, y1, x2, y2), s, lab in zip(boxes, scores, labels)
            ]
            self.results.append(dict(image_id=image_id, detections=dets))

    def compute_metrics(self, results: list) -> dict:
        from pgd.evaluation.coco import coco_evaluate

        logger = MMLogger.get_current_instance()
        dets = [d for r in results for d in r["detections"]]
        img_ids = sorted({r["image_id"] for r in results})
        metrics = coco_evaluate(self._gt, dets, img_ids=img_ids)
        if self.kind == "crowdhuman":
            from pgd.evaluation.crowdhuman import crowdhuman_evaluate

            ch = crowdhuman_evaluate(self.ann_file, dets)
            metrics.update(MR=ch["MR"], JI=ch["JI"], AP_crowdhuman=ch["AP"])
        logger.info(
            "COCO bbox: " + " ".join(f"{k} {v:.1f}" for k, v in metrics.items())
            + f" ({len(dets)} detections on {len(img_ids)} images)"
        )
        return metrics
