"""KD diagnostics (issue 12): how strong each distillation term's signal is, per epoch.

Every ``distill.diagnostics_interval`` training iterations and on the first iteration of every
epoch (interval 0 = off; default :data:`pgd.config.defaults.KD_DIAGNOSTICS_INTERVAL`)
:class:`KDDiagnostics` measures, on the
student detector's own parameters ``theta`` (backbone, neck, head: not the distiller's align /
adapt convs or FGD's GcBlocks, which the detection loss never reaches):

- ``kd/gnorm_det``: ``||d L_det / d theta||_2``, ``L_det`` the sum of the student's own loss
  entries (``loss_cls``, ``loss_bbox``, ... summed over levels);
- per KD term ``t`` (each ``loss_<method>_<term>`` entry): ``kd/gnorm_<t>`` =
  ``||d t / d theta||_2`` and ``kd/ratio_<t>`` = ``kd/gnorm_<t> / kd/gnorm_det``;
- ``kd/ratio_kd``: the same ratio for the sum of all KD terms (the norm of the summed
  gradients, so no extra backward pass);
- per FPN level ``l`` (P3 = ``p3``): ``kd/fg_frac_p<l>`` and ``kd/bg_frac_p<l>``, the fraction
  of the level's feature positions (over the batch's images) with a non-zero foreground /
  background weight in the method's masks (``KDMethod.fg_bg_masks``; PGD: the cls foreground
  mask and the background mask of the step; FGD: its fg / bg masks; DeFeat: its level mask and
  its complement; methods without a foreground / background split (FRS, FGFI, FKD, CrossKD)
  report no fractions).

Gradients come from ``torch.autograd.grad(..., retain_graph=True)`` at those iterations only
(``allow_unused``: a parameter a term does not reach counts 0), so they do not touch
``.grad`` and the optimizer step is unchanged; the cost is one backward pass per KD term plus
one for the detection loss, every ``interval`` iterations. The epoch's value of each metric is
the mean over its measured iterations; :class:`KDDiagnosticsHook` moves it into the message
hub after every train epoch, and the Ray report hook adds it to the epoch's report (the sweep
driver logs it to MLflow as ``kd.<name>``, step = epoch). Under DDP each rank measures its own
batch; rank 0's values are reported. LD (mmdet's own distilling detector) is not covered.
"""

from __future__ import annotations

import math

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from pgd.config.names import DIAGNOSTIC_PREFIX

#: message-hub key of the last train epoch's diagnostics
DIAGNOSTICS_INFO = "kd_diagnostics"
DET = "det"  # name of the detection loss in the metrics


def _total(value) -> torch.Tensor | None:
    """A loss entry (a tensor or a list over levels) as one scalar, None if not a tensor."""
    if isinstance(value, torch.Tensor):
        return value.sum()
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return sum(v.sum() for v in value)
    return None


def grad_vector(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """``d loss / d params`` flattened into one vector (zeros where a parameter is unused)."""
    if not loss.requires_grad:
        return torch.zeros(sum(p.numel() for p in params), device=params[0].device)
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                      for g, p in zip(grads, params)])


def gradient_ratios(det_losses: dict, kd_losses: dict, params: list[torch.Tensor]) -> dict[str, float]:
    """``gnorm_det``, ``gnorm_<term>``, ``ratio_<term>`` and ``ratio_kd`` (module docstring)."""
    det = [t for t in (_total(v) for k, v in det_losses.items() if "loss" in k) if t is not None]
    g_det = grad_vector(sum(det), params)
    n_det = float(g_det.norm())
    out = {f"gnorm_{DET}": n_det}
    g_kd = torch.zeros_like(g_det)
    for name, value in kd_losses.items():
        t = _total(value)
        if t is None:
            continue
        g = grad_vector(t, params)
        g_kd += g
        n = float(g.norm())
        out[f"gnorm_{name}"] = n
        out[f"ratio_{name}"] = n / n_det if n_det > 0 else math.nan
    out["ratio_kd"] = float(g_kd.norm()) / n_det if n_det > 0 else math.nan
    return out


def mask_fractions(fg: list[torch.Tensor], bg: list[torch.Tensor]) -> dict[str, float]:
    """Per level (``p3`` = the first): the fraction of positions with fg / bg weight > 0."""
    out = {}
    for lvl, (f, b) in enumerate(zip(fg, bg)):
        out[f"fg_frac_p{lvl + 3}"] = float((f > 0).float().mean())
        out[f"bg_frac_p{lvl + 3}"] = float((b > 0).float().mean())
    return out


class KDDiagnostics:
    """Measures every ``interval`` iterations and keeps the running means of one epoch."""

    def __init__(self, interval: int):
        self.interval = int(interval)
        self.epoch_start = False  # set before each train epoch: its first iteration is measured
        self._forwards = 0
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def _iteration(self) -> int:
        from mmengine.logging import MessageHub

        it = MessageHub.get_current_instance().get_info("iter")
        return self._forwards if it is None else int(it)

    def due(self) -> bool:
        """Whether this training iteration is measured: every ``interval``-th iteration and the
        first of every epoch, so each epoch has a value whatever its length (counts the call
        outside a Runner)."""
        it = self._iteration()
        self._forwards += 1
        first, self.epoch_start = self.epoch_start, False
        return self.interval > 0 and (first or it % self.interval == 0)

    def step(self, distiller, det_losses: dict, kd_losses: dict, records, samples) -> None:
        """Called by ``PGDDistiller.loss`` in training with the student's and the KD losses
        (named ``loss_<method>_<term>``) and the step's records; the fg / bg fractions come
        from the method's own :meth:`~pgd.distill.methods.KDMethod.fg_bg_masks`."""
        if not self.due():
            return
        params = [p for p in distiller.student.parameters() if p.requires_grad]
        values = gradient_ratios(det_losses, kd_losses, params)
        with torch.no_grad():
            fb = distiller.kd.fg_bg_masks(records, samples)
            if fb is not None:
                values.update(mask_fractions(*fb))
        for k, v in values.items():
            if math.isfinite(v):
                self._sums[k] = self._sums.get(k, 0.0) + v
                self._counts[k] = self._counts.get(k, 0) + 1

    def pop_epoch(self) -> dict[str, float]:
        """The epoch's means, ``kd/<name>`` keys; resets for the next epoch."""
        out = {f"{DIAGNOSTIC_PREFIX}{k}": s / self._counts[k] for k, s in self._sums.items()}
        self._sums, self._counts = {}, {}
        return out


def make_diagnostics(distill) -> KDDiagnostics | None:
    """The diagnostics of a typed distill section, None when its interval is 0."""
    interval = int(getattr(distill, "diagnostics_interval", 0) or 0)
    return KDDiagnostics(interval) if interval > 0 else None


@HOOKS.register_module()
class KDDiagnosticsHook(Hook):
    """After every train epoch: the distiller's diagnostics means -> message hub
    (:data:`DIAGNOSTICS_INFO`), logged once per epoch; nothing for a model without them."""

    priority = "LOW"

    def before_train_epoch(self, runner):
        diag = getattr(getattr(runner.model, "module", runner.model), "diagnostics", None)
        if diag is not None:
            diag.epoch_start = True

    def after_train_epoch(self, runner):
        model = getattr(runner.model, "module", runner.model)
        diag = getattr(model, "diagnostics", None)
        if diag is None:
            return
        values = diag.pop_epoch()
        runner.message_hub.update_info(DIAGNOSTICS_INFO, values)
        if values:
            runner.logger.info("[kd diagnostics] " + " ".join(f"{k} {v:.4g}" for k, v in sorted(values.items())))
