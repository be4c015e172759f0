"""Health checks of a distillation run during training (issue 7 section 2; docs/health.md).

- **Student inheritance** (``distill.inherit_teacher_neck_head``): :func:`inherit_neck_head`
  copies the teacher's neck / head tensors into the student and returns an
  :class:`InheritReport` (how many copied, which skipped). For a same-architecture pair
  (:func:`same_architecture`) a skipped tensor is an error naming the tensors; for a
  mismatched pair (a narrower student) the count is a warning in the log. The report reaches
  MLflow as tags of the trial's run: :class:`MaskHealthHook` puts :meth:`InheritReport.result`
  into every result the trial reports to Ray Tune, and the driver's MLflow callback turns
  those keys into tags (``tracking.health_tags``).
- **Mask health** (PGD): :class:`MaskHealth` accumulates, over an epoch's iterations and
  without a host sync, the per-box support of the foreground masks the distiller used
  (:func:`pgd.core.mask_stats.box_mask_support`); :class:`MaskHealthHook` reads it once at
  the end of the epoch (one all-reduce over the ranks), logs it, writes it to
  ``metrics.jsonl`` and hands it to the Ray report (``mask/<branch>_zero_box_frac``, ...),
  which the driver logs as MLflow metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from pgd.config.names import INHERIT_RESULT_TAGS
from pgd.config.names import MASK_HEALTH_PREFIX as MASK_PREFIX
from pgd.core.mask_stats import batch_box_mask_support, box_mask_support
from pgd.errors import ConfigError

#: the inherited parts of the student (state-dict prefixes)
INHERITED_PREFIXES = ("neck.", "bbox_head.")
#: model-config keys that change how tensors are initialised or trained, never their names or
#: shapes: two models that differ only in these have the same architecture
NON_ARCHITECTURE_KEYS = frozenset({"init_cfg", "pretrained", "norm_eval", "frozen_stages", "requires_grad",
                                   "data_preprocessor", "train_cfg", "test_cfg"})


# ----------------------------------------------------------------------------- inheritance
def _architecture(cfg):
    if isinstance(cfg, dict):
        return {k: _architecture(v) for k, v in cfg.items() if k not in NON_ARCHITECTURE_KEYS}
    if isinstance(cfg, (list, tuple)):
        return [_architecture(v) for v in cfg]
    return cfg


def same_architecture(student_cfg: dict, teacher_cfg: dict) -> bool:
    """The two model dicts describe the same network (same detector, backbone, neck and head
    configuration) up to :data:`NON_ARCHITECTURE_KEYS` (weights source, frozen stages / BN)."""
    return _architecture(dict(student_cfg)) == _architecture(dict(teacher_cfg))


@dataclass
class InheritReport:
    """What ``inherit_teacher_neck_head`` did."""

    copied: int
    skipped: list[str] = field(default_factory=list)  # "name: why"
    same_architecture: bool = True

    def result(self) -> dict:
        """The keys a trial reports (-> MLflow tags, ``names.INHERIT_RESULT_TAGS``)."""
        values = (self.copied, len(self.skipped), int(self.same_architecture))
        return {key: v for (key, _), v in zip(INHERIT_RESULT_TAGS, values)}


def inherit_neck_head(student: torch.nn.Module, teacher: torch.nn.Module, *, same_arch: bool,
                      logger=None, limit: int = 8) -> InheritReport:
    """Copy the teacher's neck and head tensors into the student where names and shapes match.

    Every student tensor under :data:`INHERITED_PREFIXES` is either copied or listed as
    skipped (absent from the teacher, or another shape). ``same_arch``: the pair has the same
    architecture, so nothing may be skipped (a skip means the two models are not what the
    config says): :class:`ConfigError` naming the tensors. Otherwise skips are logged as a
    warning with their count."""
    t_state = teacher.state_dict()
    copied, skipped = 0, []
    with torch.no_grad():
        for name, tensor in student.state_dict().items():
            if not name.startswith(INHERITED_PREFIXES):
                continue
            src = t_state.get(name)
            if src is None:
                skipped.append(f"{name}: not in the teacher")
            elif src.shape != tensor.shape:
                skipped.append(f"{name}: student {tuple(tensor.shape)} vs teacher {tuple(src.shape)}")
            else:
                tensor.copy_(src)
                copied += 1
    report = InheritReport(copied=copied, skipped=skipped, same_architecture=same_arch)
    more = f" (+{len(skipped) - limit} more)" if len(skipped) > limit else ""
    names = ", ".join(skipped[:limit]) + more
    if skipped and same_arch:
        raise ConfigError(
            f"inherit_teacher_neck_head: student and teacher have the same architecture but "
            f"{len(skipped)} neck/head tensors could not be copied: {names} (the teacher model is not "
            f"the configured one; check distill.teacher / teacher_config, or set "
            f"distill.inherit_teacher_neck_head: false)"
        )
    if logger is not None:
        if skipped:
            logger.warning(f"inherit_teacher_neck_head: student inherited {copied} neck/head tensors from "
                           f"the teacher, {len(skipped)} skipped (architectures differ): {names}")
        else:
            logger.info(f"inherit_teacher_neck_head: student inherited all {copied} neck/head tensors "
                        f"from the teacher")
    return report


# ----------------------------------------------------------------------------- mask health
class MaskHealth:
    """Per-epoch accumulator of the per-box support of the foreground masks.

    Per mask (``cls``: PGD's normalised cls mask, used by the cls and neck branches; ``reg``:
    the reg importance) a device tensor ``[boxes, zero_boxes, positions]`` is added to at
    every training iteration (no host sync); :meth:`read` sums it over the ranks once, turns
    it into metrics and resets it."""

    def __init__(self, branches) -> None:
        self.branches = tuple(branches)  # the distilled branches that report
        self._sums: dict[str, torch.Tensor] = {}

    @staticmethod
    def mask_of(branch: str) -> str:
        return "reg" if branch == "reg" else "cls"

    @torch.no_grad()
    def observe(self, mask: str, levels: list[torch.Tensor], points: torch.Tensor, gt_boxes: list[torch.Tensor]):
        """Add one batch: ``levels`` per FPN level ``[N, H, W]`` (the order of ``points``
        ``[A, 2]``, levels concatenated), ``gt_boxes`` per image ``[G, 4]``."""
        flat = torch.cat([m.flatten(1) for m in levels], dim=1)  # [N, A]
        counts = [box_mask_support(flat[n], points, gt_boxes[n].to(flat.device).float())
                  for n in range(flat.shape[0])]
        n_b = torch.cat(counts) if counts else torch.zeros(0, dtype=torch.long, device=flat.device)
        total = torch.full((), n_b.numel(), dtype=torch.long, device=n_b.device)  # a fill, no host copy
        self._add(mask, torch.stack([total, (n_b == 0).sum(), n_b.sum()]))

    def _add(self, mask: str, counts: torch.Tensor) -> None:
        add = counts.double()
        prev = self._sums.get(mask)
        self._sums[mask] = add if prev is None else prev + add

    @torch.no_grad()
    def observe_batch(self, mask: str, weights: torch.Tensor, inside: torch.Tensor, valid: torch.Tensor) -> None:
        """:meth:`observe` from the batched masks' own inside test: ``weights`` ``[N, A]``,
        ``inside`` ``[N, A, G]`` and ``valid`` ``[N, G]`` (GT padded per image); the same sums."""
        n_b = batch_box_mask_support(weights, inside)
        self._add(mask, torch.stack([valid.sum(), ((n_b == 0) & valid).sum(), n_b.sum()]))

    def observe_pgd(self, masks, priors, gt_boxes: list[torch.Tensor]) -> None:
        """One batch of PGD masks (:class:`pgd.core.pgd_method.Masks`) and the adapter's priors;
        from the masks' inside test when they carry it (:func:`pgd.core.pgd_method.batch_pgd_masks`)."""
        needed = sorted({self.mask_of(b) for b in self.branches})
        batched = masks.flat is not None and masks.inside is not None
        for mask in needed:
            key, levels = ("fg_cls", masks.fg_cls) if mask == "cls" else ("reg", masks.reg)
            if batched:
                self.observe_batch(mask, masks.flat[key], masks.inside, masks.gt_valid)
            else:
                self.observe(mask, levels, priors.centres, gt_boxes)

    def read(self, device: torch.device | None = None) -> dict[str, float]:
        """The epoch's metrics (summed over ranks), then reset. Empty when nothing was seen.
        ``device``: where a rank that saw no batch puts its zeros (the model's device, so that
        every rank's tensor suits the collective backend)."""
        from mmengine.dist import all_reduce, get_world_size

        masks = sorted({self.mask_of(b) for b in self.branches})
        device = next(iter(self._sums.values())).device if self._sums else (device or torch.device("cpu"))
        sums = torch.stack([self._sums.get(m, torch.zeros(3, dtype=torch.float64, device=device)) for m in masks])
        if get_world_size() > 1:  # every rank reaches the epoch end: one collective per epoch
            all_reduce(sums, op="sum")
        self._sums = {}
        table = dict(zip(masks, sums.cpu().tolist()))
        out: dict[str, float] = {}
        for branch in self.branches:
            boxes, zero, positions = table[self.mask_of(branch)]
            if boxes <= 0:
                continue
            out[f"{MASK_PREFIX}{branch}_zero_box_frac"] = zero / boxes
            out[f"{MASK_PREFIX}{branch}_zero_boxes"] = zero
            out[f"{MASK_PREFIX}{branch}_pos_per_box"] = positions / boxes
            out[f"{MASK_PREFIX}boxes"] = boxes
        return out


