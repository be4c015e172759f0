"""The space file's ``analysis:`` section, run at the end of a sweep: each entry names one of
the paper's analyses (:data:`pgd.reporting.analyses.ANALYSES`), which runs it takes (one per
table row, the teachers, or every finished trial) and its options. Results go to
``<sweep>/analysis/<name>/`` and to the sweep's parent MLflow run under ``analysis/<name>/``.
An analysis that fails is reported (console and tag ``pgd.analysis.<name>.error``) without
losing the table.
"""

from __future__ import annotations

import math
from pathlib import Path

from pgd.config.names import STUDENT, TEACHER


def _label(row, keys) -> str:
    parts = []
    for k in keys:
        v = row.get(k) if k in ("detector", "method") else row.get(f"param.{k}")
        if v is None or (isinstance(v, float) and math.isnan(v)) or v == "None":
            continue
        parts.append(str(v) if k in ("detector", "method") else f"{k.rsplit('.', 1)[-1]}={v}")
    return " ".join(parts) or "run"


def _checkpoint(row) -> str | None:
    ckpt = row.get("tag.pgd.best_checkpoint") or row.get("best_checkpoint")
    if isinstance(ckpt, str) and ckpt and Path(ckpt).is_file():
        return ckpt
    work = row.get("tag.pgd.work_dir")
    if isinstance(work, str) and Path(work).is_dir():
        found = sorted(Path(work).glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[-1]))
        return str(found[-1]) if found else None
    return None


def run_refs(which: str, plan, runs) -> list:
    """The RunRefs an analysis takes from a finished sweep (``runs``: the report's frame)."""
    from pgd.reporting.analyses import RunRef

    if which == "teachers":
        refs = []
        for t in plan.teachers:
            refs.append(RunRef(name=f"{TEACHER} {t.model}", run_config=plan.teacher_run(t.model).dump(),
                               checkpoint=t.checkpoint))
        return refs
    by_key = {t.key: t for t in plan.trials or []}
    done = runs[(runs["status"] == "FINISHED") & (runs["role"] == "trial")] if len(runs) else runs
    refs, seen = [], set()
    ordered = done.sort_values("param.seed", key=lambda s: s.astype(float)) if len(done) else done
    for _, row in ordered.iterrows():
        label = _label(row, plan.space.report.rows) if which == "rows" else str(row["run_name"])
        if label in seen:
            continue
        key = row.get("tag.pgd.trial_id")
        trial = by_key.get(key)
        ckpt = _checkpoint(row)
        if trial is None or ckpt is None:
            continue
        seen.add(label)
        refs.append(RunRef(name=label, run_config=trial.run.dump(), checkpoint=ckpt))
    order = {TEACHER: 0, STUDENT: 1}
    return sorted(refs, key=lambda r: (order.get(r.name.split(" ")[-1], 2), r.name)) if which == "rows" else refs


def run_sweep_analyses(plan, runs, parent_run_id: str | None, say=print) -> dict:
    """Run the space's analyses; returns ``{name: paths or the error text}``."""
    from pgd.reporting.analyses import ANALYSES

    out: dict = {}
    for spec in plan.space.analysis:
        refs = run_refs(spec.runs, plan, runs)
        if not refs:
            out[spec.name] = "no finished run with a checkpoint to analyse"
            say(f"analysis {spec.name}: skipped, {out[spec.name]}")
            continue
        folder = Path(plan.sweep_dir) / "analysis" / spec.name
        say(f"analysis {spec.name} on {len(refs)} run(s) ({spec.runs}) -> {folder}")
        try:
            out[spec.name] = ANALYSES[spec.name](refs, folder, **spec.options, tracking_uri=plan.tracking_uri,
                                                 mlflow_run_id=parent_run_id)
        except Exception as exc:  # noqa: BLE001 - one failed figure must not lose the sweep's table
            reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:500]}"
            out[spec.name] = reason
            say(f"analysis {spec.name} failed: {reason}")
            if parent_run_id:
                from pgd.sweep.tracking import client

                client(plan.tracking_uri).set_tag(parent_run_id, f"pgd.analysis.{spec.name}.error", reason)
    return out


QUALITY_MAP_TAG = "pgd.quality_map"  # set on a child run once its quality map is logged


def trial_quality_maps(plan, runs, tracking_uri: str, say=print) -> dict:
    """Every finished trial's quality map (paper Fig. 2 for its own trained detector, val
    image 0), logged to its child run under ``analysis/quality-map/``; runs in the driver
    after the trials (one forward pass on the CPU per trial), skips runs that already hold
    one (a resumed sweep), and records a failure as the tag ``pgd.quality_map.error``.
    Returns ``{run_id: png path or error}``."""
    from pgd.reporting.analyses import ANALYSES, RunRef
    from pgd.sweep.tracking import client

    by_key = {t.key: t for t in plan.trials or []}
    done = runs[(runs["status"] == "FINISHED") & (runs["role"] == "trial")] if len(runs) else runs
    c = client(tracking_uri)
    out = {}
    for _, row in done.iterrows():
        rid = row["run_id"]
        trial = by_key.get(row.get("tag.pgd.trial_id"))
        ckpt = _checkpoint(row)
        if trial is None or ckpt is None or isinstance(row.get(f"tag.{QUALITY_MAP_TAG}"), str):
            continue
        folder = Path(plan.sweep_dir) / "quality_maps" / trial.key
        try:
            paths = ANALYSES["quality-map"]([RunRef(name=trial.name, run_config=trial.run.dump(), checkpoint=ckpt)],
                                            folder, tracking_uri=tracking_uri, mlflow_run_id=rid)
            c.set_tag(rid, QUALITY_MAP_TAG, "analysis/quality-map/quality_maps.png")
            out[rid] = str(paths["png"])
        except Exception as exc:  # noqa: BLE001 - a figure must not lose the sweep's table
            reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:500]}"
            c.set_tag(rid, f"{QUALITY_MAP_TAG}.error", reason)
            out[rid] = reason
            say(f"quality map of {trial.name} failed: {reason}")
    if out:
        say(f"quality maps of {len(out)} trial(s) logged to their runs (analysis/quality-map/)")
    return out
