"""Tables from MLflow without Ray: grouping, mean ± std over seeds, paired deltas against the
plain student of the same detector with their test, CI and correction, the comparability
guard, the teacher check, the cost column, row order, Markdown/CSV/Parquet outputs, figures,
the best configuration."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from pgd.errors import ConfigError
from pgd.reporting.stats import adjust
from pgd.reporting.tables import (
    frame_from_records,
    paper_table,
    run_cost,
    runs_frame,
    write_outputs,
)
from pgd.testing import example_sweep

ROWS = ["detector", "method", "distill.strategy"]
STUDENT = {"method": "student"}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "reporting.md"


def log_run(c, exp, sweep, role, params, metrics, status="FINISHED", tags=None, history=None, parent=None):
    base = {"pgd.sweep_id": sweep, "pgd.role": role, **(tags or {})}
    if parent:
        base["mlflow.parentRunId"] = parent
    from mlflow.entities import Metric, Param

    run = c.create_run(exp, tags=base)
    rid = run.info.run_id
    last = max(history) if history else 3
    points = [Metric("AP", v, 0, epoch) for epoch, v in (history or {}).items() if epoch != last]
    points += [Metric(k, v, 1, last) for k, v in metrics.items()]
    c.log_batch(rid, metrics=points, params=[Param(k, str(v)) for k, v in params.items()])
    c.log_dict(rid, {"model": params.get("model"), "seed": params.get("seed")}, "resolved_config.yaml")
    c.set_terminated(rid, status=status)
    return rid


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory):
    """An MLflow SQLite store created once (its schema migration takes seconds); tests copy it."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "empty.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def fresh_store(empty_db, tmp_path):
    import shutil

    from mlflow.tracking import MlflowClient

    shutil.copy(empty_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, MlflowClient(uri)


@pytest.fixture(scope="module")
def record(empty_db, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("record")
    uri, c = fresh_store(empty_db, tmp_path)
    exp = c.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    m = lambda ap: {"AP": ap, "AP50": ap + 20, "AP75": ap + 2, "APS": 1, "APM": 2, "APL": 3}  # noqa: E731
    log_run(c, exp, "s", "teacher", {"model": "atss_r101"}, m(45.5))
    for seed, ap in ((0, 39.0), (1, 40.0)):
        log_run(c, exp, "s", "trial", {"model": "atss_r50", "distill": "None", "seed": seed}, m(ap))
        log_run(c, exp, "s", "trial", {"model": "atss_r50", "distill.method": "pgd", "distill.strategy": "pgw",
                                       "seed": seed}, m(ap + 4.5))
    log_run(c, exp, "s", "trial", {"model": "atss_r50", "distill.method": "pgd", "distill.strategy": "box",
                                   "seed": 0}, m(42.0))
    log_run(c, exp, "s", "trial", {"model": "fcos_r50", "distill": "None", "seed": 0}, m(38.2))
    log_run(c, exp, "s", "trial", {"model": "fcos_r50", "distill.method": "pgd", "distill.strategy": "pgw",
                                   "seed": 0}, m(42.5))
    log_run(c, exp, "s", "trial", {"model": "fcos_r50", "distill.method": "fgd", "seed": 0}, m(0.0), status="FAILED")
    log_run(c, exp, "other", "trial", {"model": "atss_r50", "distill": "None", "seed": 0}, m(1.0))
    return uri


def rec(model, seed, ap, *, method=None, role="trial", params=None, tags=None, **metrics):
    """One run-frame record (what runs_frame builds from MLflow)."""
    p = {"model": model, "seed": seed, "distill.method": method or "None", **(params or {})}
    out = {f"param.{k}": str(v) for k, v in p.items()}
    out.update({f"tag.{k}": str(v) for k, v in (tags or {}).items()})
    out.update(AP=ap, **metrics, run_id=f"r{model}{method}{seed}{ap}{sorted((params or {}).items())}",
               status="FINISHED", role=role)
    return out


def example():
    records, histories = example_sweep()
    return paper_table(frame_from_records(records), ROWS, STUDENT), histories


def row(table, **keys):
    f = table.frame
    sel = f[np.logical_and.reduce([f[k].map(lambda v: v if v is not None else "-") == v for k, v in keys.items()])]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def md_row(md: str, start: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(start))
    return [c.strip() for c in line.strip("|").split("|")]


# ------------------------------------------------------------------ MLflow-backed
def test_runs_frame_reads_one_sweep(record):
    df = runs_frame(record, "e", "s")
    assert len(df) == 9  # the other sweep's run is not included
    assert set(df["method"]) == {"teacher", "student", "pgd", "fgd"}
    assert set(df["detector"]) == {"atss", "fcos"}
    assert set(df["tag.pgd.sweep_id"]) == {"s"}  # pgd.* tags are columns


def test_paper_table_summaries_and_paired_deltas(record):
    df = runs_frame(record, "e", "s")
    table = paper_table(df, ["detector", "method"], STUDENT)
    f = table.frame.set_index(["detector", "method"])
    assert f.loc[("atss", "student"), "n"] == 2
    assert f.loc[("atss", "student"), "AP_mean"] == pytest.approx(39.5)
    assert f.loc[("atss", "student"), "AP_std"] == pytest.approx(math.sqrt(0.5))
    # pgw (seeds 0, 1) and box (seed 0) both are "pgd" rows here: seed 0 averages 43.5 and 42.0
    assert f.loc[("atss", "pgd"), "n"] == 2
    assert f.loc[("atss", "pgd"), "AP_mean"] == pytest.approx((42.75 + 44.5) / 2)
    assert f.loc[("atss", "pgd"), "AP_delta"] == pytest.approx(((42.75 - 39.0) + (44.5 - 40.0)) / 2)
    ref = st.ttest_rel([42.75, 44.5], [39.0, 40.0])
    assert f.loc[("atss", "pgd"), "AP_p_t"] == pytest.approx(ref.pvalue)
    assert f.loc[("fcos", "pgd"), "AP_delta"] == pytest.approx(42.5 - 38.2)
    assert math.isnan(f.loc[("fcos", "pgd"), "AP_p"])  # one seed: no p-value
    assert math.isnan(f.loc[("atss", "teacher"), "AP_delta"])
    assert ("fcos", "fgd") not in f.index  # failed runs are not in the table
    md = table.markdown("T")
    assert "| atss | student | 2 | 39.5±0.7 |" in md
    assert "| fcos | pgd | 1 | 42.5 (+4.3) |" in md
    assert "No p-value (AP): fcos pgd: one shared seed: no spread, so no CI and no t-test." in md
    assert "atss pgd: runs differ in distill.strategy (box / pgw)" in md  # the mixed row is named
    lines = md.splitlines()
    assert lines.index("| atss | teacher | 1 | 45.5 | 65.5 | 47.5 | 1.0 | 2.0 | 3.0 | - |") < \
        next(i for i, ln in enumerate(lines) if ln.startswith("| atss | student"))


def test_strategy_rows_compare_with_the_student(record, tmp_path):
    df = runs_frame(record, "e", "s")
    table = paper_table(df[df["detector"] == "atss"], ROWS, STUDENT)
    box = row(table, **{"distill.strategy": "box"})
    assert box["AP_delta"] == pytest.approx(42.0 - 39.0) and box["AP_n_paired"] == 1  # paired on seed 0
    assert "(+3.0, n=1)" in md_row(table.markdown(), "| atss | pgd | box")[4]
    pgw = row(table, **{"distill.strategy": "pgw"})
    assert pgw["AP_mean"] == pytest.approx(44.0) and pgw["AP_delta"] == pytest.approx(4.5)
    paths = write_outputs(table, tmp_path / "out", "strategies")
    assert pd.read_csv(paths["csv"]).shape[0] == len(table.frame)
    back = pd.read_parquet(paths["parquet"])
    f = table.frame
    assert list(back["distill.strategy"].fillna("-")) == list(f["distill.strategy"].fillna("-").astype(str))


def test_report_sweep_writes_and_logs_tables_and_figures(empty_db, tmp_path):
    from pgd.reporting.report import report_sweep

    uri, c = fresh_store(empty_db, tmp_path)
    exp = c.create_experiment("ex", artifact_location=(tmp_path / "art").as_uri())
    parent = c.create_run(exp, tags={"pgd.sweep_id": "s1", "pgd.role": "sweep"}).info.run_id
    records, histories = example_sweep()
    for r in records:
        params = {k[len("param."):]: v for k, v in r.items() if k.startswith("param.")}
        tags = {k[len("tag."):]: v for k, v in r.items() if k.startswith("tag.")}
        metrics = {k: r[k] for k in ("AP", "AP50", "AP75", "APS", "APM", "APL")}
        log_run(c, exp, "s1", r["role"], params, metrics, tags=tags, history=histories[r["run_id"]], parent=parent)
    spec = SimpleNamespace(name="ex", description="synthetic", metric="AP", mode="max",
                           report=SimpleNamespace(rows=ROWS, baseline=STUDENT,
                                                  columns=["AP", "AP50", "AP75", "APS", "APM", "APL"], title=None))
    out = report_sweep(uri, spec, "s1", parent_run_id=parent, out_dir=tmp_path / "rep", quiet=True)
    assert "(+4.6 ±0.4)*" in out["markdown"]
    logged = {a.path for a in c.list_artifacts(parent, "report")}
    assert logged == {f"report/{n}" for n in ("table.md", "table.csv", "table.parquet", "table.png",
                                              "curves.png", "best_config.yaml")}
    from PIL import Image

    for name in ("table.png", "curves.png"):
        p = tmp_path / "rep" / name
        assert p.stat().st_size > 20_000  # a drawn figure, not an empty canvas
        w, h = Image.open(p).size
        assert w >= 700 and h >= 500


# ------------------------------------------------------------------ statistics in the table
def test_cells_match_scipy_on_the_per_seed_numbers():
    table, _ = example()
    student = table.seed_values(int(row(table, method="student").name), "AP").to_numpy()
    rows = [row(table, method="pgd", **{"distill.strategy": s}) for s in ("pgw", "box")] + [row(table, method="fgd")]
    p_raw = []
    for r in rows:
        x = table.seed_values(int(r.name), "AP").to_numpy()
        ref = st.ttest_rel(x, student)
        ci = ref.confidence_interval(0.95)
        assert r["AP_delta"] == pytest.approx(np.mean(x - student))
        assert (r["AP_ci_low"], r["AP_ci_high"]) == pytest.approx((ci.low, ci.high))
        assert r["AP_p"] == pytest.approx(ref.pvalue) and r["AP_p_t"] == r["AP_p"]
        # 3 seeds, all gains of one sign: 2 of 8 sign vectors; box (0.9, -0.3, 0.7): also the
        # vectors reaching 0.9 - 0.3 + 0.7 = 1.3 count, 4 of 8
        assert r["AP_p_exact"] == (0.5 if r["distill.strategy"] == "box" else 0.25)
        p_raw.append(ref.pvalue)
    assert [r["AP_p_adj"] for r in rows] == pytest.approx(list(adjust(p_raw, "holm")))


def test_significance_marker_exactly_where_expected():
    table, _ = example()
    md = table.markdown()
    assert md_row(md, "| atss | pgd | pgw")[4] == "44.2±0.4 (+4.6 ±0.4)*"
    assert md_row(md, "| atss | fgd")[4] == "42.6±0.6 (+3.0 ±0.9)*"
    box = md_row(md, "| atss | pgd | box")[4]
    assert box == "40.0±0.4 (+0.4 ±1.6)"  # CI spans 0: no star
    assert md_row(md, "| atss | student")[4] == "39.6±0.3"
    starred = {ln.split("|")[2].strip() + " " + ln.split("|")[3].strip()
               for ln in md.splitlines() if ln.startswith("| atss") and ln.split("|")[5].strip().endswith("*")}
    assert starred == {"pgd pgw", "fgd -"}
    f = table.frame
    assert set(f.loc[f["AP_significant"], "method"]) == {"pgd", "fgd"}
    assert "Test: paired t-test (two-sided)" in md and "alpha 0.05" in md and "Holm correction" in md
    assert "n = seeds per row: 1-3 (seeds 0, 1, 2)" in md
    # the distribution-free check is stated: 3 seeds cannot reach p < 0.05 by sign flips
    assert "not by the distribution-free sign-flip test (AP): atss fgd (p_exact 0.25" in md
    assert "atss pgd distill.strategy=box +0.4 (sd of differences 0.64): ~11 seeds" in md


def test_holm_removes_stars_that_no_correction_keeps():
    student = {0: 39.4, 1: 39.9, 2: 39.5, 3: 40.1}
    gains = {"a": [0.9, 0.3, 1.2, 0.4], "b": [0.8, 0.3, 1.2, 0.5]}  # raw paired p 0.046 and 0.037
    records = [rec("atss_r50", s, ap) for s, ap in student.items()]
    records += [rec("atss_r50", s, round(ap + gains[m][s], 1), method=m) for m in gains for s, ap in student.items()]
    df = frame_from_records(records)
    raw = paper_table(df, ["detector", "method"], STUDENT, correction="none")
    assert all(r["AP_significant"] and r["AP_p"] < 0.05 for _, r in raw.frame[raw.frame["method"] != "student"].iterrows())
    assert "no correction for multiple comparisons" in raw.markdown()
    holm = paper_table(df, ["detector", "method"], STUDENT)
    kd = holm.frame[holm.frame["method"] != "student"]
    assert list(kd["AP_p_adj"]) == pytest.approx([0.0748, 0.0748], abs=1e-3)  # 2 x 0.0374, then the max
    assert not kd["AP_significant"].any()
    assert "*" not in "".join(ln for ln in holm.markdown().splitlines() if ln.startswith("| atss"))
    exact = paper_table(df, ["detector", "method"], STUDENT, test="sign-flip", correction="none")
    assert list(exact.frame["AP_p"].dropna()) == [0.125, 0.125]  # 4 seeds: at best 2/16
    assert "exact sign-flip permutation test" in exact.markdown()


def test_bad_settings_are_config_errors():
    df = frame_from_records([rec("atss_r50", 0, 39.0)])
    with pytest.raises(ConfigError, match="alpha"):
        paper_table(df, ["method"], STUDENT, alpha=5)
    with pytest.raises(ConfigError, match="bonferroni"):
        paper_table(df, ["method"], STUDENT, correction="bonferroni")
    with pytest.raises(ConfigError, match="wilcoxon"):
        paper_table(df, ["method"], STUDENT, test="wilcoxon")


def test_csv_carries_the_raw_numbers(tmp_path):
    table, _ = example()
    paths = write_outputs(table, tmp_path, "x")
    csv = pd.read_csv(paths["csv"])
    for s in ("mean", "std", "n", "delta", "n_paired", "ci_low", "ci_high", "p_t", "p_exact", "p", "p_adj",
              "significant"):
        assert f"AP_{s}" in csv
    pgw = csv[(csv["method"] == "pgd") & (csv["distill.strategy"] == "pgw")].iloc[0]
    assert pgw["AP_ci_low"] < pgw["AP_delta"] < pgw["AP_ci_high"] and bool(pgw["AP_significant"])
    assert pd.read_parquet(paths["parquet"]).shape == csv.shape
    assert Path(paths["markdown"]).read_text().count("\n- ") >= 4  # the footer is in the file


# ------------------------------------------------------------------ comparability guard
def kd_pair(teacher_a="3f9c", teacher_b="3f9c", scale_b="[1333, 800]"):
    out = []
    for s, ap in ((0, 40.0), (1, 41.0), (2, 40.5)):
        out.append(rec("atss_r50", s, ap, params={"schedule.img_scale": "[1333, 800]"}))
        out.append(rec("atss_r50", s, ap + 1.0 + 0.1 * s, method="fgd", tags={"pgd.teacher_hash": teacher_a},
                       params={"schedule.img_scale": "[1333, 800]"}))
        out.append(rec("atss_r50", s, ap + 2.0 + 0.1 * s, method="pgd", tags={"pgd.teacher_hash": teacher_b},
                       params={"schedule.img_scale": scale_b}))
    return frame_from_records(out)


def test_guard_refuses_a_different_teacher():
    same = paper_table(kd_pair(), ["detector", "method"], {"method": "fgd"})
    assert row(same, method="pgd")["AP_delta"] == pytest.approx(1.0)
    table = paper_table(kd_pair(teacher_b="77aa"), ["detector", "method"], {"method": "fgd"})
    pgd = row(table, method="pgd")
    assert math.isnan(pgd["AP_delta"]) and not pgd["compared"]
    md = table.markdown()
    assert md_row(md, "| atss | pgd")[3] == "42.6±0.6"  # no delta
    assert ("Not compared (no delta): atss pgd vs atss fgd: teacher differs: "
            "tag pgd.teacher_hash = 77aa vs baseline 3f9c") in md
    # the plain student has no teacher: a KD row is still compared with it
    vs_student = paper_table(kd_pair(teacher_b="77aa"), ["detector", "method"], STUDENT)
    assert row(vs_student, method="pgd")["AP_delta"] == pytest.approx(2.1)


def test_guard_refuses_a_different_image_scale():
    table = paper_table(kd_pair(scale_b="[800, 480]"), ["detector", "method"], STUDENT)
    assert row(table, method="fgd")["compared"] and not row(table, method="pgd")["compared"]
    assert ("atss pgd vs atss student: image scale differs: schedule.img_scale = [800, 480] "
            "vs baseline [1333, 800]") in table.markdown()


def test_guard_missing_key_on_one_side_is_a_difference():
    records = [rec("atss_r50", s, 40.0 + s) for s in range(3)]
    records += [rec("atss_r50", s, 41.0 + s + 0.1 * s, method="pgd", params={"data.val_ann": "val_b.json"})
                for s in range(3)]
    table = paper_table(frame_from_records(records), ["detector", "method"], STUDENT)
    assert "split differs: data.val_ann = val_b.json vs baseline (not set)" in table.markdown()
    both = frame_from_records([r for r in records if r["param.distill.method"] == "None"]
                              + [{k: v for k, v in r.items() if k != "param.data.val_ann"}
                                 for r in records if r["param.distill.method"] == "pgd"])
    assert row(paper_table(both, ["detector", "method"], STUDENT), method="pgd")["compared"]


def test_guard_refuses_a_row_that_mixes_models():
    records = [rec(m, s, 40.0 + s, method=meth) for m in ("atss_r50", "gfl_r50") for s in range(2)
               for meth in (None, "pgd")]
    table = paper_table(frame_from_records(records), ["method"], STUDENT)
    assert not row(table, method="pgd")["compared"]
    assert "student model mixed within the row: model = atss_r50 / gfl_r50" in table.markdown()


# ------------------------------------------------------------------ teacher, order, cost
def test_weak_teacher_is_flagged():
    records = [rec("atss_r101", 0, 38.0, role="teacher")] + [rec("atss_r50", s, 39.0 + s) for s in range(2)]
    md = paper_table(frame_from_records(records), ["detector", "method"], STUDENT).markdown()
    assert md_row(md, "| atss | teacher")[3] == "38.0 !"
    assert "! atss teacher: AP 38.0 is not above the plain student's 39.5" in md
    strong = [rec("atss_r101", 0, 45.0, role="teacher")] + records[1:]
    assert "!" not in paper_table(frame_from_records(strong), ["detector", "method"], STUDENT).markdown()


def test_rows_teacher_then_student_then_the_rest_per_detector():
    records = []
    for det in ("fcos", "atss"):
        records += [rec(f"{det}_r50", 0, 40.0, method="pgd", params={"distill.strategy": "pgw"}),
                    rec(f"{det}_r50", 0, 39.0, method="fgd"),  # FGD defines no strategy
                    rec(f"{det}_r50", 0, 40.0, method="pgd", params={"distill.strategy": "box"}),
                    rec(f"{det}_r50", 0, 38.0),
                    rec(f"{det}_r101", 0, 44.0, role="teacher")]
    table = paper_table(frame_from_records(records), ROWS, STUDENT)
    got = [tuple(r[k] if isinstance(r[k], str) else "-" for k in ROWS) for _, r in table.frame.iterrows()]
    assert got == [(d, m, s) for d in ("atss", "fcos") for m, s in
                   (("teacher", "-"), ("student", "-"), ("fgd", "-"), ("pgd", "box"), ("pgd", "pgw"))]
    assert "| atss | fgd | - | 1 |" in table.markdown()  # a key the row does not define shows '-'


def test_cost_column_and_sweep_total_from_tags():
    table, _ = example()
    md = table.markdown()
    assert md_row(md, "| atss | teacher")[-1] == "33 GPU-h"  # 36 epochs x 11 h / 12 on 8 GPUs
    assert md_row(md, "| atss | student")[-1] == "24 GPU-h"  # 3 seeds x 8 GPU-h
    assert "Cost: 213 GPU-h for the whole sweep (16 runs, incl. 1 teacher)" in md
    cpu = {"tag.pgd.duration_s": "1800", "tag.pgd.gpus": "0", "tag.pgd.cpus": "2"}
    assert run_cost(cpu) == (0.0, 1.0)
    assert run_cost({"tag.pgd.duration_s": "1800", "tag.pgd.cpus": "2"}) is None  # GPUs unknown: no guess
    records = [rec("atss_r50", 0, 39.0, tags={"pgd.duration_s": 1800, "pgd.gpus": 0, "pgd.cpus": 2}),
               rec("atss_r50", 1, 39.5), rec("atss_r50", 0, 40.0, method="pgd",
                                              tags={"pgd.duration_s": 3600, "pgd.gpus": 0, "pgd.cpus": 1})]
    t = paper_table(frame_from_records(records), ["detector", "method"], STUDENT)
    assert md_row(t.markdown(), "| atss | student")[-1] == "-"  # one seed lacks the tags
    assert md_row(t.markdown(), "| atss | pgd")[-1] == "1 CPU-h"
    assert "Cost: 2 CPU-h for the whole sweep (3 runs); 1 run without cost tags not counted" in t.markdown()


# ------------------------------------------------------------------ figures
def test_figures_are_drawn_from_the_table(tmp_path):
    from pgd.reporting.figures import bar_chart, learning_curves

    table, histories = example()
    fig, ax, bars = bar_chart(table, "AP", tmp_path / "bars.png")
    assert len(bars) == len(table.frame)
    assert [b.get_height() for b in bars] == pytest.approx(list(table.frame["AP_mean"]))
    texts = {t.get_text() for t in ax.texts}
    assert {"+4.6*", "+3.0*", "+0.4", "no delta"} <= texts
    assert ax.get_ylabel() == "AP (%)" and ax.get_title()
    fig, ax, lines = learning_curves(table, histories, "AP", tmp_path / "curves.png")
    assert len(lines) == len(table.frame)  # one line per row of the table
    for i, line in enumerate(lines):  # each ends on the row's mean over seeds
        assert line.get_ydata()[-1] == pytest.approx(table.frame.iloc[i]["AP_mean"])
    assert ax.get_xlabel() == "epoch" and len(ax.get_legend().get_texts()) == len(table.frame)
    for p in ("bars.png", "curves.png"):
        assert (tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / p).stat().st_size > 20_000


def test_docs_example_is_what_the_code_prints():
    table, _ = example()
    assert table.markdown("Example: ATSS R50 students of an R101 teacher (synthetic numbers)") in DOCS.read_text()
