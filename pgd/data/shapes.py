"""The built-in synthetic detection dataset ("shapes"): small, learnable, deterministic.

Six shape classes drawn on textured backgrounds, in COCO format::

    DIR/manifest.json                  parameters + generator version (what ``ensure_shapes`` compares)
    DIR/annotations/instances_train.json
    DIR/annotations/instances_val.json
    DIR/train/000000.jpg ...           ``file_name`` is relative to the split folder
    DIR/val/000000.jpg ...

Design (docs/data.md has the measured statistics):

* classes circle, square, triangle, star, cross, ring: distinct outlines, random colour,
  mild aspect stretch (0.8-1.25), small rotations (free rotation for the star);
* backgrounds: a two-colour linear gradient, low-frequency colour noise, 4-14 random clutter
  lines (not objects), per-pixel Gaussian noise over the final image;
* object scale ``sqrt(w*h)`` of the box is log-uniform in [8 px, 0.9*size] in ordinary
  images (1-8 objects), so every FPN level P3-P7 receives objects; 8 % of each split (rounded
  up) are crowded images (20-36 objects of scale 8 px .. size/5), 5 % (rounded up) are empty
  (background and clutter only);
* occlusion: objects are drawn in order (roughly large to small, with jitter), later ones
  over earlier ones; the box is always the full shape's box; an object whose visible part is
  below ``MIN_VISIBLE`` (30 %, i.e. more than 70 % occluded) is dropped *and not drawn*, so
  no unlabelled fragments remain in the picture;
* boxes come from the continuous geometry (shapes are rendered with 4x super-sampling, 2x
  above 64 px), so they are tight to the drawn shape to a fraction of a pixel; ``area`` is
  the shape's rendered pixel area (full shape, occluded parts included);
* deterministic: every image draws from its own ``numpy`` generator seeded by
  ``(seed, split, index)``; the same parameters give byte-identical files.

CLI: ``python -m pgd.data.shapes --out DIR --train N --val M --size S --seed K [--force] [--stats]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pgd.errors import ConfigError, check_range, unknown_name

GENERATOR = "pgd.data.shapes"
GENERATOR_VERSION = 1

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")

DEFAULT_TRAIN = 512
DEFAULT_VAL = 128
DEFAULT_SIZE = 192
DEFAULT_SEED = 0
IMAGE_FORMATS = ("jpg", "png")
DEFAULT_FORMAT = "jpg"

MIN_OBJECT = 8.0  # smallest box scale sqrt(w*h), pixels
MAX_OBJECT_FRAC = 0.9  # largest box scale as a fraction of the image side
MIN_VISIBLE = 0.3  # drop an object when less than this fraction of it stays visible
EMPTY_FRACTION = 0.05
CROWDED_FRACTION = 0.08
CROWDED_MIN = 20  # a crowded image keeps at least this many objects
CROWDED_MAX = 36
NORMAL_MAX = 8  # ordinary images hold 1..NORMAL_MAX objects (before occlusion drops)
JPEG_QUALITY = 92

_SPLIT_CODES = {"train": 1, "val": 2}
_FPN_STRIDES = (8, 16, 32, 64, 128)


@dataclass(frozen=True)
class ShapesDataset:
    """Where a generated shapes dataset lives."""

    root: Path
    train_ann: Path
    val_ann: Path
    train_img_dir: Path
    val_img_dir: Path
    classes: tuple[str, ...] = CLASSES
    manifest: dict = field(default_factory=dict, compare=False)

    @classmethod
    def at(cls, root: str | os.PathLike, manifest: dict | None = None) -> ShapesDataset:
        root = Path(root)
        return cls(
            root=root,
            train_ann=root / "annotations" / "instances_train.json",
            val_ann=root / "annotations" / "instances_val.json",
            train_img_dir=root / "train",
            val_img_dir=root / "val",
            classes=CLASSES,
            manifest=dict(manifest or {}),
        )


# ----------------------------------------------------------------------------- parameters


def _params(n_train, n_val, size, seed, image_format) -> dict:
    for name, v in (("n_train", n_train), ("n_val", n_val), ("size", size), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ConfigError(f"{name} must be an integer, got {v!r}")
    check_range("n_train", n_train, 1, 1_000_000)
    check_range("n_val", n_val, 1, 1_000_000)
    check_range("size", size, 64, 2048)
    check_range("seed", seed, 0, 2**32 - 1)
    if image_format not in IMAGE_FORMATS:
        raise unknown_name("image format", image_format, IMAGE_FORMATS)
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "n_train": int(n_train),
        "n_val": int(n_val),
        "size": int(size),
        "seed": int(seed),
        "image_format": image_format,
    }


# ----------------------------------------------------------------------------- geometry


def _unit_outline(cls: str) -> np.ndarray:
    """Polygon vertices of a polygonal class, roughly in [-1, 1]^2."""
    if cls == "square":
        return np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], float)
    if cls == "triangle":
        a = np.deg2rad([-90, 30, 150])
        return np.stack([np.cos(a), np.sin(a)], 1)
    if cls == "star":
        a = np.deg2rad(-90 + 36 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    if cls == "cross":
        t = 0.36  # half arm width relative to the half extent
        return np.array(
            [
                (-t, -1),
                (t, -1),
                (t, -t),
                (1, -t),
                (1, t),
                (t, t),
                (t, 1),
                (-t, 1),
                (-t, t),
                (-1, t),
                (-1, -t),
                (-t, -t),
            ],
            float,
        )
    raise AssertionError(cls)


def _geometry(cls: str, scale: float, rng: np.random.Generator, max_extent: float):
    """Draw ops centred on the origin and the box (x0, y0, x1, y1) of the full shape.

    ``scale`` is the wanted sqrt(w*h) of the box; the shape is shrunk if its larger side
    would exceed ``max_extent``.
    """
    aspect = math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    sx, sy = math.sqrt(aspect), 1.0 / math.sqrt(aspect)
    if cls in ("circle", "ring"):
        rx, ry = sx, sy
        k = scale / (2.0 * math.sqrt(rx * ry))
        k = min(k, max_extent / (2.0 * max(rx, ry)))
        rx, ry = rx * k, ry * k
        ops = [("ellipse", (rx, ry), 1)]
        if cls == "ring":
            ops.append(("ellipse", (0.55 * rx, 0.55 * ry), 0))
        return ops, (-rx, -ry, rx, ry)
    pts = _unit_outline(cls) * np.array([sx, sy])
    rot = rng.uniform(0, 72) if cls == "star" else rng.uniform(-20, 20)
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    pts = pts @ np.array([[c, s], [-s, c]])
    lo, hi = pts.min(0), pts.max(0)
    pts = pts - (lo + hi) / 2.0
    w, h = hi - lo
    k = scale / math.sqrt(w * h)
    k = min(k, max_extent / max(w, h))
    pts = pts * k
    lo, hi = pts.min(0), pts.max(0)
    return [("poly", pts, 1)], (lo[0], lo[1], hi[0], hi[1])


def _rasterize(ops, box, offset) -> tuple[int, int, np.ndarray]:
    """Coverage (alpha in [0, 1]) of the shape on its own pixel window.

    Returns (x0, y0, alpha) with alpha of shape (h, w) covering pixels x0.., y0...
    """
    ox, oy = offset
    x0, y0 = math.floor(box[0] + ox), math.floor(box[1] + oy)
    x1, y1 = math.ceil(box[2] + ox), math.ceil(box[3] + oy)
    w, h = max(1, x1 - x0), max(1, y1 - y0)
    f = 4 if max(w, h) <= 64 else 2  # super-sampling factor
    canvas = Image.new("L", (w * f, h * f), 0)
    draw = ImageDraw.Draw(canvas)
    # pixel p covers [p, p+1); PIL fills sub-pixels whose centre lies inside, centre = (q+0.5)/f
    sx, sy = (ox - x0) * f - 0.5, (oy - y0) * f - 0.5
    for kind, geo, fill in ops:
        if kind == "ellipse":
            rx, ry = geo
            draw.ellipse([sx - rx * f, sy - ry * f, sx + rx * f, sy + ry * f], fill=255 * fill)
        else:
            draw.polygon(
                [(float(px * f + sx), float(py * f + sy)) for px, py in geo], fill=255 * fill
            )
    a = np.asarray(canvas, dtype=np.float32).reshape(h, f, w, f).mean(axis=(1, 3)) / 255.0
    return x0, y0, a


# ----------------------------------------------------------------------------- rendering


def _hsv(h, s, v) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, np.float32) * 255.0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    c1 = _hsv(rng.uniform(), rng.uniform(0.0, 0.6), rng.uniform(0.15, 0.95))
    c2 = _hsv(rng.uniform(), rng.uniform(0.0, 0.6), rng.uniform(0.15, 0.95))
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    t = xx * math.cos(ang) + yy * math.sin(ang)
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    img = c1[None, None] * (1 - t[..., None]) + c2[None, None] * t[..., None]
    # low-frequency colour noise: a coarse random grid, bilinearly upsampled (no BLAS: cheap
    # and bit-reproducible whatever the thread count)
    grid = rng.normal(0.0, rng.uniform(6.0, 22.0), (6, 6, 3)).astype(np.float32)
    for c in range(3):
        up = Image.fromarray(np.ascontiguousarray(grid[..., c])).resize(
            (size, size), Image.BILINEAR
        )
        img[..., c] += np.asarray(up, dtype=np.float32)
    # clutter lines: not objects
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(4, 15))):
        p = rng.uniform(-0.2 * size, 1.2 * size, 4)
        col = tuple(int(c) for c in _hsv(rng.uniform(), rng.uniform(0, 1), rng.uniform(0.1, 1)))
        draw.line([(p[0], p[1]), (p[2], p[3])], fill=col, width=int(rng.integers(1, 3)))
    return np.asarray(pil, dtype=np.float32).copy()


def _pick_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A saturated colour far (in RGB) from the alpha-weighted mean of what lies beneath."""
    best, best_d = None, -1.0
    for _ in range(10):
        col = _hsv(rng.uniform(), rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0))
        d = float(np.linalg.norm(col - under))
        if d > best_d:
            best, best_d = col, d
        if d >= 110.0:
            break
    return best


