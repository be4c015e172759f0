"""The paper's analyses as functions: Fig. 2 (quality maps of several detectors), Fig. 3
(mask-out curve), Fig. 5 (detections side by side), Fig. 6 (TIDE) and Table 9 (LRP).

Every analysis has the same call shape, so a sweep (or the CLI, ``pipelines/analyze.py``)
can run any of them from the registry :data:`ANALYSES`::

    paths = ANALYSES[name](runs, out_dir, *, <options>, tracking_uri=None, mlflow_run_id=None)

* ``runs``: a sequence of :class:`RunRef` (label, run-config dict, checkpoint path, optionally
  a precomputed COCO results JSON), e.g. the rows of a table or the teachers of a sweep;
* ``out_dir``: where the PNG, CSV and JSON go (created);
* ``mlflow_run_id``: when given, the written files are logged to that MLflow run under
  ``analysis/<name>/`` (``tracking_uri`` default: ``$MLFLOW_TRACKING_URI`` or the
  platform's ``sqlite:///<home>/mlflow.db``);
* returns ``{"png": Path, "csv": Path, "json": Path}`` (what was written).

Definitions and CLI examples: docs/analyses.md.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pgd.config.names import ANALYSIS_NAMES
from pgd.errors import ConfigError

DEFAULT_PERCENTS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)  # mask-out X (%), paper Fig. 3
QUALITY_XI = 0.8  # paper Fig. 2 / Sec. 3.1 (xi = 0.8 following DDOD)
DETECTION_SCORE_THR = 0.3  # detections drawn in the Fig. 5 panels
DETECTION_IMAGES = (0, 1, 2)  # val-split positions drawn by default
MASKOUT_SEED = 0  # the random control's generator
ARTIFACT_ROOT = "analysis"  # MLflow artifact folder: analysis/<name>/...
PALETTE = ("tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink",
           "tab:olive", "tab:cyan")
GT_COLOUR = "tab:blue"  # the paper's Fig. 5 draws GT in blue


@dataclass(frozen=True)
class RunRef:
    """One trained run to analyse: ``name`` labels it in figures and tables;
    ``run_config`` is its run-config dict (what ``pgd.training.train`` was given; a
    ``distill`` section is ignored: the checkpoint's student is evaluated as a plain
    detector); ``checkpoint`` its weights; ``detections`` an optional COCO results JSON of
    this checkpoint on the val split (else computed, and cached under ``out_dir``)."""

    name: str
    run_config: dict = field(hash=False)
    checkpoint: str
    detections: str | None = None


# ----------------------------------------------------------------------------- helpers


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _check_runs(runs: Sequence[RunRef], analysis: str, *, at_least: int = 1) -> list[RunRef]:
    runs = list(runs)
    if len(runs) < at_least:
        raise ConfigError(f"{analysis} needs at least {at_least} run(s), got {len(runs)}")
    for r in runs:
        if not isinstance(r, RunRef):
            raise ConfigError(f"{analysis}: runs must be RunRef objects, got {type(r).__name__}")
    names = [r.name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{analysis}: run names must be distinct, repeated: {dup}")
    return runs


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


def _write_csv(path: Path, rows: list[dict]) -> Path:
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                        for k, v in r.items()})
    return path


def _write_json(path: Path, obj) -> Path:
    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    path.write_text(json.dumps(clean(obj), indent=2, default=str))
    return path


def log_to_mlflow(paths: dict, *, run_id: str, artifact_path: str,
                  tracking_uri: str | None = None) -> None:
    """Log the written files to MLflow run ``run_id`` under ``artifact_path``."""
    from mlflow.tracking import MlflowClient

    if tracking_uri is None:
        from pgd.sweep.tracking import default_tracking_uri

        tracking_uri = default_tracking_uri()
    c = MlflowClient(tracking_uri=tracking_uri)
    try:
        c.get_run(run_id)
    except Exception as exc:  # mlflow raises MlflowException for unknown ids
        raise ConfigError(f"MLflow run {run_id!r} not found at {tracking_uri}: {exc}") from None
    for p in paths.values():
        c.log_artifact(run_id, str(p), artifact_path)


def _finish(name: str, paths: dict, tracking_uri, mlflow_run_id) -> dict:
    if mlflow_run_id:
        log_to_mlflow(paths, run_id=mlflow_run_id, artifact_path=f"{ARTIFACT_ROOT}/{name}",
                      tracking_uri=tracking_uri)
    return {k: Path(v) for k, v in paths.items()}


def _val_ann_of(run_config: dict) -> Path:
    from pgd.config.run import parse_run as make_run
    from pgd.training.data import resolve_data
    from pgd.training.predict import run_dict

    cfg = run_dict(run_config)
    cfg.pop("distill", None)
    return Path(resolve_data(make_run(cfg).data).val_ann).resolve()


def _common_val(runs: list[RunRef], analysis: str) -> Path:
    anns = {r.name: _val_ann_of(r.run_config) for r in runs}
    if len(set(anns.values())) > 1:
        listing = ", ".join(f"{k}: {v}" for k, v in anns.items())
        raise ConfigError(f"{analysis} compares runs on one val set, but they differ: {listing}")
    return next(iter(anns.values()))


def _cache_key(ref: RunRef) -> str:
    from pgd.paths import resolve

    ck = Path(resolve(ref.checkpoint))
    st = ck.stat() if ck.is_file() else None
    blob = json.dumps(dict(cfg=ref.run_config, ck=str(ck.resolve()),
                           size=st.st_size if st else None, mtime=st.st_mtime_ns if st else None),
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_detections(ref: RunRef, cache_dir: str | os.PathLike, *, batch_size: int | None = None,
                   num_workers: int | None = None) -> tuple[list[dict], Path]:
    """COCO results of ``ref`` on its val split: ``ref.detections`` when given, else the
    cached ``<cache_dir>/<name>-<key>.json`` (key: hash of run config + checkpoint path,
    size and mtime), else predicted now and cached."""
    if ref.detections:
        path = Path(ref.detections)
        if not path.is_file():
            raise ConfigError(f"run {ref.name!r}: detections file {path} not found")
        return json.loads(path.read_text()), path
    from pgd.training.predict import load_detector, predict_detections, write_results

    path = Path(cache_dir) / f"{_safe(ref.name)}-{_cache_key(ref)}.json"
    if path.is_file():
        return json.loads(path.read_text()), path
    det = load_detector(ref.run_config, ref.checkpoint)
    dets = predict_detections(det, batch_size=batch_size, num_workers=num_workers)
    return dets, write_results(dets, path)


# ----------------------------------------------------------------------------- Fig. 2


def quality_maps(runs: Sequence[RunRef], out_dir, *, image_indices: Sequence[int] = (0,),
                 image_ids: Sequence[int] | None = None, split: str = "val",
                 xi: float = QUALITY_XI, tracking_uri: str | None = None,
                 mlflow_run_id: str | None = None) -> dict:
    """Paper Fig. 2: each run's (detector's) quality map q (Eq. 1 with ``xi``; per location
    the max over its anchors and over the GT boxes containing it; max over FPN levels per
    pixel) over the same images, one row per run. ``image_ids`` (COCO ids) overrides
    ``image_indices`` (positions in the split). Writes quality_maps.{png,csv,json}."""
    from pgd.config.defaults import pgd_defaults
    from pgd.reporting.quality_map import image_maps, render_quality_grid
    from pgd.training.predict import load_detector

    runs = _check_runs(runs, "quality-map")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for ref in runs:
        det = load_detector(ref.run_config, ref.checkpoint, device="cpu")
        dataset = det.figure_dataset(split)
        indices = _image_positions(dataset, image_indices, image_ids, split)
        k = pgd_defaults(det.detector, det.run.data.kind)["k"]
        strategy = dict(detector=det.detector, strategy="pgw", xi_cls=float(xi), xi_reg=float(xi),
                        k_cls=k, k_reg=k, topk_scope="inside", strategy_params={})
        maps = [image_maps(det.model, det.detector, dataset, i, strategy) for i in indices]
        rows.append(dict(label=f"{ref.name} ({det.run.model})", maps=maps))
    png = out_dir / "quality_maps.png"
    summary = render_quality_grid(rows, png, title=f"quality score q (Eq. 1, xi={xi}), max over "
                                  "FPN levels; GT boxes in white")
    csv_rows = [dict(run=s["label"], image_id=s["img_id"], num_gt=s["num_gt"],
                     peak_quality=round(s["peak_quality"], 4),
                     mean_gt_peak_quality=round(sum(s["gt_peak_quality"]) / len(s["gt_peak_quality"]), 4)
                     if s["gt_peak_quality"] else None) for s in summary]
    paths = dict(png=png, csv=_write_csv(out_dir / "quality_maps.csv", csv_rows),
                 json=_write_json(out_dir / "quality_maps.json", dict(xi=xi, split=split, panels=summary)))
    return _finish("quality-map", paths, tracking_uri, mlflow_run_id)


def _image_positions(dataset, image_indices, image_ids, split) -> list[int]:
    n = len(dataset)
    if image_ids:
        ids = [dataset.get_data_info(i)["img_id"] for i in range(n)]
        missing = [i for i in image_ids if i not in ids]
        if missing:
            raise ConfigError(f"image id(s) {missing} are not in the {split} split")
        return [ids.index(i) for i in image_ids]
    bad = [i for i in image_indices if not 0 <= int(i) < n]
    if bad:
        raise ConfigError(f"image index(es) {bad} are outside 0..{n - 1} of the {split} split")
    return [int(i) for i in image_indices]


# ----------------------------------------------------------------------------- Fig. 3


def _gt_in_input(coco, img_id: int, meta: dict, cat2label: dict):
    """Non-crowd GT boxes of an image in the network's input pixels (x1y1x2y2) + labels."""
    import torch

    sx, sy = (float(v) for v in meta["scale_factor"][:2])
    boxes, labels = [], []
    for a in coco.imgToAnns.get(img_id, []):
        if a.get("iscrowd", 0) or a["category_id"] not in cat2label:
            continue
        x, y, w, h = a["bbox"]
        if w <= 0 or h <= 0:
            continue
        boxes.append([x * sx, y * sy, (x + w) * sx, (y + h) * sy])
        labels.append(cat2label[a["category_id"]])
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.long)


