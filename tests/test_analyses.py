"""The paper's analyses (pgd.reporting.analyses, pipelines/analyze.py) on the session's tiny
trained teacher and PGD student: mask-out hook for all five heads, Fig. 2 grid, Fig. 3,
Fig. 5, TIDE and LRP tables, MLflow logging, the CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DETECTORS = ("atss", "ddod", "gfl", "fcos", "autoassign")


def _random_detector(det: str, num_classes: int = 6):
    from mmdet.registry import MODELS

    import pgd.integration
    from pgd.detectors import model_config

    pgd.integration.init_scope()
    torch.manual_seed(0)
    m = MODELS.build(model_config(f"{det}_tiny", num_classes))
    m.init_weights()
    return m.eval()


@pytest.mark.parametrize("det", DETECTORS)
def test_mask_out_hook_for_every_head(det):
    from pgd.distill.maskout import HeadMaskOut
    from pgd.distill.masks import PGDMaskParams, pgd_masks
    from pgd.testing import synthetic_batch

    model = _random_detector(det)
    model.bbox_head.test_cfg.score_thr = 0.0  # a random head scores ~0.01: keep everything
    data = synthetic_batch(model, n=2, h=96, w=128, training=False)
    inputs, samples = data["inputs"], data["data_samples"]
    metas = [s.metainfo for s in samples]
    with torch.no_grad(), HeadMaskOut(det, model, xi=0.8) as mo:
        outs, priors = mo.forward(inputs)
        # unedited: exactly what the detector's own predict returns
        ref = model.predict(inputs, samples)
        for mine, theirs in zip(mo.predict(outs, metas), ref):
            assert len(theirs.pred_instances) > 0
            assert torch.equal(mine.bboxes, theirs.pred_instances.bboxes)
            assert torch.equal(mine.scores, theirs.pred_instances.scores)
        gts = [s.gt_instances for s in samples]
        quality = mo.image_quality(outs, priors, [g.bboxes for g in gts], [g.labels for g in gts])
        # the same q as the distillation masks / Fig. 2 (max over the boxes holding the location)
        masks = pgd_masks(mo.adapter, outs, [g.bboxes for g in gts], [g.labels for g in gts],
                          PGDMaskParams(strategy="pgw", xi_cls=0.8, xi_reg=0.6, k_cls=9, k_reg=9,
                                        topk_scope="inside"))
        for n, iq in enumerate(quality):
            flat = torch.cat([m[n].flatten() for m in masks.quality_cls])
            assert torch.allclose((iq.quality * iq.inside).amax(dim=1), flat, atol=1e-6)
        drops = mo.drop_masks(quality, 50, "top")
        assert all(int(d.sum()) > 0 for d in drops)
        edited = mo.apply(outs, drops, priors)
        p0, _ = mo.adapter.predictions(outs, priors)
        p1, _ = mo.adapter.predictions(edited, priors)
        na = priors.num_anchors
        for n, d in enumerate(drops):
            gone = d.repeat_interleave(na)  # every anchor of a dropped location
            assert torch.all(p1[n][gone] == 0)
            assert torch.equal(p1[n][~gone], p0[n][~gone])
        assert all(torch.equal(a, b) for a, b in zip(edited[1], outs[1]))  # boxes untouched
        everything = [torch.ones_like(d) for d in drops]
        assert all(len(r) == 0 for r in mo.predict(mo.apply(outs, everything, priors), metas))


def _refs(tiny_runs):
    from pgd.reporting.analyses import RunRef

    (tc, tk), (sc, sk) = tiny_runs["teacher"], tiny_runs["student"]
    return RunRef("teacher", tc, tk), RunRef("PGD student", sc, sk)


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_mask_out_curve(tiny_runs, tmp_path):
    from pgd.evaluation.coco import coco_evaluate
    from pgd.reporting.analyses import mask_out
    from pgd.training.predict import load_detector, predict_detections

    teacher, _ = _refs(tiny_runs)
    paths = mask_out([teacher], tmp_path, percents=[0, 1, 20])
    rows = _csv(paths["csv"])
    assert [(r["mode"], float(r["percent"])) for r in rows] == [
        ("none", 0.0), ("top", 1.0), ("top", 20.0), ("random", 1.0), ("random", 20.0)]
    det = load_detector(teacher.run_config, teacher.checkpoint)
    plain = predict_detections(det)
    # X = 0 is the detector's ordinary evaluation
    assert float(rows[0]["AP"]) == pytest.approx(coco_evaluate(det.val_ann, plain)["AP"])
    assert int(rows[0]["detections"]) == len(plain) and int(rows[0]["removed_positions"]) == 0
    inbox = int(rows[0]["inbox_positions"])
    top1, top20, rnd1, rnd20 = (int(r["removed_positions"]) for r in rows[1:])
    assert 0 < top1 <= top20 < inbox and 0 < rnd1 <= rnd20 < inbox
    assert paths["png"].stat().st_size > 20_000
    if float(rows[0]["AP"]) > 0:
        assert json.loads(paths["json"].read_text())["rows"][0]["AP_relative"] == 100.0


def test_quality_maps_of_five_detectors(tiny_runs, tmp_path):
    from PIL import Image

    from pgd.errors import ConfigError
    from pgd.reporting.analyses import RunRef, quality_maps
    from pgd.training.predict import load_detector

    teacher, _ = _refs(tiny_runs)
    refs = [RunRef("atss", teacher.run_config, teacher.checkpoint)]
    for det in DETECTORS[1:]:  # untrained weights: the layout and numbers, not the science
        ck = tmp_path / f"{det}.pth"
        torch.save({"state_dict": _random_detector(det).state_dict()}, ck)
        refs.append(RunRef(det, dict(teacher.run_config, model=f"{det}_tiny"), str(ck)))
    paths = quality_maps(refs, tmp_path / "fig2", image_indices=[1])
    rows = _csv(paths["csv"])
    assert [r["run"].split(" ")[0] for r in rows] == list(DETECTORS)
    assert all(0.0 <= float(r["peak_quality"]) <= 1.0 for r in rows)
    assert float(rows[0]["peak_quality"]) > 0  # the trained teacher has some quality in its boxes
    w, h = Image.open(paths["png"]).size
    assert h > 3 * w  # five rows of one panel
    with pytest.raises(ConfigError, match="does not hold the weights of model 'atss_tiny'"):
        load_detector(teacher.run_config, str(tmp_path / "gfl.pth"))
    with pytest.raises(ConfigError, match=r"outside 0\.\.3"):
        quality_maps(refs[:1], tmp_path / "bad", image_indices=[4])


def test_detections_side_by_side(tiny_runs, tmp_path):
    from pgd.reporting.analyses import detections
    from pgd.training.predict import load_detector, predict_detections

    teacher, student = _refs(tiny_runs)
    paths = detections([student, teacher], tmp_path, image_indices=[0, 2], score_thr=0.05)
    summary = json.loads(paths["json"].read_text())
    rows = _csv(paths["csv"])
    ds_ids = summary["image_ids"]
    dets = predict_detections(load_detector(student.run_config, student.checkpoint), indices=[0, 2])
    for iid in ds_ids:
        want = sum(d["image_id"] == iid and d["score"] >= 0.05 for d in dets)
        assert summary["counts"][student.name][str(iid)] == want
        for ref in (student, teacher):
            n = summary["counts"][ref.name][str(iid)]
            assert sum(r["panel"] == ref.name and int(r["image_id"]) == iid for r in rows) == n
    assert sum(r["panel"] == "GT" for r in rows) == sum(summary["gt_counts"].values()) > 0
    assert paths["png"].stat().st_size > 20_000


def test_lrp_and_tide_tables_with_mlflow(tiny_runs, tmp_path):
    from mlflow.tracking import MlflowClient

    from pgd.evaluation.lrp import olrp
    from pgd.reporting.analyses import lrp, run_detections

    teacher, student = _refs(tiny_runs)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri)
    run_id = c.create_run(c.create_experiment("analyses", artifact_location=(tmp_path / "art").as_uri())).info.run_id

    paths = lrp([teacher, student], tmp_path, tracking_uri=uri, mlflow_run_id=run_id)
    rows = {r["run"]: r for r in _csv(paths["csv"])}
    # the AP of the predictions here is the AP the training run's own evaluation reported
    trained = json.loads((Path(teacher.run_config["work_dir"]) / "metrics.json").read_text())
    assert float(rows["teacher"]["AP"]) == pytest.approx(trained["AP"], abs=1e-6)
    dets, cached = run_detections(teacher, tmp_path / "detections")
    assert cached.parent == tmp_path / "detections"  # reused from the lrp call
    from pgd.training.predict import load_detector

    gt = load_detector(teacher.run_config, teacher.checkpoint).val_ann
    assert float(rows["teacher"]["oLRP"]) == pytest.approx(olrp(gt, dets)["oLRP"])
    assert all(0 <= float(rows[n]["oLRP"]) <= 100 for n in rows)

    # TIDE through the CLI, logged to the same MLflow run, reusing the lrp call's detections
    cfgs = {}
    for ref in (teacher, student):
        cfgs[ref.name] = tmp_path / f"{ref.name.replace(' ', '_')}.yaml"
        import yaml

        cfgs[ref.name].write_text(yaml.safe_dump(ref.run_config))
    student_dets, _ = run_detections(student, tmp_path / "detections")
    (tmp_path / "student.json").write_text(json.dumps(student_dets))
    out = subprocess.run(
        [sys.executable, "pipelines/analyze.py", "tide", "--run", "teacher", str(cfgs["teacher"]), teacher.checkpoint,
         "--run", "PGD student", str(cfgs["PGD student"]), student.checkpoint,
         "--detections", "PGD student", str(tmp_path / "student.json"),
         "--out-dir", str(tmp_path), "--mlflow-run-id", run_id, "--tracking-uri", uri],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    tide_rows = _csv(tmp_path / "tide.csv")
    assert [r["run"] for r in tide_rows] == ["teacher", "PGD student"]
    for r in tide_rows:
        assert 0 <= float(r["AP50"]) <= 100 and all(float(r[e]) >= 0 for e in ("Cls", "Loc", "Miss"))
    logged = {a.path for a in c.list_artifacts(run_id, "analysis/lrp")} | {
        a.path for a in c.list_artifacts(run_id, "analysis/tide")}
    assert logged == {f"analysis/{n}/{n}.{e}" for n in ("lrp", "tide") for e in ("png", "csv", "json")}

    bad = subprocess.run([sys.executable, "pipelines/analyze.py", "lrp", "--out-dir", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert bad.returncode == 2 and "give at least one --run" in bad.stderr and "Traceback" not in bad.stderr
