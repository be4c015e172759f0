"""CrowdHuman .odgt -> COCO conversion: full boxes unclipped, mask/ignore -> iscrowd."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from pgd.data.crowdhuman import convert_crowdhuman, main, odgt_to_coco
from pgd.data.validate import validate_coco
from pgd.errors import AnnotationError
from pgd.evaluation.crowdhuman import crowdhuman_evaluate

RECORDS = [
    {
        "ID": "273271,c9db000d5146c15",
        "gtboxes": [
            {
                "tag": "person",
                "fbox": [10, 5, 30, 60],
                "vbox": [12, 5, 20, 40],
                "hbox": [20, 5, 8, 9],
                "extra": {"box_id": 0, "occ": 0},
                "head_attr": {"ignore": 0},
            },
            # a truncated person: the full box leaves the 80x64 image on the left and bottom
            {
                "tag": "person",
                "fbox": [-12, 30, 25, 50],
                "vbox": [0, 30, 13, 34],
                "hbox": [0, 30, 6, 6],
                "extra": {"box_id": 1, "occ": 1},
            },
            {"tag": "person", "fbox": [50, 10, 20, 40], "extra": {"box_id": 2, "ignore": 1}},
            {"tag": "mask", "fbox": [60, 40, 15, 20], "extra": {"ignore": 1}},
        ],
    },
    {
        "ID": "284193,faa9000f2678b5e",
        "gtboxes": [{"tag": "person", "fbox": [4, 4, 10, 20], "extra": {}}],
    },
]


def _dataset(
    tmp_path: Path, records=RECORDS, sizes=((80, 64), (32, 40)), lines=None
) -> tuple[Path, Path]:
    img = tmp_path / "Images"
    img.mkdir(exist_ok=True)
    for rec, (w, h) in zip(records, sizes):
        Image.new("RGB", (w, h), (90, 90, 90)).save(img / f"{rec['ID']}.jpg")
    odgt = tmp_path / "annotation_val.odgt"
    odgt.write_text(
        "\n".join(lines if lines is not None else [json.dumps(r) for r in records]) + "\n"
    )
    return odgt, img


def test_conversion_rules(tmp_path):
    odgt, img = _dataset(tmp_path)
    out = tmp_path / "coco" / "val.json"
    summary = convert_crowdhuman(odgt, img, out)
    assert summary == {"num_images": 2, "num_annotations": 5, "num_ignore": 2}
    d = json.loads(out.read_text())
    assert d["categories"] == [{"id": 1, "name": "person", "supercategory": "person"}]
    assert [
        (i["id"], i["file_name"], i["width"], i["height"], i["crowdhuman_id"]) for i in d["images"]
    ] == [
        (1, "273271,c9db000d5146c15.jpg", 80, 64, "273271,c9db000d5146c15"),
        (2, "284193,faa9000f2678b5e.jpg", 32, 40, "284193,faa9000f2678b5e"),
    ]
    anns = d["annotations"]
    assert [a["iscrowd"] for a in anns] == [0, 0, 1, 1, 0]  # extra.ignore and tag mask -> 1
    assert anns[1]["bbox"] == [-12.0, 30.0, 25.0, 50.0]  # not clipped
    assert anns[1]["area"] == 25 * 50
    assert anns[0]["vbox"] == [12.0, 5.0, 20.0, 40.0] and anns[0]["hbox"] == [20.0, 5.0, 8.0, 9.0]
    assert {a["category_id"] for a in anns} == {1} and len({a["id"] for a in anns}) == 5
    # the converted file is valid COCO once out-of-image full boxes are allowed
    s = validate_coco(out, img, check_images="decode", allow_outside=True)
    assert s["num_images"] == 2 and s["num_annotations"] == 5
    with pytest.raises(AnnotationError, match="leaves the 80x64 image"):
        validate_coco(out, img)
    assert odgt_to_coco(odgt, img)["annotations"] == anns


def test_all_problems_with_line_numbers(tmp_path):
    recs = [
        RECORDS[0],
        {"ID": "no-image", "gtboxes": []},
        {
            "ID": "bad-tag",
            "gtboxes": [{"tag": "dog", "fbox": [0, 0, 1, 1]}, {"tag": "person", "fbox": [0, 0, 1]}],
        },
        {"gtboxes": []},
        RECORDS[0],
    ]
    lines = [json.dumps(r) for r in recs[:2]] + [
        "{not json",
        json.dumps(recs[2]),
        "",
        json.dumps(recs[3]),
        json.dumps(recs[4]),
    ]
    odgt, img = _dataset(tmp_path, records=[RECORDS[0]], sizes=[(80, 64)], lines=lines)
    Image.new("RGB", (8, 8)).save(img / "bad-tag.jpg")
    with pytest.raises(AnnotationError) as ei:
        convert_crowdhuman(odgt, img, tmp_path / "out.json")
    got = [
        (Path(f.rsplit(":", 1)[0]).name, int(f.rsplit(":", 1)[1]), i, r)
        for f, i, r in ei.value.problems
    ]
    assert [(ln, i) for _, ln, i, _ in got] == [
        (2, "no-image"),
        (3, None),
        (4, "bad-tag"),
        (4, "bad-tag"),
        (6, None),
        (7, "273271,c9db000d5146c15"),
    ]
    reasons = [r for *_, r in got]
    assert "not found" in reasons[0] and "malformed JSON" in reasons[1]
    assert "tag 'dog'" in reasons[2] and "fbox must be 4 finite numbers" in reasons[3]
    assert "lacks a string 'ID'" in reasons[4] and "duplicate ID (first on line 1)" in reasons[5]
    assert not (tmp_path / "out.json").exists()
    with pytest.raises(AnnotationError, match="file not found"):
        convert_crowdhuman(tmp_path / "missing.odgt", img, tmp_path / "out.json")


def test_cli_and_evaluation_roundtrip(tmp_path, capsys):
    odgt, img = _dataset(tmp_path)
    out = tmp_path / "val.json"
    assert main(["--odgt", str(odgt), "--images", str(img), "--out", str(out)]) == 0
    assert "2 images, 5 boxes (2 ignore regions)" in capsys.readouterr().out
    d = json.loads(out.read_text())
    dets = [
        {"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9}
        for a in d["annotations"]
        if not a["iscrowd"]
    ]
    r = crowdhuman_evaluate(out, dets)
    assert r["AP"] == pytest.approx(100) and r["MR"] == 0 and r["JI"] == pytest.approx(100)
    assert (
        main(["--odgt", str(tmp_path / "nope.odgt"), "--images", str(img), "--out", str(out)]) == 2
    )


def test_a_record_without_gtboxes_is_an_error_unless_allowed(tmp_path):
    rec = {"ID": "273271,c9db000d5146c15"}
    odgt, img = _dataset(tmp_path, records=[rec], sizes=[(80, 64)])
    with pytest.raises(AnnotationError, match="record has no 'gtboxes' key"):
        odgt_to_coco(odgt, img)
    coco = odgt_to_coco(odgt, img, allow_missing_gtboxes=True)
    assert len(coco["images"]) == 1 and coco["annotations"] == []
