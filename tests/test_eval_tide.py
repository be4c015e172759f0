"""TIDE error breakdown through tidecv (pgd.evaluation.tide) on a hand-made case, under
numpy 2 with numpy's warnings turned into errors, without restyling matplotlib."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pgd.evaluation.coco import load_gt
from pgd.evaluation.tide import MAIN_ERRORS, SPECIAL_ERRORS, tide_errors


def _gt():
    boxes = [(1, [0, 0, 20, 20]), (1, [50, 50, 20, 20]), (2, [100, 100, 20, 20]), (1, [0, 100, 20, 20])]
    anns = [{"id": k + 1, "image_id": 1, "category_id": c, "bbox": b, "area": 400.0, "iscrowd": 0}
            for k, (c, b) in enumerate(boxes)]
    anns.append({"id": 9, "image_id": 1, "category_id": 1, "bbox": [150, 0, 40, 40], "area": 1600.0,
                 "iscrowd": 1})
    return load_gt({"images": [{"id": 1, "file_name": "1.jpg", "width": 200, "height": 200},
                               {"id": 2, "file_name": "2.jpg", "width": 200, "height": 200}],
                    "annotations": anns,
                    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]})


def _det(img, cat, bbox, score):
    return {"image_id": img, "category_id": cat, "bbox": bbox, "score": score}


DETS = [
    _det(1, 1, [0, 0, 20, 20], 0.9),  # TP on GT 1
    _det(1, 1, [1, 1, 20, 20], 0.8),  # duplicate of GT 1 (IoU 0.82)
    _det(1, 2, [50, 50, 20, 20], 0.7),  # right box of GT 2, wrong class: Cls
    _det(1, 2, [100, 100, 20, 7], 0.6),  # GT 3's class, IoU 0.35: Loc
    _det(1, 1, [150, 150, 10, 10], 0.5),  # nothing there: Bkg
    _det(1, 1, [155, 5, 20, 20], 0.95),  # on the crowd region: ignored
    _det(2, 2, [10, 10, 30, 30], 0.4),  # image without GT: Bkg
]  # GT 4 has no detection at all: Miss


def test_hand_made_error_counts_under_numpy_warnings_as_errors():
    import matplotlib

    assert np.__version__.startswith("2.")
    style = dict(matplotlib.rcParams)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = tide_errors(_gt(), DETS, name="hand")
    # Bkg 3: the two background detections and, as tidecv does, the one on the crowd region
    # (ignored for every AP, so for every dAP, but still counted)
    assert r["counts"] == {"Cls": 1, "Loc": 1, "Both": 0, "Dupe": 1, "Bkg": 3, "Miss": 1}
    assert set(r["main"]) == set(MAIN_ERRORS) and set(r["special"]) == set(SPECIAL_ERRORS)
    # class a: GT 1, 2, 4 -> TP, Dupe (FP), Bkg (FP), crowd (ignored); class b: GT 3 -> 2 FP.
    # AP50: class a has precision 1 up to recall 1/3 -> 34 of 101 recall points; class b 0
    assert r["AP50"] == pytest.approx((34 / 101 * 100 + 0) / 2)
    # dAP by hand (101-point AP, mean over the 2 classes; base: a 34/101, b 0):
    # Cls: the class-b detection on GT 2 becomes an a-TP at 0.7 -> a: p 1 to recall 1/3,
    #   2/3 to recall 2/3 -> (34 + 33 * 2/3) / 101
    # Loc: the b-detection at 0.6 becomes a TP on GT 3, after the b-FP at 0.7 -> b: 1/2 at
    #   every recall point
    # Miss: GT 4 leaves class a -> a: 51 / 101;  FalseNeg: every GT found -> a: 1, b: 0
    # FalsePos: every FP comes after class a's TP and b has no TP -> no gain
    base = 34 / 101 * 100 / 2
    assert r["main"]["Cls"] == pytest.approx((34 + 33 * 2 / 3) / 101 * 100 / 2 - base)
    assert r["main"]["Loc"] == pytest.approx((34 / 101 * 100 + 50.0) / 2 - base)
    assert r["main"]["Miss"] == pytest.approx(51 / 101 * 100 / 2 - base)
    assert r["main"]["Both"] == r["main"]["Dupe"] == r["main"]["Bkg"] == 0.0
    assert r["special"] == pytest.approx({"FalsePos": 0.0, "FalseNeg": 50.0 - base})
    assert dict(matplotlib.rcParams) == style  # TIDE's seaborn styling did not leak


def test_perfect_detections_have_no_error():
    gt = _gt()
    dets = [_det(1, a["category_id"], a["bbox"], 1.0) for a in gt.dataset["annotations"] if not a["iscrowd"]]
    r = tide_errors(gt, dets)
    assert r["AP50"] == pytest.approx(100.0)
    assert all(v == 0 for v in r["main"].values()) and all(v == 0 for v in r["counts"].values())
