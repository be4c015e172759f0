"""Training pipeline: run configuration -> mmengine Runner -> COCO metrics."""

from pgd.training.runconfig import DataConfig, RunConfig, ScheduleConfig, ShapesConfig, run_config

__all__ = ["DataConfig", "RunConfig", "ScheduleConfig", "ShapesConfig", "run_config", "train", "evaluate"]


def train(*args, **kwargs):
    from pgd.training.trainer import train as _train

    return _train(*args, **kwargs)


def evaluate(*args, **kwargs):
    from pgd.training.trainer import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
