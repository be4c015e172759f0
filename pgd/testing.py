"""Small builders shared by the tests and the benchmarks: a synthetic detection batch and a
distiller on registry models (random teacher allowed)."""

from __future__ import annotations

import torch


def synthetic_batch(model, n: int = 2, h: int = 160, w: int = 192, *, boxes=None, labels=None,
                    boxes_per_image: int | None = None, num_classes: int = 6, training: bool = True,
                    seed: int = 0) -> dict:
    """``model.data_preprocessor`` applied to ``n`` random uint8 images with GT boxes.

    ``boxes``/``labels``: the same tensors for every image (shifted by the image index), else
    ``boxes_per_image`` random boxes (default 2 fixed boxes)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(seed)
    imgs = [torch.randint(0, 255, (3, h, w), dtype=torch.uint8, generator=g) for _ in range(n)]
    samples = []
    for i in range(n):
        s = DetDataSample()
        s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0)))
        if boxes_per_image is not None:
            xy = torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([w, h]) * 0.7
            wh = 8 + torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([w, h]) * 0.3
            b = torch.cat([xy, xy + wh], 1)
            lab = torch.randint(0, num_classes, (boxes_per_image,), generator=g)
        else:
            b = (boxes if boxes is not None else torch.tensor([[10.0, 20, 60, 90], [80, 70, 150, 150]])) + i
            lab = labels if labels is not None else torch.tensor([1, 3])[: len(b)]
        s.gt_instances = InstanceData(bboxes=b, labels=lab)
        samples.append(s)
    return model.data_preprocessor(dict(inputs=imgs, data_samples=samples), training)


def build_distiller(student: str, teacher: str, num_classes: int = 6, *, train: bool = True, **distill):
    """An initialised ``PGDDistiller`` (or LD detector) for registry names, through the same
    config path as a run; the teacher may be random (``allow_random_teacher`` defaults on)."""
    from mmdet.registry import MODELS

    from pgd.distill.config import distiller_config

    distill.setdefault("allow_random_teacher", distill.get("teacher_checkpoint") is None)
    model = MODELS.build(distiller_config(student, num_classes, dict(teacher=teacher, **distill)))
    model.init_weights()
    model.train(train)
    return model


def total_loss(losses: dict) -> torch.Tensor:
    """Sum of every ``*loss*`` entry of a detector's loss dict (lists summed too)."""
    return sum(v if isinstance(v, torch.Tensor) else sum(v) for k, v in losses.items() if "loss" in k)


def example_sweep() -> tuple[list[dict], dict[str, dict[int, float]]]:
    """A synthetic paper-scale sweep for the reporting tests and ``docs/reporting.md``: an
    ATSS-R101 teacher and ATSS-R50 students over seeds 0-2 (plain, PGD pgw, PGD box, FGD, and
    an LD row trained 24 epochs instead of 12). Returns the records of a run frame (see
    :func:`pgd.reporting.tables.frame_from_records`) and ``{run_id: {epoch: AP}}`` histories.
    The numbers are made up; the paired gains are fixed per seed so the statistics are known.
    """
    import math

    import numpy as np

    student = {0: 39.4, 1: 39.9, 2: 39.5}
    rows = [  # (method, strategy, per-seed gain over the student, epochs)
        ("pgd", "pgw", {0: 4.6, 1: 4.8, 2: 4.5}, 12),
        ("pgd", "box", {0: 0.9, 1: -0.3, 2: 0.7}, 12),
        ("fgd", None, {0: 3.0, 1: 3.4, 2: 2.7}, 12),
        ("ld", None, {0: 1.2, 1: 1.5, 2: 1.1}, 24),
    ]
    rng = np.random.default_rng(0)
    records, histories = [], {}

    def add(model, seed, ap, *, role="trial", method=None, strategy=None, epochs=12, teacher=True):
        rid = f"run{len(records):02d}"
        params = {"model": model, "seed": seed, "data.kind": "coco", "data.root": "data/coco",
                  "data.val_ann": "annotations/instances_val2017.json", "schedule.epochs": epochs,
                  "schedule.batch_size": 2, "schedule.base_lr": 0.02, "schedule.lr_steps": "[8, 11]",
                  "schedule.img_scale": "[1333, 800]", "schedule.multiscale": "None",
                  "distill.method": method, "distill.strategy": strategy}
        if role == "teacher":
            params.update({"schedule.multiscale": "[480, 960]", "schedule.lr_steps": "[28, 34]"})
        hours = epochs / 12 * (11.0 if "r101" in model else 8.0) * (1.3 if method else 1.0)
        tags = {"pgd.duration_s": f"{hours * 3600 / 8:.1f}", "pgd.gpus": "8", "pgd.cpus": "64",
                "pgd.world_size": "8"}
        if role == "teacher" or (method and teacher):
            tags["pgd.teacher_hash"] = "3f9c2a1b"
        rec = {f"param.{k}": (str(v) if v is not None else "None") for k, v in params.items()}
        rec.update({f"tag.{k}": v for k, v in tags.items()})
        offsets = {"AP": 0.0, "AP50": 17.6, "AP75": 3.1, "APS": -16.2, "APM": 3.8, "APL": 11.5}
        rec.update({k: round(ap + o + float(rng.normal(0, 0.2)) * (k != "AP"), 1) for k, o in offsets.items()})
        rec.update(run_id=rid, run_name=f"{method or role} seed={seed}", status="FINISHED", role=role)
        records.append(rec)
        scale = 1 - math.exp(-epochs / 4)
        histories[rid] = {e: round(ap * (1 - math.exp(-e / 4)) / scale + float(rng.normal(0, 0.15)), 2)
                          for e in range(1, epochs + 1)}
        histories[rid][epochs] = ap

    add("atss_r101", 0, 45.5, role="teacher", epochs=36)
    for seed, ap in student.items():
        add("atss_r50", seed, ap)
    for method, strategy, gain, epochs in rows:
        for seed, ap in student.items():
            add("atss_r50", seed, round(ap + gain[seed], 1), method=method, strategy=strategy, epochs=epochs)
    return records, histories


