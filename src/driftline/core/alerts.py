"""Alert lifecycle: one firing alert per condition, then one resolve.

A monitor evaluates its condition from time to time and reports whether it
holds. :class:`AlertPolicy` turns those observations into alert messages:

* ``firing`` the first time the condition holds, unless the model is still
  warming up, the condition is inhibited, or a cooldown since the last
  resolve has not passed (anti-flapping);
* ``resolved`` once the condition has been clear for ``resolve_after``
  consecutive evaluations (hysteresis).

The dedup key names the model, version, monitor (and segment), never a
time, so a replay after a crash re-sends the same key and downstream
systems such as PagerDuty de-duplicate. The alert id is derived from the
key and the transition number: the same history always gives the same ids.

>>> from driftline.core.config import AlertsConfig
>>> policy = AlertPolicy("fraud", "v2", AlertsConfig(resolve_after=2, cooldown=0))
>>> c = Condition("concept_drift", "concept_drift", "error")
>>> def ev(active, t):
...     a = policy.observe(c, active, t, Finding("loss rose", 0.3, baseline=0.1))
...     return a and (a["status"], a["dedup_key"])
>>> ev(True, 10.0)
('firing', 'driftline/fraud/v2/concept_drift')
>>> ev(True, 11.0), ev(False, 12.0)
(None, None)
>>> ev(False, 13.0)
('resolved', 'driftline/fraud/v2/concept_drift')
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from driftline.core.config import AlertsConfig

_NAMESPACE = uuid.UUID("6f1c2a52-4b8e-4d8e-9a57-8f3f0d7c0a11")
SUMMARY_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class Condition:
    """What is watched: a monitor's name, its alert kind and severity."""

    monitor: str
    kind: str
    severity: str
    segment: tuple[tuple[str, str], ...] | None = None


@dataclass(slots=True)
class Finding:
    """The numbers behind one evaluation, copied into the alert."""

    summary: str
    value: float | None = None
    threshold: float | None = None
    baseline: float | None = None
    window_events: int = 0
    window_start: float | None = None
    window_end: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _State:
    firing: bool = False
    transitions: int = 0
    clear_streak: int = 0
    resolved_at: float | None = None
    fired_at: float | None = None
    suppressed: int = 0
    last: dict[str, Any] | None = None


def dedup_key(model_id: str, model_version: str, c: Condition) -> str:
    """The stable identity of one condition on one model version."""
    key = f"driftline/{model_id}/{model_version}/{c.monitor}"
    if c.segment:
        key += "/" + ",".join(f"{k}={v}" for k, v in c.segment)
    return key


class AlertPolicy:
    """Lifecycle state of every condition of one model version."""

    def __init__(self, model_id: str, model_version: str, cfg: AlertsConfig) -> None:
        self.model_id = model_id
        self.model_version = model_version
        self.cfg = cfg
        self._states: dict[Condition, _State] = {}

    def firing(self) -> list[dict[str, Any]]:
        """The last message of every condition that is firing now."""
        return [s.last for s in self._states.values() if s.firing and s.last is not None]

    def fired(self) -> list[tuple[Condition, bool]]:
        """Every condition that has fired at least once, and whether it fires now.

        For gauges that must read 0 after a resolve rather than vanish (a
        series that disappears looks the same as a scrape that failed).
        """
        return [(c, s.firing) for c, s in self._states.items() if s.transitions]

    def is_firing(self, monitor: str) -> bool:
        return any(s.firing for c, s in self._states.items() if c.monitor == monitor)

    def suppressed(self) -> int:
        """Evaluations that would have paged but for warm-up, cooldown or inhibition."""
        return sum(s.suppressed for s in self._states.values())

    def observe(
        self,
        cond: Condition,
        active: bool,
        event_time: float,
        finding: Finding,
        *,
        may_page: bool = True,
    ) -> dict[str, Any] | None:
        """Record one evaluation; return an alert message when the state changes."""
        st = self._states.get(cond)
        if st is None:
            st = self._states[cond] = _State()
        if active:
            st.clear_streak = 0
            if st.firing:
                return None
            cooling = st.resolved_at is not None and event_time < st.resolved_at + self.cfg.cooldown
            if not may_page or cooling:
                st.suppressed += 1
                return None
            st.firing = True
            st.fired_at = event_time
            st.last = self._message(cond, st, "firing", event_time, finding)
            return st.last
        if not st.firing:
            return None
        st.clear_streak += 1
        if st.clear_streak < self.cfg.resolve_after:
            return None
        st.firing = False
        st.clear_streak = 0
        st.resolved_at = event_time
        msg = self._message(cond, st, "resolved", event_time, finding)
        st.last = msg
        return msg

    def _message(
        self, cond: Condition, st: _State, status: str, event_time: float, f: Finding
    ) -> dict[str, Any]:
        st.transitions += 1
        key = dedup_key(self.model_id, self.model_version, cond)
        summary = f.summary if status == "firing" else f"Resolved: {f.summary}"
        if len(summary) > SUMMARY_LIMIT:
            summary = summary[: SUMMARY_LIMIT - 1] + "…"
        return {
            "alert_id": str(uuid.uuid5(_NAMESPACE, f"{key}#{st.transitions}")),
            "dedup_key": key,
            "status": status,
            "severity": cond.severity,
            "kind": cond.kind,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "segment": dict(cond.segment) if cond.segment else None,
            "monitor": cond.monitor,
            "summary": summary,
            "value": _finite(f.value),
            "threshold": _finite(f.threshold),
            "baseline": _finite(f.baseline),
            "window": {
                "events": f.window_events,
                "start": f.window_start,
                "end": f.window_end,
            },
            "event_time": event_time,
            "emitted_at": event_time,
            "evidence": f.evidence,
        }


def _finite(x: float | None) -> float | None:
    if x is None or x != x or x in (float("inf"), float("-inf")):
        return None
    return float(x)