def mask_out_curve(ref: RunRef, *, percents: Sequence[float] = DEFAULT_PERCENTS,
                   xi: float = QUALITY_XI, seed: int = MASKOUT_SEED, batch_size: int | None = None,
                   num_workers: int | None = None) -> list[dict]:
    """AP of ``ref``'s detector on its val split with its top-X% (and, as the control,
    randomly chosen) prior positions inside every GT box removed before NMS, for each X in
    ``percents`` (docs/analyses.md, "mask-out"). One row per (mode, X)."""
    import torch

    from pgd.core import MASKOUT_MODES
    from pgd.distill.maskout import HeadMaskOut
    from pgd.evaluation.coco import coco_evaluate, load_gt
    from pgd.training.predict import instances_to_coco, load_detector

    pcts = [float(p) for p in percents]
    for p in pcts:
        if not 0.0 <= p <= 100.0 or math.isnan(p):
            raise ConfigError(f"mask-out percent {p!r} must lie in [0, 100]")
    det = load_detector(ref.run_config, ref.checkpoint)
    loader = det.val_loader(batch_size, num_workers)
    cat_ids = list(loader.dataset.cat_ids)
    cat2label = {c: i for i, c in enumerate(cat_ids)}
    coco = load_gt(det.val_ann)
    top, rnd = MASKOUT_MODES
    settings = [(top, p) for p in pcts] + [(rnd, p) for p in pcts if p > 0]
    dets = {s: [] for s in settings}
    removed = {s: 0 for s in settings}
    inbox = 0
    seen: list[int] = []
    gen = torch.Generator().manual_seed(int(seed))
    with HeadMaskOut(det.detector, det.model, xi=xi) as mo, torch.no_grad():
        for batch in loader:
            data = det.model.data_preprocessor(batch, False)
            metas = [s.metainfo for s in data["data_samples"]]
            ids = [int(m["img_id"]) for m in metas]
            seen.extend(ids)
            gts = [_gt_in_input(coco, i, m, cat2label) for i, m in zip(ids, metas)]
            outs, priors = mo.forward(data["inputs"])
            quality = mo.image_quality(outs, priors, [g[0] for g in gts], [g[1] for g in gts])
            inbox += sum(int(q.inside.any(dim=1).sum()) for q in quality)
            for s in settings:
                drops = mo.drop_masks(quality, s[1], s[0], gen)
                removed[s] += sum(int(d.sum()) for d in drops)
                edited = mo.apply(outs, drops, priors) if any(bool(d.any()) for d in drops) else outs
                for iid, pred in zip(ids, mo.predict(edited, metas)):
                    dets[s].extend(instances_to_coco(iid, pred, cat_ids))
    rows = []
    for mode, p in settings:
        m = coco_evaluate(coco, dets[(mode, p)], img_ids=seen)
        rows.append(dict(run=ref.name, model=det.run.model, mode=mode, percent=p,
                         AP=m["AP"], AP50=m["AP50"], AP75=m["AP75"],
                         removed_positions=removed[(mode, p)], inbox_positions=inbox,
                         removed_percent=100.0 * removed[(mode, p)] / inbox if inbox else math.nan,
                         detections=len(dets[(mode, p)])))
    base = next(r["AP"] for r in rows if r["percent"] == 0.0) if 0.0 in pcts else None
    for r in rows:
        if r["percent"] == 0.0 and r["mode"] == "top":
            r["mode"] = "none"
        r["AP_relative"] = (100.0 * r["AP"] / base) if base else math.nan
    return rows


