"""CrowdHuman AP / MR^-2 / JI (CrowdDet's definitions) on hand-computed tiny cases."""

from __future__ import annotations

import json
import math

import pytest

from pgd.errors import AnnotationError, ConfigError
from pgd.evaluation.crowdhuman import JI_SCORE_THRS, MR_REFS, crowdhuman_evaluate


def _gt(images: dict[int, list], size=(200, 200)) -> dict:
    """images: id -> list of boxes [x, y, w, h] or ("ignore", [x, y, w, h])."""
    anns = []
    for iid, boxes in images.items():
        for b in boxes:
            crowd = isinstance(b, tuple)
            bb = b[1] if crowd else b
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": iid,
                    "category_id": 1,
                    "bbox": bb,
                    "area": bb[2] * bb[3],
                    "iscrowd": int(crowd),
                }
            )
    return {
        "images": [
            {"id": i, "file_name": f"{i}.jpg", "width": size[0], "height": size[1]} for i in images
        ],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person"}],
    }


def _det(iid, bbox, score):
    return {"image_id": iid, "category_id": 1, "bbox": bbox, "score": score}


P1, P2, P3 = [10, 10, 30, 80], [60, 20, 30, 70], [120, 30, 40, 100]
FAR = [150, 160, 30, 30]  # overlaps nobody


def test_perfect_detections():
    gt = _gt({1: [P1, P2, P3], 2: [P1, ("ignore", [100, 100, 60, 60])]})
    dets = [_det(a["image_id"], a["bbox"], 0.9) for a in gt["annotations"] if not a["iscrowd"]]
    r = crowdhuman_evaluate(gt, dets)
    assert r == {"AP": pytest.approx(100.0), "MR": 0.0, "JI": pytest.approx(100.0)}


def test_one_missed_person():
    # 2 GT, one detection on P1.  PR curve: the single point (recall 1/2, precision 1),
    # started at recall 0 with that precision -> AP = 1/2 * 1 = 50.
    # No false positive: FPPI stays 0 < every reference, so all 9 samples take the last
    # point's miss rate 1/2 -> MR = 50.  JI: k=1, m=2, n=1 -> 1/(2+1-1) = 50.
    gt = _gt({1: [P1, P2]})
    r = crowdhuman_evaluate(gt, [_det(1, P1, 0.9)])
    assert r["AP"] == pytest.approx(50.0)
    assert r["MR"] == pytest.approx(50.0)
    assert r["JI"] == pytest.approx(50.0)
    # VOC all-point interpolation gives the same here
    assert crowdhuman_evaluate(gt, [_det(1, P1, 0.9)], ap_method="all_point")[
        "AP"
    ] == pytest.approx(50.0)


def test_one_false_positive_ranked_first():
    # 2 GT; detections FP (0.95), TP (0.9), TP (0.8).
    # (recall, precision): (0, 0), (1/2, 1/2), (1, 2/3).  Trapezoids from (0, 0):
    #   0 + (1/2)(0 + 1/2)/2 + (1/2)(1/2 + 2/3)/2 = 1/8 + 7/24 = 5/12 -> AP = 41.67
    # FPPI is 1 from the first detection on, where the miss rate is 1 -> all samples 1 -> MR 100.
    # JI: the FP outscores every threshold 0.0..0.9 -> k=2, m=2, n=3 -> 2/3 -> 66.67.
    gt = _gt({1: [P1, P2]})
    dets = [_det(1, FAR, 0.95), _det(1, P1, 0.9), _det(1, P2, 0.8)]
    r = crowdhuman_evaluate(gt, dets)
    assert r["AP"] == pytest.approx(100 * 5 / 12)
    assert r["MR"] == pytest.approx(100.0)
    assert r["JI"] == pytest.approx(100 * 2 / 3)


def test_one_false_positive_ranked_last():
    # TP (0.9), TP (0.8), FP (0.7): the curve reaches recall 1 at precision 1 before the FP,
    # so AP = 100; the FP comes after the last miss -> MR 0; JI sweeps thresholds and at
    # t = 0.7 (score > t keeps only 0.9 and 0.8) is 2/(2+2-2) = 100.
    gt = _gt({1: [P1, P2]})
    dets = [_det(1, P1, 0.9), _det(1, P2, 0.8), _det(1, FAR, 0.7)]
    r = crowdhuman_evaluate(gt, dets)
    assert r == {"AP": pytest.approx(100.0), "MR": 0.0, "JI": pytest.approx(100.0)}


def test_false_positive_between_crowddet_trapezoid_vs_all_point():
    # TP (0.9), FP (0.8), TP (0.7) on 2 GT: (1/2, 1), (1/2, 1/2), (1, 2/3).
    # CrowdDet trapezoids from (0, 1): 1/2*1 + 0 + 1/2*(1/2 + 2/3)/2 = 1/2 + 7/24 = 19/24.
    # All-point (monotone envelope): 1/2*1 + 1/2*2/3 = 5/6.
    gt = _gt({1: [P1, P2]})
    dets = [_det(1, P1, 0.9), _det(1, FAR, 0.8), _det(1, P2, 0.7)]
    assert crowdhuman_evaluate(gt, dets)["AP"] == pytest.approx(100 * 19 / 24)
    assert crowdhuman_evaluate(gt, dets, ap_method="all_point")["AP"] == pytest.approx(100 * 5 / 6)


