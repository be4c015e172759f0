"""Every default the platform resolves, in one place (plain Python: the core imports it too).

A config key whose documented default is ``null`` means "the per-detector (or per-data-kind,
or derived) default"; :func:`pgd.config.run.resolve_run` replaces every such ``null`` with the
value below, so what a model gets is what MLflow records.

Sources: ``shared/spec/pgd-method.md`` (PGD, the released configs) and
``shared/spec/kd-baselines.md`` / docs/baselines.md (the KD baselines).
"""

from __future__ import annotations

# ----------------------------------------------------------------------------- PGD (spec 5)
#: detector -> alpha (fg weight), tau (attention temperature), k (top-K) of the released configs
PGD_DEFAULTS: dict[str, dict] = {
    "atss": dict(alpha=0.08, tau=0.8, k=9),
    "ddod": dict(alpha=0.08, tau=0.8, k=30),
    "gfl": dict(alpha=0.04, tau=0.8, k=30),
    "fcos": dict(alpha=0.04, tau=0.8, k=30),
    "autoassign": dict(alpha=0.08, tau=0.4, k=30),
}
#: (detector, data kind) overrides of PGD_DEFAULTS
PGD_DATA_OVERRIDES: dict[tuple[str, str], dict] = {("ddod", "crowdhuman"): dict(alpha=0.001)}
#: KD diagnostics (pgd/distill/diagnostics.py): measured every this many training iterations and
#: on the first iteration of each epoch; 0 = off. A measured step costs about 3 plain PGD steps
#: (one backward pass per KD term + one for the detection loss), so the interval sets the cost
#: at any scale: ~2 / interval of the training time (+4.0 % at 50 measured on the tiny pair,
#: bench/distill_step.py --diagnostics; ~1 % at 200, plus one step per epoch)
KD_DIAGNOSTICS_INTERVAL = 200
#: PGD weight presets (names.PGD_PRESETS): the factor on the detector's default alpha (beta
#: and gamma follow alpha). paper: the released configs (COCO, R50/R101, 1333x800). small: the
#: smoke-scale setting (atss_tiny <- atss_tiny, shapes at 160 px), where the default alpha puts
#: ~20x the detection loss' gradient on the student and x1/4 was the best of x1/4, x1, x4 by
#: +1.0 AP in each of 3 seeds (search_spaces/studies/loss-weight.yaml, docs/studies/fgd-vs-pgd.md)
PGD_PRESET_ALPHA_SCALE = {"paper": 1.0, "small": 0.25}
BETA_OVER_ALPHA = 0.5  # beta = alpha / 2
GAMMA_OVER_ALPHA = 1.6  # gamma = 1.6 alpha
DELTA = 8e-4  # attention weight
XI_CLS = 0.8  # quality exponent of the classification mask
XI_REG = 0.6  # ... of the regression mask
LEVEL_WEIGHTS = (1.0, 1.25, 1.5, 1.75, 2.0)  # P3..P7
#: foreground strategy parameters the paper leaves open (docs/core.md)
BOX_GAUSS_SIGMA = 1.0 / 6.0  # TADF-style Gaussian: std = sigma * (w, h), +-3 std spans the box
CENTRE_RATIO = 0.2  # central 0.2w x 0.2h region

# ----------------------------------------------------------------------------- sweep runtime
#: seconds a trial's Ray Train worker group may wait for its resources before the trial fails
#: (``resources.start_timeout_s``; Ray's own default, 60 s, is too short for a busy cluster)
WORKER_START_TIMEOUT_S = 1800.0
#: seconds the trial watchdog waits, after Ray Train's controller reported a terminal error (or
#: after the start-up timeout passed with no worker group), for ``trainer.fit()`` to return
WATCHDOG_GRACE_S = 30.0
#: a trial with one worker trains inside its own Tune trial process (``resources.inline_single_worker``)
#: instead of starting a Ray Train controller and a one-worker group: two processes, their
#: imports and a process group less per trial (docs/performance.md, "Trial overhead"). Same
#: training (one process, no DDP, the same seed), same reports and checkpoints.
INLINE_SINGLE_WORKER = True


def pgd_defaults(detector: str, data_kind: str = "coco") -> dict:
    """alpha, tau, k of PGD for a student detector on a data kind."""
    out = dict(PGD_DEFAULTS[detector])
    out.update(PGD_DATA_OVERRIDES.get((detector, data_kind), {}))
    return out