def record_sweep(space_path, tracking_uri: str, *, ap_of=None, epochs: int | None = None,
                 failed: tuple[str, ...] = ()) -> dict:
    """A sweep recorded in MLflow without Ray: the plan of ``space_path`` and, per planned
    trial, what the driver's Tune callback logs (run creation, per-epoch results, the final
    result, the trial's log file and checkpoint path, the end), then the report, all through
    the driver's own tracking functions. ``ap_of(trial, epoch)`` gives the fake AP (default: a
    fixed curve per method and seed); trials whose key is in ``failed`` end FAILED. Needs
    ``PGD_HOME`` set. Returns ``{plan, experiment_id, parent_run_id, runs: {key: run_id},
    report}``."""
    from pathlib import Path
    from types import SimpleNamespace

    from pgd.paths import PROJECT_ROOT
    from pgd.plan import build_plan
    from pgd.reporting import mlflow_ui as UI
    from pgd.reporting.report import report_sweep
    from pgd.sweep import tracking as T
    from pgd.training.data import resolve_data

    plan = build_plan(space_path, tracking_uri=tracking_uri)
    for run in {t.run.data.model_dump_json(): t.run for t in plan.trials}.values():
        resolve_data(run.data)  # real annotation files, so the dataset digests are real
    c = T.client(tracking_uri)
    exp = T.ensure_experiment(c, plan.space.name, str(Path(plan.home) / "mlartifacts"))
    parent = T.parent_run(c, exp, plan.sweep_id, space_text=Path(space_path).read_text(),
                          space_name=plan.space.name, project_dir=PROJECT_ROOT,
                          extra_tags={"pgd.sweep_dir": plan.sweep_dir})
    UI.tag_experiment(c, exp, note=UI.experiment_note(plan.space.description, UI.invocation(space_path),
                                                      Path(plan.sweep_dir) / "report", plan.sweep_id))
    plan.write()
    c.log_artifact(parent, str(Path(plan.sweep_dir) / "plan.yaml"))
    cb = T.MLflowSweepCallback(tracking_uri, exp, parent, plan.sweep_id, commit=T.git_commit(PROJECT_ROOT))
    bonus = {"student": 0.0}
    ap_of = ap_of or (lambda t, e: 10.0 + 3.0 * e + bonus.get(t.method, 4.0) + 0.5 * t.seed)
    n_epochs = epochs or (plan.trials[0].run.schedule.epochs if plan.trials else 1)
    runs = {}
    for i, t in enumerate(plan.trials):
        trial = SimpleNamespace(config={"trial": t.dump()}, trial_id=f"fake_{i:05d}", status="RUNNING",
                                error_file=None)
        wd = Path(t.run.work_dir)
        (wd / "20260101_000000").mkdir(parents=True, exist_ok=True)
        (wd / "20260101_000000" / "20260101_000000.log").write_text(f"mmengine log of {t.name}\n")
        cb.on_trial_start(0, [], trial)
        runs[t.key] = cb.run_id(trial)
        for e in range(1, n_epochs + 1):
            cb.on_trial_result(0, [], trial, {"epoch": e, "AP": ap_of(t, e), "train/loss": 1.0 / e,
                                              "time_this_iter_s": 1.0})
        if t.key in failed:
            cb.on_trial_error(0, [], trial)
            continue
        ap = ap_of(t, n_epochs)
        ckpt = str(wd / f"epoch_{n_epochs}.pth")
        cb.on_trial_result(0, [], trial, {"epoch": n_epochs, "final": 1, "AP": ap, "AP50": ap + 20,
                                          "AP75": ap + 2, "APS": 1.0, "APM": 2.0, "APL": 3.0,
                                          "best_checkpoint": ckpt, "device": "cpu", "world_size": 1})
        cb.on_trial_complete(0, [], trial)
    rep = report_sweep(tracking_uri, plan.space, plan.sweep_id, parent_run_id=parent,
                       out_dir=Path(plan.sweep_dir) / "report", quiet=True)
    c.set_terminated(parent, status="FINISHED")
    return dict(plan=plan, experiment_id=exp, parent_run_id=parent, runs=runs, report=rep)
