"""The sweep's figures: the table as a bar chart with the seed spread, and the learning curves
of every row (metric vs epoch), as PNGs beside the tables.

Figures are built on ``matplotlib.figure.Figure`` (rendered by Agg when saved): no pyplot
state, no backend switch, safe in a Ray driver. Each function returns the matplotlib
objects it drew, so callers and tests can inspect them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pgd.reporting.tables import STUDENT, TEACHER, Table

ROLE_COLOURS = {TEACHER: "#7f7f7f", STUDENT: "#1f77b4", "kd": "#ff7f0e", "mixed": "#bcbd22"}
ROLE_NAMES = {TEACHER: "teacher", STUDENT: "plain student", "kd": "distilled student", "mixed": "mixed row"}
SEED_JITTER = 0.25  # width (in bar units) over which the seeds of one bar are spread
DPI = 120


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    return fig, fig.subplots()


def _unit(metric: str) -> str:
    return f"{metric} (%)"


def bar_chart(table: Table, metric: str | None = None, out: str | Path | None = None,
              title: str | None = None):
    """One bar per table row: the mean of ``metric`` over seeds, the sample std as an error
    bar, every seed as a dot, and above each compared row its paired delta (``*`` when
    significant after the table's correction; ``!`` on a teacher not above its student).
    Returns ``(fig, ax, bars)``; writes ``out`` (PNG) when given."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    metric = metric or table.metric
    f = table.frame
    n = len(f)
    fig, ax = _figure(max(6.0, 1.1 * n + 2.5), 4.8)
    x = np.arange(n)
    means = f[f"{metric}_mean"].to_numpy(dtype=float) if n else np.array([])
    stds = np.nan_to_num(f[f"{metric}_std"].to_numpy(dtype=float)) if n else np.array([])
    colours = [ROLE_COLOURS.get(r, ROLE_COLOURS["mixed"]) for r in f.get("role", [])]
    bars = ax.bar(x, np.nan_to_num(means), width=0.6, color=colours, alpha=0.75, zorder=1)
    ax.errorbar(x, means, yerr=stds, fmt="none", ecolor="black", capsize=5, lw=1.2, zorder=2)
    top = np.nan_to_num(means + stds)
    for i in range(n):
        vals = table.seed_values(i, metric).to_numpy(dtype=float)
        if len(vals):
            jitter = np.linspace(-SEED_JITTER / 2, SEED_JITTER / 2, len(vals)) if len(vals) > 1 else np.zeros(1)
            ax.scatter(x[i] + jitter, vals, s=22, color="black", zorder=3)
            top[i] = max(top[i], float(vals.max()))
    span = float(np.nanmax(top)) if n and np.isfinite(top).any() and np.nanmax(top) > 0 else 1.0
    for i, r in f.iterrows():
        text = ""
        d = r.get(f"{metric}_delta")
        if d is not None and np.isfinite(d):
            text = f"{d:+.1f}" + ("*" if r.get(f"{metric}_significant") else "")
        if r.get("teacher_flag") and metric == table.metric:
            text += " !"
        if text:
            ax.text(x[i], top[i] + 0.02 * span, text, ha="center", va="bottom", fontsize=9)
        elif r.get("note"):
            ax.text(x[i], top[i] + 0.02 * span, "no delta", ha="center", va="bottom", fontsize=8, color="grey")
    # each baseline's mean as a dashed line across the rows compared with it
    labels = [table.label(i) for i in range(n)]
    drew_base = False
    for base, fam in (f[f["compared"]].groupby("baseline") if n and "compared" in f else []):
        b = labels.index(base) if base in labels else None
        if b is None:
            continue
        xs = [b, *fam.index]
        ax.hlines(means[b], min(xs) - 0.4, max(xs) + 0.4, colors=ROLE_COLOURS[STUDENT], linestyles="--",
                  lw=1, zorder=0, label=None if drew_base else "baseline mean")
        drew_base = True
    ax.set_ylim(0, span * 1.15)
    ax.set_xticks(x, labels, rotation=25 if n > 3 else 0,
                  ha="right" if n > 3 else "center", fontsize=9)
    ax.set_xlabel(" / ".join(table.rows))
    ax.set_ylabel(_unit(metric))
    seeds = sorted({int(v) for v in f["n"]}) if n else [0]
    ax.set_title(title or f"{metric} per row, mean over {seeds[0] if len(seeds) == 1 else f'{seeds[0]}-{seeds[-1]}'} seeds")
    roles = [r for r in ROLE_COLOURS if n and r in set(f["role"])]
    handles = [Patch(color=ROLE_COLOURS[r], alpha=0.75, label=ROLE_NAMES[r]) for r in roles]
    handles += [Line2D([], [], color="black", marker="_", markersize=10, lw=1.2, label="± std over seeds"),
                Line2D([], [], color="black", marker="o", lw=0, markersize=5, label="one seed"),
                Line2D([], [], lw=0, label=f"+d* paired delta, significant at {table.alpha:g} ({table.correction})")]
    if drew_base:
        handles.append(Line2D([], [], color=ROLE_COLOURS[STUDENT], ls="--", lw=1, label="baseline mean"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    if out is not None:
        fig.savefig(out)
    return fig, ax, bars


def metric_histories(client, run_ids, metric: str) -> dict[str, dict[int, float]]:
    """``{run_id: {epoch: value}}`` from MLflow (``step`` = epoch); the latest value of a step
    wins (a restored trial may log an epoch twice)."""
    out = {}
    for rid in run_ids:
        hist = sorted(client.get_metric_history(rid, metric), key=lambda m: m.timestamp)
        out[rid] = {int(m.step): float(m.value) for m in hist}
    return out


def row_curves(table: Table, histories: dict[str, dict[int, float]]) -> list[pd.DataFrame]:
    """Per table row, a frame epochs x seeds of the metric (runs of one seed averaged)."""
    out = []
    for i in range(len(table.frame)):
        runs = table.runs[table.runs["_row"] == i]
        cols = {}
        for seed, g in runs.groupby("_seed", sort=True):
            per_run = [pd.Series(histories.get(rid, {}), dtype=float) for rid in g["run_id"]]
            per_run = [s for s in per_run if len(s)]
            if per_run:
                cols[seed] = pd.concat(per_run, axis=1).mean(axis=1)
        out.append(pd.DataFrame(cols).sort_index())
    return out


def learning_curves(table: Table, histories: dict[str, dict[int, float]], metric: str,
                    out: str | Path | None = None, title: str | None = None):
    """``metric`` vs epoch, one line per table row (mean over its seeds at each epoch), the
    band from the lowest to the highest seed. Rows without any history are named in the
    title's second line. Returns ``(fig, ax, lines)`` (one ``Line2D`` per drawn row)."""
    fig, ax = _figure(8.0, 4.8)
    curves = row_curves(table, histories)
    cmap = _colours(len(curves))
    lines, missing = [], []
    for i, c in enumerate(curves):
        if c.empty:
            missing.append(table.label(i))
            continue
        epochs = c.index.to_numpy(dtype=float)
        mean = c.mean(axis=1).to_numpy(dtype=float)
        style = "--" if table.frame.iloc[i].get("role") == TEACHER else "-"
        (line,) = ax.plot(epochs, mean, style, marker="o", markersize=3, color=cmap[i],
                          label=f"{table.label(i)} (n={c.shape[1]})")
        if c.shape[1] > 1:
            ax.fill_between(epochs, c.min(axis=1).to_numpy(dtype=float), c.max(axis=1).to_numpy(dtype=float),
                            color=cmap[i], alpha=0.15, lw=0)
        lines.append(line)
    ax.set_xlabel("epoch")
    ax.set_ylabel(_unit(metric))
    head = title or f"{metric} on the val split per epoch: mean over seeds, band = min..max"
    ax.set_title(head + (f"\nno curve for: {', '.join(missing)}" if missing else ""), fontsize=10)
    if lines:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if out is not None:
        fig.savefig(out)
    return fig, ax, lines


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]
