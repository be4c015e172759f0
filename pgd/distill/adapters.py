"""Per-detector adapters: the only recorders of what a KD method needs from a dense detector.

An adapter (1) captures, with forward hooks (no edit to mmdet), the output of the first block
of the cls tower and of the reg tower at every FPN level, and the neck outputs; (2) turns the
head's raw outputs into per-prior class probabilities and decoded boxes with the detector's
own prior generator and box coder; (3) gives each prior's centre and each level's stride
(spec sections 1-2). One training step's recordings of both detectors reach a KD method as
one :class:`Records` (``KDMethod.forward(records, data_samples)``, pgd/distill/methods).

The released code's adapter bugs, avoided here and pinned by tests/test_distill_adapters.py:
- GFL boxes are decoded with each level's own stride (the released code used one stride);
- anchor-free points are (x, y) in that order (the released code swapped them);
- nothing here mixes images of a batch (every tensor keeps its batch dimension).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from pgd.core.pgd_method import Priors
from pgd.errors import ConfigError, unknown_name

__all__ = ["ADAPTERS", "Captured", "HeadAdapter", "Priors", "Records", "make_adapter"]


@dataclass
class Captured:
    """Feature maps caught during one forward pass, each a list over FPN levels; ``head`` is
    the dense head's forward output (``(cls_scores, bbox_preds, ...)``, each a list over
    levels; the last call's when the head runs more than once), for methods that distil
    the head's outputs (FRS)."""

    cls: list[torch.Tensor] = field(default_factory=list)
    reg: list[torch.Tensor] = field(default_factory=list)
    neck: list[torch.Tensor] = field(default_factory=list)
    head: tuple | None = None
    #: ``(branch, layer) -> list over levels``: outputs of the extra tower layers an adapter
    #: was asked to watch (:meth:`HeadAdapter.watch_tower`; CrossKD's reused layer)
    tower: dict = field(default_factory=dict)


