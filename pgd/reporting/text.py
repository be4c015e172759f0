"""Plain-text metric tables for terminals and logs."""

from __future__ import annotations

import math

from pgd.evaluation.coco import KEYS as COCO_COLUMNS


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value):.1f}"


def metrics_table(rows: dict[str, dict], columns=COCO_COLUMNS) -> str:
    """A Markdown table, one row per name, COCO metrics on the 0-100 scale."""
    header = "| run | " + " | ".join(columns) + " |"
    sep = "|---|" + "|".join("---:" for _ in columns) + "|"
    body = [f"| {name} | " + " | ".join(fmt(m.get(c)) for c in columns) + " |" for name, m in rows.items()]
    return "\n".join([header, sep, *body])
