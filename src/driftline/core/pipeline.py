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
from driftline.core.join import JoinBuffer
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

    def status(self) -> list[dict[str, Any]]:
        """Per model version: counts (``pending`` included), metrics, alerts."""
        return self.monitors.status()
