"""The KD baselines of the PGD paper's Table 1 on the platform's dense detectors.

``build_baseline(method, distill_cfg, student_cfg, teacher_cfg, detector)`` returns the
``nn.Module`` that ``PGDDistiller`` calls as ``kd(s_feats, t_feats, head_outs, samples,
distiller)``: it builds each method's masks from the GT boxes / the teacher's outputs, runs
the trainable parts (adapt convs, FGD's GcBlocks, FKD's non-local blocks and adapters, all
created in ``__init__`` so the optimizer sees them) and calls the math in
:mod:`pgd.core.baselines` (CrossKD: :mod:`pgd.core.crosskd`, its head plumbing in
:mod:`pgd.distill.crosskd`). It returns ``{"loss_<method>_<term>": tensor}``. A module with an
``attach(s_adapter, t_adapter)`` method (CrossKD) is attached to the distiller's adapters
once both detectors are built.

LD is not built here: it is MMDetection's own ``KnowledgeDistillationSingleStageDetector`` +
``LDHead`` (see :func:`pgd.distill.config.distiller_model_config`). Its defaults live in the
table below with the others.

Every method reads its knobs from its own ``distill`` keys (``distill.alpha`` of an FGD run);
the per-detector defaults are :data:`pgd.config.defaults.BASELINE_DEFAULTS` (which also says
which detectors a method applies to). See
docs/baselines.md for the formulas, where each number comes from and the deviations from the
authors' code.
"""

from __future__ import annotations

import torch
from torch import nn

from pgd.config import defaults as D
from pgd.core.baselines import (
    GcBlock,
    NonLocalBlock,
    box_cells,
    defeat_loss_terms,
    fgd_loss_terms,
    fgd_masks,
    fgfi_loss_terms,
    fgfi_mask,
    fkd_loss_terms,
    fpn_level_by_scale,
    frs_loss_terms,
)
from pgd.errors import ConfigError, unknown_name

#: method -> detector -> default knobs (the detectors a method applies to), from the config layer
BASELINE_DEFAULTS = D.BASELINE_DEFAULTS


def build_baseline(method: str, distill_cfg: dict, student_cfg: dict, teacher_cfg: dict,
                   detector: str) -> nn.Module:
    """The loss module of a KD baseline for ``PGDDistiller`` (every method but LD), from the
    method's resolved distill section (plain data: every knob filled, see pgd.config.run)."""
    if method == "ld":
        raise ConfigError(
            "method 'ld' is MMDetection's KnowledgeDistillationSingleStageDetector with an LDHead, "
            "not a PGDDistiller: build its model dict with pgd.distill.config.distiller_model_config"
        )
    if method not in LOSSES:
        raise unknown_name("KD baseline", method, LOSSES)
    if detector not in D.BASELINE_DEFAULTS[method]:
        raise ConfigError(f"KD method {method!r} does not apply to detector {detector!r}; valid detectors "
                          f"for {method} are: {', '.join(sorted(D.BASELINE_DEFAULTS[method]))}")
    params = {k: distill_cfg.get(k) for k in D.BASELINE_DEFAULTS[method][detector]}
    missing = [k for k, v in params.items() if v is None]
    if missing:
        raise ConfigError(f"distill section of {method!r} is not resolved ({', '.join(missing)} null); "
                          "pass it through pgd.config.run.resolve_run")
    return LOSSES[method](params, student_cfg, teacher_cfg, detector)


# ----------------------------------------------------------------------------- helpers
def _neck(cfg: dict) -> tuple[int, int]:
    neck = cfg["neck"]
    return int(neck["out_channels"]), int(neck.get("num_outs", 5))


def _gt_boxes(samples, device) -> list[torch.Tensor]:
    return [s.gt_instances.bboxes.to(device=device, dtype=torch.float32).reshape(-1, 4) for s in samples]


def _padded_shape(samples) -> tuple[int, int]:
    """(h, w) of the padded batch input (DetDataPreprocessor's ``batch_input_shape``)."""
    meta = samples[0].metainfo
    shape = meta.get("batch_input_shape", meta.get("pad_shape"))
    if shape is None:
        raise RuntimeError("data samples carry no batch_input_shape / pad_shape; run the "
                           "detector's DetDataPreprocessor first")
    return int(shape[0]), int(shape[1])


