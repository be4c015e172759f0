"""Space file -> SweepPlan, without Ray: grid expansion and its conditions, Optuna
distributions checked against the run config, every plan-time check (names, data,
checkpoints, tracking URI), identical plans from the same file, concurrency."""

from __future__ import annotations

import re
import socket
import textwrap
from pathlib import Path

import pytest

from pgd.config.space import ResourcesSpec, load_space
from pgd.errors import ConfigError
from pgd.plan import build_plan, describe
from pgd.plan.grid import expand_grid
from pgd.plan.resources import plan_concurrency

ROOT = Path(__file__).resolve().parents[1]

BASE = """
name: t
base:
  model: atss_tiny
  data: {kind: shapes, shapes: {train: 8, val: 4, size: 96, seed: 0}}
  schedule: {epochs: 2}
teacher: {model: "{detector}_tiny"}
"""


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("PGD_HOME", str(h))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return h


def write(tmp_path, body: str, base: str = BASE) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(textwrap.dedent(base) + textwrap.dedent(body))
    return p


@pytest.mark.parametrize(
    "body, message",
    [
        ("grid: {method: [student, distil]}", "grid.method: unknown method 'distil'; valid methods are: student, pgd"),
        ("grid: {distill.alfa: [0.1]}", "grid.distill.alfa: unknown sweep key 'distill.alfa': distill has no key 'alfa'"),
        ("grid: {schedul.epochs: [1]}", "unknown sweep key 'schedul.epochs': the run config has no key 'schedul'"),
        ("grid: {method: []}", "space.grid[0].method.values=[]: List should have at least 1 item"),
        ("searcher: {type: random}", "space.searcher.type='random' is not one of the valid choices: grid, optuna"),
        ("searcher: {type: optuna, sampler: cmaes}", "space.searcher.sampler='cmaes' is not one of the valid choices"),
        ("scheduler: {type: hyperband}", "space.scheduler.type='hyperband' is not one of the valid choices: none, asha"),
        ("metric: mAP", "space.metric='mAP' is not one of the valid choices: AP, AP50"),
        ("params: {distill.alpha: {type: float, low: 0.01, high: 0.1}}", "params (Optuna distributions) need searcher.type: optuna"),
        ("searcher: {type: optuna}\nparams: {distill.alpha: {type: float, low: 0.1, high: 0.01}}", "needs low < high"),
        ("searcher: {type: optuna}\nparams: {distill.alpha: {type: float, low: 0, high: 1, log: true}}", "log distribution needs low > 0"),
        ("searcher: {type: optuna}\nparams: {distill.alpha: {type: uniform, low: 0, high: 1}}", "Input tag 'uniform' found using 'type' does not match"),
        ("searcher: {type: optuna}\nparams: {distill.alpha: {type: float, low: 0.01, high: 0.2, step: -0.05}}",
         "space.params.distill.alpha.step=-0.05: Input should be greater than 0"),
        ("searcher: {type: optuna}\nparams: {distill.k: {type: int, low: 0.5, high: 10.7}}",
         "space.params.distill.k.low=0.5: Input should be a valid integer"),
        ("searcher: {type: optuna, sampler: grid}\nparams: {distill.alpha: {type: float, low: 0.01, high: 0.2}}",
         "sampler: grid needs categorical params; distill.alpha are not"),
        ("resources: {cpus_per_worker: 0}", "space.resources.cpus_per_worker=0: Input should be greater than 0"),
        ("resources: {workerz: 2}", "space.resources: unknown key(s) workerz; valid keys are: workers_per_trial"),
        ("resources: {max_concurrent_trials: two}", "space.resources.max_concurrent_trials='two': Input should be a valid integer"),
        ("objectives: [{metric: AP, mode: max}, {metric: latency_ms, mode: min}]\nscheduler: {type: asha}", "multi-objective"),
        ("seeds: []", "space.seeds=[]: List should have at least 1 item"),
        ("grid: {seed: [0, 1]}", "repeat trials with seeds: [0, 1, ...], not a key 'seed'"),
        ("report: {rows: [detektor, method]}", "report: unknown sweep key 'detektor'"),
        ("grid: {method: [student, pgd]}\nreport: {rows: [method], baseline: {detector: atss}}",
         "report.baseline key(s) ['detector'] are not among report.rows ['method']"),
        ("grid:\n  method: [student, pgd]\n  distill.strategy: {values: [box, pgw], when: {method: [pdg]}}",
         "grid.distill.strategy.when: method value(s) ['pdg'] are not among grid.method's values ['student', 'pgd']"),
        ("grid:\n  distill.strategy: {values: [box, pgw], when: {method: [pgd]}}\n  method: [student, pgd]",
         "grid.distill.strategy.when names 'method', which is not an earlier axis of this grid (it comes later"),
        ("grid: {method: [student, pgd]}\nexclude: [{method: fgd}]", "exclude[0].method: value(s) ['fgd'] are not among"),
        ("grid: {method: [student, pgd]}\nexclude: [{detector: fcos}]", "exclude[0] names 'detector', which is no grid axis"),
        ("grid: {method: [student, pgd], distill.k: [5]}\nexclude: [{method: student, distill.k: 5}]",
         "exclude[0] {'method': 'student', 'distill.k': 5} matches no grid point"),
        ("grid: {method: [student, fgd], distill.strategy: [box]}",
         "unknown key(s) strategy for method 'fgd' (strategy is a key of pgd: limit that axis with when"),
        ("grid: {method: [pgd], distill.k: [0]}", "trial 'pgd k=0 seed=0'"),
        ("grid: {method: [student]}\ngrid: {method: [pgd]}", "duplicate key 'grid' at line 9 (first at line 8)"),
        ("grid: {method: [student]}\nanalysis: [{name: tied}]", "space.analysis[0].name='tied' is not one of the valid choices: quality-map"),
        ("grid: {method: [student]}\nanalysis: [{name: mask-out, options: {percent: [1]}}]",
         "analysis[0]: analysis 'mask-out': unknown option(s) percent; valid options are: percents, xi, seed"),
        ("grid: {method: [student]}\nanalysis: [{name: lrp, runs: best}]", "space.analysis[0].runs='best' is not one of"),
        ("searcher: {type: optuna}\nparams: {distill.k: {type: int, low: 0, high: 10}}",
         "params.distill.k: its low (0) makes an invalid run:"),
        ("searcher: {type: optuna}\nparams:\n  distill.k: {type: int, low: 1, high: 10, when: {distill.strategy: [pgw]}}",
         "params.distill.k.when names 'distill.strategy', which is not an earlier parameter"),
        ("searcher: {type: optuna}\nparams:\n  distill.strategy: {type: categorical, choices: [box, pgw]}\n"
         "  distill.k: {type: int, low: 1, high: 10, when: {distill.strategy: [pwg]}}",
         "params.distill.k.when: distill.strategy can never take ['pwg']"),
    ],
)
def test_space_errors_name_the_value(tmp_path, body, message):
    base = BASE.replace("  schedule: {epochs: 2}", "  schedule: {epochs: 2}\n  distill: {strategy: pgw}") \
        if "searcher: {type: optuna}" in body else BASE
    with pytest.raises(ConfigError) as e:
        build_plan(write(tmp_path, body, base), check_tracking=False)
    assert message in str(e.value), str(e.value)
    assert "space.yaml" in str(e.value)


