"""The records driftline reads, and the events its join produces.

Producers write *predictions* and, later, *outcomes* (ground truth) that
share a ``request_id``. The join turns them into *model events*: every
prediction is seen once on its own (label-free monitors need no outcome),
then exactly once more as either ``joined`` (its outcome came within the
TTL) or ``expired`` (it never came). Monitors consume model events only,
so the same monitor code runs behind the live join and behind ``replay``.

All times are event times in float epoch seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Label = float | int | str | bool
"""A predicted or observed value: a class label or a regression target."""

FeatureValue = float | int | str | bool | None

DEFAULT_VERSION = "unversioned"

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")


@dataclass(slots=True)
class Prediction:
    """One prediction as a producer emitted it (see ``schemas/prediction.v1.json``)."""

    request_id: str
    model_id: str
    prediction: Label
    event_time: float
    model_version: str = DEFAULT_VERSION
    score: float | None = None
    probabilities: dict[str, float] | None = None
    features: dict[str, FeatureValue] | None = None
    segments: dict[str, str] | None = None
    task: str | None = None

    @property
    def model_key(self) -> tuple[str, str]:
        """The (model, version) pair that owns this record's state."""
        return (self.model_id, self.model_version)


@dataclass(slots=True)
class Outcome:
    """The ground truth for one request (see ``schemas/outcome.v1.json``)."""

    request_id: str
    outcome: Label
    event_time: float
    model_id: str | None = None


@dataclass(slots=True)
class PredictionSeen:
    """A prediction entered the join: label-free monitors act on it now."""

    prediction: Prediction

    @property
    def event_time(self) -> float:
        return self.prediction.event_time


@dataclass(slots=True)
class Joined:
    """A prediction met its outcome.

    ``event_time`` is the outcome's time (never earlier than the
    prediction's), so an alert resting on it cannot predate its evidence.
    """

    prediction: Prediction
    outcome: Outcome

    @property
    def event_time(self) -> float:
        return max(self.outcome.event_time, self.prediction.event_time)


@dataclass(slots=True)
class Expired:
    """A prediction whose outcome did not come within the label TTL."""

    prediction: Prediction
    deadline: float

    @property
    def event_time(self) -> float:
        return self.deadline


@dataclass(slots=True)
class Duplicate:
    """A second prediction or outcome for a request id already seen.

    Counted once, never fed to a metric twice: a producer retry must not
    move an accuracy figure.
    """

    model_id: str
    model_version: str
    side: Literal["prediction", "outcome"]
    event_time: float


@dataclass(slots=True)
class LateOutcome:
    """An outcome that came after its prediction had already expired."""

    model_id: str
    model_version: str
    delay: float
    event_time: float


@dataclass(slots=True)
class OrphanOutcome:
    """An outcome whose prediction never came within the label TTL."""

    model_id: str | None
    event_time: float


@dataclass(slots=True)
class Rejected:
    """A malformed record that names this model: it went to the dead letter."""

    model_id: str
    model_version: str
    event_time: float


ModelEvent = PredictionSeen | Joined | Expired | Duplicate | LateOutcome | OrphanOutcome | Rejected