@dataclass
class _Obj:
    cls: int
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in image coordinates
    x0: int
    y0: int
    alpha: np.ndarray
    area: float = 0.0


def _propose(rng, size: int, scale: float) -> _Obj:
    cls = int(rng.integers(len(CLASSES)))
    ops, (bx0, by0, bx1, by1) = _geometry(CLASSES[cls], scale, rng, max_extent=size - 2.0)
    ox = rng.uniform(-bx0 + 0.5, size - bx1 - 0.5)
    oy = rng.uniform(-by0 + 0.5, size - by1 - 0.5)
    x0, y0, a = _rasterize(ops, (bx0, by0, bx1, by1), (ox, oy))
    return _Obj(cls, (bx0 + ox, by0 + oy, bx1 + ox, by1 + oy), x0, y0, a, float(a.sum()))


def _visibility(objs: list[_Obj], size: int) -> np.ndarray:
    trans = np.ones((size, size), np.float32)  # how much of each pixel later objects leave
    vis = np.zeros(len(objs))
    for i in range(len(objs) - 1, -1, -1):
        o = objs[i]
        h, w = o.alpha.shape
        win = trans[o.y0 : o.y0 + h, o.x0 : o.x0 + w]
        vis[i] = float((o.alpha * win).sum()) / max(o.area, 1e-6)
        win *= 1.0 - o.alpha
    return vis


