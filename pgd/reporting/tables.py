"""Paper-style comparison tables built from MLflow alone.

Rows are groups of finished runs (e.g. detector x method, or strategy, or K/alpha); columns
are COCO metrics shown as ``value(+delta)`` against the plain student of the same detector,
``mean±std`` when seeds repeat. Teacher rows come from the sweep's teacher runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from pgd.reporting.text import COCO_COLUMNS

ROLE = "pgd.role"


def runs_frame(tracking_uri: str, experiment: str, sweep_id: str | None = None) -> pd.DataFrame:
    """One row per child run of ``sweep_id`` (or of the whole experiment): params, the last
    value of every metric, status, role and the run id."""
    from pgd.sweep.tracking import TAG_SWEEP, client

    c = client(tracking_uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        from pgd.errors import ConfigError

        raise ConfigError(f"MLflow experiment {experiment!r} not found at {tracking_uri}")
    filt = f"tags.`{ROLE}` != 'sweep'"
    if sweep_id:
        filt += f" and tags.`{TAG_SWEEP}` = '{sweep_id}'"
    runs = c.search_runs([exp.experiment_id], filter_string=filt, max_results=50000)
    rows = []
    for r in runs:
        row = {f"param.{k}": v for k, v in r.data.params.items()}
        row.update({k.replace(".", "/", 1) if k.startswith("train.") else k: v for k, v in r.data.metrics.items()})
        row.update(run_id=r.info.run_id, status=r.info.status, role=r.data.tags.get(ROLE, "trial"),
                   run_name=r.info.run_name, error=r.data.tags.get("pgd.error"))
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["detector"] = df.get("param.model", pd.Series(dtype=str)).astype(str).str.rsplit("_", n=1).str[0]
    method = df.get("param.distill.method")
    df["method"] = method.where(method.notna() & (method != "None"), "student") if method is not None else "student"
    df.loc[df["role"] == "teacher", "method"] = "teacher"
    return df


def _key(df: pd.DataFrame, name: str) -> pd.Series:
    if name in ("detector", "method"):
        return df[name]
    col = f"param.{name}"
    return df[col] if col in df else pd.Series([None] * len(df), index=df.index)


@dataclass
class Table:
    frame: pd.DataFrame  # one row per group: keys, n, <metric>_mean, <metric>_std, <metric>_delta
    rows: list[str]
    columns: list[str]

    def markdown(self, title: str | None = None) -> str:
        head = "| " + " | ".join(self.rows) + " | n | " + " | ".join(self.columns) + " |"
        sep = "|" + "---|" * len(self.rows) + "---:|" + "---:|" * len(self.columns)
        lines = ([f"### {title}", ""] if title else []) + [head, sep]
        for _, r in self.frame.iterrows():
            cells = [_fmt_key(r[k]) for k in self.rows] + [str(int(r["n"]))]
            for c in self.columns:
                cells.append(_fmt_cell(r.get(f"{c}_mean"), r.get(f"{c}_std"), r.get(f"{c}_delta"), int(r["n"])))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _fmt_key(v) -> str:
    return "-" if _missing(v) or v == "None" else str(v)


def _fmt_cell(mean, std, delta, n) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    s = f"{mean:.1f}"
    if n > 1 and std is not None and not math.isnan(std):
        s += f"±{std:.1f}"
    if delta is not None and not (isinstance(delta, float) and math.isnan(delta)):
        s += f"({delta:+.1f})"
    return s


def paper_table(df: pd.DataFrame, rows: list[str], baseline: dict, columns=COCO_COLUMNS) -> Table:
    """Group finished runs by ``rows``; mean/std over repeats; delta of each mean against the
    baseline group (``baseline`` values, same values of the other row keys the baseline
    defines)."""
    columns = [c for c in columns if c in df.columns] if not df.empty else []
    if df.empty:
        return Table(pd.DataFrame(columns=[*rows, "n"]), rows, list(columns))
    done = df[df["status"] == "FINISHED"].copy()
    # a key a run does not define (NaN, or MLflow's string "None") groups as None
    keys = pd.DataFrame({k: _key(done, k).map(lambda v: None if _missing(v) or v in ("None", "nan") else v)
                         for k in rows})
    done = pd.concat([keys.add_prefix("key."), done], axis=1)
    groups = []
    for vals, g in done.groupby([f"key.{k}" for k in rows], dropna=False, sort=False):
        vals = vals if isinstance(vals, tuple) else (vals,)
        rec = {k: (None if _missing(v) else v) for k, v in zip(rows, vals)}
        rec["n"] = len(g)
        for c in columns:
            x = pd.to_numeric(g[c], errors="coerce").dropna()
            rec[f"{c}_mean"] = float(x.mean()) if len(x) else float("nan")
            rec[f"{c}_std"] = float(x.std(ddof=1)) if len(x) > 1 else float("nan")
        groups.append(rec)
    table = pd.DataFrame(groups)
    for c in columns:
        table[f"{c}_delta"] = float("nan")
    for i, r in table.iterrows():
        if r.get("method") == "teacher" or all(r.get(k) == v for k, v in baseline.items()):
            continue
        base = _baseline_of(table, r, rows, baseline)
        if base is not None:
            for c in columns:
                table.at[i, f"{c}_delta"] = r[f"{c}_mean"] - base[f"{c}_mean"]
    order = {"teacher": 0, "student": 1}
    if "method" in table:
        table["_o"] = table["method"].map(lambda m: order.get(m, 2))
        sort_keys = [k for k in rows if k != "method"]
        table = table.sort_values(sort_keys + ["_o"], kind="stable", key=lambda s: s.astype(str)).drop(columns="_o")
    return Table(table.reset_index(drop=True), rows, list(columns))


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _baseline_of(table: pd.DataFrame, row, rows: list[str], baseline: dict):
    """The baseline group of ``row``: the ``baseline`` values, and equal values for every
    other row key the baseline defines (a student has no strategy: that key is ignored)."""
    cand = table
    for k, v in baseline.items():
        if k not in cand:
            return None
        cand = cand[cand[k] == v]

    def same(b) -> bool:
        return all(_missing(b[k]) or b[k] == row[k] for k in rows if k not in baseline)

    cand = cand[cand.apply(same, axis=1)] if len(cand) else cand
    return cand.iloc[0] if len(cand) == 1 else None


def best_run(df: pd.DataFrame, metric: str = "AP", mode: str = "max"):
    done = df[(df["status"] == "FINISHED") & (df["role"] != "teacher")]
    if done.empty or metric not in done:
        return None
    x = pd.to_numeric(done[metric], errors="coerce")
    idx = x.idxmax() if mode == "max" else x.idxmin()
    return None if pd.isna(idx) else done.loc[idx]


def write_outputs(table: Table, out_dir, title: str | None = None) -> dict:
    """Markdown, CSV and Parquet (pyarrow) of a table; returns the paths."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "table.md"
    md.write_text(table.markdown(title) + "\n")
    csv = out / "table.csv"
    table.frame.to_csv(csv, index=False)
    pq = out / "table.parquet"
    frame = table.frame.copy()
    for k in table.rows:
        frame[k] = frame[k].map(lambda v: None if _missing(v) else str(v))
    frame.to_parquet(pq, engine="pyarrow", index=False)
    return {"markdown": str(md), "csv": str(csv), "parquet": str(pq)}
