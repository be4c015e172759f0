"""The driver's Ray runtime env inside ``ray job submit``: never re-declare a variable the
job's own runtime env sets (Ray refuses to merge the two, even with equal values)."""

from __future__ import annotations

import json

from ray.runtime_env.runtime_env import _merge_runtime_env

from pgd.sweep.driver import JOB_CONFIG_ENV, driver_runtime_env, in_ray_job

WANTED = {"PGD_HOME": "/shared/pgd", "PYTHONUNBUFFERED": "1"}


def job_env(env_vars: dict | None, **extra) -> dict:
    runtime_env = {"working_dir": "gcs://_ray_pkg_x.zip", **extra}
    if env_vars is not None:
        runtime_env["env_vars"] = env_vars
    return {JOB_CONFIG_ENV: json.dumps({"runtime_env": runtime_env, "metadata": {}})}


def test_local_driver_declares_everything():
    assert driver_runtime_env(WANTED, {}) == {"env_vars": WANTED}
    assert not in_ray_job({})


def test_readme_job_command_both_variables_in_the_job_env():
    job = {"PGD_HOME": "/shared/pgd", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    env = driver_runtime_env(WANTED, job_env(job))
    assert env == {"env_vars": {"PYTHONUNBUFFERED": "1"}}
    # and Ray's own merge accepts it (what failed before: PGD_HOME named twice)
    assert _merge_runtime_env({"env_vars": job}, env) == {"env_vars": {**job, "PYTHONUNBUFFERED": "1"}}
    assert _merge_runtime_env({"env_vars": job}, {"env_vars": WANTED}) is None
    assert in_ray_job(job_env(job))


def test_only_tracking_uri_or_only_home_in_the_job_env():
    only_uri = driver_runtime_env(WANTED, job_env({"MLFLOW_TRACKING_URI": "http://m:5000"}))
    assert only_uri == {"env_vars": WANTED}
    only_home = driver_runtime_env(WANTED, job_env({"PGD_HOME": "/shared/pgd", "PYTHONUNBUFFERED": "1"}))
    assert only_home == {}
    assert _merge_runtime_env(json.loads(job_env({"PGD_HOME": "/x"})[JOB_CONFIG_ENV])["runtime_env"],
                              driver_runtime_env(WANTED, job_env({"PGD_HOME": "/x"}))) is not None


def test_job_without_env_vars_and_unreadable_job_config():
    assert driver_runtime_env(WANTED, job_env(None)) == {"env_vars": WANTED}
    assert driver_runtime_env(WANTED, {JOB_CONFIG_ENV: "{not json"}) == {"env_vars": WANTED}


def test_resuming_against_another_tracking_store_is_refused_before_ray_starts(tmp_path, monkeypatch):
    """Tune restores a sweep's MLflow callbacks with the store they were made with: resuming
    with another MLFLOW_TRACKING_URI would split the record, so the driver refuses, naming both
    stores and the fix, before it starts Ray (and leaves the sweep's plan as it was)."""
    import textwrap

    import pytest
    import yaml

    import pgd.sweep.driver as D
    from pgd.errors import ConfigError
    from pgd.plan import build_plan

    monkeypatch.setenv("PGD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = tmp_path / "res.yaml"
    space.write_text(textwrap.dedent("""
        name: res
        base:
          model: atss_tiny
          data: {kind: shapes, shapes: {train: 4, val: 2, size: 64, seed: 0}}
          schedule: {epochs: 1, batch_size: 2, img_scale: [64, 64], lr_steps: [1]}
        grid: {method: [student]}
        resources: {workers_per_trial: 1, cpus_per_worker: 1, trial_driver_cpus: 0.125}
    """))
    old = f"sqlite:///{tmp_path / 'old.db'}"
    plan = build_plan(str(space), tracking_uri=old)
    plan.write()
    (tmp_path / "home" / "sweeps" / plan.sweep_id / "tune").mkdir(parents=True)  # a started sweep
    monkeypatch.setattr(D, "init_ray", lambda *a, **k: pytest.fail("Ray started"))
    new = f"sqlite:///{tmp_path / 'new.db'}"
    with pytest.raises(ConfigError) as e:
        D.run_sweep(str(space), tracking_uri=new)
    msg = str(e.value)
    assert old in msg and new in msg and f"MLFLOW_TRACKING_URI={old}" in msg and "--fresh" in msg
    saved = yaml.safe_load((tmp_path / "home" / "sweeps" / plan.sweep_id / "plan.yaml").read_text())
    assert saved["tracking_uri"] == old
