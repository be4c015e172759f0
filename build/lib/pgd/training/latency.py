"""Inference latency of the trained (student) model: mean wall time per image, batch 1, on
the run's device, after warm-up. Used as a second objective in multi-objective searches."""

from __future__ import annotations

import time

import torch


def measure_latency(runner, num_images: int, warmup: int = 2) -> float:
    """Milliseconds per image over the first ``num_images`` val images (batch 1)."""
    from mmengine.dataset import pseudo_collate

    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    dataset = runner.val_dataloader.dataset
    n = min(num_images, len(dataset))
    items = [dataset[i] for i in range(min(n + warmup, len(dataset)))]
    model.eval()
    times = []
    with torch.no_grad():
        for i, item in enumerate(items):
            batch = pseudo_collate([item])
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.test_step(batch)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if i >= len(items) - n:
                times.append(time.perf_counter() - t0)
    return 1000.0 * sum(times) / max(len(times), 1)
