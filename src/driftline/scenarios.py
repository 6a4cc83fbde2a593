"""Realistic prediction and outcome traffic, with drift where we put it.

A monitor can only be judged against traffic whose truth is known: which
model went bad, when, and how. This module makes such traffic. Each model
is a *frozen* river model, trained once on the first samples of one of
river's synthetic streams (Agrawal, Hyperplane, SEA, Friedman) and then
never updated, exactly like a model serving in production. The stream it
is scored on keeps flowing, and at a known prediction index the world
changes under it: the concept switches (river's ``ConceptDriftStream``),
the inputs shift, a feature breaks, or the labels get better.

The output is wire-format records, the dicts a producer would send
(``schemas/prediction.v1.json`` and ``schemas/outcome.v1.json``), in
event-time order across all models: each outcome arrives a sampled label
delay after its prediction. :func:`describe` gives the matching ground
truth without generating a single record, so an evaluation can ask "did
the monitor fire on ``pricing`` within N events of index 3000?".

Everything is a pure function of its arguments: the same call gives the
same records, byte for byte, on every machine. The replay example, the
detection-quality evaluation, the live simulator and the benchmarks all
draw from here, so they all agree on what "the drift at 3000" means.

Examples
--------
>>> info = describe("abrupt", models=1, events=2_000, change_at=1_000)
>>> truth = info.models[0]
>>> truth.model_id, truth.kind, truth.change_index, truth.alert_kinds
('pricing', 'abrupt', 1000, ('performance', 'concept_drift'))
>>> records = list(generate("abrupt", models=1, events=2_000, change_at=1_000))
>>> len(records), records[0]["request_id"], sorted(records[0]["features"])[:3]
(4000, 'pricing-00000000', ['age', 'car', 'commission'])
"""

from __future__ import annotations

import gzip
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from river import datasets, linear_model, preprocessing
from river.datasets import synth

__all__ = [
    "DEFAULT_LABEL_DELAY",
    "SCENARIOS",
    "STREAMS",
    "FrozenModel",
    "LabelDelay",
    "ModelTruth",
    "ScenarioInfo",
    "describe",
    "generate",
    "write_jsonl",
]

SCENARIOS: dict[str, str] = {
    "stable": "No drift: every model keeps its training concept; a monitor should stay silent.",
    "abrupt": (
        "Every model's concept switches at `change_at` (ConceptDriftStream, width 1): "
        "accuracy falls at once, the inputs look the same."
    ),
    "gradual": (
        "Every model's concept slides to a new one around `change_at` over `width` "
        "predictions (ConceptDriftStream, wide sigmoid)."
    ),
    "recurring": (
        "Every model's concept switches at `change_at` and the old one returns at "
        "`end_index`: an alert should fire, then resolve."
    ),
    "covid": (
        "Several models at once; only `pricing` meets an abrupt shift at `change_at` "
        "(its concept switches and its most important input moves), the others stay stable "
        "and are the false-alarm control."
    ),
    "improving": (
        "A labelling fault flips 20% of outcomes until `change_at`, then is fixed: measured "
        "accuracy rises; an improvement to record, not to page."
    ),
    "regression_mae": (
        "Regression models on FriedmanDrift: the relevant inputs swap roles at `change_at` "
        "(global abrupt drift), so MAE rises while the inputs look the same."
    ),
    "score_shift": (
        "The most important input shifts by one standard deviation at `change_at`, so the "
        "score distribution moves; no outcomes at all (label-free detection only)."
    ),
    "feature_break": (
        "The most important input starts arriving as null (or a constant) at `change_at`; "
        "the serving code imputes it, so accuracy falls too."
    ),
}

DEFAULT_LABEL_DELAY: tuple[str, float, float] = ("lognormal", 60.0, 1.0)
"""Outcome delay: lognormal with a median of 60 s and sigma 1 (p95 about 5 min)."""

LabelDelay = (
    float
    | tuple[str, float]
    | tuple[str, float, float]
    | Callable[[np.random.Generator, int], np.ndarray]
)
"""How long an outcome takes to arrive after its prediction, in seconds.

A number (fixed delay), ``("fixed", s)``, ``("exponential", mean)``,
``("uniform", low, high)``, ``("lognormal", median, sigma)``, or a callable
``(rng, n) -> array of n delays`` for anything else.
"""

_TRAIN_SIZE = 5_000
"""Samples of the training concept a model sees before it is frozen."""

_CHUNK = 4_096
"""Predictions generated per vectorized step. Part of the output's definition:
changing it changes the bytes, so it is a constant, not a parameter."""

_NOISY_LABEL_RATE = 0.2
"""Share of outcomes the ``improving`` scenario's labelling fault flips."""

_SHIFT_STDS = 1.0
"""Size of an input shift, in training standard deviations of that input."""