def _layout(rng, size: int, kind: str) -> tuple[list[_Obj], int]:
    """Objects of one image in drawing order, and how many proposals were dropped."""
    if kind == "empty":
        return [], 0
    lo = math.log(MIN_OBJECT)
    if kind == "crowded":
        target = int(rng.integers(CROWDED_MIN, CROWDED_MAX + 1))
        hi = math.log(max(MIN_OBJECT * 1.5, size / 5.0))
        objs: list[_Obj] = []
        proposed = 0
        while proposed < 3 * CROWDED_MAX:
            objs.append(_propose(rng, size, math.exp(rng.uniform(lo, hi))))
            proposed += 1
            if len(objs) >= target:
                keep = _visibility(objs, size) >= MIN_VISIBLE
                if keep.sum() >= target:
                    break
        keep = _visibility(objs, size) >= MIN_VISIBLE
        return [o for o, k in zip(objs, keep) if k], int((~keep).sum())
    n = int(rng.integers(1, NORMAL_MAX + 1))
    hi = math.log(MAX_OBJECT_FRAC * size)
    scales = np.exp(rng.uniform(lo, hi, n))
    # roughly large-to-small so big shapes sit behind, with jitter so some cover smaller ones
    order = np.argsort(-(np.log(scales) + rng.normal(0.0, 0.4, n)), kind="stable")
    objs = [_propose(rng, size, float(scales[i])) for i in order]
    keep = _visibility(objs, size) >= MIN_VISIBLE
    return [o for o, k in zip(objs, keep) if k], int((~keep).sum())


