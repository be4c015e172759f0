"""TIDE error breakdown (Bolya et al., ECCV 2020) of COCO-format box detections with the
``tidecv`` package (pinned in pyproject.toml), as the PGD paper's Fig. 6.

The ground truth is handed to TIDE the way its own COCO loader does it: every image is
registered (so detections on images without objects count as background errors), class
names come from the categories, ``iscrowd`` boxes become class-specific ignore regions
(a detection of that class whose intersection over its own area with the region exceeds
``pos_thr`` is ignored: it enters no AP and so no dAP, but tidecv still counts it among the
errors, usually as ``Bkg``, in ``counts``). Detections go in as given, at most ``max_dets`` per image.

TIDE reports, at IoU ``pos_thr`` (0.5, as in the paper), its own AP50 (COCO-style
101-point interpolation, mean over classes) and for each error type the AP50 points gained
by fixing only that error (``dAP``, 0-100):

* main errors: ``Cls`` (right box, wrong class), ``Loc`` (right class, IoU in
  [``bg_thr``, ``pos_thr``]), ``Both`` (wrong class and IoU in [bg_thr, pos_thr]), ``Dupe``
  (duplicate of an already matched GT), ``Bkg`` (IoU < ``bg_thr`` with every GT), ``Miss``
  (GT no detection explains);
* special errors: ``FalsePos`` (fixing every false positive) and ``FalseNeg`` (every false
  negative).

numpy 2: tidecv 1.0.1 (the only release) runs unchanged on numpy 2.x; every path used here
is exercised with numpy's warnings turned into errors by tests/test_eval_tide.py. Its
plotting module (seaborn, OpenCV) is imported by the package but not used: the figures are
drawn by :mod:`pgd.reporting.analyses`. One side effect is contained: ``TIDE()`` restyles
matplotlib globally (``seaborn.set``), so it is constructed inside ``rc_context``.
"""

from __future__ import annotations

import logging

from pgd.evaluation.coco import _clean_detections, load_gt, quiet

MAIN_ERRORS = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
SPECIAL_ERRORS = ("FalsePos", "FalseNeg")
ERROR_NAMES = {
    "Cls": "classification", "Loc": "localisation", "Both": "cls + loc", "Dupe": "duplicate",
    "Bkg": "background", "Miss": "missed", "FalsePos": "false positives",
    "FalseNeg": "false negatives",
}
POS_THR = 0.5
BG_THR = 0.1
MAX_DETS = 100


def _tide_data(coco_gt, dets: list[dict], name: str, max_dets: int):
    from tidecv import Data

    gt = Data("gt", max_dets=max_dets)
    for img in coco_gt.dataset.get("images", []):
        gt.add_image(img["id"], img.get("file_name", str(img["id"])))
    for cat in coco_gt.dataset.get("categories", []):
        gt.add_class(cat["id"], cat["name"])
    for ann in coco_gt.dataset.get("annotations", []):
        box = [float(v) for v in ann["bbox"]]
        if ann.get("iscrowd", 0):
            gt.add_ignore_region(ann["image_id"], ann["category_id"], box)
        else:
            gt.add_ground_truth(ann["image_id"], ann["category_id"], box)
    pred = Data(name, max_dets=max_dets)
    for d in dets:
        pred.add_detection(d["image_id"], d["category_id"], d["score"], list(d["bbox"]))
    return gt, pred


def tide_errors(coco_gt, detections, *, name: str = "detections", pos_thr: float = POS_THR,
                bg_thr: float = BG_THR, max_dets: int = MAX_DETS,
                logger: logging.Logger | None = None) -> dict:
    """TIDE of ``detections`` against ``coco_gt`` (pycocotools COCO, path or dict).

    Returns ``{"AP50": TIDE's AP at pos_thr (0-100), "main": {Cls..Miss: dAP},
    "special": {FalsePos, FalseNeg: dAP}, "counts": {Cls..Miss: number of errors}}``.
    """
    from tidecv import TIDE

    gt_coco = load_gt(coco_gt, logger)
    dets = _clean_detections(gt_coco, list(detections), "bbox", name)
    gt, pred = _tide_data(gt_coco, dets, name, int(max_dets))
    import matplotlib

    # TIDE() builds its Plotter, which restyles matplotlib globally (seaborn whitegrid,
    # figure.dpi 150): keep that out of the caller's figures
    with matplotlib.rc_context():
        tide = TIDE(pos_threshold=float(pos_thr), background_threshold=float(bg_thr), mode=TIDE.BOX)
    with quiet(logger):
        run = tide.evaluate(gt, pred, name=name)
        errors = tide.get_all_errors()
    counts = {e.short_name: int(v) for e, v in run.count_errors().items()}
    return {
        "AP50": float(run.ap),
        "main": {k: float(errors["main"][name][k]) for k in MAIN_ERRORS},
        "special": {k: float(errors["special"][name][k]) for k in SPECIAL_ERRORS},
        "counts": {k: counts[k] for k in MAIN_ERRORS},
    }


__all__ = ["tide_errors", "MAIN_ERRORS", "SPECIAL_ERRORS", "ERROR_NAMES", "POS_THR", "BG_THR"]
