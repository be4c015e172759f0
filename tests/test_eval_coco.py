"""coco_evaluate: pycocotools AP on the 0-100 scale, NaN for area ranges without GT."""

from __future__ import annotations

import copy
import json
import logging
import math

import numpy as np
import pytest

from pgd.errors import AnnotationError, ConfigError
from pgd.evaluation.coco import KEYS, coco_evaluate


def _ann(i, img, cat, bbox):
    return {
        "id": i,
        "image_id": img,
        "category_id": cat,
        "bbox": bbox,
        "area": bbox[2] * bbox[3],
        "iscrowd": 0,
    }


def _gt_all_sizes() -> dict:
    # small (< 32^2), medium and large (> 96^2) objects, two categories, two images
    return {
        "images": [
            {"id": 1, "file_name": "1.jpg", "width": 300, "height": 200},
            {"id": 2, "file_name": "2.jpg", "width": 300, "height": 200},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
        "annotations": [
            _ann(1, 1, 1, [10, 10, 20, 20]),
            _ann(2, 1, 3, [50, 40, 50, 60]),
            _ann(3, 1, 1, [120, 20, 150, 160]),
            _ann(4, 2, 3, [5, 5, 12, 9]),
            _ann(5, 2, 1, [100, 100, 40, 40]),
        ],
    }


def _as_dets(gt: dict, score=1.0) -> list[dict]:
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": score,
        }
        for a in gt["annotations"]
        if not a.get("iscrowd")
    ]


def test_ground_truth_as_detections_is_perfect(tmp_path, capsys):
    gt = _gt_all_sizes()
    r = coco_evaluate(gt, _as_dets(gt))
    assert set(r) == set(KEYS)
    assert all(v == pytest.approx(100.0) for v in r.values()), r
    # the same from a file path, and nothing printed
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    assert coco_evaluate(path, _as_dets(gt)) == r
    assert capsys.readouterr().out == ""