def _render_image(rng, size: int, kind: str):
    objs, dropped = _layout(rng, size, kind)
    img = _background(rng, size)
    for o in objs:
        h, w = o.alpha.shape
        region = img[o.y0 : o.y0 + h, o.x0 : o.x0 + w]
        a = o.alpha[..., None]
        under = (region * a).sum((0, 1)) / max(o.area, 1e-6)
        col = _pick_colour(rng, under)
        # gentle shading across the shape so it is not perfectly flat
        ang = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        u = (xx - w / 2) * math.cos(ang) + (yy - h / 2) * math.sin(ang)
        u /= max(1.0, float(np.abs(u).max()) * 2)
        fill = col[None, None] * (1.0 + rng.uniform(-0.35, 0.35) * u[..., None])
        region[...] = region * (1 - a) + fill * a
    img += rng.normal(0.0, rng.uniform(2.0, 8.0), img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), objs, dropped


def _image_kinds(n: int, seed: int, split: str) -> list[str]:
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], 0])
    kinds = ["normal"] * n
    if n >= 5:
        n_empty = math.ceil(EMPTY_FRACTION * n)
        n_crowd = math.ceil(CROWDED_FRACTION * n)
        perm = rng.permutation(n)
        for i in perm[:n_empty]:
            kinds[i] = "empty"
        for i in perm[n_empty : n_empty + n_crowd]:
            kinds[i] = "crowded"
    return kinds


def _write_split(root: Path, split: str, n: int, size: int, seed: int, fmt: str) -> dict:
    img_dir = root / split
    img_dir.mkdir(parents=True)
    images, annotations = [], []
    dropped_total = 0
    ann_id = 1
    for idx, kind in enumerate(_image_kinds(n, seed, split)):
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], idx + 1])
        pixels, objs, dropped = _render_image(rng, size, kind)
        dropped_total += dropped
        name = f"{idx:06d}.{fmt}"
        pil = Image.fromarray(pixels)
        if fmt == "jpg":
            pil.save(img_dir / name, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        else:
            pil.save(img_dir / name, format="PNG", compress_level=1)
        image_id = idx + 1
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for o in objs:
            x0, y0, x1, y1 = (min(max(v, 0.0), float(size)) for v in o.box)
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": o.cls + 1,
                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    "area": round(o.area, 2),
                    "iscrowd": 0,
                    "segmentation": [],
                }
            )
            ann_id += 1
    coco = {
        "info": {
            "description": f"{GENERATOR} v{GENERATOR_VERSION} synthetic shapes, split {split}",
            "version": str(GENERATOR_VERSION),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)
        ],
    }
    (root / "annotations").mkdir(exist_ok=True)
    with open(root / "annotations" / f"instances_{split}.json", "w") as f:
        json.dump(coco, f, separators=(",", ":"))
    return {"images": n, "annotations": len(annotations), "dropped_occluded": dropped_total}


# ----------------------------------------------------------------------------- atomic output