_REGIONS = ("us-east", "us-west", "eu-west", "ap-south")
_REGION_WEIGHTS = (0.4, 0.2, 0.3, 0.1)
_CHANNELS = ("web", "app", "partner")
_CHANNEL_WEIGHTS = (0.5, 0.4, 0.1)


# --------------------------------------------------------------------------
# river streams, usable at a million samples


class _FastAgrawal(synth.Agrawal):
    """river's Agrawal generator, without the per-feature ``eval``.

    river builds each sample with ``eval(feature)`` nine times, which costs
    about 60 µs a sample; this copy of its loop makes the same random draws
    in the same order (so it yields exactly the same samples, which a test
    checks) at a fraction of the cost.
    """

    def __iter__(self) -> Iterator[tuple[dict[str, float], int]]:
        rng = self._rng = random.Random(self.seed)
        self._next_class_should_be_zero = False
        classify = self._classification_functions[self.classification_function]
        uniform = rng.random
        # randint(a, b) is a + _randbelow(b - a + 1): the same draws, minus two calls.
        below = rng._randbelow
        perturb = self._perturb_value
        while True:
            while True:
                salary = 20000 + 130000 * uniform()
                commission = 0 if (salary >= 75000) else (10000 + 75000 * uniform())
                age = 20 + below(61)
                elevel = below(5)
                car = 1 + below(20)
                zipcode = below(9)
                hvalue = (8 - zipcode) * 100000 * (0.5 + uniform())
                hyears = 1 + below(30)
                loan = uniform() * 500000
                y = classify(salary, commission, age, elevel, car, zipcode, hvalue, hyears, loan)
                if not self.balance_classes:
                    break
                if (self._next_class_should_be_zero and y == 0) or (
                    not self._next_class_should_be_zero and y == 1
                ):
                    self._next_class_should_be_zero = not self._next_class_should_be_zero
                    break
            if self.perturbation > 0.0:
                salary = perturb(salary, 20000, 150000)
                if commission > 0:
                    commission = perturb(commission, 10000, 75000)
                age = round(perturb(age, 20, 80))
                hvalue = perturb(hvalue, (9 - zipcode) * 100000, 0, 135000)
                hyears = round(perturb(hyears, 1, 30))
                loan = perturb(loan, 0, 500000)
            x = {
                "salary": salary,
                "commission": commission,
                "age": age,
                "elevel": elevel,
                "car": car,
                "zipcode": zipcode,
                "hvalue": hvalue,
                "hyears": hyears,
                "loan": loan,
            }
            yield x, y


class _SafeConceptDriftStream(synth.ConceptDriftStream):
    """river's ConceptDriftStream, without its overflow.

    river computes ``math.exp(-4 (t - p) / w)``, which overflows as soon as
    ``4 (p - t) / w > 709``: a width of 1 fails for any position beyond
    about 178. Here the drift probability is taken as 0 where the exponent
    would overflow (it is below 1e-300 there); everywhere else the draws,
    and so the samples, are river's own.
    """

    def __iter__(self) -> Iterator[tuple[dict, Any]]:
        rng = random.Random(self.seed)
        stream_generator = iter(self.stream)
        drift_stream_generator = iter(self.drift_stream)
        sample_idx = 0
        while True:
            sample_idx += 1
            v = -4.0 * float(sample_idx - self.position) / float(self.width)
            probability_drift = 0.0 if v > 700.0 else 1.0 / (1.0 + math.exp(v))
            try:
                if rng.random() > probability_drift:
                    x, y = next(stream_generator)
                else:
                    x, y = next(drift_stream_generator)
            except StopIteration:
                break
            yield x, y


class _Continue(datasets.base.SyntheticDataset):
    """A dataset view of an iterator that has already started.

    The frozen model trains on the first samples of its stream, and the
    traffic must continue that same stream rather than replay it; the
    ``recurring`` scenario also needs the old concept to resume where it
    left off. Both hand river an iterator that is already running.
    """

    def __init__(self, iterator: Iterator[tuple[dict, Any]], like: datasets.base.Dataset) -> None:
        super().__init__(
            task=like.task,
            n_features=like.n_features,
            n_classes=like.n_classes,
            n_outputs=like.n_outputs,
        )
        self._iterator = iterator

    def __iter__(self) -> Iterator[tuple[dict, Any]]:
        return self._iterator


# --------------------------------------------------------------------------
# stream families


@dataclass(frozen=True, slots=True)
class _Family:
    """One of river's synthetic streams, with what the generator needs to know."""

    name: str
    task: Literal["binary", "regression"]
    names: tuple[str, ...]
    """Feature names on the wire, in the stream's key order."""
    ints: frozenset[str]
    """Features that are integers and are sent as such."""
    decimals: int
    """Rounding of float features on the wire (and at the model's input)."""
    concepts: tuple[int, int]
    """Training concept and drifted concept."""
    make: Callable[[int, int], datasets.base.SyntheticDataset]
    """``(concept, seed) -> stream``."""


