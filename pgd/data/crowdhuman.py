"""Convert the official CrowdHuman ``.odgt`` annotations to COCO JSON (full-body boxes).

Each ``.odgt`` line is one JSON object ``{"ID": ..., "gtboxes": [{"tag": "person"|"mask",
"fbox": [x, y, w, h], "vbox": ..., "hbox": ..., "extra": {"ignore": 0|1, ...}, ...}]}``.
Rules (docs/data.md, "CrowdHuman"):

* one category, ``{"id": 1, "name": "person"}``; the box is ``fbox`` (the full body);
* ``tag == "mask"`` (crowd/reflection/poster regions) and ``extra.ignore == 1`` become
  ``iscrowd = 1`` -- ignore regions for training (mmdet's ``gt_ignore_flags``) and for
  evaluation (pycocotools and :mod:`pgd.evaluation.crowdhuman`); any other tag is an error;
* ``fbox`` is NOT clipped: full-body boxes of truncated people extend outside the image by
  design (validate the result with ``validate_coco(..., allow_outside=True)``);
  ``area = w * h`` of the unclipped box; ``vbox``/``hbox`` are kept as extra keys when present;
* images are ``<images>/<ID>.jpg``; width/height are read from the files; image ids are
  1..N in file order and each image keeps its CrowdHuman ``ID`` as ``crowdhuman_id``;
* every problem (malformed line, missing key, bad box, duplicate ID, missing or unreadable
  image) is collected and raised as one AnnotationError with ``(odgt:line, ID, reason)``.

CLI: ``python -m pgd.data.crowdhuman --odgt FILE --images DIR --out JSON``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from pgd.errors import AnnotationError

CATEGORY = {"id": 1, "name": "person", "supercategory": "person"}
TAGS = ("person", "mask")


def _box_ok(b) -> bool:
    return (
        isinstance(b, (list, tuple))
        and len(b) == 4
        and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in b
        )
    )


def odgt_to_coco(
    odgt: str | os.PathLike, images_dir: str | os.PathLike, *, image_ext: str = ".jpg",
    allow_missing_gtboxes: bool = False,
) -> dict:
    """Read an ``.odgt`` file and its images; return the COCO dict (nothing is written).

    A record without a ``gtboxes`` key is an error (an image without people says
    ``"gtboxes": []``); ``allow_missing_gtboxes`` reads such records as empty images."""
    from PIL import Image

    odgt, images_dir = Path(odgt), Path(images_dir)
    if not odgt.is_file():
        raise AnnotationError(
            f"CrowdHuman annotation file {odgt}: file not found",
            [(str(odgt), None, "file not found")],
        )
    if not images_dir.is_dir():
        raise AnnotationError(
            f"CrowdHuman image folder {images_dir}: not found",
            [(str(images_dir), None, "folder not found")],
        )
    problems: list[tuple[str, object, str]] = []
    images, annotations, seen = [], [], {}
    with open(odgt, encoding="utf-8") as f:
        lines = f.readlines()
    for lineno, line in enumerate(lines, 1):
        where = f"{odgt}:{lineno}"
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append((where, None, f"malformed JSON line: {e.msg} at column {e.colno}"))
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("ID"), str) or not rec.get("ID"):
            problems.append((where, None, "line lacks a string 'ID'"))
            continue
        ID = rec["ID"]
        if ID in seen:
            problems.append((where, ID, f"duplicate ID (first on line {seen[ID]})"))
            continue
        seen[ID] = lineno
        if "gtboxes" not in rec and not allow_missing_gtboxes:
            problems.append((where, ID, "record has no 'gtboxes' key (an image without people has "
                             "\"gtboxes\": []); pass --allow-missing-gtboxes to read such records as empty"))
            continue
        gtboxes = rec.get("gtboxes", [])
        if not isinstance(gtboxes, list):
            problems.append((where, ID, "'gtboxes' must be a list"))
            continue
        path = images_dir / f"{ID}{image_ext}"
        try:
            with Image.open(path) as im:
                width, height = im.size
        except FileNotFoundError:
            problems.append((where, ID, f"image {path} not found"))
            continue
        except Exception as e:
            problems.append((where, ID, f"image {path} unreadable: {type(e).__name__}: {e}"))
            continue
        image_id = len(images) + 1
        images.append(
            {
                "id": image_id,
                "file_name": path.name,
                "width": width,
                "height": height,
                "crowdhuman_id": ID,
            }
        )
        for k, g in enumerate(gtboxes):
            if not isinstance(g, dict):
                problems.append((where, ID, f"gtboxes[{k}] is not an object"))
                continue
            tag = g.get("tag")
            if tag not in TAGS:
                problems.append(
                    (where, ID, f"gtboxes[{k}] has tag {tag!r}; expected one of {TAGS}")
                )
                continue
            fbox = g.get("fbox")
            if not _box_ok(fbox):
                problems.append(
                    (where, ID, f"gtboxes[{k}] fbox must be 4 finite numbers, got {fbox!r}")
                )
                continue
            if fbox[2] < 0 or fbox[3] < 0:
                problems.append(
                    (where, ID, f"gtboxes[{k}] fbox has negative width/height {fbox!r}")
                )
                continue
            extra = g.get("extra") if isinstance(g.get("extra"), dict) else {}
            ignore = tag == "mask" or extra.get("ignore", 0) not in (0, None, False)
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": CATEGORY["id"],
                "bbox": [float(v) for v in fbox],
                "area": float(fbox[2]) * float(fbox[3]),
                "iscrowd": int(ignore),
                "segmentation": [],
            }
            for key in ("vbox", "hbox"):
                if _box_ok(g.get(key)):
                    ann[key] = [float(v) for v in g[key]]
            annotations.append(ann)
    if not images and not problems:
        problems.append((str(odgt), None, "no records"))
    if problems:
        raise AnnotationError(f"{odgt}: {len(problems)} problem(s) found", problems)
    return {
        "info": {"description": f"CrowdHuman full-body boxes converted from {odgt.name}"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(CATEGORY)],
    }


def convert_crowdhuman(
    odgt: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_json: str | os.PathLike,
    *,
    image_ext: str = ".jpg",
    allow_missing_gtboxes: bool = False,
) -> dict:
    """Convert and write ``out_json`` atomically; return a summary
    ``{num_images, num_annotations, num_ignore}``."""
    coco = odgt_to_coco(odgt, images_dir, image_ext=image_ext, allow_missing_gtboxes=allow_missing_gtboxes)
    out = Path(out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(coco, f)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {
        "num_images": len(coco["images"]),
        "num_annotations": len(coco["annotations"]),
        "num_ignore": sum(a["iscrowd"] for a in coco["annotations"]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pgd.data.crowdhuman", description=__doc__.split("\n")[0]
    )
    p.add_argument("--odgt", required=True, help="annotation_train.odgt or annotation_val.odgt")
    p.add_argument("--images", required=True, help="folder holding <ID>.jpg")
    p.add_argument("--out", required=True, help="COCO JSON to write")
    p.add_argument("--ext", default=".jpg", help="image file extension (default .jpg)")
    p.add_argument("--allow-missing-gtboxes", action="store_true",
                   help="read records without a 'gtboxes' key as images without people")
    a = p.parse_args(argv)
    try:
        s = convert_crowdhuman(a.odgt, a.images, a.out, image_ext=a.ext,
                               allow_missing_gtboxes=a.allow_missing_gtboxes)
    except AnnotationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {a.out}: {s['num_images']} images, {s['num_annotations']} boxes "
        f"({s['num_ignore']} ignore regions)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
