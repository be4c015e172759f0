"""bench/core_gpu.py runs with torch + pgd.core only (a clean subprocess, no mmdet import)
and its per-box loop agrees with the batched masks (tiny CPU size, seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_core_gpu_tiny_runs_without_mmdet_and_matches_loop():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "core_gpu.py"), "--tiny"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["0", "1", "7"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[8]) == 0.0  # max |diff| loop vs batched
        times = [float(cells[i]) for i in (1, 2, 4, 5, 6)]  # ms: measured, so positive
        ratios = [float(cells[i].rstrip("x %")) for i in (3, 7)]  # rounded: a tiny one prints 0.0
        assert all(t > 0 for t in times) and all(r >= 0 for r in ratios), row