def mask_out(runs: Sequence[RunRef], out_dir, *, percents: Sequence[float] = DEFAULT_PERCENTS,
             xi: float = QUALITY_XI, seed: int = MASKOUT_SEED, batch_size: int | None = None,
             num_workers: int | None = None, tracking_uri: str | None = None,
             mlflow_run_id: str | None = None) -> dict:
    """Paper Fig. 3 for every run: AP vs mask-out ratio X, top-quality positions removed
    (solid) and the same number of random in-box positions removed (dashed). Writes
    mask_out.{png,csv,json}."""
    runs = _check_runs(runs, "mask-out")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for ref in runs:
        rows.extend(mask_out_curve(ref, percents=percents, xi=xi, seed=seed,
                                   batch_size=batch_size, num_workers=num_workers))
    plt = _plt()
    pcts = sorted({r["percent"] for r in rows})
    pos = {p: i for i, p in enumerate(pcts)}
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for k, ref in enumerate(runs):
        colour = PALETTE[k % len(PALETTE)]
        mine = [r for r in rows if r["run"] == ref.name]
        base = [r for r in mine if r["mode"] == "none"]
        for mode, ls, marker in (("top", "-", "o"), ("random", "--", "s")):
            pts = sorted(base + [r for r in mine if r["mode"] == mode], key=lambda r: r["percent"])
            ax.plot([pos[r["percent"]] for r in pts], [r["AP"] for r in pts], ls=ls, marker=marker,
                    color=colour, label=f"{ref.name}: {'top-quality' if mode == 'top' else 'random'} removed")
    ax.set_xticks(range(len(pcts)), [f"{p:g}" for p in pcts])
    ax.set_xlabel("mask-out ratio X (% of the prior positions inside each GT box)")
    ax.set_ylabel("COCO AP (%)")
    ax.set_ylim(bottom=0)
    ax.set_title("AP after removing prior positions before NMS (paper Fig. 3)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = out_dir / "mask_out.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    paths = dict(png=png, csv=_write_csv(out_dir / "mask_out.csv", rows),
                 json=_write_json(out_dir / "mask_out.json",
                                  dict(percents=list(percents), xi=xi, seed=seed, rows=rows)))
    return _finish("mask-out", paths, tracking_uri, mlflow_run_id)


# ----------------------------------------------------------------------------- Fig. 5


def detections(runs: Sequence[RunRef], out_dir, *, image_indices: Sequence[int] = DETECTION_IMAGES,
               image_ids: Sequence[int] | None = None, score_thr: float = DETECTION_SCORE_THR,
               tracking_uri: str | None = None, mlflow_run_id: str | None = None) -> dict:
    """Paper Fig. 5: per chosen val image, the GT boxes and each run's detections with
    score >= ``score_thr`` side by side (typically the plain student, then the distilled
    one). Writes detections.{png,csv,json}; the CSV lists every drawn box."""
    from PIL import Image

    from pgd.evaluation.coco import load_gt
    from pgd.training.data import resolve_data
    from pgd.training.predict import load_detector, predict_detections

    runs = _check_runs(runs, "detections")
    if not 0.0 <= float(score_thr) <= 1.0:
        raise ConfigError(f"score_thr={score_thr!r} must lie in [0, 1]")
    _common_val(runs, "detections")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_run, coco, img_dir, names, chosen = {}, None, None, None, None
    for ref in runs:
        det = load_detector(ref.run_config, ref.checkpoint)
        loader = det.val_loader()
        ds = loader.dataset
        if chosen is None:
            chosen = _image_positions(ds, image_indices, image_ids, "val")
            coco = load_gt(det.val_ann)
            img_dir = Path(resolve_data(det.run.data).val_img)
            names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
        dets = predict_detections(det, indices=chosen)
        per_run[ref.name] = [d for d in dets if d["score"] >= float(score_thr)]
    img_ids = [ds.get_data_info(i)["img_id"] for i in chosen]
    plt = _plt()
    cols = 1 + len(runs)
    fig, axes = plt.subplots(len(img_ids), cols, figsize=(3.8 * cols, 3.8 * len(img_ids)), squeeze=False)
    rows = []
    for r, iid in enumerate(img_ids):
        info = coco.imgs[iid]
        img = Image.open(img_dir / info["file_name"]).convert("RGB")
        gt = [a for a in coco.imgToAnns.get(iid, []) if not a.get("iscrowd", 0)]
        panels = [("GT", GT_COLOUR, [(a["bbox"], a["category_id"], None) for a in gt])]
        for k, ref in enumerate(runs):
            mine = [(d["bbox"], d["category_id"], d["score"]) for d in per_run[ref.name] if d["image_id"] == iid]
            panels.append((ref.name, PALETTE[k % len(PALETTE)], mine))
        for c, (label, colour, boxes) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(img)
            for (x, y, w, h), cid, score in boxes:
                ax.add_patch(plt.Rectangle((x, y), w, h, fill=False, ec=colour, lw=1.6))
                text = names.get(cid, str(cid)) + ("" if score is None else f" {score:.2f}")
                ax.text(x, y - 1, text, color="white", fontsize=6, va="bottom",
                        bbox=dict(facecolor=colour, alpha=0.7, pad=0.5, lw=0))
                rows.append(dict(image_id=iid, panel=label, category=names.get(cid, cid),
                                 score=score, x=x, y=y, w=w, h=h))
            ax.set_title(f"{label}: {len(boxes)} box{'es' if len(boxes) != 1 else ''} (image {iid})",
                         fontsize=9, color=colour)
            ax.axis("off")
    fig.suptitle(f"GT (blue) and detections with score >= {score_thr:g} (paper Fig. 5)")
    fig.tight_layout()
    png = out_dir / "detections.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    summary = dict(score_thr=score_thr, image_ids=img_ids,
                   counts={name: {str(i): sum(d["image_id"] == i for d in v) for i in img_ids}
                           for name, v in per_run.items()},
                   gt_counts={str(i): sum(1 for a in coco.imgToAnns.get(i, []) if not a.get("iscrowd", 0))
                              for i in img_ids})
    paths = dict(png=png, csv=_write_csv(out_dir / "detections.csv", rows),
                 json=_write_json(out_dir / "detections.json", summary))
    return _finish("detections", paths, tracking_uri, mlflow_run_id)