# ----------------------------------------------------------------------------- KD baselines
# Conventions of the authors' code that we change on purpose are named knobs (docs/baselines.md
# lists each with the line of the code it departs from); a knob's default is stated here.
# FGD: boxes mapped with the padded batch input shape (departure: the code uses img_shape);
# cells floor(x1)..ceil(x2) inclusive and the unclipped box area (the code's).
_FGD_CONVENTIONS = dict(padded_shape=True, inclusive_cells=True, clipped_area=False)
# FGD's released configs: GFL / RetinaNet (anchor-based heads) and FCOS (anchor-free heads).
_FGD_ANCHOR_BASED = dict(temp=0.5, alpha=1e-3, beta=5e-4, gamma=5e-4, lambda_=5e-6, **_FGD_CONVENTIONS)
_FGD_ANCHOR_FREE = dict(temp=0.8, alpha=1.6e-3, beta=8e-4, gamma=8e-4, lambda_=8e-6, **_FGD_CONVENTIONS)
# FRS's released configs: GFL (used for the ATSS-style single-anchor heads too) and FCOS; the
# cls BCE on probabilities with torch's log clamp, as the code (bce_from_logits: the exact BCE).
_FRS_GFL = dict(w_feat=0.1, w_cls=0.05, ramp_iters=500, bce_from_logits=False)
_FRS_FCOS = dict(w_feat=0.01, w_cls=0.05, ramp_iters=500, bce_from_logits=False)
# DeFeat's released config (Faster R-CNN FPN neck: hint_neck_w 3, hint_neck_back_w 12).
_DEFEAT = dict(w_fg=3.0, w_bg=12.0, finest_scale=56.0)
# FGFI code: imitation weight 0.01 (--ilw), psi 0.5, no imitation for the first 400 iterations
# (--ws), the +1-pixel IoU; 0 instead of the code's 0/0 NaN for a batch without GT (departure).
_FGFI = dict(weight=0.01, iou_ratio=0.5, warm_iters=400, legacy_iou=True, zero_without_gt=True)
# FKD code: 7e-5*6, 4e-3*6, t = 0.1; the feature term weighted by both attention masks.
_FKD = dict(temp=0.1, w_feat=4.2e-4, w_channel=0.024, w_spatial=0.024, w_relation=4.2e-4, channel_mask=True)
_LD = dict(weight=0.25, temperature=10.0)  # mmdet's LD configs (KnowledgeDistillationKLDivLoss)
# CrossKD's released R101 -> R50 configs (configs/crosskd/*, configs/crosskd+pkd/*): reused head
# layer, KD-QFL (beta 1) weight, box-KD weight, ATSS's centerness KD, PKD's weight (pkd: on/off).
_CROSSKD_COMMON = dict(beta=1.0, pkd=False, pre_activation=False)
_CROSSKD_GFL = dict(reused_head_idx=3, w_cls=1.0, w_reg=4.0, kl_temp=1.0, w_pkd=6.0, **_CROSSKD_COMMON)
_CROSSKD_ATSS = dict(reused_head_idx=3, w_cls=1.0, w_reg=1.0, w_center=1.0, w_pkd=1.0, **_CROSSKD_COMMON)
_CROSSKD_FCOS = dict(reused_head_idx=2, w_cls=0.4, w_reg=0.75, w_pkd=2.0, **_CROSSKD_COMMON)
_ALL = ("atss", "fcos", "gfl", "ddod", "autoassign")

#: method -> detector -> default knobs; a detector absent from a method's table is one the
#: method does not apply to (FGFI: anchor-based ATSS and DDOD; LD: GFL; CrossKD: the heads its
#: code supports among ours, GFL, ATSS and FCOS). A key absent from a detector's entry does not
#: apply to that detector (CrossKD's recipes differ per head). The union of a method's keys is
#: that method's config keys (``distill.<key>``).
BASELINE_DEFAULTS: dict[str, dict[str, dict]] = {
    "fgd": {"atss": _FGD_ANCHOR_BASED, "ddod": _FGD_ANCHOR_BASED, "gfl": _FGD_ANCHOR_BASED,
            "fcos": _FGD_ANCHOR_FREE, "autoassign": _FGD_ANCHOR_FREE},
    "defeat": {d: _DEFEAT for d in _ALL},
    "frs": {"atss": _FRS_GFL, "ddod": _FRS_GFL, "gfl": _FRS_GFL, "fcos": _FRS_FCOS, "autoassign": _FRS_FCOS},
    "fgfi": {"atss": _FGFI, "ddod": _FGFI},
    "fkd": {d: _FKD for d in _ALL},
    "ld": {"gfl": _LD},
    "crosskd": {"gfl": _CROSSKD_GFL, "atss": _CROSSKD_ATSS, "fcos": _CROSSKD_FCOS},
}
#: value rules of the baseline knobs (booleans and integers by their default's type; every
#: other number: finite and >= 0)
POSITIVE_KNOBS = frozenset({"temp", "temperature", "finest_scale"})  # > 0
RATIO_KNOBS = frozenset({"iou_ratio"})  # (0, 1]
AT_LEAST_ONE_KNOBS = frozenset({"kl_temp"})  # >= 1 (mmdet's KnowledgeDistillationKLDivLoss asserts T >= 1)


def baseline_knobs(method: str) -> dict:
    """``{key: a default value}`` of a KD baseline's knobs over all its detectors (the value
    only gives the key's type)."""
    out: dict = {}
    for table in BASELINE_DEFAULTS[method].values():
        for k, v in table.items():
            out.setdefault(k, v)
    return out


# ----------------------------------------------------------------------------- schedules
#: the 1x recipe's learning-rate steps, as fractions of the epochs (8 and 11 of 12)
LR_STEP_FRACTIONS = (8 / 12, 11 / 12)


def default_lr_steps(epochs: int) -> list[int]:
    """Epochs where the lr drops under the 1x recipe scaled to ``epochs``: ``floor(f * epochs)``
    for f in 2/3 and 11/12, dropping zeros and repeats (12 -> [8, 11], 6 -> [4, 5], 1 -> [])."""
    out: list[int] = []
    for f in LR_STEP_FRACTIONS:
        s = int(f * epochs + 1e-9)
        if s >= 1 and s not in out:
            out.append(s)
    return out
