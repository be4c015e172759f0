"""Optimal LRP (Oksuz et al., ECCV 2018; "One Metric to Measure them All", TPAMI 2021) of
COCO-format box detections, with the conventions of the authors' official COCO-API
implementation (the ``LRP-Error`` repository's ``cocoeval.py``), on the 0-100 scale.

Matching is pycocotools' own (``COCOeval.evaluateImg`` at one IoU threshold ``tau``): per
image and class, detections in descending score order (at most ``max_dets`` per image and
class) take the unmatched GT of highest IoU >= tau; crowd GT (``iscrowd``) are ignore
regions matched by intersection-over-detection-area, and detections matched to them are
neither TP nor FP. Per class ``c`` the detections of all images are merged in descending
score order (mergesort, stable); for every prefix ``s`` (the threshold "score >= the s-th
score"):

    LRP_c(s) = ( sum_{TP} (1 - IoU) / (1 - tau) + N_FP + N_FN ) / ( N_TP + N_FP + N_FN )

with ``N_FN = N_GT - N_TP`` (non-crowd GT). ``oLRP_c = min_s LRP_c(s)``; at the minimising
prefix ``s*`` (the first one on ties) the components are

    oLRP_loc_c = sum_{TP} (1 - IoU) / N_TP      (mean localisation error, NOT divided by 1-tau)
    oLRP_FP_c  = N_FP / (N_TP + N_FP)           (1 - precision)
    oLRP_FN_c  = N_FN / N_GT                    (1 - recall)

and the LRP-optimal threshold is the ``s*``-th score. A class with GT but no true positive
at any prefix (or no detection) has oLRP 1, FN 1, loc and FP undefined (NaN) and no
threshold. A class without non-crowd GT is skipped (even if it has detections), as the
official code does. The reported values are class means: ``oLRP`` (= ``moLRP``) over the
evaluated classes, ``oLRP_loc`` and ``oLRP_FP`` over the classes where they are defined,
``oLRP_FN`` over the evaluated classes. All values are multiplied by 100 (Table 9 of the PGD
paper reports them so); NaN when no class has GT.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from pgd.evaluation.coco import _clean_detections, load_gt, quiet

TAU = 0.5  # the TP validation IoU threshold of the LRP papers
MAX_DETS = 100  # per image and class, as COCO and the official implementation
KEYS = ("oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN", "moLRP")


def _coco_dt(coco_gt, dets: list[dict]):
    from pycocotools.coco import COCO

    if dets:
        return coco_gt.loadRes(dets)
    dt = COCO()
    dt.dataset = {"images": list(coco_gt.dataset.get("images", [])),
                  "categories": list(coco_gt.dataset.get("categories", [])), "annotations": []}
    dt.createIndex()
    return dt


def _class_lrp(scores: np.ndarray, tp: np.ndarray, fp: np.ndarray, ious: np.ndarray,
               n_gt: int, tau: float) -> dict:
    """oLRP of one class from its merged, score-sorted detections (flags per detection)."""
    tp_num = np.cumsum(tp)
    fp_num = np.cumsum(fp)
    if len(tp_num) == 0 or tp_num[-1] == 0:
        return dict(oLRP=1.0, oLRP_loc=math.nan, oLRP_FP=math.nan, oLRP_FN=1.0,
                    threshold=math.nan, n_gt=n_gt, n_tp=0, n_fp=int(fp_num[-1]) if len(fp_num) else 0)
    fn_num = n_gt - tp_num
    total_loc = np.cumsum((1.0 - ious) * tp)
    lrps = (total_loc / (1.0 - tau) + fp_num + fn_num) / (tp_num + fp_num + fn_num)
    i = int(np.argmin(lrps))
    return dict(
        oLRP=float(lrps[i]),
        oLRP_loc=float(total_loc[i] / tp_num[i]) if tp_num[i] > 0 else math.nan,
        oLRP_FP=float(fp_num[i] / (tp_num[i] + fp_num[i])) if tp_num[i] > 0 else math.nan,
        oLRP_FN=float(fn_num[i] / n_gt),
        threshold=float(scores[i]),
        n_gt=int(n_gt), n_tp=int(tp_num[i]), n_fp=int(fp_num[i]),
    )


def olrp(coco_gt, detections, *, tau: float = TAU, max_dets: int = MAX_DETS,
         logger: logging.Logger | None = None) -> dict:
    """Optimal LRP of ``detections`` (``[{image_id, category_id, bbox [x,y,w,h], score}]``)
    against ``coco_gt`` (a pycocotools ``COCO``; a path or COCO dict also works).

    Returns ``{"oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN", "moLRP"}`` (class means, 0-100,
    lower is better; ``moLRP == oLRP``) and ``"per_class"``: ``{category_id: {oLRP,
    oLRP_loc, oLRP_FP, oLRP_FN (0-100), threshold, n_gt, n_tp, n_fp}}`` for every class
    with GT. Formula and conventions: module docstring and docs/analyses.md.
    """
    from pycocotools.cocoeval import COCOeval

    gt = load_gt(coco_gt, logger)
    dets = _clean_detections(gt, list(detections), "bbox", "detections")
    with quiet(logger):
        ev = COCOeval(gt, _coco_dt(gt, dets), "bbox")
        p = ev.params
        p.iouThrs = np.array([float(tau)])
        p.maxDets = [int(max_dets)]
        p.areaRng = [[0.0, 1e5 ** 2]]
        p.areaRngLbl = ["all"]
        ev.evaluate()
    img_ids = list(p.imgIds)
    n_img = len(img_ids)
    per_class = {}
    for k, cat in enumerate(p.catIds):
        evals = [e for e in ev.evalImgs[k * n_img:(k + 1) * n_img] if e is not None]
        if not evals:
            continue
        n_gt = int(sum(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0) for e in evals))
        if n_gt == 0:
            continue
        scores, tps, fps, ious = [], [], [], []
        for e in evals:
            d = len(e["dtIds"][:max_dets])
            if d == 0:
                continue
            matched = np.asarray(e["dtMatches"][0, :d]) > 0
            ignored = np.asarray(e["dtIgnore"][0, :d]).astype(bool)
            iou_of = np.zeros(d)
            if matched.any():
                gt_cols = {gid: j for j, gid in enumerate(a["id"] for a in ev._gts[e["image_id"], cat])}
                iou_mat = ev.ious[e["image_id"], cat]
                for i in np.nonzero(matched & ~ignored)[0]:
                    iou_of[i] = iou_mat[i, gt_cols[int(e["dtMatches"][0, i])]]
            scores.append(np.asarray(e["dtScores"][:d], dtype=float))
            tps.append(matched & ~ignored)
            fps.append(~matched & ~ignored)
            ious.append(iou_of)
        if scores:
            s = np.concatenate(scores)
            order = np.argsort(-s, kind="mergesort")
            res = _class_lrp(s[order], np.concatenate(tps)[order].astype(float),
                             np.concatenate(fps)[order].astype(float), np.concatenate(ious)[order],
                             n_gt, float(tau))
        else:
            res = _class_lrp(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), n_gt, float(tau))
        per_class[int(cat)] = res
    out = {}
    for key in ("oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN"):
        vals = [r[key] for r in per_class.values() if not math.isnan(r[key])]
        out[key] = float(np.mean(vals)) * 100.0 if vals else math.nan
    out["moLRP"] = out["oLRP"]
    for r in per_class.values():
        for key in ("oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN"):
            r[key] = r[key] * 100.0
    out["per_class"] = per_class
    return out


__all__ = ["olrp", "KEYS", "TAU", "MAX_DETS"]
