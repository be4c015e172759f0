"""validate_coco: every problem collected into one AnnotationError; degenerate boxes skipped."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from pgd.data.validate import coco_categories, validate_coco
from pgd.errors import AnnotationError, ConfigError


def _write(tmp_path: Path, data: dict, images=((1, "a.png", 40, 30), (2, "b.png", 20, 20))) -> Path:
    img_dir = tmp_path / "img"
    img_dir.mkdir(exist_ok=True)
    for _, name, w, h in images:
        Image.new("RGB", (w, h), (120, 30, 200)).save(img_dir / name)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    return ann


def _good() -> dict:
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.png", "width": 20, "height": 20},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 2,
                "bbox": [0, 0, 40, 30],
                "area": 1200,
                "iscrowd": 0,
            },
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5.5, 6, 10, 8], "area": 80},
        ],
        "categories": [{"id": 2, "name": "dog"}, {"id": 1, "name": "cat"}],
    }


def test_valid_dataset_summary(tmp_path, caplog):
    ann = _write(tmp_path, _good())
    with caplog.at_level(logging.INFO, logger="pgd.data.validate"):
        s = validate_coco(ann, tmp_path / "img", check_images="decode")
    assert s == {
        "num_images": 2,
        "num_annotations": 2,
        "num_categories": 2,
        "zero_area_skipped": 0,
        "empty_images": 1,
    }
    assert "skipped" not in caplog.text
    assert coco_categories(ann) == ["cat", "dog"]  # id order, not file order


def test_zero_area_boxes_are_skipped_and_logged_once(tmp_path):
    d = _good()
    d["annotations"] += [
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [3, 3, 0, 5], "area": 0},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [3, 3, 5, 0], "area": 0},
        {"id": 5, "image_id": 2, "category_id": 1, "bbox": [3, 3, 5, 5], "area": 0},
    ]
    ann = _write(tmp_path, d)
    lines = []

    class Catch(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    log = logging.getLogger("test.validate.zero")
    log.setLevel(logging.INFO)
    log.addHandler(Catch())
    s = validate_coco(ann, tmp_path / "img", logger=log)
    assert s["zero_area_skipped"] == 3
    assert s["empty_images"] == 1  # image 2 holds only degenerate boxes
    assert len(lines) == 1 and "3 degenerate" in lines[0]


def test_every_problem_is_listed(tmp_path):
    d = _good()
    d["images"] += [
        {"id": 2, "file_name": "dup.png", "width": 20, "height": 20},  # duplicate id
        {"id": 3, "file_name": "c.png", "height": 10},  # no width
        {"id": 4, "file_name": "gone.png", "width": 10, "height": 10},  # file missing
    ]
    d["annotations"] += [
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "area": 4},  # dup id
        {"id": 10, "image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2], "area": 4},  # no image
        {"id": 11, "image_id": 1, "category_id": 7, "bbox": [1, 1, 2, 2], "area": 4},  # unknown cat
        {"id": 12, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2], "area": 4},  # 3 numbers
        {"id": 13, "image_id": 1, "category_id": 1, "bbox": [1, 1, float("nan"), 2], "area": 4},
        {"id": 14, "image_id": 1, "category_id": 1, "bbox": [1, 1, -2, 2], "area": 4},  # negative
        {
            "id": 15,
            "image_id": 1,
            "category_id": 1,
            "bbox": [30, 1, 12, 2],
            "area": 24,
        },  # x2=42 > 40+1
        {"id": 16, "image_id": 1, "bbox": [1, 1, 2, 2], "area": 4},  # no category_id
        {"id": 17, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]},  # no area
        {"id": 18, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 2},
    ]
    d["categories"] += [{"id": 1, "name": "again"}, {"id": 5, "name": "cat"}, {"id": 6}]
    ann = _write(tmp_path, d)
    with pytest.raises(AnnotationError) as ei:
        validate_coco(ann, tmp_path / "img")
    probs = ei.value.problems
    reasons = "\n".join(r for _, _, r in probs)
    for needle in (
        "duplicate image id",
        "image lacks width",
        "image file not found",
        "duplicate annotation id 2",
        "image_id 99 is not in images",
        "unknown category_id 7",
        "bbox must be 4 numbers",
        "non-finite",
        "negative width/height",
        "leaves the 40x30 image",
        "annotation 16 lacks category_id",
        "annotation 17 lacks area",
        "iscrowd must be 0 or 1",
        "duplicate category id 1",
        "duplicate category name 'cat'",
        "category 6 lacks name",
    ):
        assert needle in reasons, needle
    assert len(probs) == 17  # the 16 above + c.png, which is missing too
    # each entry names the file and the image
    assert (str(ann), 99, "annotation 10: image_id 99 is not in images") in probs
    assert any(f.endswith("gone.png") and i == 4 for f, i, _ in probs)
    assert "17 problem(s)" in str(ei.value)


def test_out_of_image_tolerance_and_allow_outside(tmp_path):
    d = _good()
    d["annotations"].append(
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [-0.9, 20, 40.8, 10.9], "area": 9}
    )
    ann = _write(tmp_path, d)
    validate_coco(ann, tmp_path / "img")  # within the default 1-px tolerance
    with pytest.raises(AnnotationError, match="leaves the 40x30 image"):
        validate_coco(ann, tmp_path / "img", tolerance=0.5)
    d["annotations"].append(
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [-20, -5, 80, 50], "area": 9}
    )
    ann = _write(tmp_path, d)
    with pytest.raises(AnnotationError):
        validate_coco(ann, tmp_path / "img")
    assert validate_coco(ann, tmp_path / "img", allow_outside=True)["num_annotations"] == 4


def test_image_checks_by_mode(tmp_path):
    d = _good()
    ann = _write(tmp_path, d)
    img = tmp_path / "img"
    Image.new("RGB", (21, 20)).save(img / "b.png")  # size differs from the JSON's 20x20
    raw = (img / "a.png").read_bytes()
    (img / "a.png").write_bytes(raw[: len(raw) // 2])  # truncated
    assert validate_coco(ann, img, check_images="exists")["num_images"] == 2
    assert validate_coco(ann, None, check_images="none")["num_images"] == 2
    with pytest.raises(AnnotationError) as ei:  # the default of a run: header + end marker
        validate_coco(ann, img, check_images="header")
    got = {Path(f).name: r for f, _, r in ei.value.problems}
    assert set(got) == {"a.png", "b.png"}
    assert "21x20 differs from the JSON's 20x20" in got["b.png"]
    assert got["a.png"] == "truncated PNG file (no end marker in its last 1024 bytes)"
    with pytest.raises(AnnotationError) as ei:
        validate_coco(ann, img, check_images="decode")
    got = {Path(f).name: r for f, _, r in ei.value.problems}
    assert set(got) == {"a.png", "b.png"} and "unreadable image" in got["a.png"]
    with pytest.raises(ConfigError, match="check_images mode"):
        validate_coco(ann, img, check_images="full")


def test_missing_and_invalid_json_name_the_path(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(AnnotationError, match=f"{missing}: file not found"):
        validate_coco(missing, tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}')
    with pytest.raises(AnnotationError, match=r"bad.json: invalid JSON: .* line 1"):
        validate_coco(bad, tmp_path)
    with pytest.raises(AnnotationError, match="nope.json"):
        coco_categories(missing)
    lst = tmp_path / "list.json"
    lst.write_text("[]")
    with pytest.raises(AnnotationError, match="top level must be a JSON object"):
        validate_coco(lst, tmp_path)
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    with pytest.raises(AnnotationError) as ei:
        validate_coco(empty, tmp_path, check_images="none")
    assert len(ei.value.problems) == 3  # images, annotations, categories missing


def test_real_coco_tiny_passes(coco_tiny):
    for split in ("val2017", "train2017"):
        s = validate_coco(
            coco_tiny / "annotations" / f"instances_{split}.json",
            coco_tiny / split,
            check_images="header",
        )
        assert s["num_images"] == 80 and s["num_categories"] == 80 and s["num_annotations"] > 0
    names = coco_categories(coco_tiny / "annotations" / "instances_val2017.json")
    assert names[0] == "person" and len(names) == 80


def test_header_check_catches_a_truncated_jpeg_and_tolerates_trailing_bytes(tmp_path):
    import numpy as np

    d = _good()
    for im in d["images"]:
        im["file_name"] = im["file_name"].replace(".png", ".jpg")
    ann = _write(tmp_path, d)
    img = tmp_path / "img"
    rng = np.random.default_rng(0)
    for im in d["images"]:
        Image.fromarray(rng.integers(0, 255, (im["height"], im["width"], 3), dtype=np.uint8)).save(img / im["file_name"])
    name = d["images"][0]["file_name"]
    raw = (img / name).read_bytes()
    (img / name).write_bytes(raw + b"\x00" * 16)  # padding after EOI is fine
    assert validate_coco(ann, img, check_images="header")["num_images"] == 2
    (img / name).write_bytes(raw[:-40])
    with pytest.raises(AnnotationError, match="truncated JPEG file"):
        validate_coco(ann, img, check_images="header")


def test_a_valid_dataset_is_checked_once_per_home_across_processes(tmp_path, monkeypatch):
    """The trials of a sweep are separate processes: the second finds the first one's record
    under PGD_HOME and reads no image; a changed annotation file or image folder, or a failed
    validation, is checked again."""
    import pgd.data.validate as V

    monkeypatch.setenv("PGD_HOME", str(tmp_path / "home"))
    ann = _write(tmp_path, _good())
    img = tmp_path / "img"
    first = validate_coco(ann, img, check_images="header")
    assert len(list((tmp_path / "home" / "cache" / "validated").glob("*.json"))) == 1
    V._CACHE.clear()  # a new process

    def no_reads(*a, **k):
        raise AssertionError("image read again")

    monkeypatch.setattr(V, "_check_file", no_reads)
    assert validate_coco(ann, img, check_images="header") == first
    V._CACHE.clear()
    with pytest.raises(AssertionError, match="image read again"):  # other rules: another record
        validate_coco(ann, img, check_images="decode")
    monkeypatch.undo()
    monkeypatch.setenv("PGD_HOME", str(tmp_path / "home"))
    V._CACHE.clear()
    Image.new("RGB", (10, 10)).save(img / "c.png")  # the folder changed: checked again
    bad = _good()
    bad["images"][1]["width"] = 21  # and now b.png's header disagrees
    ann.write_text(json.dumps(bad))
    with pytest.raises(AnnotationError):
        validate_coco(ann, img, check_images="header")
    V._CACHE.clear()
    with pytest.raises(AnnotationError):  # a failure is never remembered
        validate_coco(ann, img, check_images="header")