def _agrawal(concept: int, seed: int) -> datasets.base.SyntheticDataset:
    # Perturbation adds feature noise after labelling, so the best linear
    # model sits near 94%, not at a suspicious 100%.
    return _FastAgrawal(classification_function=concept, seed=seed, perturbation=0.1)


def _hyperplane(concept: int, seed: int) -> datasets.base.SyntheticDataset:
    # A Hyperplane concept *is* its seed: the weights are the first draws.
    return synth.Hyperplane(seed=seed + 7919 * concept, n_features=10, noise_percentage=0.05)


def _sea(concept: int, seed: int) -> datasets.base.SyntheticDataset:
    return synth.SEA(variant=concept, seed=seed, noise=0.05)


def _friedman(concept: int, seed: int) -> datasets.base.SyntheticDataset:
    return synth.Friedman(seed=seed)


_FAMILIES: dict[str, _Family] = {
    "agrawal": _Family(
        name="agrawal",
        task="binary",
        names=(
            "salary",
            "commission",
            "age",
            "elevel",
            "car",
            "zipcode",
            "hvalue",
            "hyears",
            "loan",
        ),
        ints=frozenset({"age", "elevel", "car", "zipcode", "hyears"}),
        decimals=2,
        # Function 6 is a disposable-income rule a linear model learns well;
        # function 5 (income bands by age) is a different world for it.
        concepts=(6, 5),
        make=_agrawal,
    ),
    "hyperplane": _Family(
        name="hyperplane",
        task="binary",
        names=tuple(f"x{i}" for i in range(10)),
        ints=frozenset(),
        decimals=4,
        concepts=(0, 1),
        make=_hyperplane,
    ),
    "sea": _Family(
        name="sea",
        task="binary",
        names=("x0", "x1", "x2"),
        ints=frozenset(),
        decimals=4,
        # Threshold 7 -> 9.5: a milder switch than the others (about -15 points).
        concepts=(2, 3),
        make=_sea,
    ),
    "friedman": _Family(
        name="friedman",
        task="regression",
        names=tuple(f"x{i}" for i in range(10)),
        ints=frozenset(),
        decimals=4,
        concepts=(0, 0),
        make=_friedman,
    ),
}

STREAMS: tuple[str, ...] = ("agrawal", "hyperplane", "sea")
"""Binary stream families a caller may force with ``stream=``."""

# Realistic names and versions; each entry: (model_id, version, family, concepts).
_BINARY_ROSTER: tuple[tuple[str, str, str, tuple[int, int] | None], ...] = (
    ("pricing", "v3", "agrawal", None),
    ("fraud", "v12", "hyperplane", None),
    ("churn", "v7", "agrawal", (8, 3)),
    ("credit", "v9", "sea", None),
    ("upsell", "v2", "agrawal", None),
    ("ranking", "v5", "hyperplane", None),
)
_REGRESSION_ROSTER: tuple[tuple[str, str], ...] = (
    ("ltv", "v2"),
    ("eta", "v4"),
    ("demand", "v6"),
    ("basket", "v1"),
)


# --------------------------------------------------------------------------
# the frozen model


@dataclass(frozen=True, eq=False)
class FrozenModel:
    """A river model trained once and never updated again, scored in bulk.

    The model is river's ``StandardScaler | LogisticRegression`` (or
    ``LinearRegression``). Scoring a million samples one dict at a time
    would dominate generation, so the trained scaler and weights are read
    out into arrays and applied with numpy; :meth:`score` matches river's
    ``predict_proba_one`` / ``predict_one`` to rounding error (tested).

    Parameters
    ----------
    task
        ``"binary"`` or ``"regression"``.
    names
        Feature names, in column order.
    means, stds
        The scaler's state; a zero std makes the input contribute 0, as
        in river.
    weights, intercept
        The linear model's state.
    pipeline
        The river pipeline itself, kept for reference and tests; it is
        never trained again.
    """

    task: str
    names: tuple[str, ...]
    means: np.ndarray
    stds: np.ndarray
    weights: np.ndarray
    intercept: float
    pipeline: Any = field(repr=False)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Positive-class probability (binary) or predicted value (regression).

        Parameters
        ----------
        X
            One row per sample, columns in :attr:`names` order.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(self.stds > 0, (X - self.means) / self.stds, 0.0)
        raw = z @ self.weights + self.intercept
        if self.task == "regression":
            return raw
        # river's sigmoid saturates exactly at |logit| > 30.
        with np.errstate(over="ignore"):
            p = 1.0 / (1.0 + np.exp(-raw))
        return np.where(raw < -30, 0.0, np.where(raw > 30, 1.0, p))

    @property
    def top_feature(self) -> int:
        """Column of the input the model leans on most (largest standardized weight)."""
        return int(np.argmax(np.abs(self.weights)))


