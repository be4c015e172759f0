"""Evaluation: COCO box AP (pycocotools) and the CrowdHuman AP / MR^-2 / JI of CrowdDet."""

from pgd.evaluation.coco import coco_evaluate
from pgd.evaluation.crowdhuman import crowdhuman_evaluate

__all__ = ["coco_evaluate", "crowdhuman_evaluate"]