def test_hand_computed_two_gts_one_false_positive_between():
    # One image, one class, two medium GTs g1 = [10,10,40,40], g2 = [55,55,40,40].
    # Detections by score: d1 = g1 (0.9, TP), d2 = far from both (0.8, FP), d3 = g2 (0.7, TP).
    # Running recall / precision: d1 (0.5, 1), d2 (0.5, 1/2), d3 (1.0, 2/3).
    # COCO precision envelope p(r) = max precision at recall >= r: 1 for r <= 0.5, 2/3 above.
    # The 101 recall thresholds 0.00 .. 1.00: 0.00..0.50 are 51 points at 1 (recall 0.5 is
    # reached exactly), 0.51..1.00 are 50 points at 2/3:
    #   AP = (51 * 1 + 50 * 2/3) / 101 = 253 / 303 = 0.834983...
    # The boxes match exactly or not at all, so every IoU threshold gives the same AP;
    # all boxes (the FP's 35x35 = 1225 px included) are medium, so APS/APL have no GT: NaN.
    gt = {
        "images": [{"id": 7, "file_name": "x.jpg", "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [_ann(1, 7, 1, [10, 10, 40, 40]), _ann(2, 7, 1, [55, 55, 40, 40])],
    }
    dets = [
        {"image_id": 7, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9},
        {"image_id": 7, "category_id": 1, "bbox": [60, 2, 35, 35], "score": 0.8},
        {"image_id": 7, "category_id": 1, "bbox": [55, 55, 40, 40], "score": 0.7},
    ]
    r = coco_evaluate(gt, dets)
    for k in ("AP", "AP50", "AP75", "APM"):
        assert r[k] == pytest.approx(100 * 253 / 303), k
    assert math.isnan(r["APS"]) and math.isnan(r["APL"])


def test_hand_computed_three_gts_one_missed():
    # Three medium GTs; d1 TP (0.9), d2 FP (0.8), d3 TP (0.7); the third GT is never found.
    # recall / precision: (1/3, 1), (1/3, 1/2), (2/3, 2/3); envelope 1 up to recall 1/3,
    # 2/3 up to 2/3, 0 beyond (never reached). Recall thresholds 0.00..0.33 -> 34 points
    # at 1, 0.34..0.66 -> 33 points at 2/3, 0.67..1.00 -> 34 points at 0:
    #   AP = (34 + 33 * 2/3) / 101 = 56 / 101
    gt = {
        "images": [{"id": 1, "file_name": "x.jpg", "width": 200, "height": 100}],
        "categories": [{"id": 4, "name": "thing"}],
        "annotations": [
            _ann(1, 1, 4, [0, 0, 40, 40]),
            _ann(2, 1, 4, [50, 0, 40, 40]),
            _ann(3, 1, 4, [100, 0, 40, 40]),
        ],
    }
    dets = [
        {"image_id": 1, "category_id": 4, "bbox": [0, 0, 40, 40], "score": 0.9},
        {"image_id": 1, "category_id": 4, "bbox": [0, 55, 40, 40], "score": 0.8},
        {"image_id": 1, "category_id": 4, "bbox": [50, 0, 40, 40], "score": 0.7},
    ]
    assert coco_evaluate(gt, dets)["AP"] == pytest.approx(100 * 56 / 101)


def test_empty_detections_give_zeros():
    r = coco_evaluate(_gt_all_sizes(), [])
    assert r == {k: 0.0 for k in KEYS}
    gt = _gt_all_sizes()
    gt["annotations"] = [a for a in gt["annotations"] if a["area"] < 32**2]  # only small GT
    r = coco_evaluate(gt, [])
    assert r["AP"] == r["APS"] == 0.0 and math.isnan(r["APM"]) and math.isnan(r["APL"])


def test_inputs_are_not_mutated_and_numpy_values_accepted():
    gt = _gt_all_sizes()
    dets = [
        {
            "image_id": np.int64(1),
            "category_id": np.int32(1),
            "bbox": np.array([10.0, 10, 20, 20]),
            "score": np.float32(0.5),
        }
    ]
    before = copy.deepcopy(dets[0])
    r = coco_evaluate(gt, dets)
    assert set(dets[0]) == set(before)  # pycocotools' loadRes adds keys to what it gets
    assert 0 < r["AP"] < 100


def test_bad_detections_are_all_reported():
    gt = _gt_all_sizes()
    dets = [
        {"image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0},
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 1.0},
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5], "score": 1.0},
        {"image_id": 1, "category_id": 1, "score": 1.0},
    ]
    with pytest.raises(AnnotationError) as ei:
        coco_evaluate(gt, dets)
    reasons = [r for *_, r in ei.value.problems]
    assert len(reasons) == 4
    assert "image_id 99 is not in the ground truth" in reasons[0]
    assert "unknown category_id 2" in reasons[1]
    assert "bbox must be 4 finite numbers" in reasons[2] and "lacks bbox" in reasons[3]
    with pytest.raises(ConfigError, match="iou_type"):
        coco_evaluate(gt, [], iou_type="keypoints")
    with pytest.raises(AnnotationError, match="file not found"):
        coco_evaluate("/nonexistent/gt.json", [])


def test_pycocotools_output_goes_to_debug_logger(capsys):
    lines = []

    class Catch(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    log = logging.getLogger("test.eval.coco")
    log.addHandler(Catch())
    log.setLevel(logging.DEBUG)
    gt = _gt_all_sizes()
    coco_evaluate(gt, _as_dets(gt), logger=log)
    assert any("Average Precision" in ln for ln in lines)
    log.setLevel(logging.INFO)
    lines.clear()
    coco_evaluate(gt, _as_dets(gt), logger=log)
    assert lines == [] and capsys.readouterr().out == ""


def test_real_coco_tiny_val_ground_truth_scores_100(coco_tiny):
    ann = coco_tiny / "annotations" / "instances_val2017.json"
    gt = json.loads(ann.read_text())
    r = coco_evaluate(ann, _as_dets(gt))
    assert all(v == pytest.approx(100.0) for v in r.values()), r