def _check_levels(s_maps, t_maps, num_levels: int) -> None:
    if len(s_maps) != num_levels or len(t_maps) != num_levels:
        raise RuntimeError(
            f"captured {len(s_maps)} student and {len(t_maps)} teacher FPN levels, expected "
            f"{num_levels}: the two detectors must share FPN strides"
        )


def _kaiming(conv: nn.Module) -> None:
    """The distiller's adapt-conv initialisation (the PGD align convs use the same)."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class BaselineKD(nn.Module):
    """Common set-up: channels / levels of both necks, parameters, loss naming."""

    method = ""

    def __init__(self, params: dict, student_cfg: dict, teacher_cfg: dict, detector: str):
        super().__init__()
        self.params = dict(params)
        self.detector = detector
        self.c_s, self.num_levels = _neck(student_cfg)
        self.c_t, t_levels = _neck(teacher_cfg)
        if t_levels != self.num_levels:
            raise ConfigError(f"student FPN has {self.num_levels} levels, teacher {t_levels}; they must match")
        self._forwards = 0

    def current_iter(self) -> int:
        """The training iteration: mmengine's ``MessageHub`` ``iter`` (set by the Runner's
        ``RuntimeInfoHook`` before every train iteration, restored on resume); outside a
        Runner (no ``iter`` in the hub) the number of training forwards of this module so far
        (:meth:`_count_forward`; a plain counter, not checkpointed)."""
        from mmengine.logging import MessageHub

        it = MessageHub.get_current_instance().get_info("iter")
        return self._forwards if it is None else int(it)

    def _count_forward(self) -> None:
        if self.training:
            self._forwards += 1

    #: attributes holding the student-side adapt convs (one per level)
    ADAPT: tuple[str, ...] = ()

    def _adapt_convs(self, kernel: int) -> nn.ModuleList:
        """One ``C_s -> C_t`` conv per level."""
        return nn.ModuleList(
            nn.Conv2d(self.c_s, self.c_t, kernel_size=kernel, padding=kernel // 2) for _ in range(self.num_levels)
        )

    def init_weights(self) -> None:
        """Called by ``PGDDistiller.init_weights`` instead of its blanket conv init: adapt
        convs as the distiller initialises its own (Kaiming-uniform, a=1, zero bias); the
        subclasses reset their blocks as their authors do."""
        for name in self.ADAPT:
            for conv in getattr(self, name) or ():
                _kaiming(conv)

    def _named(self, terms: dict) -> dict[str, torch.Tensor]:
        return {f"loss_{self.method}_{k}": v for k, v in terms.items()}


# ----------------------------------------------------------------------------- FGD
class FGDKD(BaselineKD):
    """FGD on the FPN outputs: focal (fg / bg / attention) and global (GcBlock) terms."""

    method = "fgd"
    ADAPT = ("align",)

    def __init__(self, *args):
        super().__init__(*args)
        # FGD aligns a narrower student with a 1x1 conv before everything else
        self.align = self._adapt_convs(1) if self.c_s != self.c_t else None
        self.gc_s = nn.ModuleList(GcBlock(self.c_t) for _ in range(self.num_levels))
        self.gc_t = nn.ModuleList(GcBlock(self.c_t) for _ in range(self.num_levels))

    def init_weights(self) -> None:
        super().init_weights()
        for block in [*self.gc_s, *self.gc_t]:
            block.reset_parameters()

    @torch.no_grad()
    def masks(self, samples, feats) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level ``[N, H, W]`` fg / bg masks (:func:`pgd.core.baselines.fgd_masks`).

        Boxes are mapped to cells as FGD's code, ``x / shape_w * W`` and ``y / shape_h * H``,
        with ``shape`` the padded batch input shape (``padded_shape``, the default; the code
        uses each image's unpadded ``img_shape``, which shrinks the boxes of padded images)."""
        p = self.params
        if p["padded_shape"]:
            shapes = [_padded_shape(samples)] * len(samples)
        else:
            shapes = [tuple(int(v) for v in s.metainfo["img_shape"][:2]) for s in samples]
        boxes = _gt_boxes(samples, feats[0].device)
        fgs, bgs = [], []
        for f in feats:
            H, W = f.shape[-2:]
            per_img = []
            for b, (sh, sw) in zip(boxes, shapes):
                cell = torch.stack([b[:, 0] / sw * W, b[:, 1] / sh * H, b[:, 2] / sw * W, b[:, 3] / sh * H], 1)
                per_img.append(fgd_masks(cell, H, W, inclusive=p["inclusive_cells"], clipped_area=p["clipped_area"]))
            fgs.append(torch.stack([m[0] for m in per_img]))
            bgs.append(torch.stack([m[1] for m in per_img]))
        return fgs, bgs

    def forward(self, s_feats, t_feats, head_outs, samples, distiller) -> dict[str, torch.Tensor]:
        _check_levels(s_feats.neck, t_feats.neck, self.num_levels)
        fs = [self.align[i](f) for i, f in enumerate(s_feats.neck)] if self.align is not None else s_feats.neck
        fg, bg = self.masks(samples, t_feats.neck)
        p = self.params
        terms = fgd_loss_terms(fs, t_feats.neck, fg, bg, self.gc_s, self.gc_t, temp=p["temp"],
                               alpha=p["alpha"], beta=p["beta"], gamma=p["gamma"], lambda_=p["lambda_"])
        return self._named(terms)


