"""Small builders shared by the tests and the benchmarks: a synthetic detection batch and a
distiller on registry models (random teacher allowed)."""

from __future__ import annotations

import torch


def synthetic_batch(model, n: int = 2, h: int = 160, w: int = 192, *, boxes=None, labels=None,
                    boxes_per_image: int | None = None, num_classes: int = 6, training: bool = True,
                    seed: int = 0) -> dict:
    """``model.data_preprocessor`` applied to ``n`` random uint8 images with GT boxes.

    ``boxes``/``labels``: the same tensors for every image (shifted by the image index), else
    ``boxes_per_image`` random boxes (default 2 fixed boxes)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(seed)
    imgs = [torch.randint(0, 255, (3, h, w), dtype=torch.uint8, generator=g) for _ in range(n)]
    samples = []
    for i in range(n):
        s = DetDataSample()
        s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0)))
        if boxes_per_image is not None:
            xy = torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([w, h]) * 0.7
            wh = 8 + torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([w, h]) * 0.3
            b = torch.cat([xy, xy + wh], 1)
            lab = torch.randint(0, num_classes, (boxes_per_image,), generator=g)
        else:
            b = (boxes if boxes is not None else torch.tensor([[10.0, 20, 60, 90], [80, 70, 150, 150]])) + i
            lab = labels if labels is not None else torch.tensor([1, 3])[: len(b)]
        s.gt_instances = InstanceData(bboxes=b, labels=lab)
        samples.append(s)
    return model.data_preprocessor(dict(inputs=imgs, data_samples=samples), training)


def build_distiller(student: str, teacher: str, num_classes: int = 6, *, train: bool = True, **distill):
    """An initialised ``PGDDistiller`` (or LD detector) for registry names, through the same
    config path as a run; the teacher may be random (``allow_random_teacher`` defaults on)."""
    from mmdet.registry import MODELS

    from pgd.distill.config import distiller_config

    distill.setdefault("allow_random_teacher", distill.get("teacher_checkpoint") is None)
    model = MODELS.build(distiller_config(student, num_classes, dict(teacher=teacher, **distill)))
    model.init_weights()
    model.train(train)
    return model


def total_loss(losses: dict) -> torch.Tensor:
    """Sum of every ``*loss*`` entry of a detector's loss dict (lists summed too)."""
    return sum(v if isinstance(v, torch.Tensor) else sum(v) for k, v in losses.items() if "loss" in k)