def test_optuna_base_model_is_checked(tmp_path):
    body = "searcher: {type: optuna}\nparams: {distill.alpha: {type: float, low: 0.01, high: 0.1}}"
    base = BASE.replace("model: atss_tiny", "model: yolo_r50").replace("  schedule: {epochs: 2}",
                                                                      "  schedule: {epochs: 2}\n  distill: {}")
    with pytest.raises(ConfigError, match="model='yolo_r50' is not one of the valid choices"):
        build_plan(write(tmp_path, body, base), check_tracking=False)


def test_grid_expansion_with_conditions_dedup_and_seeds(tmp_path):
    plan = build_plan(write(tmp_path, """
        grid:
          method: [student, pgd]
          distill.strategy: {values: [box, pgw], when: {method: [pgd]}}
          distill.k_cls: {values: [5, 30], when: {distill.strategy: [pgw]}}
        seeds: [0, 1]
    """), check_tracking=False)
    names = [t.name for t in plan.trials]
    assert names == ["student seed=0", "student seed=1", "pgd strategy=box seed=0", "pgd strategy=box seed=1",
                     "pgd strategy=pgw k_cls=5 seed=0", "pgd strategy=pgw k_cls=5 seed=1",
                     "pgd strategy=pgw k_cls=30 seed=0", "pgd strategy=pgw k_cls=30 seed=1"]
    t = plan.trials[5]
    assert t.run.seed == 1 and t.run.distill.strategy == "pgw" and t.run.distill.k_cls == 5
    assert t.run.distill.k_reg == 9 and t.run.distill.alpha == 0.08  # resolved atss defaults
    assert t.run.distill.teacher == "atss_tiny" and t.run.distill.teacher_checkpoint == plan.teachers[0].checkpoint
    assert t.teacher_hash == plan.teachers[0].hash and plan.teachers[0].source == "train"
    assert plan.trials[0].run.distill is None and plan.trials[0].method == "student"
    assert len({t.key for t in plan.trials}) == 8
    assert all(Path(t.run.work_dir) == Path(plan.sweep_dir) / "trials" / t.key / "work" for t in plan.trials)


