"""CrowdHuman end to end on a synthetic crowd (pgd.data.crowd_synth): .odgt -> converter ->
a tiny detector trained and evaluated (AP / MR^-2 / JI), and MR / JI by hand on its images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pgd.data.crowd_synth import generate_crowd_odgt
from pgd.data.crowdhuman import convert_crowdhuman
from pgd.evaluation.crowdhuman import crowdhuman_evaluate


@pytest.fixture(scope="module")
def crowd(tmp_path_factory):
    root = tmp_path_factory.mktemp("crowd")
    out = generate_crowd_odgt(root / "raw", n_train=12, n_val=4, size=128, seed=0)
    convert_crowdhuman(out["train_odgt"], out["images"], root / "train.json")
    convert_crowdhuman(out["val_odgt"], out["images"], root / "val.json")
    return root, out


def test_generator_is_deterministic_crowded_and_has_ignore_regions(crowd, tmp_path):
    root, out = crowd
    again = generate_crowd_odgt(tmp_path, n_train=12, n_val=4, size=128, seed=0)
    assert again["val_odgt"].read_bytes() == out["val_odgt"].read_bytes()
    name = "synth_s0_val_0000.jpg"
    assert (again["images"] / name).read_bytes() == (out["images"] / name).read_bytes()
    assert generate_crowd_odgt(tmp_path / "s1", 1, 1, seed=1)["val_odgt"].read_text() != out["val_odgt"].read_text()
    lines = [json.loads(s) for s in out["val_odgt"].read_text().splitlines()]
    assert all(set(g) >= {"tag", "fbox", "extra"} for r in lines for g in r["gtboxes"])
    coco = json.loads((root / "train.json").read_text())
    anns = coco["annotations"]
    assert sum(a["iscrowd"] for a in anns) >= 3  # mask regions and small ignored people
    assert any(a["bbox"][0] < 0 or a["bbox"][0] + a["bbox"][2] > 128 for a in anns)  # truncated fbox
    # crowded: most people overlap a neighbour by IoU > 0.3
    from pgd.evaluation.crowdhuman import _overlaps, _xyxy

    crowded = []
    for im in coco["images"]:
        b = _xyxy([a["bbox"] for a in anns if a["image_id"] == im["id"] and not a["iscrowd"]])
        iou = _overlaps(b, b, True)
        np.fill_diagonal(iou, 0)
        crowded.append((iou.max(axis=1) > 0.3).mean())
    assert np.mean(crowded) > 0.5


def test_mr_and_ji_by_hand_on_a_generated_image(crowd):
    root, _ = crowd
    coco = json.loads((root / "val.json").read_text())
    im = next(i for i in coco["images"] if any(a["image_id"] == i["id"] and a["iscrowd"] for a in coco["annotations"]))
    anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
    gt = dict(coco, images=[im], annotations=anns)
    people = [a for a in anns if not a["iscrowd"]]
    ignore = [a for a in anns if a["iscrowd"]]
    from pgd.evaluation.crowdhuman import _clip, _overlaps, _xyxy

    def ioa_with_ignore(box):
        return _overlaps(_clip(_xyxy([box]), 128, 128), _clip(_xyxy([a["bbox"] for a in ignore]), 128, 128), False).max()

    missed = next(a for a in people if ioa_with_ignore(a["bbox"]) == 0)  # a person no ignore region covers
    fp = next(b for b in ([x, y, 6, 6] for x in range(0, 122, 6) for y in range(0, 122, 6))
              if ioa_with_ignore(b) == 0
              and _overlaps(_xyxy([b]), _clip(_xyxy([a["bbox"] for a in people]), 128, 128), True).max() < 0.5)
    N = len(people)
    dets = [dict(image_id=im["id"], category_id=1, bbox=a["bbox"], score=0.9) for a in people if a is not missed]
    dets.append(dict(image_id=im["id"], category_id=1, bbox=fp, score=0.5))
    dets.append(dict(image_id=im["id"], category_id=1, bbox=ignore[0]["bbox"], score=0.99))  # on an ignore region
    r = crowdhuman_evaluate(gt, dets)
    # the detection on the ignore region is dropped; N-1 TPs (0.9) then 1 FP (0.5), 1 image:
    # FPPI is 0 until the FP, then 1 >= every reference -> every sample is the last point's
    # miss rate 1/N -> MR = 100/N.  AP: precision 1 up to recall (N-1)/N -> 100 (N-1)/N.
    # JI: score > 0.5 keeps the N-1 TPs and the ignore-region detection (discounted):
    # k = N-1, m = N, n = N-1 -> (N-1)/N; score > 0.4 adds the FP: (N-1)/(N+1); > 0.9 keeps
    # only the discounted one -> 0. The best is (N-1)/N.
    assert r["MR"] == pytest.approx(100 / N)
    assert r["AP"] == pytest.approx(100 * (N - 1) / N)
    assert r["JI"] == pytest.approx(100 * (N - 1) / N)


def test_train_and_evaluate_a_tiny_detector(crowd):
    from pgd.config.run import parse_run as run_config
    from pgd.evaluation.crowdhuman import crowdhuman_evaluate
    from pgd.training import train
    from pgd.training.predict import load_detector, predict_detections

    root, out = crowd
    cfg = dict(
        model="atss_tiny", work_dir=str(root / "run"),
        data=dict(kind="crowdhuman", root=str(root), train_ann=str(root / "train.json"),
                  val_ann=str(root / "val.json"), train_img=str(out["images"]), val_img=str(out["images"])),
        schedule=dict(epochs=1, batch_size=4, base_lr=0.02, base_batch_size=16, warmup_iters=2, lr_steps=[1],
                      img_scale=[128, 128], num_workers=0, log_interval=50),
    )
    result = train(run_config(cfg))
    assert 0 <= result["MR"] <= 100 and 0 <= result["JI"] <= 100 and 0 <= result["AP_crowdhuman"] <= 100
    # the trainer's metrics are the CrowdHuman evaluation of the checkpoint's own detections
    dets = predict_detections(load_detector(cfg, result["best_checkpoint"]))
    ch = crowdhuman_evaluate(root / "val.json", dets)
    assert (result["MR"], result["JI"], result["AP_crowdhuman"]) == pytest.approx((ch["MR"], ch["JI"], ch["AP"]))
    assert len(dets) > 0
