"""CrowdHuman metrics as CrowdDet computes them (Chu et al., CVPR 2020; its
``lib/evaluate/compute_APMR.py`` and ``compute_JI.py``), on the 0-100 scale.

Ground truth is COCO (see :mod:`pgd.data.crowdhuman`): ``iscrowd == 1`` (or ``ignore == 1``)
boxes are ignore regions. Boxes are compared as ``[x1, y1, x2, y2]`` without the "+1"
convention, after CrowdDet's clipping of both GT and detections to the image
(``x1, y1`` to ``[0, W-1] x [0, H-1]``, ``x2, y2`` to ``[0, W] x [0, H]``).

Matching for AP and MR (CrowdDet's ``compare_caltech``), per image, detections in
descending score order: a detection takes the still-unmatched non-ignore GT of highest IoU
if that IoU is > 0.5 (a true positive); otherwise, if its IoA (intersection over the
detection's area) with some ignore region is > 0.5 it is dropped (neither TP nor FP;
ignore regions can absorb any number of detections); otherwise it is a false positive.
The per-image lists are merged and sorted by score (stable).

* **AP**: area under the precision/recall curve of that list by the trapezoid rule, as
  CrowdDet does (no monotone precision envelope). CrowdDet starts the curve at the first
  detection; here it starts at recall 0 with the first detection's precision, which makes a
  perfect result exactly 100 on tiny sets and changes CrowdHuman-size results by less than
  1/num_gt. ``ap_method="all_point"`` gives the VOC-2010 all-point interpolated AP instead.
* **MR** (MR^-2): for each of the 9 FPPI references 10^-2 ... 10^0 (log-spaced, the
  Caltech values 0.0100, 0.0178, 0.0316, 0.0562, 0.1000, 0.1778, 0.3162, 0.5623, 1.000)
  take the miss rate at the first detection whose FPPI (false positives / images) reaches
  the reference, or at the last detection if none does; MR is the geometric mean of the
  nine (0 as soon as one of them is 0, as in CrowdDet); lower is better. With no detection
  at all MR is 100.
* **JI**: for each score threshold t in 0.0, 0.1, ..., 0.9 keep detections with score > t;
  per image, match them one-to-one to non-ignore GT by maximum-weight bipartite matching on
  the pairs with IoU > 0.5 (weight = IoU, as CrowdDet's ``maxWeightMatching``); unmatched
  detections with IoA > 0.5 on an ignore region and unmatched GT with IoA > 0.5 on one are
  discounted; ``JI_img = k / (m + n - k)`` (k matches, m GT, n detections after the
  discounts), averaged over the images with m + n > 0; JI is the best over t.

Degenerate cases: no non-ignore GT -> AP and MR NaN; no image with GT or detections -> JI NaN.
"""

from __future__ import annotations

import math
import os

import numpy as np

from pgd.errors import AnnotationError, ConfigError, unknown_name

IOU_THR = 0.5
MR_REFS = (0.0100, 0.0178, 0.03160, 0.0562, 0.1000, 0.1778, 0.3162, 0.5623, 1.000)
JI_SCORE_THRS = tuple(round(0.1 * i, 1) for i in range(10))
AP_METHODS = ("crowddet", "all_point")


# ----------------------------------------------------------------------------- loading


def _load_gt(gt) -> dict:
    if isinstance(gt, dict):
        return gt
    if isinstance(gt, (str, os.PathLike)):
        from pgd.data.validate import load_coco_json

        return load_coco_json(gt)
    if hasattr(gt, "dataset") and isinstance(gt.dataset, dict):  # pycocotools COCO
        return gt.dataset
    raise TypeError(
        f"gt must be a COCO JSON path, dict or pycocotools COCO, got {type(gt).__name__}"
    )


def _person_category(data: dict):
    cats = data.get("categories") or []
    named = [c["id"] for c in cats if c.get("name") == "person"]
    if named:
        return named[0]
    if len(cats) == 1:
        return cats[0]["id"]
    raise ConfigError(
        "CrowdHuman evaluation needs a 'person' category or a single category; "
        f"got {[c.get('name') for c in cats]}"
    )


def _xyxy(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, 2:] += b[:, :2]
    return b


def _clip(b: np.ndarray, w: float, h: float) -> np.ndarray:
    b = b.copy()
    b[:, 0] = np.minimum(np.maximum(b[:, 0], 0), w - 1)
    b[:, 1] = np.minimum(np.maximum(b[:, 1], 0), h - 1)
    b[:, 2] = np.maximum(np.minimum(b[:, 2], w), 0)
    b[:, 3] = np.maximum(np.minimum(b[:, 3], h), 0)
    return b


