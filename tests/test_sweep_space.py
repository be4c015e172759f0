"""Space files: schema validation (errors name the bad value), grid expansion with conditions,
Optuna define-by-run, concurrency planning. No Ray."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from pgd.errors import ConfigError
from pgd.sweep.space import (
    expand_grid,
    load_space,
    optuna_space,
    plan_concurrency,
    trial_run_config,
)

ROOT = Path(__file__).resolve().parents[1]

BASE = """
name: t
base:
  model: atss_tiny
  schedule: {epochs: 2, lr_steps: [1]}
teacher: {model: "{detector}_tiny", checkpoint: null}
"""


def write(tmp_path, body: str) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(textwrap.dedent(BASE) + textwrap.dedent(body))
    return p


@pytest.mark.parametrize(
    "body, message",
    [
        ("grid: {method: [student, distil]}", "unknown method 'distil'"),
        ("grid: {distill.alfa: [0.1]}", "unknown distill key 'alfa'"),
        ("grid: {schedul.epochs: [1]}", "unknown sweep key 'schedul.epochs'"),
        ("grid: {method: []}", "grid.method must list at least one value"),
        ("searcher: {type: random}", "unknown searcher 'random'"),
        ("searcher: {type: optuna, sampler: cmaes}", "unknown optuna sampler 'cmaes'"),
        ("scheduler: {type: hyperband}", "unknown scheduler 'hyperband'"),
        ("metric: mAP", "unknown metric 'mAP'"),
        ("params: {distill.alpha: {type: float, low: 0.1, high: 0.01}}", "params (Optuna distributions) need searcher.type: optuna"),
        ("searcher: {type: optuna}\nparams: {distill.alpha: {type: float, low: 0.1, high: 0.01}}", "needs low < high"),
        ("searcher: {type: optuna}\nparams: {distill.alpha: {type: float, low: 0, high: 1, log: true}}", "log distribution needs low > 0"),
        ("searcher: {type: optuna}\nparams: {distill.alpha: {type: uniform, low: 0, high: 1}}", "needs type: one of float, int, categorical"),
        ("resources: {cpus_per_worker: 0}", "space.resources.cpus_per_worker=0.0 is out of range"),
        ("resources: {workerz: 2}", "unknown key(s) workerz"),
        ("resources: {max_concurrent_trials: two}", "space.resources.max_concurrent_trials must be an integer"),
        ("grid: {method: [pgd], distill.strategy: [gauss]}", "unknown foreground strategy 'gauss'"),
        ("objectives: [{metric: AP, mode: max}, {metric: latency_ms, mode: min}]\nscheduler: {type: asha}", "multi-objective"),
        ("seeds: []", "at least one seed"),
        ("grid: {seed: [0, 1]}", "repeat trials with seeds: [0, 1, ...]"),
    ],
)
def test_schema_errors_name_the_value(tmp_path, body, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        load_space(write(tmp_path, body))
    assert "space.yaml" in str(e.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_space(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_space(bad)


def test_grid_expansion_with_conditions_dedup_and_seeds(tmp_path):
    spec, _ = load_space(write(tmp_path, """
        grid:
          method: [student, pgd]
          distill.strategy: {values: [box, pgw], when: {method: [pgd]}}
          distill.k_cls: {values: [5, 30], when: {distill.strategy: [pgw]}}
        seeds: [0, 1]
    """))
    trials = expand_grid(spec)
    keys = [tuple(sorted(t.items())) for t in trials]
    assert len(keys) == len(set(keys))
    # student (x2 seeds), pgd/box (x2), pgd/pgw/k=5 (x2), pgd/pgw/k=30 (x2)
    assert len(trials) == 8
    students = [t for t in trials if t["method"] == "student"]
    assert len(students) == 2 and all(set(t) == {"method", "seed"} for t in students)
    assert {t.get("distill.k_cls") for t in trials if t.get("distill.strategy") == "box"} == {None}
    run = trial_run_config(spec, {"method": "pgd", "distill.strategy": "pgw", "distill.k_cls": 5, "seed": 1},
                           teacher_checkpoint="/t.pth")
    assert run["distill"] == {"strategy": "pgw", "k_cls": 5, "method": "pgd", "teacher": "atss_tiny",
                              "teacher_checkpoint": "/t.pth"}
    assert run["seed"] == 1 and run["model"] == "atss_tiny"
    assert trial_run_config(spec, {"method": "student", "seed": 0}, teacher_checkpoint=None)["distill"] is None


def test_detector_axis_keeps_the_backbone(tmp_path):
    spec, _ = load_space(write(tmp_path, "grid: {detector: [fcos, gfl], method: [pgd]}"))
    runs = [trial_run_config(spec, t, teacher_checkpoint="x") for t in expand_grid(spec)]
    assert [r["model"] for r in runs] == ["fcos_tiny", "gfl_tiny"]
    assert [r["distill"]["teacher"] for r in runs] == ["fcos_tiny", "gfl_tiny"]


def test_optuna_define_by_run_is_conditional(tmp_path):
    import optuna

    spec, _ = load_space(write(tmp_path, """
        searcher: {type: optuna, num_samples: 4}
        params:
          distill.strategy: {type: categorical, choices: [box, pgw]}
          distill.alpha: {type: float, low: 0.005, high: 0.2, log: true}
          distill.k_cls: {type: int, low: 1, high: 60, when: {distill.strategy: [pgw]}}
    """))
    define = optuna_space(spec)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(12):
        trial = study.ask()
        define(trial)
        seen.append(dict(trial.params))
        study.tell(trial, 0.0)
    assert all(0.005 <= p["distill.alpha"] <= 0.2 for p in seen)
    assert all(("distill.k_cls" in p) == (p["distill.strategy"] == "pgw") for p in seen)
    assert {p["distill.strategy"] for p in seen} == {"box", "pgw"}


def test_concurrency_never_deadlocks():
    from pgd.sweep.space import ResourcesSpec

    res = ResourcesSpec(workers_per_trial=2, cpus_per_worker=1, trial_driver_cpus=0.5)
    assert plan_concurrency(res, 8.0, 0.0).max_concurrent == 3  # 8 / 2.5
    with pytest.raises(ConfigError, match="one trial needs 2.5 CPUs"):
        plan_concurrency(res, 2.0, 0.0)
    with pytest.raises(ConfigError, match="only 3 trials fit"):
        plan_concurrency(ResourcesSpec(workers_per_trial=2, trial_driver_cpus=0.5, max_concurrent_trials=4), 8.0, 0.0)
    gpu = ResourcesSpec(workers_per_trial=2, gpus_per_worker=0.5, cpus_per_worker=2, trial_driver_cpus=0.25)
    assert plan_concurrency(gpu, 64.0, 4.0).max_concurrent == 4  # GPUs bind: 4 / 1
    with pytest.raises(ConfigError, match="0 GPUs"):
        plan_concurrency(gpu, 64.0, 0.0)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml")))
def test_shipped_spaces_validate(name):
    spec, _ = load_space(ROOT / "search_spaces" / name)
    if spec.searcher.type == "grid":
        assert expand_grid(spec)


def test_dry_run_prints_trials_and_resources(tmp_path, capsys):
    from pgd.sweep.driver import run_sweep

    out = run_sweep(str(ROOT / "search_spaces" / "smoke.yaml"), dry_run=True)
    text = capsys.readouterr().out
    assert out["dry_run"] and len(out["trials"]) == 2
    assert "2 trial(s):" in text and "student_seed=0" in text and "pgd_seed=0" in text
    assert "resources per trial: 0.125 driver CPU + 1 worker(s) x (0.875 CPU, 0 GPU)" in text
    assert "concurrency:" in text
    assert out["sweep_id"].startswith("smoke-") and len(out["sweep_id"]) == len("smoke-") + 8
    assert f"sweep id: {out['sweep_id']}" in text


def test_sweep_id_follows_the_space_file(tmp_path):
    from pgd.sweep.space import sweep_id

    a = write(tmp_path, "grid: {method: [student, pgd]}")
    ida = sweep_id(*load_space(a))
    assert ida == sweep_id(*load_space(a))  # same file: same sweep (resume)
    b = write(tmp_path, "grid: {method: [student, pgd, fgd]}")
    assert sweep_id(*load_space(b)) != ida and sweep_id(*load_space(b)).startswith("t-")
