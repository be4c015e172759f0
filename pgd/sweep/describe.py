"""How a trial looks in MLflow: its name, flattened params, resolved config and tags."""

from __future__ import annotations

from dataclasses import dataclass

from pgd.configs import from_dict, to_dict


@dataclass
class TrialDescriber:
    """Picklable (Tune pickles callbacks): trial config -> (name, params, resolved, tags)."""

    space: dict
    teacher_checkpoints: dict

    def __call__(self, config: dict):
        from pgd.distill.config import distill_config, resolve_defaults
        from pgd.sweep.space import (
            SpaceSpec,
            trial_method,
            trial_name,
            trial_run_config_with_teacher,
        )
        from pgd.sweep.tracking import flatten
        from pgd.training.runconfig import run_config

        spec = from_dict(SpaceSpec, self.space, "space")
        overrides = dict(config.get("trial", config))
        role = overrides.pop("_role", "trial")
        if role == "teacher":
            run = overrides.pop("_run")
            name = f"teacher {run['model']}"
            tags = {"pgd.method": "teacher", "pgd.teacher_hash": overrides.get("_hash", "")}
            overrides.pop("_teacher_dir", None)
            overrides.pop("_resources", None)
        else:
            run = trial_run_config_with_teacher(spec, overrides, self.teacher_checkpoints)
            name = trial_name(overrides)
            tags = {"pgd.method": trial_method(overrides, spec.base)}
        resolved = to_dict(run_config(run))
        if resolved.get("distill"):
            det = resolved["model"].rsplit("_", 1)[0]
            resolved["distill"] = resolve_defaults(distill_config(resolved["distill"]), det, resolved["data"]["kind"])
        tags.update({"pgd.model": resolved["model"], "pgd.seed": resolved["seed"]})
        params = {k: v for k, v in flatten(resolved).items() if k not in ("work_dir",)}
        return name, params, resolved, tags
