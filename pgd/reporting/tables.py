"""Paper-style comparison tables built from MLflow alone, with the statistics to read them.

Rows are groups of finished runs (e.g. detector x method, or strategy, or K/alpha); every
cell is ``mean±std`` over seeds; every delta against the baseline row (the plain student of
the same detector by default) is a *paired* comparison over the seeds both share, rendered
``44.2±0.1 (+4.6 ±0.3)*``: the delta, the half-width of its CI and ``*`` when significant after
the multiple-comparison correction (:mod:`pgd.reporting.stats`). A row gets a delta only when
the comparability guard (:mod:`pgd.reporting.comparability`) finds nothing that differs; the
footer under the table says which test, alpha, correction and seeds were used, why a row was
not compared, which teacher is not above its student, how many seeds a delta would need, and
what the sweep cost. Teacher rows come first, then the plain student, then the rest (within
each detector when ``detector`` is a row key).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pgd.config.names import DIAGNOSTIC_PREFIX, TRAIN_PREFIX
from pgd.errors import ConfigError
from pgd.reporting import comparability as G
from pgd.reporting import stats as S
from pgd.reporting.text import COCO_COLUMNS

ROLE = "pgd.role"
STUDENT, TEACHER = "student", "teacher"
FINISHED = "FINISHED"
TAG_DURATION, TAG_CPUS, TAG_GPUS = "pgd.duration_s", "pgd.cpus", "pgd.gpus"
SEED = "param.seed"
ALPHA = 0.05  # default significance level; the CI is the (1 - alpha) interval
METRIC = "AP"  # the metric of the teacher check and the seed-count hint


def _metric_name(key: str) -> str:
    """A trial's reported name from MLflow's (``train.loss_cls`` -> ``train/loss_cls``, ``kd.ratio_kd``
    -> ``kd/ratio_kd``; the driver logs ``/`` as ``.``)."""
    for prefix in (TRAIN_PREFIX, DIAGNOSTIC_PREFIX):
        dotted = prefix.replace("/", ".")
        if key.startswith(dotted):
            return prefix + key[len(dotted):]
    return key


def diagnostic_columns(df: pd.DataFrame) -> list[str]:
    """The KD-diagnostics columns of a runs frame (``report.diagnostics: true``): the total KD
    gradient ratio, each term's ratio, then the fg / bg position fractions per level."""
    cols = [c for c in df.columns if isinstance(c, str) and c.startswith(DIAGNOSTIC_PREFIX)]
    total = [c for c in cols if c == f"{DIAGNOSTIC_PREFIX}ratio_kd"]
    terms = sorted(c for c in cols if c.startswith(f"{DIAGNOSTIC_PREFIX}ratio_") and c not in total)
    fracs = sorted((c for c in cols if "_frac_p" in c),  # per level: fg, then bg
                   key=lambda c: (c.split("_frac_p")[1], not c.startswith(f"{DIAGNOSTIC_PREFIX}fg")))
    return total + terms + fracs


