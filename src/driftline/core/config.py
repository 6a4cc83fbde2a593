"""Configuration: one TOML file, ``DRIFTLINE_*`` environment variables, defaults.

Every setting is a dataclass field with its default, so driftline works with
no file at all. A file overrides the defaults; environment variables
override the file. Per-model sections (``[models."fraud"]``) override the
defaults for that model only, key by key. An unknown key is an error that
names the key: a typo such as ``refernce_size`` must not silently fall back
to a default that pages someone at night.

Environment variables use ``__`` for nesting::

    DRIFTLINE_LABEL_TTL=3600
    DRIFTLINE_MONITORS__CONCEPT_DRIFT__DETECTOR=DDM

>>> cfg = load_config(text='label_ttl = "2h"\\n[monitors.concept_drift]\\ndetector = "DDM"', env={})
>>> cfg.label_ttl, cfg.model("any").monitors.concept_drift.detector
(7200.0, 'DDM')
>>> load_config(text="[monitors.concept_drift]\\ndetectr = 'DDM'", env={})
Traceback (most recent call last):
...
driftline.core.config.ConfigError: <config>: unknown key 'monitors.concept_drift.detectr'
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from driftline.core.secret import Secret

SEVERITIES = ("critical", "error", "warning", "info")
DETECTORS = ("ADWIN", "KSWIN", "PageHinkley", "DDM", "EDDM", "HDDM_A", "HDDM_W", "FHDDM")
ENV_PREFIX = "DRIFTLINE_"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
# DRIFTLINE_* variables that are command options or secrets, not config keys.
RESERVED_ENV = frozenset(
    {
        "DRIFTLINE_CONFIG",
        "DRIFTLINE_FAULT_SEEK_DELAY",  # fault injection, see streaming/seekfirst.py
        "DRIFTLINE_WEB_HOST",
        "DRIFTLINE_WEB_PORT",
        "DRIFTLINE_WEBHOOK_SECRET",
    }
)


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it."""


@dataclass(frozen=True)
class ConceptDriftConfig:
    """A river drift detector on the per-event loss (0/1 error or absolute error).

    A detection pages only when the recent mean loss is worse than the
    healthy baseline by both margins: an improving model never pages.
    """

    enabled: bool = True
    detector: str = "ADWIN"
    params: dict[str, Any] = field(default_factory=dict)
    recent_window: int = 500
    absolute_margin: float = 0.03
    relative_margin: float = 0.15
    severity: str = "error"


@dataclass(frozen=True)
class Threshold:
    """Page when a rolling metric stays beyond a bound for ``for_events`` outcomes."""

    metric: str
    below: float | None = None
    above: float | None = None
    for_events: int = 50
    severity: str = "critical"


@dataclass(frozen=True)
class PerformanceConfig:
    """Rolling-window metrics, and the optional fixed thresholds on them."""

    window: int = 1000
    thresholds: tuple[Threshold, ...] = ()


@dataclass(frozen=True)
class DistributionDriftConfig:
    """A label-free test of a distribution against the version's reference.

    The reference is the first ``reference_size`` predictions of the
    version. Every ``every`` predictions, the last ``window`` predictions
    are binned on the reference's quantiles and compared: drift needs both
    a significant chi-square test (p below ``p_value``, Benjamini-Hochberg
    across features) and a material population stability index (PSI at
    least ``psi_threshold``), so a large window cannot page on a shift
    nobody cares about.
    """

    enabled: bool = True
    reference_size: int = 2000
    window: int = 2000
    every: int = 500
    bins: int = 10
    psi_threshold: float = 0.2
    p_value: float = 0.001
    severity: str = "warning"


@dataclass(frozen=True)
class LabelCoverageConfig:
    """Share of predictions whose outcome came within the label TTL."""

    enabled: bool = True
    window: int = 1000
    min_coverage: float = 0.5
    severity: str = "warning"