@lru_cache(maxsize=64)
def _train(family: str, concept: int, seed: int, n: int) -> FrozenModel:
    """Train on the first ``n`` samples of ``family``'s concept, then freeze.

    Cached: the training prefix of a stream depends only on these
    arguments, and tests and benchmarks build the same models many times.
    """
    fam = _FAMILIES[family]
    estimator = (
        linear_model.LinearRegression()
        if fam.task == "regression"
        else linear_model.LogisticRegression()
    )
    pipeline = preprocessing.StandardScaler() | estimator
    for x, y in itertools.islice(iter(fam.make(concept, seed)), n):
        pipeline.learn_one(_rounded(fam, x), y)
    scaler, model = pipeline.steps.values()
    keys = list(scaler.means)
    weights = model.weights
    return FrozenModel(
        task=fam.task,
        names=fam.names,
        means=np.array([scaler.means[k] for k in keys]),
        stds=np.array([scaler.vars[k] ** 0.5 for k in keys]),
        weights=np.array([weights.get(k, 0.0) for k in keys]),
        intercept=float(model.intercept),
        pipeline=pipeline,
    )


def _rounded(fam: _Family, x: dict) -> dict:
    """A sample as it travels on the wire: the model trains on what it will see."""
    return {k: (v if isinstance(v, int) else round(v, fam.decimals)) for k, v in x.items()}


# --------------------------------------------------------------------------
# ground truth


