"""Training pipeline: a resolved run configuration -> mmengine Runner -> COCO metrics."""


def train(*args, **kwargs):
    from pgd.training.trainer import train as _train

    return _train(*args, **kwargs)


def evaluate(*args, **kwargs):
    from pgd.training.trainer import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


__all__ = ["train", "evaluate"]