def test_detection_on_ignore_region_is_not_counted():
    region = [100, 10, 60, 60]
    inside = [110, 20, 30, 30]  # IoA 1 with the region, IoU 0.25 < 0.5
    gt = _gt({1: [P1, ("ignore", region)]})
    dets = [_det(1, inside, 0.95), _det(1, P1, 0.9)]
    r = crowdhuman_evaluate(gt, dets)
    assert r == {"AP": pytest.approx(100.0), "MR": 0.0, "JI": pytest.approx(100.0)}
    # the same box as an ordinary person: the detection becomes a false positive ranked
    # first (0, 0), (1/2, 1/2) -> AP = (1/2)(1/2)/2 = 12.5; MR 100; JI k=1, m=2, n=2 -> 1/3
    as_person = _gt({1: [P1, region]})
    r = crowdhuman_evaluate(as_person, dets)
    assert r["AP"] == pytest.approx(12.5) and r["MR"] == pytest.approx(100.0)
    assert r["JI"] == pytest.approx(100 / 3)
    # IoA exactly 0.5 is not "> 0.5": counted as a false positive, as in CrowdDet
    half = [140, 20, 40, 30]  # x 140..180 vs region 100..160: 20 of 40 -> IoA 0.5
    r = crowdhuman_evaluate(gt, [_det(1, half, 0.95), _det(1, P1, 0.9)])
    assert r["AP"] == pytest.approx(25.0)  # (0, 0), (1, 1/2): 1 * (0 + 1/2) / 2


def test_miss_rate_sampling_at_the_nine_fppi_references():
    # 100 images, one person each. Ranked: 50 TP, 1 FP (FPPI .01), 20 TP, 9 FP (FPPI .10),
    # 20 TP, 90 FP (FPPI 1.0); 10 people never found.
    # Sample = miss rate at the first detection whose FPPI >= ref:
    #   .01 -> first FP (miss .5); .0178 .0316 .0562 .1 -> in the 9-FP run (miss .3);
    #   .1778 .3162 .5623 1 -> in the 90-FP run (miss .1).
    # MR = (0.5 * 0.3^4 * 0.1^4)^(1/9)
    n = 100
    gt = _gt({i: [[10, 10, 20, 40]] for i in range(1, n + 1)})
    people = iter(range(1, n + 1))
    s = iter(1.0 - 1e-3 * k for k in range(1000))
    dets = []
    fp_img = iter(i % n + 1 for i in range(1000))
    for kind, count in (("tp", 50), ("fp", 1), ("tp", 20), ("fp", 9), ("tp", 20), ("fp", 90)):
        for _ in range(count):
            if kind == "tp":
                dets.append(_det(next(people), [10, 10, 20, 40], next(s)))
            else:
                dets.append(_det(next(fp_img), [100, 100, 20, 20], next(s)))
    r = crowdhuman_evaluate(gt, dets)
    assert len(MR_REFS) == 9 and MR_REFS[0] == 0.01 and MR_REFS[-1] == 1.0
    assert r["MR"] == pytest.approx(100 * (0.5 * 0.3**4 * 0.1**4) ** (1 / 9))


def test_ji_uses_maximum_weight_matching():
    # d1 overlaps g1 (IoU .739) and g2 (IoU .6); d2 overlaps only g1 (IoU .538).
    # Greedy by IoU would pair d1-g1 and leave d2, g2 unmatched (JI 1/3); the maximum-weight
    # matching (CrowdDet's maxWeightMatching) pairs d1-g2 and d2-g1: JI = 100.
    g1, g2 = [20, 0, 10, 10], [24, 0, 10, 10]
    d1, d2 = [21.5, 0, 10, 10], [17, 0, 10, 10]
    gt = _gt({1: [g1, g2]})
    r = crowdhuman_evaluate(gt, [_det(1, d1, 0.9), _det(1, d2, 0.8)])
    assert r["JI"] == pytest.approx(100.0)
    # ...while AP/MR match greedily by score (Caltech): d1 takes g1, d2 is a false positive
    assert r["AP"] == pytest.approx(50.0)
    assert JI_SCORE_THRS == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def test_boxes_are_clipped_to_the_image_like_crowddet():
    # a truncated person whose full box leaves the 100x100 image; the detection covers the
    # visible part. Raw IoU 0.4 -> a miss; after clipping both, IoU 1 -> a hit.
    gt = _gt({1: [[-60, 10, 100, 50]]}, size=(100, 100))
    dets = [_det(1, [0, 10, 40, 50], 0.9)]
    assert crowdhuman_evaluate(gt, dets)["AP"] == pytest.approx(100.0)
    assert crowdhuman_evaluate(gt, dets, clip=False)["AP"] == 0.0


def test_no_detections_and_bad_input(tmp_path):
    gt = _gt({1: [P1], 2: []})
    assert crowdhuman_evaluate(gt, []) == {"AP": 0.0, "MR": 100.0, "JI": 0.0}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    assert crowdhuman_evaluate(path, [_det(1, P1, 1.0)])["AP"] == pytest.approx(100.0)
    # detections of other classes are ignored
    assert (
        crowdhuman_evaluate(gt, [_det(1, P1, 1.0), {**_det(1, FAR, 1.0), "category_id": 5}])["JI"]
        == 100.0
    )
    nothing = crowdhuman_evaluate(_gt({1: [("ignore", P1)]}), [])
    assert math.isnan(nothing["AP"]) and math.isnan(nothing["MR"]) and math.isnan(nothing["JI"])
    with pytest.raises(AnnotationError, match="image_id 9"):
        crowdhuman_evaluate(gt, [_det(9, P1, 1.0), _det(1, [1, 2, 3], 1.0)])
    with pytest.raises(ConfigError, match="ap_method"):
        crowdhuman_evaluate(gt, [], ap_method="voc07")