# ----------------------------------------------------------------------------- DeFeat
class DeFeatKD(BaselineKD):
    """DeFeat on the FPN outputs through a 3x3 adapt conv; GT boxes assigned to one level."""

    method = "defeat"
    ADAPT = ("adapt",)

    def __init__(self, *args):
        super().__init__(*args)
        self.adapt = self._adapt_convs(3)

    @torch.no_grad()
    def masks(self, samples, feats, strides) -> list[torch.Tensor]:
        """Per level ``[N, H, W]`` binary fg: the cells of the boxes assigned to that level
        (box / the level's stride, as DeFeat's code maps them)."""
        boxes = _gt_boxes(samples, feats[0].device)
        levels = [fpn_level_by_scale(b, self.num_levels, self.params["finest_scale"]) for b in boxes]
        out = []
        for lvl, f in enumerate(feats):
            H, W = f.shape[-2:]
            sw, sh = strides[lvl]
            scale = f.new_tensor([1 / sw, 1 / sh, 1 / sw, 1 / sh], dtype=torch.float32)
            out.append(torch.stack([
                box_cells(b[lv == lvl] * scale, H, W).any(dim=0).to(torch.float32)
                if b.shape[0] else torch.zeros(H, W, device=f.device)
                for b, lv in zip(boxes, levels)
            ]))
        return out

    def forward(self, s_feats, t_feats, head_outs, samples, distiller) -> dict[str, torch.Tensor]:
        _check_levels(s_feats.neck, t_feats.neck, self.num_levels)
        strides = [tuple(map(float, s)) for s in distiller.s_adapter.head.prior_generator.strides]
        masks = self.masks(samples, t_feats.neck, strides)
        fs = [self.adapt[i](f) for i, f in enumerate(s_feats.neck)]
        terms = defeat_loss_terms(fs, t_feats.neck, masks, w_fg=self.params["w_fg"], w_bg=self.params["w_bg"])
        return self._named(terms)


