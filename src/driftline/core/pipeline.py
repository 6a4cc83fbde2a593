"""The whole core in one object: join, then monitors.

The streaming worker splits these two stages across agents (the join keyed
by request id, the monitors keyed by model); ``replay`` and the tests run
them back to back in one process. Both feed the same model events to the
same :class:`~driftline.core.monitor.MonitorSet`, which is what makes the
stream and the replay raise the same alerts.
"""

from __future__ import annotations

from typing import Any

from driftline.core.config import Config
from driftline.core.events import Outcome, Prediction
from driftline.core.join import WAITING_PREDICTION, JoinBuffer
from driftline.core.monitor import Alert, MonitorSet


class Pipeline:
    """Join plus monitors, fed one decoded record at a time."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.join = JoinBuffer(config.label_ttl, lateness=config.lateness)
        self.monitors = MonitorSet(config)

    def prediction(self, p: Prediction) -> list[Alert]:
        handle = self.monitors.handle
        out: list[Alert] = []
        for ev in self.join.add_prediction(p):
            out.extend(handle(ev))
        return out

    def outcome(self, o: Outcome) -> list[Alert]:
        handle = self.monitors.handle
        out: list[Alert] = []
        for ev in self.join.add_outcome(o):
            out.extend(handle(ev))
        return out

    def pending_by_model(self) -> dict[tuple[str, str], int]:
        """Predictions still waiting for their outcome, per model version."""
        counts: dict[tuple[str, str], int] = {}
        for entry in self.join.store.values():
            if entry.state == WAITING_PREDICTION and entry.prediction is not None:
                key = entry.prediction.model_key
                counts[key] = counts.get(key, 0) + 1
        return counts

    def status(self) -> list[dict[str, Any]]:
        pending = self.pending_by_model()
        out = []
        for st in self.monitors.status():
            st["pending"] = pending.get((st["model_id"], st["model_version"]), 0)
            out.append(st)
        return out
