"""The synthetic shapes dataset: layout, validity, determinism, reuse, atomic writes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pgd.data import shapes
from pgd.data.shapes import (
    CLASSES,
    ensure_shapes,
    fpn_level_histogram,
    generate_shapes,
    shapes_stats,
)
from pgd.data.validate import validate_coco
from pgd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("shapes") / "ds", 24, 8, 128, 3)


def test_layout_and_valid_coco(small):
    root = small.root
    assert small.train_ann == root / "annotations" / "instances_train.json"
    assert small.val_ann == root / "annotations" / "instances_val.json"
    assert (root / "manifest.json").is_file()
    for split, ann, img_dir, n in (
        ("train", small.train_ann, small.train_img_dir, 24),
        ("val", small.val_ann, small.val_img_dir, 8),
    ):
        summary = validate_coco(ann, img_dir, check_images="decode", tolerance=0.0)
        assert summary["num_images"] == n
        assert summary["num_categories"] == len(CLASSES) >= 6
        assert summary["zero_area_skipped"] == 0
        d = json.loads(ann.read_text())
        assert [c["name"] for c in d["categories"]] == list(CLASSES)
        for im in d["images"]:
            assert "/" not in im["file_name"] and (root / split / im["file_name"]).is_file()
            assert im["width"] == im["height"] == 128
        for a in d["annotations"]:
            assert a["iscrowd"] == 0 and a["segmentation"] == []
            x, y, w, h = a["bbox"]
            # area = rendered coverage; super-sampled edges may add a quarter pixel per side
            assert w >= 4 and h >= 4 and 0 < a["area"] <= (w + 0.5) * (h + 0.5)
    stats = shapes_stats(small.train_ann)
    assert stats["empty_images"] >= 1  # ceil(5 % of 24)
    assert stats["crowded_images"] >= 2  # ceil(8 % of 24), >= 20 objects each
    assert stats["objects_per_image"]["max"] >= 20


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = generate_shapes(tmp_path / "a", 6, 3, 96, 11)
    b = generate_shapes(tmp_path / "b", 6, 3, 96, 11)
    c = generate_shapes(tmp_path / "c", 6, 3, 96, 12)
    da, db, dc = _digest(a.root), _digest(b.root), _digest(c.root)
    assert da == db and len(da) == 6 + 3 + 3  # images + 2 annotation files + manifest
    assert da["train/000000.jpg"] != dc["train/000000.jpg"]


def test_boxes_tight_to_rendered_shape():
    rng = np.random.default_rng(0)
    for cls in CLASSES:
        for scale in (8.0, 23.0, 90.0):
            ops, box = shapes._geometry(cls, scale, rng, max_extent=200.0)
            off = (rng.uniform(100, 101), rng.uniform(100, 101))
            x0, y0, alpha = shapes._rasterize(ops, box, off)
            # pixels the shape touches at all: their outer edges are within 1 px of the box
            ys, xs = np.nonzero(alpha > 0.02)
            drawn = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
            bx = (box[0] + off[0], box[1] + off[1], box[2] + off[0], box[3] + off[1])
            assert np.allclose(drawn, bx, atol=1.0), (cls, scale, drawn, bx)
            assert abs(np.sqrt((bx[2] - bx[0]) * (bx[3] - bx[1])) - scale) < 1e-6


def test_every_fpn_level_gets_objects(tmp_path):
    ds = generate_shapes(tmp_path / "lv", 60, 1, 192, 0)
    hist = fpn_level_histogram(ds.train_ann)
    assert set(hist) == {"P3", "P4", "P5", "P6", "P7"}
    assert all(v > 0 for v in hist.values()), hist
    d = json.loads(ds.train_ann.read_text())
    scales = [np.sqrt(a["bbox"][2] * a["bbox"][3]) for a in d["annotations"]]
    assert min(scales) < 10 and max(scales) > 192 / 2


def test_ensure_reuses_matching_and_replaces_only_with_overwrite(tmp_path):
    out = tmp_path / "shp"
    first = ensure_shapes(out, 5, 2, 96, 1)
    marker = out / "train" / "000000.jpg"
    ino = marker.stat().st_ino
    again = ensure_shapes(out, 5, 2, 96, 1)
    assert again.root == first.root and marker.stat().st_ino == ino  # reused, not rewritten
    with pytest.raises(ConfigError, match=r"refusing to replace .*shp: it holds a shapes data set made with "
                                          r"other parameters: seed=1 \(wanted 2\); pass --overwrite"):
        ensure_shapes(out, 5, 2, 96, 2)
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1 and marker.stat().st_ino == ino
    changed = ensure_shapes(out, 5, 2, 96, 2, overwrite=True)
    assert changed.manifest["seed"] == 2 and json.loads((out / "manifest.json").read_text())["seed"] == 2
    # a damaged folder (missing images) is named, and regenerated with overwrite
    marker.unlink()
    with pytest.raises(ConfigError, match="incomplete shapes data set"):
        ensure_shapes(out, 5, 2, 96, 2)
    ensure_shapes(out, 5, 2, 96, 2, overwrite=True)
    assert marker.is_file()
    # a folder from an older generator version likewise
    m = json.loads((out / "manifest.json").read_text())
    m["version"] = 0
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match=r"version=0 \(wanted 1\)"):
        ensure_shapes(out, 5, 2, 96, 2)
    ensure_shapes(out, 5, 2, 96, 2, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["version"] == shapes.GENERATOR_VERSION
    with pytest.raises(ConfigError, match="already holds a shapes data set"):
        generate_shapes(out, 5, 2, 96, 2)
    assert not list(tmp_path.glob(".shp.tmp-*")) and not list(tmp_path.glob(".shp.old-*"))


def test_refuses_foreign_folder_and_bad_params(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="refusing to replace"):
        ensure_shapes(foreign, 3, 1, 96, 0)
    assert (foreign / "precious.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="size"):
        generate_shapes(tmp_path / "x", 3, 1, 16, 0)
    with pytest.raises(ConfigError, match="n_train"):
        generate_shapes(tmp_path / "x", 0, 1, 96, 0)
    with pytest.raises(ConfigError, match="image format"):
        generate_shapes(tmp_path / "x", 1, 1, 96, 0, image_format="gif")


def test_killed_run_leaves_nothing_half_written(tmp_path, monkeypatch):
    out = tmp_path / "shp"
    real = shapes._write_split

    def dies_on_val(root, split, *args):
        if split == "val":
            raise KeyboardInterrupt  # as if killed mid-way
        return real(root, split, *args)

    monkeypatch.setattr(shapes, "_write_split", dies_on_val)
    with pytest.raises(KeyboardInterrupt):
        generate_shapes(out, 3, 2, 96, 0)
    assert not out.exists()
    monkeypatch.setattr(shapes, "_write_split", real)
    ds = ensure_shapes(out, 3, 2, 96, 0)
    assert ds.val_ann.is_file()
    # an existing dataset survives a failed regeneration untouched
    before = _digest(out)
    monkeypatch.setattr(shapes, "_write_split", dies_on_val)
    with pytest.raises(KeyboardInterrupt):
        generate_shapes(out, 3, 2, 96, 5, overwrite=True)
    assert _digest(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".shp.tmp")] == []


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        shapes.main(
            [
                "--out",
                str(out),
                "--train",
                "3",
                "--val",
                "2",
                "--size",
                "96",
                "--seed",
                "4",
                "--stats",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "shapes dataset at" in text and '"levels_stride_rule"' in text
    assert len(list((out / "train").glob("*.jpg"))) == 3
    assert shapes.main(["--out", str(out), "--size", "8"]) == 2


def test_cli_module_entry_point(tmp_path):
    out = tmp_path / "m"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgd.data.shapes",
            "--out",
            str(out),
            "--train",
            "2",
            "--val",
            "1",
            "--size",
            "64",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert (out / "annotations" / "instances_val.json").is_file()
