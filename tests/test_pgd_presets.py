"""PGD weight presets (issue 12): ``small`` scales the detector's default alpha (beta, gamma
follow); ``paper`` (the default) keeps the released configs' weights; an explicit alpha wins."""

from __future__ import annotations

import pytest

from pgd.config import defaults as D
from pgd.config.run import parse_run, resolve_run
from pgd.errors import ConfigError


def _distill(model="atss_tiny", **d):
    run = {"model": model, "distill": {"teacher": model, "allow_random_teacher": True, **d}}
    return resolve_run(parse_run(run)).distill


def test_paper_is_the_default_and_keeps_the_released_weights():
    d = _distill()
    assert d.preset == "paper" and d.alpha == D.PGD_DEFAULTS["atss"]["alpha"] == 0.08
    assert d.beta == pytest.approx(0.04) and d.gamma == pytest.approx(0.128)


@pytest.mark.parametrize("model, alpha", [("atss_tiny", 0.02), ("gfl_tiny", 0.01)])
def test_small_scales_the_detector_default_and_beta_gamma_follow(model, alpha):
    d = _distill(model, preset="small")
    assert d.alpha == pytest.approx(alpha)
    assert d.beta == pytest.approx(alpha / 2) and d.gamma == pytest.approx(1.6 * alpha)
    assert _distill(model, preset="small", alpha=0.3).alpha == 0.3  # an explicit alpha wins


def test_bad_preset_and_preset_on_fgd_are_config_errors():
    with pytest.raises(ConfigError, match="preset"):
        _distill(preset="tiny")
    with pytest.raises(ConfigError, match="preset"):
        _distill(method="fgd", preset="small")