def test_detector_axis_keeps_the_backbone_and_plans_one_teacher_each(tmp_path):
    plan = build_plan(write(tmp_path, "grid: {detector: [fcos, gfl], method: [pgd]}"), check_tracking=False)
    assert [t.run.model for t in plan.trials] == ["fcos_tiny", "gfl_tiny"]
    assert [t.run.distill.teacher for t in plan.trials] == ["fcos_tiny", "gfl_tiny"]
    assert [t.model for t in plan.teachers] == ["fcos_tiny", "gfl_tiny"]
    assert plan.trials[0].run.distill.alpha == 0.04  # fcos default


def test_same_file_same_plan_and_dry_run_writes_it(tmp_path, capsys):
    import yaml

    from pgd.sweep.driver import run_sweep

    p = write(tmp_path, "grid: {method: [student, pgd]}\nseeds: [0, 1]")
    a, b = build_plan(p), build_plan(p)
    assert a == b and a.dump() == b.dump()
    out = run_sweep(str(p), dry_run=True)
    text = capsys.readouterr().out
    written = yaml.safe_load((Path(a.sweep_dir) / "plan.yaml").read_text())
    assert written == a.dump() and out["plan"] == a
    assert "4 trial(s):" in text and "t002  pgd seed=0" in text and "teacher atss_tiny: to train once" in text
    assert f"plan written to {Path(a.sweep_dir) / 'plan.yaml'}" in text
    edited = write(tmp_path, "grid: {method: [student, pgd]}\nseeds: [0, 1, 2]")
    assert build_plan(edited).sweep_id != a.sweep_id and build_plan(edited).sweep_id.startswith("t-")


