"""Per-detector defaults of the PGD distillation (spec section 5, the released configs)."""

from __future__ import annotations

# detector -> (alpha, tau, K)
PGD_DEFAULTS: dict[str, dict] = {
    "atss": dict(alpha=0.08, tau=0.8, k=9),
    "ddod": dict(alpha=0.08, tau=0.8, k=30),
    "gfl": dict(alpha=0.04, tau=0.8, k=30),
    "fcos": dict(alpha=0.04, tau=0.8, k=30),
    "autoassign": dict(alpha=0.08, tau=0.4, k=30),
}
# (detector, data kind) overrides
PGD_DATA_OVERRIDES: dict[tuple[str, str], dict] = {("ddod", "crowdhuman"): dict(alpha=0.001)}

BETA_OVER_ALPHA = 0.5  # beta = alpha / 2
GAMMA_OVER_ALPHA = 1.6  # gamma = 1.6 alpha
DELTA = 8e-4
XI_CLS = 0.8
XI_REG = 0.6
LEVEL_WEIGHTS = (1.0, 1.25, 1.5, 1.75, 2.0)  # P3..P7


def pgd_defaults(detector: str, data_kind: str = "coco") -> dict:
    out = dict(PGD_DEFAULTS[detector])
    out.update(PGD_DATA_OVERRIDES.get((detector, data_kind), {}))
    return out