@dataclass(frozen=True)
class MonitorsConfig:
    concept_drift: ConceptDriftConfig = field(default_factory=ConceptDriftConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    prediction_drift: DistributionDriftConfig = field(default_factory=DistributionDriftConfig)
    data_drift: DistributionDriftConfig = field(default_factory=DistributionDriftConfig)
    label_coverage: LabelCoverageConfig = field(default_factory=LabelCoverageConfig)


@dataclass(frozen=True)
class AlertsConfig:
    """The lifecycle rules shared by every monitor of a model.

    ``warmup_predictions``: a new version cannot page before it has made
    this many predictions. ``resolve_after``: a condition must stay clear
    for this many consecutive evaluations before the alert resolves
    (hysteresis). ``cooldown``: seconds of event time after a resolve
    during which the same condition cannot fire again (anti-flapping).
    """

    warmup_predictions: int = 500
    resolve_after: int = 3
    cooldown: float = 600.0


@dataclass(frozen=True)
class ModelConfig:
    """Everything that can differ from one model to another."""

    task: str | None = None
    positive_label: str | None = None
    monitors: MonitorsConfig = field(default_factory=MonitorsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds on input, enforced with a readable reason (dead letter)."""

    max_message_bytes: int = 1_048_576
    max_records_per_message: int = 10_000
    max_features: int = 1_000
    max_segments: int = 32
    max_id_length: int = 256
    max_string_length: int = 1_024
    # Bounds on state, not on one record (docs/reliability.md, "Hostile input"):
    # a producer that invents a model id or version per record must not grow
    # the worker's memory without end. Past a bound, the records of a new model
    # version are refused ("model limit reached" / "version limit reached").
    # Models named in a [models."..."] section are never refused by max_models.
    max_models: int = 1_000
    max_versions_per_model: int = 100
    # A record stamped more than this many seconds after its Kafka message's
    # timestamp is refused: event time drives the join's expiry, and one
    # record from year 9999 would expire every pending prediction at once.
    max_time_ahead: float = 3_600.0


@dataclass(frozen=True)
class MetricsConfig:
    """Bounds on the label values of the worker's Prometheus metrics (``/metrics``).

    Every model version gets its own series, so a producer that invents a
    model id or a version per request (a bug, or hostile input) would
    otherwise create series without end and take the Prometheus server
    down with the worker's monitoring. Past a bound, series fold into the
    label value ``__overflow__`` and ``driftline_series_overflow_total``
    counts what was folded.

    ``max_model_versions``: (model, version) pairs with series of their
    own; a model first seen when all are taken folds into
    ``model="__overflow__"``. ``max_versions_per_model``: a model's newest
    versions (by first sight) that keep series of their own; older ones
    fold into ``version="__overflow__"``. A new version of a model that
    has series always gets its own, in place of the model's oldest, so a
    model redeployed every day still shows the version it runs now.
    """

    max_model_versions: int = 500
    max_versions_per_model: int = 10


@dataclass(frozen=True)
class TopicsConfig:
    predictions: str = "predictions"
    outcomes: str = "outcomes"
    alerts: str = "alerts"
    dead_letter: str = "driftline-dead-letter"
    model_events: str = ""  # default: "<app_id>-model-events", private to one app
    partitions: int = 4


@dataclass(frozen=True)
class SecurityConfig:
    """How every Kafka client of driftline authenticates and encrypts (``[security]``).

    One section for all of them (worker, changelog writer, ``topics create``,
    ``simulate``, ``bench``, ``alerts tail``, the bridges), so a secured
    cluster is configured once. ``protocol`` is Kafka's
    ``security.protocol``: ``PLAINTEXT`` (the default, a local broker),
    ``SSL`` (TLS; with ``ssl_certfile`` also client-certificate auth),
    ``SASL_PLAINTEXT`` or ``SASL_SSL`` (``username`` and ``password`` with
    ``sasl_mechanism``; ``SASL_SSL`` is what a production cluster wants).

    ``password`` and ``ssl_key_password`` are :class:`~driftline.core.secret.Secret`:
    they print as ``***`` wherever the configuration is shown. Keep them out
    of the file and set them from the environment
    (``DRIFTLINE_SECURITY__PASSWORD``). ``ssl_cafile`` is the CA bundle that
    signed the brokers' certificates (default: the system's);
    ``ssl_check_hostname = false`` accepts a certificate issued to another
    name (only for brokers reached by an address their certificate lacks).
    """

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: Secret | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: Secret | None = None
    ssl_check_hostname: bool = True

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")


@dataclass(frozen=True)
class Config:
    """The whole configuration. ``model(id)`` gives one model's effective settings.

    ``label_ttl``: how long a prediction waits for its outcome (event time).
    ``lateness``: how far behind the newest event time a record may arrive
    before pending joins it could have met are expired anyway.
    """

    label_ttl: float = 86_400.0
    lateness: float = 0.0
    broker: str = "kafka://127.0.0.1:9092"
    app_id: str = "driftline"
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    task: str | None = None
    positive_label: str | None = None
    monitors: MonitorsConfig = field(default_factory=MonitorsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    _cache: dict[str, ModelConfig] = field(default_factory=dict, repr=False, compare=False)

    @property
    def model_events_topic(self) -> str:
        """The internal topic between join and monitors (one per app id)."""
        return self.topics.model_events or f"{self.app_id}-model-events"

    @property
    def checkpoint_topic(self) -> str:
        """The internal, compacted topic of monitor checkpoints (one per app id)."""
        return f"{self.app_id}-monitor-checkpoints"

    def model(self, model_id: str) -> ModelConfig:
        """The settings for ``model_id``: defaults, then its own overrides."""
        cached = self._cache.get(model_id)
        if cached is not None:
            return cached
        base = {
            "task": self.task,
            "positive_label": self.positive_label,
            "monitors": _as_dict(self.monitors),
            "alerts": _as_dict(self.alerts),
        }
        merged = _deep_merge(base, self.models.get(model_id, {}))
        result = _build(ModelConfig, merged, f"models.{model_id}")
        _validate_model(result, f"models.{model_id}")
        self._cache[model_id] = result
        return result


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}
_DURATION_FIELDS = frozenset({"label_ttl", "cooldown", "lateness"})


def parse_duration(value: object, where: str = "duration") -> float:
    """Seconds from a number or a string such as ``"90s"``, ``"15m"``, ``"1d"``.

    >>> parse_duration("1d"), parse_duration(30), parse_duration("1.5h")
    (86400.0, 30.0, 5400.0)
    """
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ConfigError(
            f"{where}: expected a duration such as 30, '90s', '15m', '1d'; got {value!r}"
        )
    if seconds < 0:
        raise ConfigError(f"{where}: must not be negative, got {value!r}")
    return seconds


def _as_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {
            f.name: _as_dict(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not f.name.startswith("_")
        }
    if isinstance(obj, tuple):
        return [_as_dict(x) for x in obj]
    if isinstance(obj, dict):
        return dict(obj)
    return obj


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and key != "params":
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if tp is Secret:
        # Never quote the value: it is a password, perhaps mistyped.
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string (quote it in TOML)")
        return Secret(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return _build(tp, value, where)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected an array, got {value!r}")
        return tuple(_convert(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "true",
            "1",
            "yes",
            "on",
            "false",
            "0",
            "no",
            "off",
        ):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if where.rsplit(".", 1)[-1] in _DURATION_FIELDS:
            return parse_duration(value, where)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _build(cls: Any, data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"unknown key {path!r}")
        kwargs[key] = _convert(hints[key], value, path)
    return cls(**kwargs)


def _check_severity(value: str, where: str) -> None:
    if value not in SEVERITIES:
        raise ConfigError(
            f"{where}: severity must be one of {', '.join(SEVERITIES)}; got {value!r}"
        )


def _validate_model(cfg: ModelConfig, where: str) -> None:
    from driftline.core.events import TASKS  # local: keeps config importable alone

    if cfg.task is not None and cfg.task not in TASKS:
        raise ConfigError(f"{where}.task: must be one of {', '.join(TASKS)}; got {cfg.task!r}")
    m = cfg.monitors
    if m.concept_drift.detector not in DETECTORS:
        raise ConfigError(
            f"{where}.monitors.concept_drift.detector: must be one of {', '.join(DETECTORS)};"
            f" got {m.concept_drift.detector!r}"
        )
    _check_severity(m.concept_drift.severity, f"{where}.monitors.concept_drift.severity")
    for name in ("prediction_drift", "data_drift"):
        d: DistributionDriftConfig = getattr(m, name)
        _check_severity(d.severity, f"{where}.monitors.{name}.severity")
        for attr in ("reference_size", "window", "every", "bins"):
            if getattr(d, attr) < (2 if attr == "bins" else 1):
                raise ConfigError(f"{where}.monitors.{name}.{attr}: must be positive")
    _check_severity(m.label_coverage.severity, f"{where}.monitors.label_coverage.severity")
    for i, t in enumerate(m.performance.thresholds):
        tw = f"{where}.monitors.performance.thresholds[{i}]"
        _check_severity(t.severity, f"{tw}.severity")
        if (t.below is None) == (t.above is None):
            raise ConfigError(f"{tw}: give exactly one of 'below' or 'above'")
    if m.performance.window < 1 or m.concept_drift.recent_window < 1:
        raise ConfigError(f"{where}.monitors: windows must be positive")


def _validate_security(sec: SecurityConfig) -> None:
    """Refuse settings that would connect differently from what they seem to ask.

    Credentials with a protocol that sends none, or TLS files with a
    protocol that does not use TLS, would otherwise be ignored in silence:
    a worker that someone believes authenticated would run without.
    """
    if sec.protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(
            f"security.protocol: must be one of {', '.join(SECURITY_PROTOCOLS)};"
            f" got {sec.protocol!r}"
        )
    if sec.sasl_mechanism not in SASL_MECHANISMS:
        raise ConfigError(
            f"security.sasl_mechanism: must be one of {', '.join(SASL_MECHANISMS)};"
            f" got {sec.sasl_mechanism!r}"
        )
    if sec.uses_sasl:
        for name in ("username", "password"):
            if not getattr(sec, name):
                raise ConfigError(
                    f"security.{name}: required when security.protocol is {sec.protocol}"
                    f" (set it in the file or with DRIFTLINE_SECURITY__{name.upper()})"
                )
    else:
        given = [n for n in ("username", "password") if getattr(sec, n) is not None]
        if given:
            raise ConfigError(
                f"security.{given[0]}: set, but security.protocol is {sec.protocol}, which"
                " sends no credentials; set security.protocol to SASL_SSL (or SASL_PLAINTEXT)"
            )
    if not sec.uses_tls:
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password"):
            if getattr(sec, name) is not None:
                raise ConfigError(
                    f"security.{name}: set, but security.protocol is {sec.protocol}, which"
                    " does not use TLS; set security.protocol to SASL_SSL or SSL"
                )
    for name in ("ssl_keyfile", "ssl_key_password"):
        if getattr(sec, name) is not None and sec.ssl_certfile is None:
            raise ConfigError(f"security.{name}: needs security.ssl_certfile (the client cert)")


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    text: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Defaults, then the TOML file (or ``text``), then ``DRIFTLINE_*`` variables."""
    where = str(path) if path is not None else "<config>"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    elif text is not None:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    data = _deep_merge(data, _env_overrides(os.environ if env is None else env))
    try:
        cfg = _build(Config, data, "")
        if cfg.label_ttl <= 0:
            raise ConfigError("label_ttl: must be positive")
        for name in ("max_model_versions", "max_versions_per_model"):
            if getattr(cfg.metrics, name) < 1:
                raise ConfigError(f"metrics.{name}: must be at least 1")
        for name in ("max_models", "max_versions_per_model"):
            if getattr(cfg.limits, name) < 1:
                raise ConfigError(f"limits.{name}: must be at least 1")
        if not cfg.limits.max_time_ahead > 0:
            raise ConfigError("limits.max_time_ahead: must be positive")
        _validate_security(cfg.security)
        for model_id, section in cfg.models.items():
            if not isinstance(section, Mapping):
                raise ConfigError(f"models.{model_id}: expected a table")
        cfg.model("\0defaults")
        for model_id in cfg.models:
            cfg.model(model_id)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return cfg