def test_optuna_define_by_run_is_conditional_and_returns_resolved_trials(tmp_path):
    import optuna

    from pgd.plan.optuna import optuna_space

    base = BASE.replace("  schedule: {epochs: 2}", "  schedule: {epochs: 2}\n  distill: {method: pgd}")
    plan = build_plan(write(tmp_path, """
        searcher: {type: optuna, num_samples: 4}
        params:
          distill.strategy: {type: categorical, choices: [box, pgw]}
          distill.alpha: {type: float, low: 0.005, high: 0.2, log: true}
          distill.k_cls: {type: int, low: 1, high: 60, when: {distill.strategy: [pgw]}}
    """, base), check_tracking=False)
    define = optuna_space(plan)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    from pgd.plan import TrialPlan

    seen = []
    for _ in range(12):
        trial = study.ask()
        t = TrialPlan.model_validate(define(trial)["trial"])
        seen.append((dict(trial.params), t))
        study.tell(trial, 0.0)
    assert all(0.005 <= t.run.distill.alpha <= 0.2 for _, t in seen)
    assert all(("distill.k_cls" in p) == (p["distill.strategy"] == "pgw") for p, _ in seen)
    assert all(t.run.distill.k_cls == p.get("distill.k_cls", 9) for p, t in seen)
    assert {t.run.distill.strategy for _, t in seen} == {"box", "pgw"}
    assert seen[3][1].key == "o0003" and seen[3][1].run.work_dir.endswith("trials/o0003/work")


def test_plan_time_checks_of_paths_and_names(tmp_path, home):
    coco = BASE.replace("data: {kind: shapes, shapes: {train: 8, val: 4, size: 96, seed: 0}}", "data: {kind: coco}")
    with pytest.raises(ConfigError, match="data: root is required for kind='coco'"):
        build_plan(write(tmp_path, "grid: {method: [student]}", coco), check_tracking=False)
    missing = coco.replace("data: {kind: coco}", "data: {kind: coco, root: data/coco}")
    with pytest.raises(ConfigError, match=re.escape(f"data.train_ann: annotation file {home}/data/coco/annotations")):
        build_plan(write(tmp_path, "grid: {method: [student]}", missing), check_tracking=False)
    weights = BASE.replace("model: atss_tiny", "model: atss_tiny\n  backbone_checkpoint: weights/r18.pth")
    with pytest.raises(ConfigError, match=re.escape(f"backbone_checkpoint '{home}/weights/r18.pth' does not exist")):
        build_plan(write(tmp_path, "grid: {method: [student]}", weights), check_tracking=False)
    (home / "weights").mkdir()
    (home / "weights" / "r18.pth").write_text("not a checkpoint\n")
    with pytest.raises(ConfigError, match="backbone_checkpoint '.*r18.pth' is not a PyTorch checkpoint"):
        build_plan(write(tmp_path, "grid: {method: [student]}", weights), check_tracking=False)
    url = BASE.replace("model: atss_tiny", "model: atss_tiny\n  backbone_checkpoint: https://x.org/r.pth")
    with pytest.raises(ConfigError, match="would be downloaded"):
        build_plan(write(tmp_path, "grid: {method: [student]}", url), check_tracking=False)
    p = write(tmp_path, "grid: {method: [student]}")
    with pytest.raises(ConfigError, match=r"sweep name '../../escape' must be letters.*no '/' or '..'"):
        build_plan(p, name="../../escape", check_tracking=False)