def _overlaps(d: np.ndarray, g: np.ndarray, iou: bool) -> np.ndarray:
    """IoU (or IoA over ``d``'s area) of every row of d with every row of g."""
    if len(d) == 0 or len(g) == 0:
        return np.zeros((len(d), len(g)))
    iw = np.minimum(d[:, None, 2], g[None, :, 2]) - np.maximum(d[:, None, 0], g[None, :, 0])
    ih = np.minimum(d[:, None, 3], g[None, :, 3]) - np.maximum(d[:, None, 1], g[None, :, 1])
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    da = np.maximum(d[:, 2] - d[:, 0], 0) * np.maximum(d[:, 3] - d[:, 1], 0)
    if not iou:
        return inter / (da[:, None] + 1e-12) * (da[:, None] > 0)
    ga = np.maximum(g[:, 2] - g[:, 0], 0) * np.maximum(g[:, 3] - g[:, 1], 0)
    union = da[:, None] + ga[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


class _Image:
    __slots__ = ("gt", "ign", "dt", "score")

    def __init__(self, gt, ign, dt, score):
        self.gt, self.ign, self.dt, self.score = gt, ign, dt, score


def _prepare(gt, detections, clip: bool) -> list[_Image]:
    data = _load_gt(gt)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(
                f"ground truth: top-level '{key}' must be a list", [("gt", None, f"no '{key}'")]
            )
    person = _person_category(data)
    sizes = {im["id"]: (float(im["width"]), float(im["height"])) for im in data["images"]}
    gts = {i: [] for i in sizes}
    igns = {i: [] for i in sizes}
    for a in data["annotations"]:
        if a.get("category_id") != person or a["image_id"] not in sizes:
            continue
        (igns if a.get("iscrowd", 0) or a.get("ignore", 0) else gts)[a["image_id"]].append(
            a["bbox"]
        )
    dts = {i: [] for i in sizes}
    scs = {i: [] for i in sizes}
    problems = []
    for k, d in enumerate(detections):
        iid = d.get("image_id")
        iid = int(iid) if isinstance(iid, np.integer) else iid
        if iid not in sizes:
            problems.append(
                ("detections", iid, f"detection {k}: image_id {iid!r} is not in the ground truth")
            )
            continue
        if "category_id" in d and d["category_id"] != person:
            continue
        bb = np.asarray(d.get("bbox", ()), dtype=float).reshape(-1)
        sc = float(d.get("score", float("nan")))
        if bb.size != 4 or not np.isfinite(bb).all() or not math.isfinite(sc):
            problems.append(
                ("detections", iid, f"detection {k}: needs a finite 4-number bbox and score")
            )
            continue
        dts[iid].append(bb)
        scs[iid].append(sc)
    if problems:
        raise AnnotationError(f"{len(problems)} malformed detection(s)", problems)
    out = []
    for iid, (w, h) in sizes.items():
        g, ig, dt = _xyxy(gts[iid]), _xyxy(igns[iid]), _xyxy(dts[iid])
        if clip:
            g, ig, dt = _clip(g, w, h), _clip(ig, w, h), _clip(dt, w, h)
        sc = np.asarray(scs[iid], dtype=float)
        order = np.argsort(-sc, kind="stable")
        out.append(_Image(g, ig, dt[order], sc[order]))
    return out


# ----------------------------------------------------------------------------- AP and MR


def _match_caltech(im: _Image, thr: float) -> list[tuple[float, int]]:
    """(score, 1 for TP / 0 for FP) per non-ignored detection, CrowdDet's compare_caltech."""
    if len(im.dt) == 0:
        return []
    iou = _overlaps(im.dt, im.gt, True)
    ioa = _overlaps(im.dt, im.ign, False)
    taken = np.zeros(len(im.gt), bool)
    out = []
    for i in range(len(im.dt)):
        if len(im.gt):
            cand = np.where(taken, -np.inf, iou[i])
            j = int(np.argmax(cand))
            if cand[j] > thr:
                taken[j] = True
                out.append((float(im.score[i]), 1))
                continue
        if len(im.ign) and (ioa[i] > thr).any():
            continue  # lies on an ignore region: not counted
        out.append((float(im.score[i]), 0))
    return out


def _curves(images: list[_Image], thr: float):
    scored = [m for im in images for m in _match_caltech(im, thr)]
    scored.sort(key=lambda x: -x[0])  # stable, like CrowdDet's list.sort
    tp_flags = np.array([t for _, t in scored], dtype=float)
    tp = np.cumsum(tp_flags)
    fp = np.cumsum(1.0 - tp_flags)
    return tp, fp


def _ap(tp, fp, n_gt: int, method: str) -> float:
    if n_gt == 0:
        return float("nan")
    if len(tp) == 0:
        return 0.0
    rec = tp / n_gt
    prec = tp / np.maximum(tp + fp, 1e-12)
    if method == "all_point":
        r = np.concatenate([[0.0], rec, [1.0]])
        p = np.concatenate([[0.0], prec, [0.0]])
        p = np.maximum.accumulate(p[::-1])[::-1]
        idx = np.where(r[1:] != r[:-1])[0]
        return float(np.sum((r[idx + 1] - r[idx]) * p[idx + 1])) * 100.0
    r = np.concatenate([[0.0], rec])
    p = np.concatenate([[prec[0]], prec])
    return float(np.sum((r[1:] - r[:-1]) * (p[1:] + p[:-1]) / 2.0)) * 100.0


def _mr(tp, fp, n_gt: int, n_images: int) -> float:
    if n_gt == 0:
        return float("nan")
    if len(tp) == 0:
        return 100.0
    fppi = fp / max(n_images, 1)
    miss = 1.0 - tp / n_gt
    samples = []
    for ref in MR_REFS:
        hit = np.nonzero(fppi >= ref)[0]
        samples.append(miss[hit[0]] if len(hit) else miss[-1])
    samples = np.asarray(samples)
    if (samples <= 0).any():
        return 0.0
    return float(np.exp(np.log(samples).mean())) * 100.0


# ----------------------------------------------------------------------------- JI


def _ji_image(im: _Image, score_thr: float, thr: float) -> tuple[int, int, int]:
    keep = im.score > score_thr
    dt = im.dt[keep]
    iou = _overlaps(dt, im.gt, True)
    w = np.where(iou > thr, iou, 0.0)
    k = 0
    dt_un = np.ones(len(dt), bool)
    gt_un = np.ones(len(im.gt), bool)
    if w.size and (w > 0).any():
        from scipy.optimize import linear_sum_assignment

        r, c = linear_sum_assignment(w, maximize=True)
        good = w[r, c] > 0
        r, c = r[good], c[good]
        k = len(r)
        dt_un[r] = False
        gt_un[c] = False
    n_ign_dt = n_ign_gt = 0
    if len(im.ign):
        n_ign_dt = int((_overlaps(dt[dt_un], im.ign, False).max(axis=1, initial=0) > thr).sum())
        n_ign_gt = int((_overlaps(im.gt[gt_un], im.ign, False).max(axis=1, initial=0) > thr).sum())
    m = len(im.gt) - n_ign_gt
    n = len(dt) - n_ign_dt
    return k, m, n


def _ji(images: list[_Image], thr: float, score_thrs) -> float:
    best = float("nan")
    for t in score_thrs:
        ratios = []
        for im in images:
            k, m, n = _ji_image(im, t, thr)
            if m + n > 0:
                ratios.append(k / (m + n - k))
        if ratios:
            v = float(np.mean(ratios)) * 100.0
            best = v if math.isnan(best) else max(best, v)
    return best


# ----------------------------------------------------------------------------- API


def crowdhuman_evaluate(
    gt,
    detections,
    *,
    iou_thr: float = IOU_THR,
    clip: bool = True,
    ap_method: str = "crowddet",
    ji_score_thrs=JI_SCORE_THRS,
) -> dict[str, float]:
    """CrowdHuman AP (higher is better), MR^-2 (lower is better) and JI (higher is better),
    all 0-100, of ``detections`` (``[{image_id, bbox [x,y,w,h], score, category_id?}]``)
    against the COCO ground truth ``gt`` (path, dict or pycocotools COCO)."""
    if ap_method not in AP_METHODS:
        raise unknown_name("ap_method", ap_method, AP_METHODS)
    images = _prepare(gt, list(detections), clip)
    n_gt = sum(len(im.gt) for im in images)
    tp, fp = _curves(images, iou_thr)
    return {
        "AP": _ap(tp, fp, n_gt, ap_method),
        "MR": _mr(tp, fp, n_gt, len(images)),
        "JI": _ji(images, iou_thr, ji_score_thrs),
    }


__all__ = ["crowdhuman_evaluate", "MR_REFS", "JI_SCORE_THRS", "AP_METHODS"]
