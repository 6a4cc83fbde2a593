"""The per-model summary of a replay: one row per model version.

Printed by ``driftline replay`` on stderr and shown again at the top of its
HTML report, so both read the same cells from here.

>>> models = [{"model_id": "fraud", "model_version": "v2", "task": "binary",
...            "predictions": 10, "joined": 8, "expired": 1, "late": 0, "duplicates": 0,
...            "pending": 1, "metrics": {"accuracy": 0.875}}]
>>> summary_rows(models, [])
[['fraud', 'v2', 'binary', '10', '8', '1', '0', '0', '1', '0.875', '-', '-', '0']]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

SUMMARY_HEAD = (
    "model",
    "version",
    "task",
    "predictions",
    "joined",
    "expired",
    "late",
    "dup",
    "pending",
    "accuracy",
    "auc",
    "mae",
    "alerts",
)
"""The summary's columns, in order; the first three are text, the rest numbers."""


def fmt(x: Any, digits: int = 3) -> str:
    """A cell: ``-`` for nothing, floats to ``digits`` places."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def summary_rows(
    models: Sequence[Mapping[str, Any]], alerts: Sequence[Mapping[str, Any]]
) -> list[list[str]]:
    """The cells of the per-model summary, one row per model version."""
    fired = Counter((a["model_id"], a["model_version"]) for a in alerts if a["status"] == "firing")
    rows = []
    for m in models:
        met = m.get("metrics") or {}
        rows.append(
            [
                str(m["model_id"]),
                str(m["model_version"]),
                m.get("task") or "-",
                str(m.get("predictions", 0)),
                str(m.get("joined", 0)),
                str(m.get("expired", 0)),
                str(m.get("late", 0)),
                str(m.get("duplicates", 0)),
                str(m.get("pending", 0)),
                fmt(met.get("accuracy")),
                fmt(met.get("roc_auc")),
                fmt(met.get("mae")),
                str(fired[(m["model_id"], m["model_version"])]),
            ]
        )
    return rows
