"""Optimal LRP (pgd.evaluation.lrp.olrp): the definition on hand-computed cases, by a
brute-force threshold search on random cases, and the official implementation's conventions
(crowd regions, classes without GT, no detections)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pgd.evaluation.coco import load_gt
from pgd.evaluation.lrp import olrp


def _gt(anns, n_images=1, cats=(1,)):
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 200} for i in range(1, n_images + 1)]
    out = []
    for k, a in enumerate(anns):
        img, cat, bbox = a[:3]
        crowd = a[3] if len(a) > 3 else 0
        out.append({"id": k + 1, "image_id": img, "category_id": cat, "bbox": list(bbox),
                    "area": bbox[2] * bbox[3], "iscrowd": crowd})
    return load_gt({"images": images, "annotations": out,
                    "categories": [{"id": c, "name": f"c{c}"} for c in cats]})


def _det(img, cat, bbox, score):
    return {"image_id": img, "category_id": cat, "bbox": list(bbox), "score": score}


A, B = [0, 0, 10, 10], [50, 50, 10, 10]
A75 = [0, 0, 10, 7.5]  # IoU with A: 75 / 100 = 0.75
FAR = [100, 100, 10, 10]


def test_gt_as_detections_gives_zero():
    gt = _gt([(1, 1, A), (1, 1, B), (2, 2, [20, 30, 40, 10])], n_images=2, cats=(1, 2))
    dets = [_det(a["image_id"], a["category_id"], a["bbox"], 1.0) for a in gt.dataset["annotations"]]
    r = olrp(gt, dets)
    assert {k: r[k] for k in ("oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN", "moLRP")} == {
        "oLRP": 0.0, "oLRP_loc": 0.0, "oLRP_FP": 0.0, "oLRP_FN": 0.0, "moLRP": 0.0}


def test_one_tp_one_fp_one_fn_fp_ranked_first():
    # GT A, B; detections: FP (0.9) then TP on A with IoU 0.75 (0.8); B is missed.
    # threshold 0.9: TP 0, FP 1, FN 2 -> (0 + 1 + 2) / 3 = 1
    # threshold 0.8: TP 1, FP 1, FN 1 -> ((1 - 0.75) / 0.5 + 1 + 1) / 3 = 2.5 / 3
    # optimum at 0.8: loc = 0.25 / 1, FP = 1 / 2, FN = 1 / 2
    gt = _gt([(1, 1, A), (1, 1, B)])
    r = olrp(gt, [_det(1, 1, FAR, 0.9), _det(1, 1, A75, 0.8)])
    assert r["oLRP"] == pytest.approx(100 * 2.5 / 3)
    assert r["oLRP_loc"] == pytest.approx(25.0)
    assert r["oLRP_FP"] == pytest.approx(50.0)
    assert r["oLRP_FN"] == pytest.approx(50.0)
    assert r["per_class"][1]["threshold"] == pytest.approx(0.8)
    assert (r["per_class"][1]["n_tp"], r["per_class"][1]["n_fp"], r["per_class"][1]["n_gt"]) == (1, 1, 2)


def test_one_tp_one_fp_one_fn_tp_ranked_first():
    # threshold 0.9 keeps the TP only: (0.5 + 0 + 1) / 2 = 0.75 < 2.5 / 3 at 0.8, so the
    # optimal threshold drops the FP: loc 0.25, FP 0, FN 0.5
    gt = _gt([(1, 1, A), (1, 1, B)])
    r = olrp(gt, [_det(1, 1, A75, 0.9), _det(1, 1, FAR, 0.8)])
    assert (r["oLRP"], r["oLRP_loc"], r["oLRP_FP"], r["oLRP_FN"]) == pytest.approx((75.0, 25.0, 0.0, 50.0))
    assert r["per_class"][1]["threshold"] == pytest.approx(0.9)


def test_conventions_of_the_official_implementation():
    # a detection on a crowd region is neither TP nor FP; a class without GT is not averaged
    # (even with detections); a class with GT and no detection has oLRP 1, FN 1, loc/FP n/a
    gt = _gt([(1, 1, A), (1, 1, [60, 60, 80, 80], 1), (1, 2, B), (1, 3, FAR, 1)], cats=(1, 2, 3, 4))
    dets = [_det(1, 1, A, 0.9), _det(1, 1, [70, 70, 20, 20], 0.95), _det(1, 4, [5, 5, 5, 5], 0.99),
            _det(1, 3, [0, 150, 10, 10], 0.5)]
    r = olrp(gt, dets)
    assert set(r["per_class"]) == {1, 2}  # class 3 has only a crowd region, class 4 no GT
    assert r["per_class"][1]["oLRP"] == 0.0 and r["per_class"][1]["n_fp"] == 0
    c2 = r["per_class"][2]
    assert c2["oLRP"] == 100.0 and c2["oLRP_FN"] == 100.0 and math.isnan(c2["oLRP_loc"])
    assert r["oLRP"] == pytest.approx(50.0)  # mean of 0 and 100
    assert r["oLRP_loc"] == 0.0 and r["oLRP_FP"] == 0.0  # undefined for class 2: left out
    assert r["oLRP_FN"] == pytest.approx(50.0)
    none = olrp(gt, [])
    assert none["oLRP"] == 100.0 and math.isnan(none["oLRP_loc"]) and none["oLRP_FN"] == 100.0


def test_max_dets_per_image_and_class():
    gt = _gt([(1, 1, A)])
    dets = [_det(1, 1, FAR, 0.9 - 0.01 * i) for i in range(3)] + [_det(1, 1, A, 0.1)]
    assert olrp(gt, dets, max_dets=3)["oLRP"] == 100.0  # the TP is the 4th: cut
    assert olrp(gt, dets)["oLRP"] == pytest.approx(100 * 3 / 4)  # 3 FP + 1 TP of IoU 1


# ----------------------------------------------------------------------------- brute force


def _iou(a, b):
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _lrp_at(gts, dets, thr, tau=0.5):
    """LRP of one class keeping detections with score >= thr: greedy matching per image in
    descending score, each detection taking the unmatched GT of highest IoU >= tau."""
    tp_err, n_tp, n_fp = 0.0, 0, 0
    for img in {g[0] for g in gts} | {d[0] for d in dets}:
        g_img = [g[1] for g in gts if g[0] == img]
        used = [False] * len(g_img)
        for _, box, _score in sorted((d for d in dets if d[0] == img and d[2] >= thr), key=lambda d: -d[2]):
            best, j = tau, -1
            for k, g in enumerate(g_img):
                if not used[k] and _iou(box, g) >= best:
                    best, j = _iou(box, g), k
            if j < 0:
                n_fp += 1
            else:
                used[j] = True
                n_tp += 1
                tp_err += 1 - best
    n_fn = len(gts) - n_tp
    value = (tp_err / (1 - tau) + n_fp + n_fn) / (n_tp + n_fp + n_fn)
    return value, (tp_err / n_tp if n_tp else math.nan,
                   n_fp / (n_tp + n_fp) if n_tp else math.nan, n_fn / len(gts))


def _brute(anns, dets, cats):
    per = []
    for c in cats:
        gts = [(a[0], a[2]) for a in anns if a[1] == c]
        ds = [(d["image_id"], d["bbox"], d["score"]) for d in dets if d["category_id"] == c]
        if not gts:
            continue
        best, comps = 1.0, (math.nan, math.nan, 1.0)
        for thr in sorted({d[2] for d in ds}, reverse=True):  # every threshold, high to low
            v, parts = _lrp_at(gts, ds, thr)
            if v < best - 1e-12:
                best, comps = v, parts
        per.append((best, *comps))
    arr = np.array(per, dtype=float)
    return [float(np.nanmean(arr[:, i])) * 100 if (~np.isnan(arr[:, i])).any() else math.nan for i in range(4)]


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_a_brute_force_threshold_search(seed):
    rng = np.random.default_rng(seed)
    cats = (1, 2, 3)
    anns, dets = [], []
    for img in range(1, 5):
        for _ in range(int(rng.integers(0, 5))):
            x, y = rng.uniform(0, 140, 2)
            w, h = rng.uniform(8, 50, 2)
            c = int(rng.integers(1, 4))
            anns.append((img, c, [float(x), float(y), float(w), float(h)]))
            for _ in range(int(rng.integers(0, 3))):  # noisy copies, sometimes of another class
                j = rng.normal(0, 0.15, 4) * [w, h, w, h]
                dets.append(_det(img, c if rng.random() < 0.8 else int(rng.integers(1, 4)),
                                 [x + j[0], y + j[1], max(2.0, w + j[2]), max(2.0, h + j[3])], float(rng.random())))
        for _ in range(int(rng.integers(0, 3))):  # background
            x, y = rng.uniform(0, 170, 2)
            dets.append(_det(img, int(rng.integers(1, 4)), [float(x), float(y), 20.0, 20.0], float(rng.random())))
    gt = _gt(anns, n_images=4, cats=cats)
    r = olrp(gt, dets)
    want = _brute(anns, dets, cats)
    got = [r["oLRP"], r["oLRP_loc"], r["oLRP_FP"], r["oLRP_FN"]]
    assert got == pytest.approx(want, abs=1e-9, nan_ok=True)