def runs_frame(tracking_uri: str, experiment: str, sweep_id: str | None = None) -> pd.DataFrame:
    """One row per child run of ``sweep_id`` (or of the whole experiment): params
    (``param.<key>``), the last value of every metric, the ``pgd.*`` tags (``tag.<name>``),
    status, role and the run id."""
    from pgd.sweep.tracking import TAG_SWEEP, client

    c = client(tracking_uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError(f"MLflow experiment {experiment!r} not found at {tracking_uri}")
    filt = f"tags.`{ROLE}` != 'sweep'"
    if sweep_id:
        filt += f" and tags.`{TAG_SWEEP}` = '{sweep_id}'"
    runs = c.search_runs([exp.experiment_id], filter_string=filt, max_results=50000)
    rows = []
    for r in runs:
        row = {f"param.{k}": v for k, v in r.data.params.items()}
        row.update({_metric_name(k): v for k, v in r.data.metrics.items()})
        row.update({f"{G.TAG}{k}": v for k, v in r.data.tags.items() if k.startswith("pgd.")})
        row.update(run_id=r.info.run_id, status=r.info.status, role=r.data.tags.get(ROLE, "trial"),
                   run_name=r.info.run_name, error=r.data.tags.get("pgd.error"))
        rows.append(row)
    return frame_from_records(rows)


def frame_from_records(records: list[dict]) -> pd.DataFrame:
    """The run frame from one dict per run (``param.*``, metrics, ``tag.*``, ``run_id``,
    ``status``, ``role``): adds ``detector`` (the model name without its backbone) and
    ``method`` (``distill.method``, ``student`` without one, ``teacher`` for teacher runs)."""
    df = pd.DataFrame(records)
    if df.empty:
        return df
    df["detector"] = df.get("param.model", pd.Series(dtype=str)).astype(str).str.rsplit("_", n=1).str[0]
    method = df.get("param.distill.method")
    df["method"] = method.where(method.notna() & (method != "None"), STUDENT) if method is not None else STUDENT
    df.loc[df["role"] == TEACHER, "method"] = TEACHER
    return df


def _key(df: pd.DataFrame, name: str) -> pd.Series:
    if name in ("detector", "method"):
        return df[name]
    col = f"param.{name}"
    return df[col] if col in df else pd.Series([None] * len(df), index=df.index)


@dataclass
class Table:
    """A comparison table: ``frame`` has one row per group (the row keys, ``n``, ``seeds``,
    ``role``, ``baseline``, ``compared``, ``note``, cost, and per metric ``<m>_mean``,
    ``_std``, ``_n``, ``_delta``, ``_n_paired``, ``_ci_low``, ``_ci_high``, ``_p_t``,
    ``_p_exact``, ``_p``, ``_p_adj``, ``_significant``); ``runs`` the finished runs with
    ``_row`` (their row in ``frame``) and ``_seed``; ``footer`` the lines under the table."""

    frame: pd.DataFrame
    rows: list[str]
    columns: list[str]
    footer: list[str] = field(default_factory=list)
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    alpha: float = ALPHA
    correction: str = S.CORRECTION_HOLM
    test: str = S.TEST_T
    metric: str = METRIC

    def label(self, i: int) -> str:
        """A readable name of row ``i``: ``atss pgd distill.strategy=pgw``."""
        return _label(self.frame.iloc[i], self.rows)

    def seed_values(self, i: int, metric: str) -> pd.Series:
        """The per-seed values of ``metric`` in row ``i`` (runs of one seed averaged)."""
        return _per_seed(self.runs[self.runs["_row"] == i], metric)

    def markdown(self, title: str | None = None) -> str:
        head = "| " + " | ".join([*self.rows, "n", *self.columns, "cost"]) + " |"
        sep = "|" + "---|" * len(self.rows) + "---:|" * (len(self.columns) + 2)
        lines = ([f"### {title}", ""] if title else []) + [head, sep]
        for _, r in self.frame.iterrows():
            n = int(r["n"])
            cells = [_fmt_key(r[k]) for k in self.rows] + [str(n)]
            for c in self.columns:
                cell = _fmt_cell(r, c, n)
                if c == self.metric and r.get("teacher_flag"):
                    cell += " !"
                cells.append(cell)
            cells.append(_fmt_cost(r.get("cost_gpu_h"), r.get("cost_cpu_h")))
            lines.append("| " + " | ".join(cells) + " |")
        if self.footer:
            lines += [""] + [f"- {f}" for f in self.footer]
        return "\n".join(lines)


def _fmt_key(v) -> str:
    return "-" if G.norm(v) is None else str(v)


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt_cell(r, c: str, n: int) -> str:
    mean, std, cn = r.get(f"{c}_mean"), r.get(f"{c}_std"), r.get(f"{c}_n")
    if _nan(mean):
        return "-"
    f = ".1f" if c in COCO_COLUMNS else ".3g"  # diagnostics: ratios and fractions, 3 digits
    s = format(mean, f)
    if not _nan(std):
        s += "±" + format(std, f)
    if not _nan(cn) and int(cn) != n:
        s += f" [n={int(cn)}]"
    delta = r.get(f"{c}_delta")
    if not _nan(delta):
        inner = format(delta, "+" + f)
        lo, hi = r.get(f"{c}_ci_low"), r.get(f"{c}_ci_high")
        if not _nan(lo):
            inner += " ±" + format((hi - lo) / 2, f)
        if r.get(f"{c}_partial"):
            inner += f", n={int(r.get(f'{c}_n_paired'))}"
        s += f" ({inner})" + ("*" if r.get(f"{c}_significant") else "")
    return s


def _fmt_hours(h: float) -> str:
    return f"{h:.3g}"


def _fmt_cost(gpu_h, cpu_h) -> str:
    if _nan(gpu_h) or _nan(cpu_h):
        return "-"
    parts = [f"{_fmt_hours(gpu_h)} GPU-h"] if gpu_h > 0 else []
    if cpu_h > 0 or not parts:
        parts.append(f"{_fmt_hours(cpu_h)} CPU-h")
    return " + ".join(parts)


def _label(r, rows: list[str]) -> str:
    parts = []
    for k in rows:
        v = G.norm(r.get(k))
        if v is not None:
            parts.append(v if k in ("detector", "method") else f"{k}={v}")
    return " ".join(parts) or "(all runs)"


def _plural(n: int, word: str, count: bool = True) -> str:
    w = word if n == 1 else word + "s"
    return f"{n} {w}" if count else w


def _seed_of(runs: pd.DataFrame) -> pd.Series:
    """The pairing key of each run: its seed, or a key of its own when it has none."""
    seed = runs[SEED] if SEED in runs else pd.Series([None] * len(runs), index=runs.index)
    return pd.Series([G.norm(s) or f"run:{rid}" for s, rid in zip(seed, runs["run_id"])], index=runs.index)


def _per_seed(runs: pd.DataFrame, metric: str) -> pd.Series:
    if metric not in runs or runs.empty:
        return pd.Series(dtype=float)
    x = pd.to_numeric(runs[metric], errors="coerce")
    return x.groupby(runs["_seed"], sort=True).mean().dropna()


def run_cost(run) -> tuple[float, float] | None:
    """(GPU-h, CPU-h) of one run: wall time x the GPUs it held (when > 0), else x its CPUs,
    from the tags ``pgd.duration_s``, ``pgd.gpus``, ``pgd.cpus``; None when they are absent."""

    def num(tag):
        v = G.norm(run.get(G.TAG + tag))
        try:
            return float(v) if v is not None else None
        except ValueError:
            return None

    dur, gpus, cpus = num(TAG_DURATION), num(TAG_GPUS), num(TAG_CPUS)
    if dur is None or gpus is None:
        return None
    if gpus > 0:
        return dur * gpus / 3600.0, 0.0
    if cpus is None or cpus <= 0:
        return None
    return 0.0, dur * cpus / 3600.0


def _row_role(runs: pd.DataFrame) -> str:
    if (runs["role"] == TEACHER).all():
        return TEACHER
    if (runs["method"] == STUDENT).all():
        return STUDENT
    if (~runs["method"].isin([STUDENT, TEACHER])).all():
        return "kd"
    return "mixed"


def _sort_value(v):
    """Natural order: missing first, then numbers by value, then text."""
    v = G.norm(v)
    if v is None:
        return (0, 0.0, "")
    try:
        return (1, float(v), "")
    except ValueError:
        return (2, 0.0, v)


def _order(table: pd.DataFrame, rows: list[str]) -> list[int]:
    """Teacher rows first, then the plain student, then the rest (by their row keys), within
    each detector when ``detector`` is a row key."""
    rank = {TEACHER: 0, STUDENT: 1}
    others = [k for k in rows if k not in ("detector", "method")]

    def key(i):
        r = table.loc[i]
        det = _sort_value(r["detector"]) if "detector" in rows else (0, 0.0, "")
        method = _sort_value(r["method"]) if "method" in rows else (0, 0.0, "")
        return (det, rank.get(r["role"], 2), method, *(_sort_value(r[k]) for k in others))

    return sorted(table.index, key=key)


def paper_table(df: pd.DataFrame, rows: list[str], baseline: dict, columns=COCO_COLUMNS, *,
                alpha: float = ALPHA, correction: str = S.CORRECTION_HOLM, test: str = S.TEST_T,
                metric: str = METRIC) -> Table:
    """Group finished runs by ``rows``; summaries over seeds; paired deltas of each row
    against its baseline group (the rows matching ``baseline`` with equal values of the other
    row keys the baseline defines), where the comparability guard allows; the footer.

    ``df`` is :func:`runs_frame`'s frame (all statuses: failed runs count in the cost).
    ``test``: ``t`` (paired t-test) or ``sign-flip`` (exact, n <= 16); ``correction``:
    ``holm`` (over the rows compared with one baseline, per metric) or ``none``.
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"report alpha={alpha!r} must be in (0, 1), e.g. 0.05")
    if correction not in S.CORRECTIONS:
        raise ConfigError(f"report correction={correction!r} is unknown; valid: {', '.join(S.CORRECTIONS)}")
    if test not in S.TESTS:
        raise ConfigError(f"report test={test!r} is unknown; valid: {', '.join(S.TESTS)}")
    columns = [c for c in columns if c in df.columns] if not df.empty else []
    settings = dict(alpha=alpha, correction=correction, test=test, metric=metric)
    if df.empty:
        return Table(pd.DataFrame(columns=[*rows, "n"]), rows, list(columns), **settings)
    metric = metric if metric in columns else (columns[0] if columns else metric)
    settings["metric"] = metric
    done = df[df["status"] == FINISHED].copy()
    if done.empty:
        footer = [f"No finished run ({_plural(len(df), 'run')}, none {FINISHED}).", _cost_line(df)]
        return Table(pd.DataFrame(columns=[*rows, "n"]), rows, list(columns), footer, **settings)
    # a key a run does not define (NaN, or MLflow's string "None") groups as None
    keys = pd.DataFrame({k: _key(done, k).map(G.norm) for k in rows}, index=done.index)
    done = pd.concat([keys.add_prefix("key."), done], axis=1)
    done["_seed"] = _seed_of(done)
    done["_row"] = -1
    groups, members = [], []
    for vals, g in done.groupby([f"key.{k}" for k in rows], dropna=False, sort=False):
        vals = vals if isinstance(vals, tuple) else (vals,)
        rec = {k: G.norm(v) for k, v in zip(rows, vals)}
        rec.update(n=int(g["_seed"].nunique()), seeds=",".join(sorted(g["_seed"].unique(), key=_sort_value)),
                   role=_row_role(g))
        if "detector" not in rec:
            rec["detector"] = G.norm(g["detector"].iloc[0]) if g["detector"].nunique() == 1 else None
        if "method" not in rec:
            rec["method"] = G.norm(g["method"].iloc[0]) if g["method"].nunique() == 1 else None
        for c in columns:
            s = S.summarize(_per_seed(g, c))
            rec.update({f"{c}_mean": s.mean, f"{c}_std": s.std, f"{c}_n": s.n})
        cost = [run_cost(r) for _, r in g.iterrows()]
        known = all(x is not None for x in cost)
        rec["cost_gpu_h"] = sum(x[0] for x in cost) if known else math.nan
        rec["cost_cpu_h"] = sum(x[1] for x in cost) if known else math.nan
        groups.append(rec)
        members.append(g)
    table = pd.DataFrame(groups)
    order = _order(table, rows)
    table = table.loc[order].reset_index(drop=True)
    members = [members[i] for i in order]
    for i, g in enumerate(members):
        done.loc[g.index, "_row"] = i
    notes = _compare(table, members, rows, baseline, columns, alpha, correction, test, metric)
    _flag_teachers(table, members, rows, metric, notes)
    footer = _footer(table, members, df, rows, baseline, columns, notes, **settings)
    return Table(table, rows, list(columns), footer, done, **settings)


_STAT_COLS = ("delta", "n_paired", "sd_diff", "ci_low", "ci_high", "p_t", "p_exact", "p", "p_adj")


def _compare(table, members, rows, baseline, columns, alpha, correction, test, metric) -> dict:
    """Fill the delta columns in place; returns the footer notes gathered on the way."""
    notes = {"not_compared": [], "no_p": [], "mixed": [], "teacher": []}
    with warnings.catch_warnings():  # many columns (report.diagnostics): pandas warns, harmlessly
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        for c in columns:
            for s in _STAT_COLS:
                table[f"{c}_{s}"] = math.nan
            table[f"{c}_significant"] = False
            table[f"{c}_partial"] = False  # fewer seeds shared than the row or its baseline has
        table["baseline"] = None
        table["compared"] = False
        table["note"] = ""
        table["teacher_flag"] = False
    is_base = table.apply(lambda r: all(G.norm(r.get(k)) == G.norm(v) for k, v in baseline.items()), axis=1)
    for i, r in table.iterrows():
        varying = _varying_params(members[i])
        if varying:
            notes["mixed"].append(f"{_label(r, rows)}: runs differ in {varying}; the runs of one seed "
                                  "are averaged (add the key to report.rows to separate them)")
        if r["role"] == TEACHER or is_base[i]:
            continue
        b, why = _baseline_of(table, is_base, i, rows, baseline)
        if b is None:
            table.at[i, "note"] = why
            notes["not_compared"].append(f"{_label(r, rows)}: {why}")
            continue
        table.at[i, "baseline"] = _label(table.loc[b], rows)
        kd = r["role"] == "kd" and table.at[b, "role"] == "kd"
        diffs = [d.describe() for d in G.mixed(members[i], kd=kd)]
        diffs += ["baseline " + d.describe() for d in G.mixed(members[b], kd=kd)]
        diffs += [d.describe() for d in G.differences(members[i], members[b], kd=kd)]
        if diffs:
            why = "; ".join(diffs)
            table.at[i, "note"] = why
            notes["not_compared"].append(f"{_label(r, rows)} vs {table.at[b, 'baseline'] or _label(table.loc[b], rows)}: {why}")
            continue
        table.at[i, "compared"] = True
        table.at[i, "_b"] = b
        for c in columns:
            x, y = _per_seed(members[i], c), _per_seed(members[b], c)
            shared = x.index.intersection(y.index)
            res = S.paired(x[shared].to_numpy(), y[shared].to_numpy(), confidence=1 - alpha)
            vals = dict(delta=res.delta, n_paired=res.n, sd_diff=res.sd, ci_low=res.ci_low, ci_high=res.ci_high,
                        p_t=res.p_t, p_exact=res.p_exact, p=res.p(test))
            for s, v in vals.items():
                table.at[i, f"{c}_{s}"] = v
            table.at[i, f"{c}_partial"] = res.n < max(len(x), len(y))
            if math.isnan(res.p(test)) and c == metric:
                notes["no_p"].append(f"{_label(r, rows)}: {res.reason}")
    # the correction: one family per baseline row and metric
    if "_b" in table:
        for _b, fam in table[table["compared"]].groupby("_b"):
            for c in columns:
                adj = S.adjust(fam[f"{c}_p"].to_numpy(dtype=float), correction)
                table.loc[fam.index, f"{c}_p_adj"] = adj
                table.loc[fam.index, f"{c}_significant"] = np.nan_to_num(adj, nan=1.0) < alpha
        table.drop(columns="_b", inplace=True)
    return notes


def _varying_params(runs: pd.DataFrame) -> str:
    """The params (other than the seed) that take more than one value among a row's runs."""
    out = []
    for col in runs.columns:
        if col.startswith(G.PARAM) and col != SEED:
            v = G.values(runs, col)
            if len(v) > 1:
                out.append(f"{col[len(G.PARAM):]} ({' / '.join('(not set)' if x is None else x for x in v)})")
    return ", ".join(out)


def _baseline_of(table: pd.DataFrame, is_base: pd.Series, i: int, rows: list[str], baseline: dict):
    """The baseline group of row ``i``: a row matching ``baseline`` with equal values of every
    other row key it defines (a student has no strategy: that key is ignored). Returns
    (index, None) or (None, why not)."""
    row = table.loc[i]
    cand = table[is_base]

    def same(b) -> bool:
        return all(G.norm(b[k]) is None or G.norm(b[k]) == G.norm(row[k]) for k in rows if k not in baseline)

    cand = cand[cand.apply(same, axis=1)] if len(cand) else cand
    want = ", ".join(f"{k}={v}" for k, v in baseline.items())
    if len(cand) == 1:
        return int(cand.index[0]), None
    if len(cand) == 0:
        return None, f"no baseline row ({want}) with the same other row keys"
    return None, f"{len(cand)} baseline rows ({want}) match; add a row key that tells them apart"


def _flag_teachers(table, members, rows, metric, notes) -> None:
    """Flag a teacher row whose mean ``metric`` is not above the plain student's (same other
    row keys where both define them; same dataset and split)."""
    if f"{metric}_mean" not in table:
        return
    data = G.aspects_named("dataset", "split")
    for i, r in table[table["role"] == TEACHER].iterrows():
        for j, s in table[table["role"] == STUDENT].iterrows():
            if any(G.norm(r[k]) is not None and G.norm(s[k]) is not None and G.norm(r[k]) != G.norm(s[k])
                   for k in rows if k != "method"):
                continue
            t_ap, s_ap = r[f"{metric}_mean"], s[f"{metric}_mean"]
            if _nan(t_ap) or _nan(s_ap):
                continue
            diffs = G.differences(members[i], members[j], kd=False, aspects=data)
            if diffs:
                notes["teacher"].append(f"{_label(r, rows)} is not compared with {_label(s, rows)}: "
                                        + "; ".join(d.describe() for d in diffs))
            elif t_ap <= s_ap:
                table.at[i, "teacher_flag"] = True
                notes["teacher"].append(
                    f"! {_label(r, rows)}: {metric} {t_ap:.1f} is not above the plain student's {s_ap:.1f} "
                    f"({_label(s, rows)}): distilling from it cannot show what the method does")


def _footer(table, members, df, rows, baseline, columns, notes, *, alpha, correction, test, metric) -> list[str]:
    lines = []
    ns = sorted({int(n) for n in table["n"]})
    seeds = sorted({s for g in members for s in g["_seed"] if not str(s).startswith("run:")}, key=_sort_value)
    n_txt = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    lines.append(f"Cells: mean±std over seeds (sample std); n = seeds per row: {n_txt}"
                 + (f" ({_plural(len(seeds), 'seed', False)} {', '.join(seeds)})" if seeds else "")
                 + "; a cell with fewer values says [n=k].")
    if table["compared"].any():
        want = ", ".join(f"{k}={v}" for k, v in baseline.items())
        conf = f"{100 * (1 - alpha):g}%"
        lines.append(f"Deltas: (delta ±h) is the paired mean difference from the baseline row ({want}, same "
                     f"other row keys) over the seeds both share, ±h the half-width of its {conf} CI "
                     "(Student t, not adjusted for multiplicity); ', n=k' when only k seeds are shared.")
        m = int(table[table["compared"]].groupby("baseline").size().max())
        if correction == S.CORRECTION_HOLM:
            corr = (f"Holm correction over the rows compared with each baseline, per metric (up to {m} "
                    f"row{'s' if m != 1 else ''})")
        else:
            corr = (f"no correction for multiple comparisons (up to {m} row{'s' if m != 1 else ''} per baseline: "
                    "expect false positives)")
        extra = (f" (paired t-test above n={S.EXACT_MAX_N})" if test == S.TEST_SIGN_FLIP
                 else "; exact sign-flip p in the CSV (p_exact)")
        lines.append(f"Test: {S.TEST_NAMES[test]}{extra}; alpha {alpha:g}; * = p < alpha after {corr}.")
        if test == S.TEST_T:
            weak = [(i, r) for i, r in table.iterrows()
                    if r.get(f"{metric}_significant") and not _nan(r.get(f"{metric}_p_exact"))
                    and r[f"{metric}_p_exact"] >= alpha]
            if weak:
                parts = [f"{_label(r, rows)} (p_exact {r[f'{metric}_p_exact']:.3g}, smallest possible "
                         f"{S.min_sign_flip_p(int(r[f'{metric}_n_paired'])):.3g} with n={int(r[f'{metric}_n_paired'])})"
                         for _, r in weak]
                lines.append(f"Significant by t but not by the distribution-free sign-flip test ({metric}): "
                             + "; ".join(parts) + ": the conclusion rests on normally distributed differences.")
    if notes["no_p"]:
        lines.append(f"No p-value ({metric}): " + "; ".join(notes["no_p"]) + ".")
    if notes["not_compared"]:
        lines.append("Not compared (no delta): " + "; ".join(notes["not_compared"]) + ".")
    lines += [f"Mixed row: {x}." for x in notes["mixed"]]
    lines += [x + "." for x in notes["teacher"]]
    hint = _seed_hint(table, rows, metric, alpha, test)
    if hint:
        lines.append(hint)
    lines.append(_cost_line(df))
    return lines


def _seed_hint(table, rows, metric, alpha, test) -> str | None:
    parts = []
    for _, r in table.iterrows():
        if not r["compared"] or r.get(f"{metric}_significant"):
            continue
        delta, sd = r.get(f"{metric}_delta"), r.get(f"{metric}_sd_diff")
        if _nan(delta) or _nan(sd) or sd == 0:
            continue
        need = S.seeds_needed(delta, sd, alpha)
        parts.append(f"{_label(r, rows)} {delta:+.1f} (sd of differences {sd:.2f}): "
                     + (f"~{need} seeds" if need else f"more than {S.SEEDS_HINT_MAX} seeds"))
    if not parts:
        return None
    s = (f"Seed-count hint ({metric}, rough planning figure: the smallest n with t(n-1) * sd / sqrt(n) < |delta| "
         f"at alpha {alpha:g}, taking the observed delta and sd as true, before correction): " + "; ".join(parts) + ".")
    if test == S.TEST_SIGN_FLIP:
        n_min = next(n for n in range(1, 64) if S.min_sign_flip_p(n) < alpha)
        s += f" The sign-flip test needs at least {n_min} seeds to reach p < {alpha:g} at all."
    return s


def _cost_line(df: pd.DataFrame) -> str:
    costs = [run_cost(r) for _, r in df.iterrows()]
    known = [c for c in costs if c is not None]
    n_teacher = int((df["role"] == TEACHER).sum())
    n_failed = int((df["status"] == "FAILED").sum())
    scope = (_plural(len(df), "run") + (f", incl. {_plural(n_teacher, 'teacher')}" if n_teacher else "")
             + (f" and {n_failed} failed" if n_failed else ""))
    what = "wall time x GPUs held (GPU-h), or x CPUs held on CPU (CPU-h)"
    if not known:
        return (f"Cost: unknown ({scope}; no run carries the tags {TAG_DURATION}, {TAG_GPUS} and {TAG_CPUS}); "
                f"it is {what}.")
    total = _fmt_cost(sum(c[0] for c in known), sum(c[1] for c in known))
    miss = len(costs) - len(known)
    unpriced = f"; {_plural(miss, 'run')} without cost tags not counted" if miss else ""
    return (f"Cost: {total} for the whole sweep ({scope}){unpriced}; "
            f"per row in the cost column: {what}.")


def best_run(df: pd.DataFrame, metric: str = "AP", mode: str = "max"):
    done = df[(df["status"] == FINISHED) & (df["role"] != TEACHER)]
    if done.empty or metric not in done:
        return None
    x = pd.to_numeric(done[metric], errors="coerce")
    idx = x.idxmax() if mode == "max" else x.idxmin()
    return None if pd.isna(idx) else done.loc[idx]


def write_outputs(table: Table, out_dir, title: str | None = None) -> dict:
    """Markdown (with the footer), CSV and Parquet (pyarrow) of a table; returns the paths.
    CSV/Parquet carry the raw numbers: per metric mean, std, n, delta, n_paired, ci_low,
    ci_high, p_t, p_exact, p (the table's test), p_adj, significant."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "table.md"
    md.write_text(table.markdown(title) + "\n")
    csv = out / "table.csv"
    table.frame.to_csv(csv, index=False)
    pq = out / "table.parquet"
    frame = table.frame.copy()
    for k in [*table.rows, "detector", "method", "baseline"]:
        if k in frame:
            frame[k] = frame[k].map(lambda v: None if G.norm(v) is None else str(v))
    frame.to_parquet(pq, engine="pyarrow", index=False)
    return {"markdown": str(md), "csv": str(csv), "parquet": str(pq)}