@dataclass(frozen=True, slots=True)
class ModelTruth:
    """What happens to one model in a scenario.

    Indices count this model's predictions from 0; times are the event
    times of those predictions.

    Parameters
    ----------
    model_id, model_version, task
        As on the wire.
    stream
        The river stream family behind the model.
    kind
        ``"none"``, ``"abrupt"``, ``"gradual"``, ``"recurring"``,
        ``"improvement"``, ``"score_shift"`` or ``"feature_break"``.
    change_index, change_time
        The centre of the change (``None`` when nothing changes).
    width
        Predictions the change takes (1 for abrupt).
    end_index, end_time
        When a recurring concept returns.
    feature
        The input that shifts or breaks.
    degrades
        Whether performance gets worse (a monitor should page) rather than
        better or not at all.
    alert_kinds
        Alert kinds (as in the alert schema) an ideal monitor raises.
    """

    model_id: str
    model_version: str
    task: str
    stream: str
    kind: str = "none"
    change_index: int | None = None
    change_time: float | None = None
    width: int = 0
    end_index: int | None = None
    end_time: float | None = None
    feature: str | None = None
    degrades: bool = False
    alert_kinds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ScenarioInfo:
    """The ground truth of one scenario run: one :class:`ModelTruth` per model."""

    scenario: str
    description: str
    seed: int
    events: int
    rate: float
    start_time: float
    has_outcomes: bool
    models: tuple[ModelTruth, ...]

    @property
    def drifting(self) -> tuple[ModelTruth, ...]:
        """The models something happens to."""
        return tuple(m for m in self.models if m.kind != "none")

    def model(self, model_id: str) -> ModelTruth:
        """The truth for ``model_id``."""
        for m in self.models:
            if m.model_id == model_id:
                return m
        raise KeyError(f"no model {model_id!r} in scenario {self.scenario!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, for files next to generated data."""
        return asdict(self)


# --------------------------------------------------------------------------
# planning: who gets what, decided once for describe() and generate()


@dataclass(frozen=True, slots=True)
class _Plan:
    truth: ModelTruth
    family: _Family
    concepts: tuple[int, int]
    seeds: tuple[int, ...]
    """River stream, drift stream, drift mixer, numpy traffic, numpy arrivals."""
    label_noise: bool = False
    shift: bool = False
    break_mode: str | None = None
    outcomes: bool = True


def _plans(
    scenario: str,
    models: int,
    events: int,
    seed: int,
    start_time: float,
    rate: float,
    change_at: int | None,
    width: int | None,
    stream: str | None,
    feature_break_mode: str,
) -> list[_Plan]:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if models < 1:
        raise ValueError(f"models must be at least 1, got {models}")
    if events < 2:
        raise ValueError(f"events must be at least 2, got {events}")
    if not rate > 0:
        raise ValueError(f"rate must be positive (predictions per second per model), got {rate}")
    if stream is not None and stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}; choose one of {', '.join(STREAMS)}")
    if feature_break_mode not in ("null", "constant"):
        raise ValueError(
            f"feature_break_mode must be 'null' or 'constant', got {feature_break_mode!r}"
        )
    p = events // 2 if change_at is None else change_at
    if not 0 < p < events:
        raise ValueError(f"change_at must be in [1, {events - 1}] for {events} events, got {p}")
    if scenario == "gradual":
        w = max(events // 5, 1) if width is None else width
    else:
        w = 1 if width is None else width
    if w < 1:
        raise ValueError(f"width must be at least 1, got {w}")
    end = p + (events - p) // 2 if scenario == "recurring" else None
    if end is not None and end <= p:
        raise ValueError(
            f"recurring needs change_at <= events - 2 (the old concept returns halfway "
            f"through the rest), got change_at={p} with {events} events"
        )

    roster = _roster(scenario, models, stream)
    plans = []
    for i, (model_id, version, family, concepts) in enumerate(roster):
        fam = _FAMILIES[family]
        s = np.random.SeedSequence([seed, i, 0x0D1F7]).generate_state(5, dtype=np.uint32)
        seeds = tuple(int(v) for v in s)
        kind = _kind(scenario, i)
        arrivals = _arrivals(seeds[4], events, rate, start_time) if kind != "none" else None
        truth = ModelTruth(model_id, version, fam.task, family)
        if kind != "none":
            assert arrivals is not None
            feature = None
            if kind in ("score_shift", "feature_break") or scenario == "covid":
                feature = fam.names[_train(family, concepts[0], seeds[0], _TRAIN_SIZE).top_feature]
            truth = ModelTruth(
                model_id,
                version,
                fam.task,
                family,
                kind=kind,
                change_index=p,
                change_time=float(arrivals[p]),
                width=w,
                end_index=end,
                end_time=None if end is None else float(arrivals[end]),
                feature=feature,
                degrades=kind != "improvement",
                alert_kinds=_ALERT_KINDS[scenario],
            )
        plans.append(
            _Plan(
                truth=truth,
                family=fam,
                concepts=concepts,
                seeds=seeds,
                label_noise=scenario == "improving",
                shift=kind == "score_shift" or (scenario == "covid" and kind != "none"),
                break_mode=feature_break_mode if kind == "feature_break" else None,
                outcomes=scenario != "score_shift",
            )
        )
    return plans


_ALERT_KINDS: dict[str, tuple[str, ...]] = {
    "stable": (),
    "abrupt": ("performance", "concept_drift"),
    "gradual": ("performance", "concept_drift"),
    "recurring": ("performance", "concept_drift"),
    "covid": ("performance", "concept_drift", "prediction_drift", "data_drift"),
    "improving": (),
    "regression_mae": ("performance", "concept_drift"),
    "score_shift": ("prediction_drift", "data_drift"),
    "feature_break": ("data_drift", "prediction_drift", "performance", "concept_drift"),
}


def _kind(scenario: str, index: int) -> str:
    if scenario == "stable" or (scenario == "covid" and index > 0):
        return "none"
    return {
        "covid": "abrupt",
        "improving": "improvement",
        "regression_mae": "abrupt",
    }.get(scenario, scenario)


def _roster(
    scenario: str, models: int, stream: str | None
) -> list[tuple[str, str, str, tuple[int, int]]]:
    """Model names, versions, stream families and concepts, in a fixed order."""
    out = []
    if scenario == "regression_mae":
        for i in range(models):
            name, version = _REGRESSION_ROSTER[i % len(_REGRESSION_ROSTER)]
            out.append((_numbered(name, i, len(_REGRESSION_ROSTER)), version, "friedman", (0, 0)))
        return out
    binary = iter(itertools.count())
    for i in range(models):
        if scenario == "covid" and i == 3:
            # The pandemic hit several teams at once; one of them predicts a value.
            name, version = _REGRESSION_ROSTER[0]
            out.append((name, version, "friedman", (0, 0)))
            continue
        j = next(binary)
        name, version, family, concepts = _BINARY_ROSTER[j % len(_BINARY_ROSTER)]
        if stream is not None:
            family, concepts = stream, None
        fam = _FAMILIES[family]
        out.append(
            (_numbered(name, j, len(_BINARY_ROSTER)), version, family, concepts or fam.concepts)
        )
    return out


def _numbered(name: str, i: int, n: int) -> str:
    """``pricing``, then ``pricing-2`` once the roster wraps around."""
    return name if i < n else f"{name}-{i // n + 1}"


def _arrivals(seed: int, n: int, rate: float, start_time: float) -> np.ndarray:
    """Poisson arrivals: event times of a model's ``n`` predictions, to the millisecond."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n)
    return np.round(start_time + np.cumsum(gaps), 3)


# --------------------------------------------------------------------------
# label delays


def _delay_sampler(spec: LabelDelay) -> Callable[[np.random.Generator, int], np.ndarray]:
    """Turn a :data:`LabelDelay` into ``(rng, n) -> delays``, checking it first."""
    if callable(spec):
        return spec
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        spec = ("fixed", float(spec))
    if not isinstance(spec, tuple) or not spec or not isinstance(spec[0], str):
        raise ValueError(
            f"label_delay must be a number, a tuple such as {DEFAULT_LABEL_DELAY} "
            f"or a callable, got {spec!r}"
        )
    kind, *args = spec
    arity = {"fixed": 1, "exponential": 1, "uniform": 2, "lognormal": 2}
    if kind not in arity or len(args) != arity[kind]:
        raise ValueError(
            f"label_delay {spec!r}: use ('fixed', s), ('exponential', mean), "
            "('uniform', low, high) or ('lognormal', median, sigma)"
        )
    if any(not a >= 0 for a in args):
        raise ValueError(f"label_delay {spec!r}: parameters must be non-negative")
    if kind == "fixed":
        return lambda rng, n: np.full(n, float(args[0]))
    if kind == "exponential":
        return lambda rng, n: rng.exponential(args[0], size=n)
    if kind == "uniform":
        return lambda rng, n: rng.uniform(args[0], args[1], size=n)
    median, sigma = args
    if median <= 0:
        raise ValueError(f"label_delay {spec!r}: the lognormal median must be positive")
    return lambda rng, n: rng.lognormal(math.log(median), sigma, size=n)


# --------------------------------------------------------------------------
# public API


def describe(
    scenario: str,
    *,
    models: int = 4,
    events: int = 10_000,
    seed: int = 0,
    start_time: float = 1_700_000_000.0,
    rate: float = 10.0,
    change_at: int | None = None,
    width: int | None = None,
    stream: str | None = None,
    feature_break_mode: Literal["null", "constant"] = "null",
    **traffic: object,
) -> ScenarioInfo:
    """The ground truth of ``generate(scenario, ...)`` with the same arguments.

    Cheap: no record is generated. Accepts (and ignores) the traffic-only
    arguments of :func:`generate` (``label_delay``, ``missing_labels``,
    ``duplicates``, ``n_features``), so one keyword dict serves both.

    Returns
    -------
    ScenarioInfo
        Which model changes, how, at which prediction index and event time.
    """
    unknown = set(traffic) - {"label_delay", "missing_labels", "duplicates", "n_features"}
    if unknown:
        raise TypeError(f"describe() got unexpected arguments: {', '.join(sorted(unknown))}")
    plans = _plans(
        scenario,
        models,
        events,
        seed,
        start_time,
        rate,
        change_at,
        width,
        stream,
        feature_break_mode,
    )
    return ScenarioInfo(
        scenario=scenario,
        description=SCENARIOS[scenario],
        seed=seed,
        events=events,
        rate=rate,
        start_time=start_time,
        has_outcomes=scenario != "score_shift",
        models=tuple(p.truth for p in plans),
    )


def generate(
    scenario: str,
    *,
    models: int = 4,
    events: int = 10_000,
    seed: int = 0,
    start_time: float = 1_700_000_000.0,
    rate: float = 10.0,
    label_delay: LabelDelay = DEFAULT_LABEL_DELAY,
    missing_labels: float = 0.0,
    duplicates: float = 0.0,
    n_features: int | None = None,
    change_at: int | None = None,
    width: int | None = None,
    stream: str | None = None,
    feature_break_mode: Literal["null", "constant"] = "null",
) -> Iterator[dict[str, Any]]:
    """Yield a scenario's predictions and outcomes in event-time order.

    Parameters
    ----------
    scenario
        A key of :data:`SCENARIOS`.
    models
        How many models send traffic at once.
    events
        Predictions per model.
    seed
        Everything random derives from it: same arguments, same bytes.
    start_time
        Event time (epoch seconds) the traffic starts from.
    rate
        Mean predictions per second per model (Poisson arrivals, so the
        event-time gaps look like real requests, bursts included).
    label_delay
        Outcome delay distribution, see :data:`LabelDelay`. Outcomes come
        strictly after their prediction (at least 1 ms).
    missing_labels
        Share of predictions whose outcome never comes (label coverage).
    duplicates
        Share of records sent twice in a row, as a producer retry would.
    n_features
        Pad every model's features with standard-normal columns
        ``feat_000``... up to this many, to load data-drift monitors; the
        model ignores them.
    change_at
        Prediction index of the change; default ``events // 2``.
    width
        Transition width in predictions; default 1, or ``events // 5``
        for ``gradual``.
    stream
        Force one binary stream family (``"agrawal"``, ``"hyperplane"``,
        ``"sea"``) for every classification model.
    feature_break_mode
        ``feature_break``: the feature arrives as ``"null"`` (the model
        imputes its training mean) or as a ``"constant"`` 0.

    Yields
    ------
    dict
        A prediction (``request_id``, ``model_id``, ``model_version``,
        ``timestamp``, ``prediction``, ``score`` for binary models,
        ``features``, ``segments``, and ``task`` for regression) or an
        outcome (``request_id``, ``outcome``, ``timestamp``). Timestamps
        never decrease. A duplicate is a fresh copy of the dict.
    """
    plans = _plans(
        scenario,
        models,
        events,
        seed,
        start_time,
        rate,
        change_at,
        width,
        stream,
        feature_break_mode,
    )
    if not 0.0 <= missing_labels <= 1.0:
        raise ValueError(f"missing_labels must be in [0, 1], got {missing_labels}")
    if not 0.0 <= duplicates < 1.0:
        raise ValueError(f"duplicates must be in [0, 1), got {duplicates}")
    for plan in plans:
        if n_features is not None and n_features < len(plan.family.names):
            raise ValueError(
                f"n_features={n_features} is fewer than {plan.truth.model_id}'s "
                f"{len(plan.family.names)} {plan.family.name} features"
            )
    delay = _delay_sampler(label_delay)
    return _merge(
        [
            _model_rows(
                plan, events, start_time, rate, delay, missing_labels, duplicates, n_features
            )
            for plan in plans
        ]
    )


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records as JSON Lines (gzip-compressed if the name ends in ``.gz``).

    The gzip header carries no name or mtime, so the same records always
    give the same file, byte for byte.

    Returns
    -------
    int
        The number of records written.
    """
    path = Path(path)
    dumps = orjson.dumps
    count = 0
    with open(path, "wb") as raw:
        out = (
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
            if path.suffix == ".gz"
            else raw
        )
        try:
            batch: list[bytes] = []
            for record in records:
                batch.append(dumps(record))
                if len(batch) == 8192:
                    out.write(b"\n".join(batch) + b"\n")
                    count += len(batch)
                    batch.clear()
            if batch:
                out.write(b"\n".join(batch) + b"\n")
                count += len(batch)
        finally:
            if out is not raw:
                out.close()
    return count


# --------------------------------------------------------------------------
# generation


_Row = tuple[float, dict[str, Any], bool, float, dict[str, Any] | None, bool]
"""(time, prediction, duplicated?, outcome time, outcome or None, duplicated?)"""


def _merge(sources: list[Iterator[_Row]]) -> Iterator[dict[str, Any]]:
    """Interleave models and pending outcomes by event time.

    Each model contributes its next prediction to a heap; popping it emits
    the prediction and schedules its outcome. Ties break by insertion
    order, which is itself deterministic.
    """
    heap: list[tuple[float, int, int, Any]] = []
    seq = itertools.count()
    push, pop = heapq.heappush, heapq.heappop
    for m, source in enumerate(sources):
        row = next(source, None)
        if row is not None:
            push(heap, (row[0], next(seq), m, row))
    while heap:
        _, _, m, item = pop(heap)
        if m < 0:
            record, dup = item
            yield record
            if dup:
                yield _copy(record)
            continue
        _, prediction, dup, outcome_time, outcome, outcome_dup = item
        yield prediction
        if dup:
            yield _copy(prediction)
        if outcome is not None:
            push(heap, (outcome_time, next(seq), -1, (outcome, outcome_dup)))
        row = next(sources[m], None)
        if row is not None:
            push(heap, (row[0], next(seq), m, row))


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in record.items()}


