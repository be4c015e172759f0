"""COCO box AP through pycocotools, quietly, on the 0-100 scale.

``coco_evaluate(gt, detections)`` returns ``{"AP", "AP50", "AP75", "APS", "APM", "APL"}``:
pycocotools' ``COCOeval.stats[0:6] * 100`` (AP over IoU 0.50:0.95, at 0.50, at 0.75, and
for small / medium / large GT areas, maxDets 100, 101-point interpolated precision).
Where pycocotools reports -1 -- no ground truth in that area range, so the number is
undefined -- the value is ``float('nan')``, never a fake 0 or -1. Empty detections are
evaluated like any other (zeros wherever there is ground truth) without crashing
pycocotools. pycocotools' prints are captured and sent to ``logger.debug``; they are
dropped when no logger is given or it is not enabled for DEBUG.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import sys
from pathlib import Path

import numpy as np

from pgd.config.names import COCO_METRICS as KEYS  # noqa: E402
from pgd.errors import AnnotationError, unknown_name

IOU_TYPES = ("bbox", "segm")


@contextlib.contextmanager
def quiet(logger: logging.Logger | None = None):
    """Capture pycocotools' prints (to ``logger.debug`` when it is enabled for DEBUG).

    Ray Train workers replace ``builtins.print`` (their output goes to the worker log, not
    ``sys.stdout``), so ``print`` itself is pointed at the buffer too while this is active.
    """
    import builtins

    buf = io.StringIO()
    original = builtins.print

    def _print(*args, sep=" ", end="\n", file=None, flush=False):
        if file in (None, sys.stdout, buf):
            buf.write(sep.join(map(str, args)) + end)
        else:
            original(*args, sep=sep, end=end, file=file, flush=flush)

    builtins.print = _print
    try:
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        builtins.print = original
        if logger is not None and logger.isEnabledFor(logging.DEBUG):
            for line in buf.getvalue().splitlines():
                if line.strip():
                    logger.debug("pycocotools: %s", line)


def load_gt(gt, logger: logging.Logger | None = None):
    """A pycocotools ``COCO`` from a path, a COCO dict or a ``COCO`` (returned as is)."""
    from pycocotools.coco import COCO

    if isinstance(gt, COCO):
        return gt
    if isinstance(gt, dict):
        coco = COCO()
        coco.dataset = gt
        with quiet(logger):
            coco.createIndex()
        return coco
    if isinstance(gt, (str, os.PathLike)):
        from pgd.data.validate import load_coco_json

        data = load_coco_json(gt)  # clear error for a missing / invalid file
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise AnnotationError(
                    f"ground truth {gt}: top-level '{key}' must be a list",
                    [(str(gt), None, f"no '{key}' list")],
                )
        return load_gt(data, logger)
    raise TypeError(
        f"gt must be a path, a COCO dict or a pycocotools COCO, got {type(gt).__name__}"
    )


def _clean_detections(coco, detections, iou_type: str, src: str) -> list[dict]:
    """Copies of the detections with plain Python numbers; every bad entry reported at once."""
    img_ids = set(coco.getImgIds())
    cat_ids = set(coco.getCatIds())
    out, problems = [], []
    for k, d in enumerate(detections):
        if not isinstance(d, dict):
            problems.append((src, None, f"detection {k} is not a dict"))
            continue
        iid = d.get("image_id")
        if isinstance(iid, np.integer):
            iid = int(iid)
        need = ("image_id", "category_id", "score") + (
            ("bbox",) if iou_type == "bbox" else ("segmentation",)
        )
        miss = [key for key in need if key not in d]
        if miss:
            problems.append((src, iid, f"detection {k} lacks {', '.join(miss)}"))
            continue
        if iid not in img_ids:
            problems.append(
                (src, iid, f"detection {k}: image_id {iid!r} is not in the ground truth")
            )
            continue
        cid = (
            int(d["category_id"]) if isinstance(d["category_id"], np.integer) else d["category_id"]
        )
        if cid not in cat_ids:
            problems.append((src, iid, f"detection {k}: unknown category_id {cid!r}"))
            continue
        score = float(d["score"])
        if not math.isfinite(score):
            problems.append((src, iid, f"detection {k}: score {d['score']!r} is not finite"))
            continue
        c = {"image_id": iid, "category_id": cid, "score": score}
        if "bbox" in d:
            bb = [float(v) for v in np.asarray(d["bbox"], dtype=float).reshape(-1)]
            if len(bb) != 4 or not all(math.isfinite(v) for v in bb):
                problems.append(
                    (src, iid, f"detection {k}: bbox must be 4 finite numbers, got {d['bbox']!r}")
                )
                continue
            c["bbox"] = bb
        if iou_type == "segm":
            c["segmentation"] = d["segmentation"]
        out.append(c)
    if problems:
        raise AnnotationError(f"{len(problems)} malformed detection(s)", problems)
    return out


def coco_evaluate(
    gt,
    detections,
    *,
    iou_type: str = "bbox",
    img_ids=None,
    logger: logging.Logger | None = None,
) -> dict[str, float]:
    """COCO AP of ``detections`` (``[{image_id, category_id, bbox [x,y,w,h], score}]``)
    against ``gt`` (a path, a COCO dict or a pycocotools ``COCO``); values in 0-100, NaN
    where an area range has no ground truth. ``img_ids`` restricts the evaluation to those
    images (e.g. the ones a validation pass actually saw); default: every GT image."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if iou_type not in IOU_TYPES:
        raise unknown_name("iou_type", iou_type, IOU_TYPES)
    src = str(gt) if isinstance(gt, (str, Path)) else "detections"
    coco_gt = load_gt(gt, logger)
    dets = _clean_detections(coco_gt, list(detections), iou_type, src)
    with quiet(logger):
        if dets:
            coco_dt = coco_gt.loadRes(dets)
        else:  # loadRes([]) crashes; an empty result set evaluates to zeros
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": list(coco_gt.dataset.get("images", [])),
                "categories": list(coco_gt.dataset.get("categories", [])),
                "annotations": [],
            }
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if img_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = ev.stats[:6]
    return {k: (float("nan") if v < 0 else float(v) * 100.0) for k, v in zip(KEYS, stats)}