class HeadAdapter:
    """Common machinery; subclasses implement :meth:`decode`."""

    anchor_based = True

    def __init__(self, detector):
        self.detector = detector
        self.head = detector.bbox_head
        for attr in ("cls_convs", "reg_convs", "prior_generator"):
            if not hasattr(self.head, attr):
                raise ConfigError(f"{type(self.head).__name__} has no {attr}; not a supported dense head")
        self._active: Captured | None = None
        self._watched: set = set()
        self._handles = [
            self.head.cls_convs[0].register_forward_hook(self._hook("cls")),
            self.head.reg_convs[0].register_forward_hook(self._hook("reg")),
        ]
        if getattr(detector, "with_neck", False):
            self._handles.append(detector.neck.register_forward_hook(self._neck_hook))
        self._handles.append(self.head.register_forward_hook(self._head_hook))

    def _hook(self, name):
        def hook(_module, _inputs, output):
            if self._active is not None:
                getattr(self._active, name).append(output)

        return hook

    def watch_tower(self, layer: int, pre_activation: bool = False) -> None:
        """Also capture the output of tower layer ``layer`` (0-based) of both branches, into
        ``Captured.tower[(branch, layer)]``. ``pre_activation``: a copy of the layer's output
        before its activation (the output of its norm, or of its conv without norm; mmcv's
        in-place ReLU would otherwise overwrite it). Watching a layer twice is a no-op."""
        for branch in ("cls", "reg"):
            convs = getattr(self.head, f"{branch}_convs")
            if not 0 <= int(layer) < len(convs):
                raise ConfigError(f"{type(self.head).__name__}.{branch}_convs has {len(convs)} layers; "
                                  f"there is no layer {layer}")
            key = (branch, int(layer), bool(pre_activation))
            if key in self._watched:
                continue
            module = convs[int(layer)]
            if pre_activation:
                order = tuple(getattr(module, "order", ("conv", "norm", "act")))
                if order != ("conv", "norm", "act"):
                    raise ConfigError(f"pre-activation capture needs a conv-norm-act layer, got order {order}")
                module = module.norm if getattr(module, "with_norm", False) else module.conv
            self._watched.add(key)
            self._handles.append(module.register_forward_hook(self._tower_hook((branch, int(layer)), pre_activation)))

    def _tower_hook(self, key, copy: bool):
        def hook(_module, _inputs, output):
            if self._active is not None:
                self._active.tower.setdefault(key, []).append(output.clone() if copy else output)

        return hook

    def _neck_hook(self, _module, _inputs, output):
        if self._active is not None:
            self._active.neck.extend(list(output))

    def _head_hook(self, _module, _inputs, output):
        if self._active is not None:
            self._active.head = tuple(output)

    @contextmanager
    def capture(self):
        """``with adapter.capture() as feats:`` run the model; ``feats`` then holds the maps."""
        captured = Captured()
        self._active = captured
        try:
            yield captured
        finally:
            self._active = None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    # ------------------------------------------------------------------ priors and decoding
    def priors(self, featmap_sizes, device) -> Priors:
        gen = self.head.prior_generator
        mlvl = gen.grid_priors(featmap_sizes, device=device)
        na = gen.num_base_priors[0]
        centres = []
        for p in mlvl:
            c = p[:, :2] if p.shape[-1] == 2 else (p[:, :2] + p[:, 2:4]) / 2
            centres.append(c[::na])  # priors are ordered (h, w, anchor): one centre per location
        return Priors(
            boxes_or_points=mlvl,
            centres=torch.cat(centres),
            level_sizes=[int(h) * int(w) for h, w in featmap_sizes],
            featmap_sizes=[(int(h), int(w)) for h, w in featmap_sizes],
            num_anchors=int(na),
        )

    def cached_priors(self, featmap_sizes, device) -> Priors:
        """:meth:`priors`, cached per (feature map sizes, device): they depend on nothing else,
        and a training run sees few distinct padded input shapes."""
        key = (tuple(tuple(int(v) for v in s) for s in featmap_sizes), str(device))
        cache = self.__dict__.setdefault("_priors_cache", {})
        if key not in cache:
            if len(cache) >= 16:
                cache.clear()
            cache[key] = self.priors(featmap_sizes, device)
        return cache[key]

    def strides(self) -> list[tuple[float, float]]:
        """``(stride_x, stride_y)`` of every FPN level, from the head's prior generator."""
        return [tuple(map(float, s)) if isinstance(s, (tuple, list)) else (float(s), float(s))
                for s in self.head.prior_generator.strides]

    def flatten_cls(self, cls_scores) -> torch.Tensor:
        """[N, na*C, H, W] per level -> class probabilities [N, A*na, C]."""
        C = self.head.cls_out_channels
        return torch.cat(
            [s.permute(0, 2, 3, 1).reshape(s.shape[0], -1, C) for s in cls_scores], 1
        ).sigmoid()

    def decode(self, bbox_preds, priors: Priors) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def predictions(self, head_outs, priors: Priors) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities [N, A*na, C], boxes [N, A*na, 4]) from the head's outputs."""
        cls_scores, bbox_preds = head_outs[0], head_outs[1]
        return self.flatten_cls(cls_scores), self.decode(bbox_preds, priors)


class DeltaAnchorAdapter(HeadAdapter):
    """ATSS and DDOD: anchors + DeltaXYWHBBoxCoder."""

    def decode(self, bbox_preds, priors: Priors) -> torch.Tensor:
        # one decode of every level's rows (the coder works row by row: the same numbers as per level)
        n = bbox_preds[0].shape[0]
        deltas = torch.cat([pred.permute(0, 2, 3, 1).reshape(n, -1, 4) for pred in bbox_preds], 1)
        anchors = torch.cat(list(priors.boxes_or_points))
        boxes = self.head.bbox_coder.decode(anchors.expand(n, -1, -1).reshape(-1, 4), deltas.reshape(-1, 4))
        return boxes.reshape(n, -1, 4)


