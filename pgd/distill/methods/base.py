"""One interface for every KD method: :class:`KDMethod`, its build context and the registry.

A KD method is an ``nn.Module`` registered under its name from :data:`pgd.config.names.KD_METHODS`
(``@register_method("fgd")``). ``PGDDistiller`` (the teacher/student wrapper) builds it with
:func:`build_method` from the run's typed ``distill`` section and calls, every training step::

    terms = method(records, data_samples)     # {"<term>": scalar tensor}

``records`` (:class:`pgd.distill.adapters.Records`) is everything the adapters recorded in
this step for both detectors (features per FPN level, head outputs, priors, strides, the
teacher's decoded predictions); ``data_samples`` the batch's mmdet samples (GT boxes, shapes).
The wrapper names each term ``loss_<method>_<term>`` and adds it to the detector's losses.

Constructor arguments are explicit: the :class:`MethodContext` (the detector and both model
dicts: channels, levels, heads) and the method's knobs as keyword arguments.
:meth:`KDMethod.from_config` reads those knobs from the typed, resolved config object (a
baseline: its keys of :data:`pgd.config.defaults.BASELINE_DEFAULTS`; PGD: its own). How to add
a method: docs/adding-a-kd-method.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from pgd.config import defaults as D
from pgd.config.names import KD_METHODS
from pgd.errors import ConfigError, unknown_name

#: method name -> its KDMethod class; filled by ``@register_method`` in pgd/distill/methods/*.py
METHODS: dict[str, type[KDMethod]] = {}


def register_method(name: str, *, replace: bool = False):
    """Class decorator: ``METHODS[name] = cls`` (and ``cls.name = name``). A name must be one
    of :data:`pgd.config.names.KD_METHODS` (where the config layer takes its choices); a
    name registered twice is an error unless ``replace``."""

    def deco(cls):
        if name not in KD_METHODS:
            raise ConfigError(f"KD method {name!r} is not in pgd.config.names.KD_METHODS "
                              f"({', '.join(KD_METHODS)}); add it there first")
        if name in METHODS and not replace and METHODS[name] is not cls:
            raise ConfigError(f"KD method {name!r} is already registered ({METHODS[name].__qualname__})")
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def _channels(model_cfg: dict, branch: str) -> int:
    if branch == "neck":
        return int(model_cfg["neck"]["out_channels"])
    head = model_cfg["bbox_head"]
    return int(head.get("feat_channels", head.get("in_channels")))


@dataclass(frozen=True)
class MethodContext:
    """What a method may know of the two detectors when it is built: the detector name and
    both model dicts (mmdet config dicts, not modules)."""

    detector: str
    student: dict
    teacher: dict

    def channels(self, side: str, branch: str) -> int:
        """Channels of ``branch`` (``neck``: the FPN outputs; ``cls`` / ``reg``: the head towers)."""
        return _channels(self.student if side == "student" else self.teacher, branch)

    def num_levels(self, side: str = "student") -> int:
        cfg = self.student if side == "student" else self.teacher
        return int(cfg["neck"].get("num_outs", 5))


class KDMethod(nn.Module):
    """Base of every KD method (module docstring). Subclasses set nothing but their forward,
    their trainable parts in ``__init__`` (so the optimizer sees them) and, when needed:

    - :meth:`attach`: ask the adapters to record more than the default maps (CrossKD's tower
      layer), called once both detectors are built;
    - :meth:`init_weights`: the method's own initialisation (default: Kaiming-uniform, a=1,
      zero bias, on every conv it owns);
    - :meth:`fg_bg_masks`: per-level foreground / background masks for the KD diagnostics;
    - :attr:`mask_health`: a :class:`pgd.distill.health.MaskHealth` the method feeds (PGD).
    """

    name: ClassVar[str] = ""
    #: a method MMDetection implements as its own detector (LD): built by :meth:`model_config`
    #: instead of a PGDDistiller
    external: ClassVar[bool] = False

    mask_health = None

    def __init__(self, ctx: MethodContext):
        super().__init__()
        self.detector = ctx.detector
        self.num_levels = ctx.num_levels("student")
        t_levels = ctx.num_levels("teacher")
        if t_levels != self.num_levels:
            raise ConfigError(f"student FPN has {self.num_levels} levels, teacher {t_levels}; they must match")
        self._forwards = 0

    # ------------------------------------------------------------------ building
    @classmethod
    def knob_names(cls, detector: str) -> tuple[str, ...]:
        """The ``distill`` keys this method's constructor takes for ``detector`` (a baseline:
        its keys of :data:`pgd.config.defaults.BASELINE_DEFAULTS`)."""
        table = D.BASELINE_DEFAULTS.get(cls.name)
        if table is None:
            raise NotImplementedError(f"{cls.__qualname__} has no BASELINE_DEFAULTS entry: override from_config")
        if detector not in table:
            raise ConfigError(f"KD method {cls.name!r} does not apply to detector {detector!r}; valid detectors "
                              f"for {cls.name} are: {', '.join(sorted(table))}")
        return tuple(table[detector])

    @classmethod
    def from_config(cls, distill, ctx: MethodContext) -> KDMethod:
        """The method of a typed, resolved ``distill`` section: ``cls(ctx, **knobs)``."""
        knobs = {k: getattr(distill, k, None) for k in cls.knob_names(ctx.detector)}
        missing = [k for k, v in knobs.items() if v is None]
        if missing:
            raise ConfigError(f"distill section of {cls.name!r} is not resolved ({', '.join(missing)} null); "
                              "pass it through pgd.config.run.resolve_run")
        return cls(ctx, **knobs)

    def attach(self, s_adapter, t_adapter) -> None:
        """Ask the adapters for extra records (default: nothing)."""

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming(m)

    # ------------------------------------------------------------------ the step
    def forward(self, records, data_samples) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def fg_bg_masks(self, records, data_samples):
        """``(fg, bg)`` lists over levels of ``[N, H, W]`` for the diagnostics' position
        fractions, or None when the method has no foreground / background split."""
        return None

    # ------------------------------------------------------------------ schedule helpers
    def current_iter(self) -> int:
        """The training iteration: mmengine's ``MessageHub`` ``iter`` (set by the Runner's
        ``RuntimeInfoHook`` before every train iteration, restored on resume); outside a
        Runner (no ``iter`` in the hub) the number of training forwards of this module so far
        (:meth:`count_forward`; a plain counter, not checkpointed)."""
        from mmengine.logging import MessageHub

        it = MessageHub.get_current_instance().get_info("iter")
        return self._forwards if it is None else int(it)

    def count_forward(self) -> None:
        if self.training:
            self._forwards += 1


def kaiming(conv: nn.Module) -> None:
    """The distiller's adapt-conv initialisation: Kaiming-uniform (a=1), zero bias."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def method_class(name: str) -> type[KDMethod]:
    """The registered class of a KD method name."""
    from pgd.distill import methods  # noqa: F401  (registers every method)

    if name not in METHODS:
        raise unknown_name("KD method", name, METHODS)
    return METHODS[name]


def build_method(distill, ctx: MethodContext) -> KDMethod:
    """The KD method of a typed, resolved ``distill`` section, built by its registry class."""
    return method_class(distill.method).from_config(distill, ctx)