# ----------------------------------------------------------------------------- FRS
class FRSKD(BaselineKD):
    """FRS: FPN imitation (3x3 adapt) and cls-score BCE, weighted by the teacher's richness.

    The KD terms ramp linearly from 0 over the first ``ramp_iters`` training iterations. The
    iteration is mmengine's ``MessageHub`` ``iter`` (the Runner's ``RuntimeInfoHook`` sets it
    before every train iteration and restores it on resume, so the ramp survives resume);
    outside a Runner (no ``iter`` in the hub) a counter of this module's training forwards is
    used instead (not saved in checkpoints).
    """

    method = "frs"
    ADAPT = ("adapt",)

    def __init__(self, *args):
        super().__init__(*args)
        self.adapt = self._adapt_convs(3)

    def ramp(self) -> float:
        n = int(self.params["ramp_iters"])
        return 1.0 if n <= 0 else min(1.0, self.current_iter() / n)

    def forward(self, s_feats, t_feats, head_outs, samples, distiller) -> dict[str, torch.Tensor]:
        _check_levels(s_feats.neck, t_feats.neck, self.num_levels)
        if s_feats.head is None:
            raise RuntimeError("FRS needs the student's head outputs; the adapter captured none")
        s_logits, t_logits = s_feats.head[0], head_outs[0]
        fs = [self.adapt[i](f) for i, f in enumerate(s_feats.neck)]
        terms = frs_loss_terms(fs, t_feats.neck, s_logits, t_logits, w_feat=self.params["w_feat"],
                               w_cls=self.params["w_cls"], ramp=self.ramp(),
                               bce_from_logits=self.params["bce_from_logits"])
        self._count_forward()
        return self._named(terms)


# ----------------------------------------------------------------------------- FGFI
class FGFIKD(BaselineKD):
    """FGFI on the FPN outputs through a 3x3 adapt conv, masked near the GTs' best anchors.

    As FGFI's code, the imitation term is 0 for the first ``warm_iters`` training iterations
    (:meth:`BaselineKD.current_iter`; ``warm_iters: 0`` imitates from the start)."""

    method = "fgfi"
    ADAPT = ("adapt",)

    def __init__(self, *args):
        super().__init__(*args)
        self.adapt = self._adapt_convs(3)

    @torch.no_grad()
    def masks(self, samples, feats, adapter) -> list[torch.Tensor]:
        """Per level ``[N, H, W]``: FGFI's mask from the detector's own anchors."""
        sizes = [tuple(f.shape[-2:]) for f in feats]
        priors = adapter.priors(sizes, feats[0].device)
        if priors.boxes_or_points[0].shape[-1] != 4:
            raise ConfigError(f"FGFI needs anchor boxes; detector {self.detector!r} has anchor points")
        anchors = torch.cat(priors.boxes_or_points)
        per_img = [fgfi_mask(anchors, b, priors.num_anchors, self.params["iou_ratio"],
                             legacy_iou=self.params["legacy_iou"]).to(torch.float32)
                   for b in _gt_boxes(samples, anchors.device)]
        out = []
        for lvl, chunks in enumerate(zip(*[torch.split(m, priors.level_sizes) for m in per_img])):
            h, w = priors.featmap_sizes[lvl]
            out.append(torch.stack([c.reshape(h, w) for c in chunks]))
        return out

    def forward(self, s_feats, t_feats, head_outs, samples, distiller) -> dict[str, torch.Tensor]:
        _check_levels(s_feats.neck, t_feats.neck, self.num_levels)
        masks = self.masks(samples, t_feats.neck, distiller.s_adapter)
        fs = [self.adapt[i](f) for i, f in enumerate(s_feats.neck)]
        warm = self.current_iter() < int(self.params["warm_iters"])
        terms = fgfi_loss_terms(fs, t_feats.neck, masks, weight=0.0 if warm else self.params["weight"],
                                zero_without_mask=self.params["zero_without_gt"])
        self._count_forward()
        return self._named(terms)


