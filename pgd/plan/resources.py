"""How many trials may run at once without nested resources deadlocking."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pgd.config.space import ResourcesSpec
from pgd.errors import ConfigError


@dataclass
class Concurrency:
    per_trial_cpus: float
    per_trial_gpus: float
    cluster_cpus: float | None
    cluster_gpus: float | None
    max_concurrent: int | None
    reason: str


def plan_concurrency(res: ResourcesSpec, cluster_cpus: float | None, cluster_gpus: float | None) -> Concurrency:
    """Each running trial holds its driver CPU while its trainer waits for worker resources,
    so every admitted trial must be able to get its whole bundle:
    ``min(floor(CPUs / trial CPUs), floor(GPUs / trial GPUs))``. Raises when not even one
    fits, or when ``max_concurrent_trials`` asks for more than fit."""
    cpus, gpus = res.trial_cpus(), res.trial_gpus()
    if cluster_cpus is None:
        return Concurrency(cpus, gpus, None, None, res.max_concurrent_trials,
                           "cluster size unknown until Ray starts")
    fit = math.floor((cluster_cpus + 1e-9) / cpus) if cpus > 0 else 10**6
    why = f"{cluster_cpus:g} CPUs / {cpus:g} per trial"
    if gpus > 0:
        g = cluster_gpus or 0
        fit_g = math.floor((g + 1e-9) / gpus)
        if fit_g < fit:
            fit, why = fit_g, f"{g:g} GPUs / {gpus:g} per trial"
    if fit < 1:
        raise ConfigError(
            f"one trial needs {cpus:g} CPUs ({res.trial_driver_cpus:g} driver + {res.workers_per_trial} "
            f"workers x {res.cpus_per_worker:g}) and {gpus:g} GPUs, but the cluster has "
            f"{cluster_cpus:g} CPUs and {cluster_gpus or 0:g} GPUs; lower resources.* or use a bigger cluster"
        )
    if res.max_concurrent_trials is not None and res.max_concurrent_trials > fit:
        raise ConfigError(
            f"resources.max_concurrent_trials={res.max_concurrent_trials} but only {fit} trials fit at "
            f"once ({why}); trials beyond that would hold driver CPUs while their workers wait "
            "(deadlock). Lower it or leave it null"
        )
    n = res.max_concurrent_trials or fit
    return Concurrency(cpus, gpus, cluster_cpus, cluster_gpus, n, why)
