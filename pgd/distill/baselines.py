"""The KD baselines of the PGD paper's Table 1 (FGD, DeFeat, FRS, FGFI, FKD, CrossKD; LD is
mmdet's own detector), one module each in :mod:`pgd.distill.methods`.

:func:`build_baseline` builds one from plain model dicts and explicit knob values, for the
tests and the benchmarks; a run builds its method from the typed config
(:func:`pgd.distill.methods.build_method`). The math is :mod:`pgd.core.baselines` and
:mod:`pgd.core.crosskd`; docs/baselines.md has the formulas, where each number comes from and
the deviations from the authors' code; the per-detector defaults are
:data:`pgd.config.defaults.BASELINE_DEFAULTS`.
"""

from __future__ import annotations

from pgd.config import defaults as D
from pgd.distill.methods import METHODS, KDMethod, MethodContext, method_class
from pgd.errors import unknown_name

#: method -> detector -> default knobs (the detectors a method applies to), from the config layer
BASELINE_DEFAULTS = D.BASELINE_DEFAULTS


def build_baseline(method: str, knobs: dict, student_cfg: dict, teacher_cfg: dict, detector: str) -> KDMethod:
    """The module of a KD baseline for ``detector`` with the given knob values (every knob of
    the method for that detector, e.g. ``BASELINE_DEFAULTS[method][detector]``)."""
    if method not in D.BASELINE_DEFAULTS:
        raise unknown_name("KD baseline", method, [m for m in METHODS if m in D.BASELINE_DEFAULTS])
    cls = method_class(method)
    ctx = MethodContext(detector, student_cfg, teacher_cfg)
    if cls.external:
        return cls(ctx)  # raises: LD is not a distiller module
    return cls(ctx, **{k: knobs[k] for k in cls.knob_names(detector)})
