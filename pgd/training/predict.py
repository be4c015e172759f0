"""A trained checkpoint on a run's validation split: the detector, its val loader, and its
detections as COCO result dicts (what the analyses of :mod:`pgd.reporting.analyses` consume).

The model is always the run's plain detector (``run.model``): a distillation run's
checkpoint holds the student under ``student.`` (and no teacher), which is stripped, so a
plain and a distilled student load the same way. The val loader, test pipeline and
label -> category-id mapping are the training run's own (``build_config``), so detections
are exactly what the run's evaluation scored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from pgd.errors import ConfigError

# prefixes a saved state dict may carry: DDP's ``module.``, a distiller's ``student.``
STRIP_PREFIXES = ("module.", "student.")
# sub-models of a distillation checkpoint that are not the student
FOREIGN_PREFIXES = ("teacher.", "teacher_model.", "kd.", "align.")
SPLITS = ("train", "val")


def run_dict(run) -> dict:
    """A run config as a plain dict (a dict or a RunConfig)."""
    if isinstance(run, dict):
        import copy

        return copy.deepcopy(run)
    return run.model_dump()


@dataclass
class LoadedDetector:
    """A detector in eval mode with the mmengine config and val data of its run."""

    model: torch.nn.Module
    mm_cfg: object  # mmengine Config
    run: object  # RunConfig
    detector: str  # atss | ddod | gfl | fcos | autoassign
    checkpoint: Path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def val_loader(self, batch_size: int | None = None, num_workers: int | None = None):
        from mmengine.runner import Runner

        cfg = dict(self.mm_cfg.val_dataloader)
        if batch_size is not None:
            cfg["batch_size"] = int(batch_size)
        if num_workers is not None:
            cfg["num_workers"] = int(num_workers)
            cfg["persistent_workers"] = int(num_workers) > 0
        from pgd.evaluation.coco import quiet

        with quiet():  # mmdet's COCO loader prints
            return Runner.build_dataloader(cfg)

    @property
    def val_ann(self) -> str:
        return str(self.mm_cfg.val_evaluator["ann_file"])

    def figure_dataset(self, split: str = "val"):
        """The split's dataset without augmentation, GT boxes resized with the image (mmdet's
        test pipeline loads them after the resize, in original-image coordinates): what the
        figures draw over the network's input image."""
        from mmdet.registry import DATASETS

        if split not in SPLITS:
            from pgd.errors import unknown_name

            raise unknown_name("split", split, SPLITS)
        loader = self.mm_cfg.val_dataloader if split == "val" else self.mm_cfg.train_dataloader
        ds_cfg = dict(loader.dataset)
        ds_cfg["pipeline"] = [
            dict(type="LoadImageFromFile"),
            dict(type="LoadAnnotations", with_bbox=True),
            dict(type="Resize", scale=tuple(self.run.schedule.img_scale), keep_ratio=True),
            dict(type="PackDetInputs"),
        ]
        ds_cfg["test_mode"] = split != "train"
        from pgd.evaluation.coco import quiet

        with quiet():
            return DATASETS.build(ds_cfg)


def _state_dict(checkpoint: Path) -> dict:
    from pgd.compat import torch_load_trusted

    if not checkpoint.is_file():
        raise ConfigError(f"checkpoint {str(checkpoint)!r} not found; pass an existing .pth file")
    ckpt = torch_load_trusted(str(checkpoint), map_location="cpu")
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"checkpoint {checkpoint} holds no state dict")
    out = {}
    for key, value in state.items():
        if key.startswith(FOREIGN_PREFIXES):
            continue
        for prefix in STRIP_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def load_detector(run, checkpoint: str | os.PathLike, *, device: str | None = None) -> LoadedDetector:
    """The plain detector of ``run`` (a run-config dict or RunConfig) with ``checkpoint``'s
    weights, in eval mode, on ``device`` (default: the run's device rule, ``auto`` = CUDA
    when available). A checkpoint that lacks weights of the model is an error naming them."""
    from mmdet.registry import MODELS

    import pgd.integration
    from pgd.config.run import parse_run
    from pgd.detectors import parse_name
    from pgd.paths import resolve
    from pgd.training.build import build_config, use_cuda

    pgd.integration.init_scope()
    cfg = run_dict(run)
    cfg.pop("distill", None)
    rc = parse_run(cfg, "analysis run config")
    mm = build_config(rc)
    model = MODELS.build(mm.model)
    path = Path(resolve(checkpoint))
    state = _state_dict(path)
    missing, _unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise ConfigError(
            f"checkpoint {path} does not hold the weights of model {rc.model!r}: {len(missing)} "
            f"missing, e.g. {', '.join(missing[:3])}; pass this run's own checkpoint"
        )
    if device is None:
        device = "cuda" if use_cuda(rc) else "cpu"
    model.to(device).eval()
    det, _ = parse_name(rc.model)
    return LoadedDetector(model=model, mm_cfg=mm, run=rc, detector=det, checkpoint=path)


def instances_to_coco(image_id: int, pred, cat_ids) -> list[dict]:
    """COCO result dicts (``bbox`` = [x, y, w, h] in original image pixels) of one image's
    predicted ``InstanceData``; ``cat_ids[label]`` is the category id of a label."""
    boxes = pred.bboxes.detach().cpu().tolist()
    scores = pred.scores.detach().cpu().tolist()
    labels = pred.labels.detach().cpu().tolist()
    return [
        dict(image_id=int(image_id), category_id=int(cat_ids[int(lab)]),
             bbox=[x1, y1, x2 - x1, y2 - y1], score=float(sc))
        for (x1, y1, x2, y2), sc, lab in zip(boxes, scores, labels)
    ]


def subset_loader(loader, indices):
    """The same loader (batch size, collate) over the dataset positions ``indices`` only."""
    from torch.utils.data import DataLoader, Subset

    return DataLoader(Subset(loader.dataset, list(indices)), batch_size=loader.batch_size,
                      shuffle=False, num_workers=0, collate_fn=loader.collate_fn)


@torch.no_grad()
def predict_detections(det: LoadedDetector, *, indices=None, batch_size: int | None = None,
                       num_workers: int | None = None) -> list[dict]:
    """The val images' detections (after NMS, ``model.test_cfg``) as COCO result dicts;
    ``indices``: only those positions of the val split (default: every image)."""
    loader = det.val_loader(batch_size, num_workers)
    cat_ids = loader.dataset.cat_ids
    if indices is not None:
        loader = subset_loader(loader, indices)
    dets = []
    for batch in loader:
        for s in det.model.test_step(batch):
            dets.extend(instances_to_coco(s.metainfo["img_id"], s.pred_instances, cat_ids))
    return dets


def write_results(detections: list[dict], path: str | os.PathLike) -> Path:
    """Write COCO results JSON atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(detections))
    os.replace(tmp, path)
    return path