def test_a_shapes_set_made_with_other_parameters_is_never_replaced(tmp_path, home):
    from pgd.data.shapes import generate_shapes

    generate_shapes(home / "data" / "mine", 4, 2, 64, 0)
    base = BASE.replace("data: {kind: shapes, shapes: {train: 8, val: 4, size: 96, seed: 0}}",
                        "data: {kind: shapes, root: data/mine, shapes: {train: 8, val: 4, size: 96, seed: 0}}")
    with pytest.raises(ConfigError, match=r"refusing to replace .*mine: it holds a shapes data set made with other "
                                          r"parameters: n_train=4 \(wanted 8\)"):
        build_plan(write(tmp_path, "grid: {method: [student]}", base), check_tracking=False)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("uri, message", [
    ("file:///tmp/mlruns", "MLflow 3 has no file store"),
    ("/tmp/mlruns", "MLflow 3 has no file store"),
    ("ftp://x", "unknown scheme 'ftp'"),
    ("sqlite://relative.db", "must look like sqlite:////absolute/path"),
    ("http://", "has no host"),
])
def test_tracking_uri_is_checked(tmp_path, uri, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_plan(write(tmp_path, "grid: {method: [student]}"), tracking_uri=uri)


def test_unreachable_tracking_server_fails_within_seconds(tmp_path):
    import time

    t = time.time()
    with pytest.raises(ConfigError, match=r"MLflow tracking server http://127.0.0.1:\d+ did not answer within 5 s"):
        build_plan(write(tmp_path, "grid: {method: [student]}"), tracking_uri=f"http://127.0.0.1:{_closed_port()}")
    assert time.time() - t < 10


def test_given_teacher_checkpoint_must_fit_the_teacher_model(tmp_path, home):
    import torch
    from mmdet.registry import MODELS

    import pgd.integration
    from pgd.detectors import model_config

    pgd.integration.init_scope()
    model = MODELS.build(model_config("atss_tiny", 6))
    torch.save({"state_dict": model.state_dict()}, home / "atss.pth")
    base = BASE.replace('teacher: {model: "{detector}_tiny"}\n', "")
    ok = build_plan(write(tmp_path, "grid: {method: [student, pgd]}\nteacher: {model: atss_tiny, checkpoint: atss.pth}",
                          base), check_tracking=False)
    assert ok.teachers[0].source == "given" and ok.trials[1].run.distill.teacher_checkpoint == str(home / "atss.pth")
    body = "grid: {detector: [fcos], method: [pgd]}\nteacher: {model: '{detector}_tiny', checkpoint: atss.pth}"
    with pytest.raises(ConfigError, match=r"teacher.checkpoint \(for fcos_tiny\) '.*atss.pth' does not fit the model: "
                                          r"\d+ missing: .*\d+ unexpected:"):
        build_plan(write(tmp_path, body, base), check_tracking=False)


def test_backbone_weights_must_fit_the_backbone(tmp_path, home):
    import torch
    from mmdet.models.backbones import ResNet

    from pgd.detectors import BACKBONES

    tiny = BACKBONES["tiny"]
    good = ResNet(depth=18, base_channels=tiny["base_channels"]).state_dict()
    good["fc.weight"] = torch.zeros(10, 256)  # an ImageNet classifier is fine to leave out
    torch.save(good, home / "r18.pth")
    base = BASE.replace("model: atss_tiny", "model: atss_tiny\n  backbone_checkpoint: r18.pth")
    build_plan(write(tmp_path, "grid: {method: [student]}", base), check_tracking=False)
    bad = {k: v for k, v in good.items() if not k.startswith("layer4.")}
    bad["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(bad, home / "r18.pth")
    with pytest.raises(ConfigError, match=r"backbone_checkpoint \(for the ResNet backbone\) '.*r18.pth' does not fit "
                                          r"the model: \d+ missing: layer4.*1 unexpected: layer5.0.conv1.weight"):
        build_plan(write(tmp_path, "grid: {method: [student]}", base), check_tracking=False)


def test_concurrency_never_deadlocks():
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


@pytest.fixture()
def cluster_home(home, coco_tiny):
    """A home holding what the shipped cluster spaces read: COCO (coco-tiny stands in) and
    ResNet weight files (placeholders: the backbone check is tested below on a tiny one)."""
    import torch

    (home / "data").mkdir()
    (home / "data" / "coco").symlink_to(coco_tiny)
    (home / "weights").mkdir()
    for n in ("resnet50", "resnet101"):
        torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, home / "weights" / f"{n}.pth")
    return home


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "search_spaces").rglob("*.yaml")))
def test_shipped_spaces_plan(name, cluster_home):
    path = next((ROOT / "search_spaces").rglob(name))
    spec, _ = load_space(path)
    plan = build_plan(path, check_tracking=False, check_checkpoints=False)
    text = describe(plan)
    assert "resources per trial" in text and plan.space.name == spec.name
    if spec.searcher.type == "grid":
        assert plan.trials and len(plan.trials) == len(expand_grid(spec))
