"""Every name list of the platform, defined once and imported everywhere.

Plain Python (no pydantic, torch or mmdet import): the math core, the detector registry, the
config models, the plan and the reports all read their choices from here.
"""

from __future__ import annotations

# ----------------------------------------------------------------------------- models
#: dense detectors (paper Table 1), as ``<detector>_<backbone>`` registry names
DETECTORS = ("atss", "fcos", "gfl", "ddod", "autoassign")
#: backbone variants; ``tiny`` is the CPU variant (docs/architecture.md)
BACKBONES = ("r101", "r50", "mbv2", "tiny")

# ----------------------------------------------------------------------------- methods
#: knowledge-distillation methods a ``distill`` section can name (PGD and the Table 1 baselines)
KD_METHODS = ("pgd", "fgd", "defeat", "frs", "fgfi", "fkd", "ld", "crosskd")
#: the KD baselines (every KD method but PGD)
BASELINES = tuple(m for m in KD_METHODS if m != "pgd")
#: plain training (no distillation): the baseline row of every table
STUDENT = "student"
#: the teacher rows of a sweep
TEACHER = "teacher"
#: values of a sweep's virtual ``method`` key
SWEEP_METHODS = (STUDENT, *KD_METHODS)
#: what a table row's ``method`` can be
ROW_METHODS = (TEACHER, *SWEEP_METHODS)

# ----------------------------------------------------------------------------- PGD knobs
#: foreground strategies of paper Table 5 (spec section 6)
STRATEGIES = ("box", "box_gauss", "centre", "quality", "topk_eq", "kde", "pgw")
#: where PGW's top-K candidates come from (spec section 3 step 1)
TOPK_SCOPES = ("inside", "all")
#: distilled feature branches (paper Table 7)
BRANCHES = ("neck", "cls", "reg")
#: PGD weight presets (pgd.config.defaults.PGD_PRESET_ALPHA_SCALE; docs/studies/fgd-vs-pgd.md):
#: paper = the released configs' weights; small = the smoke-scale setting's (tiny models, 160 px)
PGD_PRESETS = ("paper", "small")

# ----------------------------------------------------------------------------- data, runs
DATA_KINDS = ("shapes", "coco", "crowdhuman")
#: image-file checks before training: none, existence, header (size, format, truncation), full decode
CHECK_IMAGES = ("none", "exists", "header", "decode")
DEVICES = ("auto", "cpu", "cuda")

# ----------------------------------------------------------------------------- metrics
#: pycocotools' box metrics on the 0-100 scale
COCO_METRICS = ("AP", "AP50", "AP75", "APS", "APM", "APL")
#: CrowdHuman's extra metrics (MR^-2 and JI; lower MR is better)
CROWDHUMAN_METRICS = ("MR", "JI", "AP_crowdhuman")
#: what a trial reports and a search may optimise
OBJECTIVE_METRICS = (*COCO_METRICS, "MR", "JI", "latency_ms")
#: every metric a trial reports (besides its ``train/<loss term>`` values)
REPORTED_METRICS = (*COCO_METRICS, *CROWDHUMAN_METRICS, "latency_ms")
#: prefix of the per-epoch mask-health metrics a distillation trial reports (pgd.distill.health,
#: docs/health.md), e.g. ``mask/cls_zero_box_frac``; MLflow logs them as ``mask.<...>`` metrics
MASK_HEALTH_PREFIX = "mask/"
#: the student-inheritance counts a trial reports: (result key, MLflow tag of the trial's run)
INHERIT_RESULT_TAGS = (("inherit/copied", "pgd.inherit.copied"), ("inherit/skipped", "pgd.inherit.skipped"),
                       ("inherit/same_architecture", "pgd.inherit.same_architecture"))
#: prefixes of the per-epoch training metrics a trial reports besides those: the epoch's mean
#: of each loss term, and the KD diagnostics (pgd/distill/diagnostics.py)
TRAIN_PREFIX = "train/"
DIAGNOSTIC_PREFIX = "kd/"

# ----------------------------------------------------------------------------- analyses
#: the paper's analyses (pgd.reporting.analyses): Fig. 2, Fig. 3, Fig. 5, Fig. 6, Table 9
ANALYSIS_NAMES = ("quality-map", "mask-out", "detections", "tide", "lrp")
#: which runs of a sweep an analysis takes: one per table row, the teachers, every trial
ANALYSIS_RUNS = ("rows", "teachers", "trials")

# ----------------------------------------------------------------------------- sweeps
SEARCHERS = ("grid", "optuna")
SAMPLERS = ("tpe", "gp", "grid")
SCHEDULERS = ("none", "asha")
MODES = ("max", "min")
#: sweep keys that are not run-config paths: the KD method (or ``student``) and the detector
VIRTUAL_KEYS = ("method", "detector")
#: a trial's role in a sweep (MLflow tag ``pgd.role``); ``sweep`` is the parent run
ROLES = ("sweep", TEACHER, "trial")


def model_names() -> list[str]:
    """Every valid registry name, e.g. ``atss_r50``."""
    return [f"{d}_{b}" for d in DETECTORS for b in BACKBONES]