def _traffic(plan: _Plan, events: int) -> Iterator[tuple[dict, Any]]:
    """The stream the model is scored on, continuing past its training prefix."""
    fam, truth = plan.family, plan.truth
    a, b = plan.concepts
    base = fam.make(a, plan.seeds[0])
    if fam.name == "friedman" and truth.kind != "none":
        # Global recurring abrupt drift, the return pushed past the end.
        base = synth.FriedmanDrift(
            drift_type="gra",
            position=(_TRAIN_SIZE + truth.change_index, _TRAIN_SIZE + events + 1),
            seed=plan.seeds[0],
        )
    it = iter(base)
    deque(itertools.islice(it, _TRAIN_SIZE), maxlen=0)  # the training prefix
    if truth.kind not in ("abrupt", "gradual", "recurring") or fam.name == "friedman":
        return it
    # ConceptDriftStream counts samples from 1: position p + 1 centres the
    # change on 0-based prediction index p.
    drifted = _SafeConceptDriftStream(
        stream=_Continue(it, base),
        drift_stream=fam.make(b, plan.seeds[1]),
        position=truth.change_index + 1,
        width=truth.width,
        seed=plan.seeds[2],
    )
    if truth.kind == "recurring":
        assert truth.end_index is not None
        drifted = _SafeConceptDriftStream(
            stream=drifted,
            drift_stream=_Continue(it, base),  # the old concept resumes where it left off
            position=truth.end_index + 1,
            width=truth.width,
            seed=plan.seeds[2] + 1,
        )
    return iter(drifted)


