"""PGDCocoMetric, the mmengine side of evaluation: one result per image, label -> category
mapping, the 0-100 scale, and CrowdHuman MR / JI for crowdhuman data."""

from __future__ import annotations

import json

import pytest
import torch


def coco(tmp_path, cats=((3, "cat"), (7, "dog"))):
    images = [dict(id=i, file_name=f"{i}.jpg", width=100, height=80) for i in (1, 2, 3)]
    anns = [
        dict(id=1, image_id=1, category_id=7, bbox=[10, 10, 30, 20], area=600, iscrowd=0),
        dict(id=2, image_id=2, category_id=3, bbox=[50, 20, 40, 50], area=2000, iscrowd=0),
        dict(id=3, image_id=2, category_id=7, bbox=[5, 5, 20, 20], area=400, iscrowd=0),
    ]
    data = dict(images=images, annotations=anns, categories=[dict(id=i, name=n) for i, n in cats])
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(data))
    return p, data


def sample(img_id, boxes_xywh, labels, scores=None):
    b = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes_xywh], dtype=torch.float32).reshape(-1, 4)
    return dict(img_id=img_id, pred_instances=dict(
        bboxes=b, labels=torch.tensor(labels, dtype=torch.long),
        scores=torch.tensor(scores or [1.0] * len(labels))))


def test_gt_as_predictions_scores_100_with_the_label_mapping(tmp_path):
    from pgd.integration.metric import PGDCocoMetric

    ann, _ = coco(tmp_path)
    metric = PGDCocoMetric(str(ann), classes=["cat", "dog"])
    # label 0 = cat (id 3), label 1 = dog (id 7); image 3 has no GT and no detection
    metric.process({}, [sample(1, [[10, 10, 30, 20]], [1]), sample(2, [[50, 20, 40, 50], [5, 5, 20, 20]], [0, 1]),
                        sample(3, [], [])])
    assert len(metric.results) == 3  # exactly one result per image
    out = metric.evaluate(3)
    assert out["coco/AP"] == pytest.approx(100.0) and out["coco/AP50"] == pytest.approx(100.0)
    # swapping the labels makes every detection a wrong-class false positive
    metric2 = PGDCocoMetric(str(ann), classes=["cat", "dog"])
    metric2.process({}, [sample(1, [[10, 10, 30, 20]], [0]), sample(2, [[50, 20, 40, 50], [5, 5, 20, 20]], [1, 0]),
                         sample(3, [], [])])
    assert metric2.evaluate(3)["coco/AP"] == pytest.approx(0.0)


def test_crowdhuman_kind_adds_mr_and_ji(tmp_path):
    from pgd.integration.metric import PGDCocoMetric

    ann, data = coco(tmp_path, cats=((1, "person"),))
    for a in data["annotations"]:
        a["category_id"] = 1
    ann.write_text(json.dumps(data))
    metric = PGDCocoMetric(str(ann), classes=["person"], kind="crowdhuman")
    metric.process({}, [sample(1, [[10, 10, 30, 20]], [0]), sample(2, [[50, 20, 40, 50], [5, 5, 20, 20]], [0, 0]),
                        sample(3, [], [])])
    out = metric.evaluate(3)
    assert out["coco/MR"] == pytest.approx(0.0) and out["coco/JI"] == pytest.approx(100.0)
    assert out["coco/AP_crowdhuman"] == pytest.approx(100.0)
