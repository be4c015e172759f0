"""A tiny crowded-pedestrian set in CrowdHuman's ``.odgt`` format, for end-to-end tests of the
CrowdHuman path (converter -> training -> AP / MR^-2 / JI) without the real data.

Each image (``size`` x ``size`` px, default 128) shows a street-like gradient with noise and
a crowd of "pedestrians": a body rectangle and a round head in one random colour, full-body
box aspect (w/h) 0.35-0.5, heights 30-70 % of the image. People stand in one or two rows
packed across ``SPREAD`` of the width, so neighbouring full-body boxes overlap heavily (what makes
CrowdHuman hard); later people are drawn over earlier ones; some stand partly outside the
frame, and their ``fbox`` extends outside the image as CrowdHuman's does (``vbox`` is the
part inside the frame, ``hbox`` the head). Ignore regions:

* with probability ``MASK_PROB`` an image gets one ``tag: "mask"`` region: a patch of tiny
  blobs ("a crowd too far to annotate") in a corner no person box overlaps by IoU >= 0.3;
* a person shorter than ``IGNORE_BELOW`` px is annotated ``extra.ignore = 1``.

Deterministic: image ``i`` of split ``s`` draws from ``numpy.random.default_rng([seed,
split code, i])``; the same arguments give byte-identical files. Output::

    OUT/Images/<ID>.jpg
    OUT/annotation_train.odgt, OUT/annotation_val.odgt     (one JSON object per line)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pgd.errors import check_range

SIZE = 128
PEOPLE = (6, 12)  # people per image (inclusive range)
HEIGHT_FRAC = (0.3, 0.7)  # full-body height / image side
ASPECT = (0.35, 0.5)  # full-body width / height
SPREAD = 0.8  # a row of people spans this fraction of the image width
MASK_PROB = 0.6  # chance of one ignore ("mask") region per image
IGNORE_BELOW = 40.0  # persons shorter than this (px) are marked extra.ignore = 1
JPEG_QUALITY = 92
_SPLITS = {"train": 1, "val": 2}


def _iou(a, b) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _image(rng: np.random.Generator, size: int):
    yy = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    top, bottom = rng.uniform(60, 200, 3), rng.uniform(40, 160, 3)
    img = np.broadcast_to(top * (1 - yy) + bottom * yy, (size, size, 3)).copy()
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    boxes = []
    rows = 1 if rng.random() < 0.5 else 2
    n = int(rng.integers(PEOPLE[0], PEOPLE[1] + 1))
    for k in range(n):
        row = k % rows
        h = float(rng.uniform(*HEIGHT_FRAC)) * size * (1.0 if row == 0 else 0.75)
        w = h * float(rng.uniform(*ASPECT))
        # people side by side across the frame, overlapping neighbours, some cut by the border
        x = -0.3 * w + SPREAD * size * (k // rows + rng.uniform(-0.4, 0.4)) / max(1, (n + rows - 1) // rows)
        y = size * (0.95 if row == 0 else 0.75) - h + float(rng.normal(0, 0.03 * size))
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        head = 0.18 * h
        cx = x + w / 2
        draw.rectangle([x + 0.15 * w, y + head, x + 0.85 * w, y + h], fill=colour)
        draw.ellipse([cx - head / 2, y, cx + head / 2, y + head], fill=colour)
        boxes.append(dict(fbox=[x, y, w, h], hbox=[cx - head / 2, y, head, head]))
    ignore = []
    if rng.random() < MASK_PROB:
        side = size * 0.25
        for corner in rng.permutation(4):
            mx = 0.0 if corner % 2 == 0 else size - side
            my = 0.0 if corner < 2 else size - side
            region = [mx, my, side, side]
            if all(_iou(region, b["fbox"]) < 0.3 for b in boxes):
                for _ in range(12):
                    bx, by = mx + rng.uniform(0, side - 4), my + rng.uniform(0, side - 6)
                    draw.ellipse([bx, by, bx + 3, by + 5], fill=tuple(int(c) for c in rng.uniform(0, 255, 3)))
                ignore.append(region)
                break
    pixels = np.asarray(pil, dtype=np.float32) + rng.normal(0, 4, (size, size, 3))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), boxes, ignore


def _clip(box, size):
    x, y, w, h = box
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(float(size), x + w), min(float(size), y + h)
    return [x1, y1, max(0.0, x2 - x1), max(0.0, y2 - y1)]


def generate_crowd_odgt(out: str | os.PathLike, n_train: int = 12, n_val: int = 4,
                        size: int = SIZE, seed: int = 0) -> dict:
    """Write the set under ``out`` (module docstring); return ``{"images": dir,
    "train_odgt": path, "val_odgt": path, "num_people": int, "num_ignore": int}``."""
    check_range("n_train", n_train, 1)
    check_range("n_val", n_val, 1)
    check_range("size", size, 32, 1024)
    out = Path(out)
    img_dir = out / "Images"
    img_dir.mkdir(parents=True, exist_ok=True)
    paths, people, ignored = {}, 0, 0
    for split, n in (("train", n_train), ("val", n_val)):
        lines = []
        for i in range(int(n)):
            rng = np.random.default_rng([int(seed), _SPLITS[split], i])
            pixels, boxes, masks = _image(rng, int(size))
            ID = f"synth_s{seed}_{split}_{i:04d}"
            Image.fromarray(pixels).save(img_dir / f"{ID}.jpg", format="JPEG", quality=JPEG_QUALITY)
            gtboxes = []
            for k, b in enumerate(boxes):
                small = b["fbox"][3] < IGNORE_BELOW
                r = lambda v: [round(float(c), 2) for c in v]  # noqa: E731
                gtboxes.append(dict(tag="person", fbox=r(b["fbox"]), vbox=r(_clip(b["fbox"], size)),
                                    hbox=r(b["hbox"]), head_attr={"ignore": 0},
                                    extra={"box_id": k, "ignore": int(small)}))
                people += 1
                ignored += int(small)
            for m in masks:
                gtboxes.append(dict(tag="mask", fbox=[round(float(c), 2) for c in m], extra={"ignore": 1}))
                ignored += 1
            lines.append(json.dumps({"ID": ID, "gtboxes": gtboxes}))
        paths[split] = out / f"annotation_{split}.odgt"
        paths[split].write_text("\n".join(lines) + "\n")
    return {"images": img_dir, "train_odgt": paths["train"], "val_odgt": paths["val"],
            "num_people": people, "num_ignore": ignored}