# ----------------------------------------------------------------------------- Fig. 6


def tide(runs: Sequence[RunRef], out_dir, *, pos_thr: float | None = None,
         bg_thr: float | None = None, batch_size: int | None = None,
         num_workers: int | None = None, tracking_uri: str | None = None,
         mlflow_run_id: str | None = None) -> dict:
    """Paper Fig. 6: TIDE's main (Cls, Loc, Both, Dupe, Bkg, Miss) and special (FalsePos,
    FalseNeg) errors as dAP50 of every run on the same val set, as grouped bars and a table.
    Writes tide.{png,csv,json} (and the runs' detections under detections/)."""
    from pgd.evaluation.coco import load_gt
    from pgd.evaluation.tide import (
        BG_THR,
        ERROR_NAMES,
        MAIN_ERRORS,
        POS_THR,
        SPECIAL_ERRORS,
        tide_errors,
    )

    pos_thr = POS_THR if pos_thr is None else float(pos_thr)
    bg_thr = BG_THR if bg_thr is None else float(bg_thr)
    runs = _check_runs(runs, "tide")
    ann = _common_val(runs, "tide")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    coco = load_gt(ann)
    results = {}
    for ref in runs:
        dets, _ = run_detections(ref, out_dir / "detections", batch_size=batch_size,
                                 num_workers=num_workers)
        results[ref.name] = tide_errors(coco, dets, name=ref.name, pos_thr=pos_thr, bg_thr=bg_thr)
    plt = _plt()
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw=dict(width_ratios=[3, 1.2]))
    width = 0.8 / len(runs)
    for ax, keys, title in ((ax1, MAIN_ERRORS, "main errors"), (ax2, SPECIAL_ERRORS, "special errors")):
        x = np.arange(len(keys))
        for k, ref in enumerate(runs):
            group = "main" if keys is MAIN_ERRORS else "special"
            vals = [results[ref.name][group][e] for e in keys]
            bars = ax.bar(x - 0.4 + width * (k + 0.5), vals, width, color=PALETTE[k % len(PALETTE)],
                          label=f"{ref.name} (AP50 {results[ref.name]['AP50']:.1f})")
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(x, [f"{e}\n{ERROR_NAMES[e]}" for e in keys], fontsize=8)
        ax.set_ylabel(f"dAP{int(round(pos_thr * 100))} (AP points gained by fixing)")
        ax.set_title(f"TIDE {title} @ IoU {pos_thr:g}")
        ax.grid(axis="y", alpha=0.3)
    ax1.legend(fontsize=8)
    fig.suptitle("TIDE error breakdown (paper Fig. 6); lower is better")
    fig.tight_layout()
    png = out_dir / "tide.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    rows = [dict(run=name, AP50=r["AP50"], **{e: r["main"][e] for e in MAIN_ERRORS},
                 **{e: r["special"][e] for e in SPECIAL_ERRORS},
                 **{f"n_{e}": r["counts"][e] for e in MAIN_ERRORS}) for name, r in results.items()]
    paths = dict(png=png, csv=_write_csv(out_dir / "tide.csv", rows),
                 json=_write_json(out_dir / "tide.json",
                                  dict(pos_thr=pos_thr, bg_thr=bg_thr, val_ann=str(ann), runs=results)))
    return _finish("tide", paths, tracking_uri, mlflow_run_id)