def distiller_of(runner):
    """The run's ``PGDDistiller`` (unwrapped from DDP), or None for a plain / LD run."""
    from mmengine.model import is_model_wrapper

    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    return model if hasattr(model, "inherit_report") else None


@HOOKS.register_module()
class MaskHealthHook(Hook):
    """At the end of every training epoch: the distiller's mask health (one read, one
    all-reduce), logged (a warning when a box got no weight), appended to ``metrics.jsonl``
    (event ``mask_health``) and kept in :attr:`last` for the Ray report together with the
    inheritance report (:meth:`report`)."""

    priority = "NORMAL"  # before EpochSummaryHook (LOW) and the reporting hooks (LOWEST)

    def __init__(self, metrics_file: str = "metrics.jsonl"):
        self.metrics_file = metrics_file
        self.last: dict[str, float] = {}

    def after_train_epoch(self, runner):
        from mmengine.dist import is_main_process

        model = distiller_of(runner)
        health = getattr(model, "mask_health", None)
        if health is None:
            return
        self.last = health.read(device=next(model.parameters()).device)
        if not self.last:
            return
        epoch = runner.epoch + 1
        parts = " ".join(f"{k[len(MASK_PREFIX):]} {v:.3g}" for k, v in self.last.items())
        runner.logger.info(f"[mask health epoch {epoch}] {parts}")
        zero = {k: v for k, v in self.last.items() if k.endswith("_zero_boxes") and v > 0}
        if zero:
            runner.logger.warning(
                f"[mask health epoch {epoch}] GT boxes with no foreground weight (not distilled): "
                + ", ".join(f"{k[len(MASK_PREFIX):-len('_zero_boxes')]} {int(v)} of {int(self.last[MASK_PREFIX + 'boxes'])}"
                            for k, v in zero.items())
            )
        if is_main_process():
            with (Path(runner.work_dir) / self.metrics_file).open("a") as f:
                f.write(json.dumps(dict(event="mask_health", epoch=epoch, **self.last)) + "\n")

    @staticmethod
    def report(runner) -> dict:
        """What the trial reports with an evaluation: the last epoch's mask health and the
        inheritance counts (empty for a run without a distiller)."""
        out: dict = {}
        hook = next((h for h in runner.hooks if isinstance(h, MaskHealthHook)), None)
        if hook is not None:
            out.update(hook.last)
        model = distiller_of(runner)
        inherit = getattr(model, "inherit_report", None)
        if inherit is not None:
            out.update(inherit.result())
        return out
