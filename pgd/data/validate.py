"""Check a COCO-format dataset before training on it, reporting every problem at once.

``validate_coco`` loads the annotation JSON, checks every image, annotation and category
and, depending on ``check_images``, the image files; it collects all problems and raises a
single :class:`~pgd.errors.AnnotationError` whose ``problems`` lists each
``(file, image_id, reason)``. The rules (docs/data.md, "Validation") are:

* required keys -- images: id, file_name, width, height; annotations: id, image_id,
  category_id, bbox, area (mmdet's ``CocoDataset`` and pycocotools' ``COCOeval`` both read
  ``area``); categories: id, name;
* ids unique per section; category names unique; width/height positive integers;
* bbox: 4 finite numbers, width and height >= 0; area finite and >= 0; iscrowd 0/1 if given;
* the box must lie inside the image with a tolerance of ``tolerance`` pixels (default 1) on
  every side, unless ``allow_outside=True`` (CrowdHuman full-body boxes leave the image by
  design);
* annotation image_id must name an image, category_id a category;
* degenerate boxes (w < 1, h < 1 or area <= 0 -- the ones mmdet's ``CocoDataset`` drops,
  including the zero-area ones) are not errors: they are counted, reported in the summary as
  ``zero_area_skipped`` and in one logger line;
* image files (``check_images``): "none" no file check; "exists" each file exists (fast);
  "header" (the default of a run) also reads the header, compares the size with
  width/height and checks the file ends with its format's end marker (JPEG EOI, PNG IEND),
  which catches truncated files cheaply; "decode" also decodes the whole image (catches
  corrupt data inside a complete file).
* a file validated once in a process (same path, modification time, size and rules) is not
  read again (DDP ranks and the dataset re-validate for free); a successful validation is also
  remembered on disk when ``PGD_HOME`` is set, ``<PGD_HOME>/cache/validated/<digest>.json``, keyed by the annotation
  file (path, modification time, size), the image folder (path, modification time: it changes
  when files are added, removed or renamed) and the rules, so that the trials of a sweep (each
  a new process) do not read every image header again: 118k COCO headers are ~1-2 minutes per
  trial. A file rewritten in place keeps its folder's time: delete that folder (or the
  digest's file) to force a new check. Failed validations are never cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pgd.config.names import CHECK_IMAGES  # noqa: E402
from pgd.errors import AnnotationError, ConfigError, unknown_name

DEFAULT_TOLERANCE = 1.0

_REQUIRED = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "category_id", "bbox", "area"),
    "categories": ("id", "name"),
}

_log = logging.getLogger(__name__)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_id(v) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or isinstance(v, str)


def load_coco_json(ann_file: str | os.PathLike) -> dict:
    """Read a COCO annotation file; AnnotationError naming the path when missing or invalid."""
    path = Path(ann_file)
    if not path.is_file():
        reason = "is a folder, not a file" if path.is_dir() else "file not found"
        raise AnnotationError(f"annotation file {path}: {reason}", [(str(path), None, reason)])
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        reason = f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        raise AnnotationError(
            f"annotation file {path}: {reason}", [(str(path), None, reason)]
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        reason = f"cannot be read: {e}"
        raise AnnotationError(
            f"annotation file {path}: {reason}", [(str(path), None, reason)]
        ) from None
    if not isinstance(data, dict):
        reason = f"top level must be a JSON object, got {type(data).__name__}"
        raise AnnotationError(f"annotation file {path}: {reason}", [(str(path), None, reason)])
    return data


def _check_file(path: Path, width, height, mode: str) -> str | None:
    """One image file; returns the reason it is bad, or None."""
    if not path.is_file():
        return "image file not found"
    if mode == "exists":
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            size = im.size
            if mode == "header":
                trunc = _truncated(path, im.format)
                if trunc:
                    return trunc
            if mode == "decode":
                im.verify()  # structural check (PNG CRCs, ...)
        if mode == "decode":
            with Image.open(path) as im:
                im.load()  # full decode: truncated/corrupt data raises here
    except Exception as e:  # PIL raises a variety of types for broken files
        return f"unreadable image: {type(e).__name__}: {e}"
    if _is_num(width) and _is_num(height) and size != (width, height):
        return f"image size {size[0]}x{size[1]} differs from the JSON's {width}x{height}"
    return None


#: bytes at a file's end searched for its format's end marker (trailing padding is tolerated)
_TAIL_BYTES = 1024
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}


def _truncated(path: Path, fmt: str | None) -> str | None:
    """A cheap truncation test: a JPEG must end with its EOI marker (FF D9), a PNG with its
    IEND chunk, within the last bytes of the file."""
    marker = _END_MARKERS.get(fmt or "")
    if marker is None:
        return None
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - _TAIL_BYTES))
        tail = f.read()
    if marker not in tail:
        return f"truncated {fmt} file (no end marker in its last {_TAIL_BYTES} bytes)"
    return None


_CACHE: dict[tuple, dict] = {}


def validate_coco(
    ann_file: str | os.PathLike,
    img_dir: str | os.PathLike | None,
    *,
    check_images: str = "exists",
    allow_outside: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    logger: logging.Logger | None = None,
    workers: int = 8,
) -> dict:
    """Validate a COCO dataset; raise one AnnotationError listing every problem.

    Returns ``{num_images, num_annotations, num_categories, zero_area_skipped,
    empty_images}`` where ``empty_images`` counts images left with no usable annotation
    (none at all, or only degenerate ones).
    """
    if check_images not in CHECK_IMAGES:
        raise unknown_name("check_images mode", check_images, CHECK_IMAGES)
    if check_images != "none" and img_dir is None:
        raise ConfigError(
            f"img_dir is required with check_images={check_images!r}; pass check_images='none' to skip file checks"
        )
    log = logger or _log
    src = str(ann_file)
    try:
        st = os.stat(ann_file)
        key = (os.path.abspath(src), st.st_mtime_ns, st.st_size, str(img_dir), check_images,
               bool(allow_outside), float(tolerance))
    except OSError:
        key = None
    if key is not None and key in _CACHE:  # validated before in this process (same file, same rules)
        return dict(_CACHE[key])
    disk = _disk_entry(key, img_dir if check_images != "none" else None)
    cached = _read_disk(disk)
    if cached is not None:  # validated before by another process (an earlier trial)
        _CACHE[key] = dict(cached)
        return cached
    data = load_coco_json(ann_file)
    problems: list[tuple[str, object, str]] = []

    def bad(image_id, reason, file=src):
        problems.append((file, image_id, reason))

    sections = {}
    for key in ("images", "annotations", "categories"):
        val = data.get(key)
        if not isinstance(val, list):
            bad(None, f"top-level '{key}' must be a list" + (", missing" if val is None else ""))
            val = []
        sections[key] = val

    # categories
    cat_ids, cat_names = set(), set()
    for k, c in enumerate(sections["categories"]):
        if not isinstance(c, dict):
            bad(None, f"categories[{k}] is not an object")
            continue
        miss = [r for r in _REQUIRED["categories"] if r not in c]
        if miss:
            bad(None, f"category {c.get('id', f'#{k}')!r} lacks {', '.join(miss)}")
        cid = c.get("id")
        if "id" in c:
            if not _is_id(cid):
                bad(None, f"category id {cid!r} must be an integer")
            elif cid in cat_ids:
                bad(None, f"duplicate category id {cid}")
            else:
                cat_ids.add(cid)
        if "name" in c:
            if not isinstance(c["name"], str) or not c["name"]:
                bad(None, f"category {cid!r} name must be a non-empty string")
            elif c["name"] in cat_names:
                bad(None, f"duplicate category name {c['name']!r}")
            else:
                cat_names.add(c["name"])

    # images
    images: dict = {}
    for k, im in enumerate(sections["images"]):
        if not isinstance(im, dict):
            bad(None, f"images[{k}] is not an object")
            continue
        iid = im.get("id")
        miss = [r for r in _REQUIRED["images"] if r not in im]
        if miss:
            bad(iid, f"image lacks {', '.join(miss)}")
        if "id" in im:
            if not _is_id(iid):
                bad(iid, f"image id {iid!r} must be an integer")
                continue
            if iid in images:
                bad(iid, "duplicate image id")
                continue
        else:
            continue
        ok = "width" in im and "height" in im
        for dim in ("width", "height"):
            v = im.get(dim)
            if dim in im and not (_is_num(v) and v > 0 and float(v).is_integer()):
                bad(iid, f"{dim} must be a positive integer, got {v!r}")
                ok = False
        fn = im.get("file_name")
        if "file_name" in im and (not isinstance(fn, str) or not fn):
            bad(iid, f"file_name must be a non-empty string, got {fn!r}")
        images[iid] = im if ok else {**im, "_no_size": True}

    # annotations
    ann_ids = set()
    used = dict.fromkeys(images, 0)
    skipped = 0
    for k, a in enumerate(sections["annotations"]):
        if not isinstance(a, dict):
            bad(None, f"annotations[{k}] is not an object")
            continue
        iid = a.get("image_id")
        aid = a.get("id", f"#{k}")
        tag = f"annotation {aid}"
        miss = [r for r in _REQUIRED["annotations"] if r not in a]
        if miss:
            bad(iid, f"{tag} lacks {', '.join(miss)}")
        if "id" in a:
            if not _is_id(aid):
                bad(iid, f"{tag}: id must be an integer")
            elif aid in ann_ids:
                bad(iid, f"duplicate annotation id {aid}")
            else:
                ann_ids.add(aid)
        im = None
        if "image_id" in a:
            if not _is_id(iid) or iid not in images:
                bad(iid, f"{tag}: image_id {iid!r} is not in images")
            else:
                im = images[iid]
        if "category_id" in a and a["category_id"] not in cat_ids:
            bad(iid, f"{tag}: unknown category_id {a['category_id']!r}")
        if "iscrowd" in a and a["iscrowd"] not in (0, 1):
            bad(iid, f"{tag}: iscrowd must be 0 or 1, got {a['iscrowd']!r}")
        area = a.get("area")
        area_ok = True
        if "area" in a and not (_is_num(area) and math.isfinite(area) and area >= 0):
            bad(iid, f"{tag}: area must be a finite number >= 0, got {area!r}")
            area_ok = False
        if "bbox" not in a:
            continue
        bb = a["bbox"]
        if not (isinstance(bb, (list, tuple)) and len(bb) == 4 and all(_is_num(v) for v in bb)):
            bad(iid, f"{tag}: bbox must be 4 numbers [x, y, w, h], got {bb!r}")
            continue
        if not all(math.isfinite(v) for v in bb):
            bad(iid, f"{tag}: bbox has non-finite values {bb!r}")
            continue
        x, y, w, h = bb
        if w < 0 or h < 0:
            bad(iid, f"{tag}: bbox has negative width/height {bb!r}")
            continue
        if w < 1 or h < 1 or (area_ok and _is_num(area) and area <= 0):
            skipped += 1  # mmdet's CocoDataset drops these: not an error
            continue
        if im is not None and not allow_outside and not im.get("_no_size"):
            W, H = im["width"], im["height"]
            t = tolerance
            if x < -t or y < -t or x + w > W + t or y + h > H + t:
                bad(
                    iid,
                    f"{tag}: bbox {list(bb)} (x2={x + w:g}, y2={y + h:g}) leaves the "
                    f"{W}x{H} image by more than {t:g} px",
                )
        if im is not None:
            used[iid] += 1

    # image files
    if check_images != "none":
        root = Path(img_dir)
        todo = [
            (iid, root / im["file_name"], im.get("width"), im.get("height"))
            for iid, im in images.items()
            if isinstance(im.get("file_name"), str) and im.get("file_name")
        ]

        def run(item):
            iid, path, w, h = item
            return iid, path, _check_file(path, w, h, check_images)

        if check_images == "exists" or len(todo) < 16 or workers <= 1:
            results = list(map(run, todo))
        else:  # PIL releases the GIL while decoding
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(run, todo))
        for iid, path, reason in results:
            if reason:
                bad(iid, reason, file=str(path))

    if problems:
        raise AnnotationError(f"{src}: {len(problems)} problem(s) found", problems)
    if skipped:
        log.info(
            "%s: %d degenerate box(es) (w < 1, h < 1 or area <= 0) skipped, as mmdet's CocoDataset does",
            src,
            skipped,
        )
    summary = {
        "num_images": len(images),
        "num_annotations": len(sections["annotations"]),
        "num_categories": len(cat_ids),
        "zero_area_skipped": skipped,
        "empty_images": sum(1 for n in used.values() if n == 0),
    }
    if key is not None:
        _CACHE[key] = dict(summary)
    _write_disk(disk, summary)
    return summary


def _disk_entry(key: tuple | None, img_dir) -> tuple[Path, str] | None:
    """(file, full key) of the on-disk record of a validation; None when it cannot be keyed or
    no ``PGD_HOME`` is set (sweeps always set it for their trials; a lone run is one process)."""
    if key is None or not os.environ.get("PGD_HOME"):
        return None
    from pgd import paths

    try:
        folder = (str(img_dir), os.stat(img_dir).st_mtime_ns) if img_dir is not None else None
    except OSError:
        return None
    full = repr((key, folder))
    digest = hashlib.sha256(full.encode()).hexdigest()[:20]
    return paths.home() / "cache" / "validated" / f"{digest}.json", full


def _read_disk(entry) -> dict | None:
    if entry is None or not entry[0].is_file():
        return None
    try:
        rec = json.loads(entry[0].read_text())
    except (OSError, ValueError):
        return None  # unreadable record: validate again
    return dict(rec["summary"]) if rec.get("key") == entry[1] and isinstance(rec.get("summary"), dict) else None


def _write_disk(entry, summary: dict) -> None:
    """Best effort (a read-only home only costs the next process a new check), atomic."""
    if entry is None:
        return
    path, full = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": full, "summary": summary}))
        os.replace(tmp, path)
    except OSError:
        pass


def coco_categories(ann_file: str | os.PathLike) -> list[str]:
    """Category names in id order (the order mmdet's ``metainfo.classes`` must follow)."""
    data = load_coco_json(ann_file)
    cats = data.get("categories")
    if not isinstance(cats, list) or not all(
        isinstance(c, dict) and "id" in c and "name" in c for c in cats
    ):
        raise AnnotationError(
            f"{ann_file}: 'categories' must be a list of objects with id and name",
            [(str(ann_file), None, "malformed categories")],
        )
    return [c["name"] for c in sorted(cats, key=lambda c: c["id"])]