def _model_rows(
    plan: _Plan,
    events: int,
    start_time: float,
    rate: float,
    delay: Callable[[np.random.Generator, int], np.ndarray],
    missing_labels: float,
    duplicates: float,
    n_features: int | None,
) -> Iterator[_Row]:
    """One model's predictions, with their outcomes attached, in time order."""
    fam, truth = plan.family, plan.truth
    model = _train(fam.name, plan.concepts[0], plan.seeds[0], _TRAIN_SIZE)
    names = list(fam.names)
    n_base = len(names)
    n_extra = 0 if n_features is None else n_features - n_base
    names += [f"feat_{k:03d}" for k in range(n_extra)]
    is_int = [name in fam.ints for name in fam.names]
    times = _arrivals(plan.seeds[4], events, rate, start_time).tolist()
    rng = np.random.default_rng(plan.seeds[3])
    stream = _traffic(plan, events)
    p = truth.change_index
    top = model.top_feature
    shift = _SHIFT_STDS * model.stds[top] * (1.0 if model.weights[top] >= 0 else -1.0)
    model_id, version = truth.model_id, truth.model_version
    regression = fam.task == "regression"
    head = {"model_id": model_id, "model_version": version}
    if regression:
        head["task"] = "regression"

    for start in range(0, events, _CHUNK):
        n = min(_CHUNK, events - start)
        batch = list(itertools.islice(stream, n))
        X = np.array([tuple(x.values()) for x, _ in batch], dtype=float)
        y = np.array([float(v) for _, v in batch])
        index = np.arange(start, start + n)
        after = index >= p if p is not None else np.zeros(n, dtype=bool)

        # Every random draw below happens in every chunk, in this order, used
        # or not: turning on missing labels or duplicates then removes or
        # repeats records of otherwise identical traffic.
        flip = rng.random(n) < _NOISY_LABEL_RATE
        if plan.label_noise:
            y = np.where(flip & ~after, 1.0 - y, y)
        if plan.shift:
            X[after, top] += shift
        for j in range(n_base):
            X[:, j] = np.round(X[:, j]) if is_int[j] else np.round(X[:, j], fam.decimals)
        seen = X
        if plan.break_mode is not None:
            seen = X.copy()
            seen[after, top] = model.means[top] if plan.break_mode == "null" else 0.0
            X[after, top] = 0.0

        score = model.score(seen)
        delays = np.maximum(np.round(delay(rng, n), 3), 0.001)
        labelled = rng.random(n) >= missing_labels
        dup_pred = rng.random(n) < duplicates
        dup_out = rng.random(n) < duplicates
        region = rng.choice(len(_REGIONS), size=n, p=_REGION_WEIGHTS).tolist()
        channel = rng.choice(len(_CHANNELS), size=n, p=_CHANNEL_WEIGHTS).tolist()
        extra = np.round(rng.standard_normal((n, n_extra)), 3) if n_extra else None

        columns = [
            (X[:, j].astype(np.int64) if is_int[j] else X[:, j]).tolist() for j in range(n_base)
        ]
        if plan.break_mode == "null":
            columns[top] = [
                None if a else v for a, v in zip(after.tolist(), columns[top], strict=True)
            ]
        if extra is not None:
            columns += [extra[:, k].tolist() for k in range(n_extra)]
        rows = zip(*columns, strict=True)
        if regression:
            preds = np.round(score, 4).tolist()
            scores = itertools.repeat(None)
            outcomes = np.round(y, 4).tolist()
        else:
            preds = (score >= 0.5).astype(np.int64).tolist()
            scores = np.round(score, 6).tolist()
            outcomes = y.astype(np.int64).tolist()
        for k, (values, pred, s, out, d, lab, dp, do, r, c) in enumerate(
            zip(
                rows,
                preds,
                scores,
                outcomes,
                delays.tolist(),
                labelled.tolist(),
                dup_pred.tolist(),
                dup_out.tolist(),
                region,
                channel,
                strict=False,
            )
        ):
            i = start + k
            request_id = f"{model_id}-{i:08d}"
            t = times[i]
            record = {"request_id": request_id, **head, "timestamp": t, "prediction": pred}
            if s is not None:
                record["score"] = s
            record["features"] = dict(zip(names, values, strict=True))
            record["segments"] = {"region": _REGIONS[r], "channel": _CHANNELS[c]}
            outcome = None
            outcome_time = 0.0
            if plan.outcomes and lab:
                outcome_time = round(t + d, 3)
                outcome = {"request_id": request_id, "outcome": out, "timestamp": outcome_time}
            yield (t, record, dp, outcome_time, outcome, do)