@contextlib.contextmanager
def _locked(out: Path):
    """Serialise writers of ``out`` (several sweep trials may ask for the same folder)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no locking
        yield
        return
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_manifest(out: Path) -> dict | None:
    try:
        with open(out / "manifest.json") as f:
            m = json.load(f)
        return m if isinstance(m, dict) else None
    except (OSError, ValueError):
        return None


def _check_replaceable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"shapes output {out} exists and is not a folder; pick another --out")
    if out.is_dir() and any(out.iterdir()):
        m = _read_manifest(out)
        if not m or m.get("generator") != GENERATOR:
            raise ConfigError(
                f"refusing to replace {out}: it is not empty and holds no shapes manifest.json; "
                "pick an empty or new folder"
            )


def _clean_stale(out: Path) -> None:
    for p in out.parent.glob(f".{out.name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in out.parent.glob(f".{out.name}.old-*"):
        shutil.rmtree(p, ignore_errors=True)


def _generate_unlocked(out: Path, params: dict) -> ShapesDataset:
    _check_replaceable(out)
    _clean_stale(out)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    try:
        tmp.mkdir()
        stats = {}
        for split in ("train", "val"):
            stats[split] = _write_split(
                tmp,
                split,
                params[f"n_{split}"],
                params["size"],
                params["seed"],
                params["image_format"],
            )
        manifest = dict(params, classes=list(CLASSES), stats=stats)
        with open(tmp / "manifest.json", "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{tag}"
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return ShapesDataset.at(out, manifest)


def _matches(out: Path, params: dict) -> dict | None:
    m = _read_manifest(out)
    if not m or any(m.get(k) != v for k, v in params.items()):
        return None
    ext = params["image_format"]
    for split in ("train", "val"):
        if not (out / "annotations" / f"instances_{split}.json").is_file():
            return None
        if sum(1 for _ in (out / split).glob(f"*.{ext}")) != params[f"n_{split}"]:
            return None
    return m


def generate_shapes(
    out: str | os.PathLike,
    n_train: int = DEFAULT_TRAIN,
    n_val: int = DEFAULT_VAL,
    size: int = DEFAULT_SIZE,
    seed: int = DEFAULT_SEED,
    *,
    image_format: str = DEFAULT_FORMAT,
    overwrite: bool = False,
) -> ShapesDataset:
    """Generate the dataset into ``out``, atomically.

    Files are written to a hidden sibling folder and renamed into place at the end, so a
    killed run never leaves a half-written ``out``. An existing shapes dataset in ``out`` is
    replaced only with ``overwrite=True``; a non-empty ``out`` without a shapes manifest never
    (ConfigError).
    """
    params = _params(n_train, n_val, size, seed, image_format)
    out = Path(out).absolute()
    with _locked(out):
        if not overwrite and out.is_dir() and any(out.iterdir()) and _read_manifest(out):
            raise ConfigError(f"{out} already holds a shapes data set; pass overwrite=True (--overwrite) "
                              "to replace it, or pick another folder")
        return _generate_unlocked(out, params)


def ensure_shapes(
    out: str | os.PathLike,
    n_train: int = DEFAULT_TRAIN,
    n_val: int = DEFAULT_VAL,
    size: int = DEFAULT_SIZE,
    seed: int = DEFAULT_SEED,
    *,
    image_format: str = DEFAULT_FORMAT,
    overwrite: bool = False,
) -> ShapesDataset:
    """Reuse ``out`` when its manifest matches these parameters and generator version, else
    generate it there if it is empty or absent. A shapes dataset made with other parameters
    (or damaged, or by another generator version) is replaced only with ``overwrite=True``:
    otherwise a ConfigError says what differs. Safe to call from several processes at once."""
    params = _params(n_train, n_val, size, seed, image_format)
    out = Path(out).absolute()
    m = _matches(out, params)
    if m is not None:
        return ShapesDataset.at(out, m)
    with _locked(out):
        m = _matches(out, params)  # another process may have finished it meanwhile
        if m is not None:
            return ShapesDataset.at(out, m)
        if not overwrite:
            _refuse_other(out, params)
        return _generate_unlocked(out, params)


def shapes_mismatch(out: str | os.PathLike, params: dict) -> str | None:
    """Why the dataset in ``out`` is not the one ``params`` describe (None: absent/empty or
    matching)."""
    out = Path(out)
    if not out.is_dir() or not any(out.iterdir()):
        return None
    m = _read_manifest(out)
    if not m or m.get("generator") != GENERATOR:
        return "it is not empty and holds no shapes manifest.json"
    diff = [f"{k}={m.get(k)!r} (wanted {v!r})" for k, v in params.items() if m.get(k) != v]
    if diff:
        return "it holds a shapes data set made with other parameters: " + ", ".join(diff)
    if _matches(out, params) is None:
        return "it holds an incomplete shapes data set (files missing)"
    return None


def check_shapes_replaceable(out: str | os.PathLike, n_train: int, n_val: int, size: int, seed: int,
                             image_format: str = DEFAULT_FORMAT) -> None:
    """ConfigError when ``out`` holds a data set other than the one these parameters make
    (what a plan checks before anything starts)."""
    _refuse_other(Path(out).absolute(), _params(n_train, n_val, size, seed, image_format))


def _refuse_other(out: Path, params: dict) -> None:
    why = shapes_mismatch(out, params)
    if why:
        raise ConfigError(f"refusing to replace {out}: {why}; pass --overwrite (overwrite=True) to "
                          "regenerate it there, or use another data.root")


# ----------------------------------------------------------------------------- statistics


def fpn_level_histogram(
    ann_file: str | os.PathLike | dict, *, base: float = 8.0, scale: float = 1.0
) -> dict[str, int]:
    """Count objects per FPN level P3..P7 under a scale-based assignment.

    An object of box scale ``z = sqrt(w*h) * scale`` goes to P3 when ``z < 2*base``, to
    P(3+k) when ``base*2^k <= z < base*2^(k+1)``, and to P7 when ``z >= 16*base``.
    ``base=8`` puts an object on the level whose stride is between z/2 and z (the default
    rule of docs/data.md); ``base=16*sqrt(2)`` reproduces the nearest-anchor rule of
    RetinaNet/ATSS anchors of 4x stride; ``scale`` is the resize from file to network input.
    """
    d = ann_file if isinstance(ann_file, dict) else json.loads(Path(ann_file).read_text())
    hist = {f"P{lvl}": 0 for lvl in range(3, 8)}
    for a in d["annotations"]:
        z = math.sqrt(max(a["bbox"][2] * a["bbox"][3], 1e-12)) * scale
        k = min(4, max(0, math.floor(math.log2(z / base)))) if z >= 2 * base else 0
        hist[f"P{3 + k}"] += 1
    return hist


def shapes_stats(ann_file: str | os.PathLike) -> dict:
    """Per-class counts, objects per image, crowded/empty images and level histograms."""
    d = json.loads(Path(ann_file).read_text())
    names = {c["id"]: c["name"] for c in d["categories"]}
    per_class = {n: 0 for n in names.values()}
    per_image = {im["id"]: 0 for im in d["images"]}
    scales = []
    for a in d["annotations"]:
        per_class[names[a["category_id"]]] += 1
        per_image[a["image_id"]] += 1
        scales.append(math.sqrt(a["bbox"][2] * a["bbox"][3]))
    counts = np.array(list(per_image.values()))
    sc = np.array(scales) if scales else np.zeros(1)
    size = d["images"][0]["width"] if d["images"] else 0
    return {
        "images": len(d["images"]),
        "annotations": len(d["annotations"]),
        "per_class": per_class,
        "objects_per_image": {
            "mean": round(float(counts.mean()), 2) if len(counts) else 0.0,
            "max": int(counts.max()) if len(counts) else 0,
        },
        "empty_images": int((counts == 0).sum()),
        "crowded_images": int((counts >= CROWDED_MIN).sum()),
        "box_scale_px": {
            "min": round(float(sc.min()), 1),
            "median": round(float(np.median(sc)), 1),
            "max": round(float(sc.max()), 1),
        },
        "levels_stride_rule": fpn_level_histogram(d),
        "levels_anchor4_rule_at_320": fpn_level_histogram(
            d, base=16 * math.sqrt(2), scale=(320 / size) if size else 1.0
        ),
    }


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pgd.data.shapes", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--train", type=int, default=DEFAULT_TRAIN, help="training images")
    p.add_argument("--val", type=int, default=DEFAULT_VAL, help="validation images")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="image side in pixels")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--format", default=DEFAULT_FORMAT, choices=IMAGE_FORMATS)
    p.add_argument("--overwrite", action="store_true",
                   help="replace a shapes data set already in --out (also one with the same parameters)")
    p.add_argument("--stats", action="store_true", help="print the dataset statistics as JSON")
    a = p.parse_args(argv)
    try:
        fn = generate_shapes if a.overwrite else ensure_shapes
        ds = fn(a.out, a.train, a.val, a.size, a.seed, image_format=a.format, overwrite=a.overwrite)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"shapes dataset at {ds.root} (train {a.train}, val {a.val}, size {a.size}, seed {a.seed})"
    )
    if a.stats:
        print(
            json.dumps(
                {s: shapes_stats(getattr(ds, f"{s}_ann")) for s in ("train", "val")}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