# ----------------------------------------------------------------------------- Table 9


def lrp(runs: Sequence[RunRef], out_dir, *, tau: float | None = None, batch_size: int | None = None,
        num_workers: int | None = None, tracking_uri: str | None = None,
        mlflow_run_id: str | None = None) -> dict:
    """Paper Table 9: COCO AP and optimal LRP (oLRP, oLRP_loc, oLRP_FP, oLRP_FN; class means,
    0-100, lower is better) of every run on the same val set. Writes lrp.{png,csv,json}."""
    from pgd.evaluation.coco import coco_evaluate, load_gt
    from pgd.evaluation.lrp import TAU, olrp

    tau = TAU if tau is None else float(tau)
    runs = _check_runs(runs, "lrp")
    ann = _common_val(runs, "lrp")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    coco = load_gt(ann)
    results = {}
    for ref in runs:
        dets, _ = run_detections(ref, out_dir / "detections", batch_size=batch_size,
                                 num_workers=num_workers)
        r = olrp(coco, dets, tau=tau)
        r["AP"] = coco_evaluate(coco, dets)["AP"]
        results[ref.name] = r
    keys = ("oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN")
    plt = _plt()
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4.6))
    width = 0.8 / len(runs)
    x = np.arange(len(keys))
    for k, ref in enumerate(runs):
        vals = [results[ref.name][key] for key in keys]
        bars = ax.bar(x - 0.4 + width * (k + 0.5), [0 if math.isnan(v) else v for v in vals], width,
                      color=PALETTE[k % len(PALETTE)], label=f"{ref.name} (AP {results[ref.name]['AP']:.1f})")
        ax.bar_label(bars, labels=["n/a" if math.isnan(v) else f"{v:.1f}" for v in vals], fontsize=7)
    ax.set_xticks(x, ["oLRP", "localisation", "false positive", "false negative"])
    ax.set_ylabel("optimal LRP error (%), lower is better")
    ax.set_ylim(0, 105)
    ax.set_title(f"Optimal LRP and its components, tau={tau:g} (paper Table 9)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = out_dir / "lrp.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    rows = [dict(run=name, AP=r["AP"], **{k: r[k] for k in (*keys, "moLRP")}) for name, r in results.items()]
    paths = dict(png=png, csv=_write_csv(out_dir / "lrp.csv", rows),
                 json=_write_json(out_dir / "lrp.json", dict(tau=tau, val_ann=str(ann), runs=results)))
    return _finish("lrp", paths, tracking_uri, mlflow_run_id)


ANALYSES = {
    "quality-map": quality_maps,
    "mask-out": mask_out,
    "detections": detections,
    "tide": tide,
    "lrp": lrp,
}
assert tuple(ANALYSES) == ANALYSIS_NAMES
#: keyword arguments every analysis takes that are not its options
CALL_KEYS = ("tracking_uri", "mlflow_run_id")


def check_options(name: str, options: dict) -> None:
    """ConfigError unless ``options`` are keyword options of analysis ``name``."""
    import inspect

    params = inspect.signature(ANALYSES[name]).parameters
    valid = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in CALL_KEYS]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"analysis {name!r}: unknown option(s) {', '.join(unknown)}; valid options are: "
                          f"{', '.join(valid)}")