class GFLAdapter(HeadAdapter):
    """GFL: distribution integral x the level's own stride from the anchor centres."""

    def decode(self, bbox_preds, priors: Priors) -> torch.Tensor:
        out = []
        strides = self.head.prior_generator.strides
        for pred, anchors, stride in zip(bbox_preds, priors.boxes_or_points, strides):
            n = pred.shape[0]
            dist = pred.permute(0, 2, 3, 1).reshape(-1, 4 * (self.head.reg_max + 1))
            dist = self.head.integral(dist) * stride[0]  # each level's own stride
            centres = self.head.anchor_center(anchors).expand(n, -1, -1).reshape(-1, 2)
            out.append(self.head.bbox_coder.decode(centres, dist).reshape(n, -1, 4))
        return torch.cat(out, 1)


class PointAdapter(HeadAdapter):
    """FCOS and AutoAssign: (x, y) points + (left, top, right, bottom) distances, which the
    head already scales to pixels in eval mode (the teacher always runs in eval mode)."""

    anchor_based = False

    def decode(self, bbox_preds, priors: Priors) -> torch.Tensor:
        if self.head.training:
            raise RuntimeError("point-head boxes are decoded from a head in eval mode only")
        n = bbox_preds[0].shape[0]  # one decode of every level's rows, as for anchors
        dist = torch.cat([pred.permute(0, 2, 3, 1).reshape(n, -1, 4) for pred in bbox_preds], 1)
        points = torch.cat([p[:, :2] for p in priors.boxes_or_points])
        return self.head.bbox_coder.decode(points.expand(n, -1, -1).reshape(-1, 2), dist.reshape(-1, 4)).reshape(n, -1, 4)


ADAPTERS = {
    "atss": DeltaAnchorAdapter,
    "ddod": DeltaAnchorAdapter,
    "gfl": GFLAdapter,
    "fcos": PointAdapter,
    "autoassign": PointAdapter,
}


def make_adapter(detector_name: str, model) -> HeadAdapter:
    if detector_name not in ADAPTERS:
        raise unknown_name("detector", detector_name, ADAPTERS)
    return ADAPTERS[detector_name](model)


@dataclass
class Records:
    """What the adapters recorded in one training step, as a KD method reads it.

    ``student`` / ``teacher``: the :class:`Captured` maps of each detector (``teacher.head``
    is the teacher's head output, ``student.head`` the student's); priors, strides and the
    teacher's decoded predictions come from the adapters on demand (computed once per step).
    ``head(side)`` is the dense head module itself, for a method that runs head layers
    (CrossKD)."""

    student: Captured
    teacher: Captured
    s_adapter: HeadAdapter
    t_adapter: HeadAdapter
    _cache: dict = field(default_factory=dict, repr=False)

    def _adapter(self, side: str) -> HeadAdapter:
        if side not in ("student", "teacher"):
            raise ValueError(f"side must be 'student' or 'teacher', got {side!r}")
        return self.s_adapter if side == "student" else self.t_adapter

    def head(self, side: str = "teacher"):
        return self._adapter(side).head

    def strides(self, side: str = "student") -> list[tuple[float, float]]:
        return self._adapter(side).strides()

    def priors(self, featmap_sizes=None, device=None, side: str = "teacher") -> Priors:
        """The priors of the recorded feature-map sizes (the teacher head's outputs; or the
        given sizes), by ``side``'s prior generator."""
        if featmap_sizes is None:
            outs = self.teacher.head
            if outs is None:
                raise RuntimeError("no teacher head outputs were recorded")
            featmap_sizes = [tuple(s.shape[-2:]) for s in outs[0]]
            device = outs[0][0].device
        return self._adapter(side).cached_priors(featmap_sizes, device)

    def teacher_predictions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's (class probabilities [N, A*na, C], decoded boxes [N, A*na, 4])."""
        if "predictions" not in self._cache:
            with torch.no_grad():
                self._cache["predictions"] = self.t_adapter.predictions(self.teacher.head, self.priors())
        return self._cache["predictions"]