# ----------------------------------------------------------------------------- FKD
class FKDKD(BaselineKD):
    """FKD on the FPN outputs: attention-masked imitation, attention transfer, relation."""

    method = "fkd"
    ADAPT = ("adapt", "nl_adapt")

    # FKD's code for 256-channel FPNs: non-local blocks with 64 inner channels pooled by 8 and
    # 4 on the two finest levels, C/2 pooled by 2 elsewhere; here 64 = C/4 so it scales with C.
    NL_STRIDES = (8, 4, 2, 2, 2)
    NL_INNER_DIV = (4, 4, 2, 2, 2)

    def __init__(self, *args):
        super().__init__(*args)
        L = self.num_levels
        stride = [self.NL_STRIDES[min(i, 4)] for i in range(L)]
        div = [self.NL_INNER_DIV[min(i, 4)] for i in range(L)]
        self.adapt = self._adapt_convs(1)
        self.nl_adapt = self._adapt_convs(1)
        self.channel_adapt = nn.ModuleList(nn.Linear(self.c_s, self.c_t) for _ in range(L))
        self.spatial_adapt = nn.ModuleList(nn.Conv2d(1, 1, kernel_size=3, padding=1) for _ in range(L))
        self.nl_s = nn.ModuleList(NonLocalBlock(self.c_s, self.c_s // div[i], stride[i]) for i in range(L))
        self.nl_t = nn.ModuleList(NonLocalBlock(self.c_t, self.c_t // div[i], stride[i]) for i in range(L))

    def init_weights(self) -> None:
        super().init_weights()
        for block in [*self.nl_s, *self.nl_t]:
            block.reset_parameters()

    def forward(self, s_feats, t_feats, head_outs, samples, distiller) -> dict[str, torch.Tensor]:
        _check_levels(s_feats.neck, t_feats.neck, self.num_levels)
        p = self.params
        terms = fkd_loss_terms(
            s_feats.neck, t_feats.neck, adapt=self.adapt, channel_adapt=self.channel_adapt,
            spatial_adapt=self.spatial_adapt, nl_s=self.nl_s, nl_t=self.nl_t, nl_adapt=self.nl_adapt,
            temp=p["temp"], w_feat=p["w_feat"], w_channel=p["w_channel"], w_spatial=p["w_spatial"],
            w_relation=p["w_relation"], channel_mask=p["channel_mask"],
        )
        return self._named(terms)


# ----------------------------------------------------------------------------- CrossKD
class CrossKDKD(BaselineKD):
    """CrossKD (+ optional PKD): the student's head features after tower layer
    ``reused_head_idx`` run through the teacher's remaining head layers
    (:mod:`pgd.distill.crosskd`), the cross-head predictions mimicking the teacher's own
    (:mod:`pgd.core.crosskd`, one recipe per head). No trainable parameters of its own.

    Entries: ``loss_crosskd_cls``, ``loss_crosskd_reg``, ``loss_crosskd_center`` (ATSS) and,
    with ``pkd: true``, ``loss_crosskd_pkd`` (PKD on every FPN level).
    """

    method = "crosskd"

    def __init__(self, params: dict, student_cfg: dict, teacher_cfg: dict, detector: str):
        super().__init__(params, student_cfg, teacher_cfg, detector)
        idx = int(self.params["reused_head_idx"])
        s_head, t_head = student_cfg["bbox_head"], teacher_cfg["bbox_head"]
        cs = int(s_head.get("feat_channels", 256))
        ct = int(t_head.get("feat_channels", 256))
        if cs != ct:
            raise ConfigError(
                f"CrossKD feeds the student's head features into the teacher's head, so both heads "
                f"need the same feat_channels; student {cs}, teacher {ct}"
            )
        if self.params["pkd"] and self.c_s != self.c_t:
            raise ConfigError(f"PKD compares the FPN maps channel by channel; student has {self.c_s} "
                              f"channels, teacher {self.c_t} (set distill.pkd: false)")
        for side, head in (("student", s_head), ("teacher", t_head)):
            n = int(head.get("stacked_convs", 4))
            if not 0 <= idx <= n:
                raise ConfigError(
                    f"distill.reused_head_idx={idx} but the {side} head has {n} tower "
                    f"layers per branch; choose 0..{n} (CrossKD's released value assumes 4)"
                )
        self.reused_head_idx = idx

    def attach(self, s_adapter, t_adapter) -> None:
        """Called by ``PGDDistiller`` once both detectors are built: checks their heads and
        asks both adapters to capture the reused tower layer."""
        from pgd.distill.crosskd import check_head

        for side, adapter in (("student", s_adapter), ("teacher", t_adapter)):
            check_head(adapter.head, self.reused_head_idx, side)
            if self.reused_head_idx > 0:
                adapter.watch_tower(self.reused_head_idx - 1, self.params["pre_activation"])

    def _held(self, feats, side: str):
        if self.reused_head_idx == 0:
            return feats.neck, feats.neck
        key = self.reused_head_idx - 1
        cls, reg = feats.tower.get(("cls", key), []), feats.tower.get(("reg", key), [])
        if len(cls) != self.num_levels or len(reg) != self.num_levels:
            raise RuntimeError(f"captured {len(cls)}/{len(reg)} {side} head features of tower layer {key}, "
                               f"expected {self.num_levels} (one per FPN level)")
        return cls, reg

    def forward(self, s_feats, t_feats, head_outs, samples, distiller) -> dict[str, torch.Tensor]:
        from pgd.core.crosskd import (
            align_scale,
            crosskd_atss_terms,
            crosskd_fcos_terms,
            crosskd_gfl_terms,
            pkd_loss_terms,
        )
        from pgd.distill.crosskd import flatten_levels, reuse_teacher_head, student_targets

        _check_levels(s_feats.neck, t_feats.neck, self.num_levels)
        s_cls, s_reg = self._held(s_feats, "student")
        t_cls, t_reg = self._held(t_feats, "teacher")
        s_head, t_head = distiller.s_adapter.head, distiller.t_adapter.head
        reused = [reuse_teacher_head(t_head, align_scale(s_cls[lvl], t_cls[lvl]), align_scale(s_reg[lvl], t_reg[lvl]),
                                     lvl, self.reused_head_idx) for lvl in range(self.num_levels)]
        r_cls, r_box, r_ctr = (list(x) for x in zip(*reused))
        t_cls_scores, t_box = list(head_outs[0]), list(head_outs[1])
        K = s_head.cls_out_channels
        sizes = [tuple(c.shape[-2:]) for c in t_cls_scores]
        targets = student_targets(s_head, sizes, samples, t_cls_scores[0].device)
        p = self.params
        rc, tc = flatten_levels(r_cls, K), flatten_levels(t_cls_scores, K)
        if self.detector == "gfl":
            width = 4 * (s_head.reg_max + 1)
            terms = crosskd_gfl_terms(rc, tc, flatten_levels(r_box, width), flatten_levels(t_box, width),
                                      targets["label_weights"], targets["avg_factor"], beta=p["beta"],
                                      temp=p["kl_temp"], w_cls=p["w_cls"], w_reg=p["w_reg"])
        elif self.detector == "atss":
            anchors, coder = targets["anchors"], s_head.bbox_coder
            rb = coder.decode(anchors, flatten_levels(r_box, coder.encode_size))
            tb = coder.decode(anchors, flatten_levels(t_box, coder.encode_size))
            labels = targets["labels"]
            terms = crosskd_atss_terms(rc, tc, rb, tb, flatten_levels(r_ctr, 1), flatten_levels(list(head_outs[2]), 1),
                                       targets["label_weights"], (labels >= 0) & (labels < s_head.num_classes),
                                       targets["avg_factor"], beta=p["beta"], w_cls=p["w_cls"], w_reg=p["w_reg"],
                                       w_center=p["w_center"])
        else:  # fcos
            points, coder = targets["points"], s_head.bbox_coder
            rb = coder.decode(points, flatten_levels(r_box, 4))
            tb = coder.decode(points, flatten_levels(t_box, 4))
            terms = crosskd_fcos_terms(rc, tc, rb, tb, targets["denorm"], beta=p["beta"], w_cls=p["w_cls"],
                                       w_reg=p["w_reg"])
        if p["pkd"]:
            terms["pkd"] = pkd_loss_terms(s_feats.neck, t_feats.neck, weight=p["w_pkd"])["feat"]
        return self._named(terms)


LOSSES: dict[str, type[BaselineKD]] = {"fgd": FGDKD, "defeat": DeFeatKD, "frs": FRSKD, "fgfi": FGFIKD, "fkd": FKDKD,
                                       "crosskd": CrossKDKD}
