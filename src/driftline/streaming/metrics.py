"""Prometheus metrics of the streaming worker, served at ``/metrics``.

The worker's throughput is the figure that matters, so nothing here costs a
call per record. Counts, metrics, alert states and model states already
live in the core's :class:`~driftline.core.monitor.MonitorSet`; a custom
``prometheus_client`` collector (:class:`WorkerCollector`) reads them when
Prometheus scrapes, builds the metric families, and is gone again. The two
histograms are counted in pre-bucketed lists: outcome delays by the core
monitor (one ``bisect`` per outcome), processing latency by the monitor
agent once per micro-batch of model events (:class:`Telemetry`). Only dead
letters, which are rare, are counted as they happen.

Faust's own sensor (:class:`faust.sensors.Monitor`, which every Faust app
runs) already counts messages, events, sends, offsets, rebalances and
table operations; :class:`FaustCollector` reads it at scrape time as well,
and derives consumer lag from the consumer's high-water marks and the
committed offsets. (``faust.sensors.prometheus.PrometheusMonitor`` would
count all of that a second time, into ``prometheus_client`` objects, on
every message: ~17 µs a message, and its ``*_runtime_ms`` name fails
``promtool check metrics``.)

Label values are bounded: every model version gets its own series up to
``[metrics]`` limits in the config, and past them series fold into
``__overflow__`` (see :class:`SeriesLimiter`). ``docs/metrics.md`` lists
every metric.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from driftline.core.config import SEVERITIES, Config, MetricsConfig
from driftline.core.monitor import OUTCOME_DELAY_BUCKETS, ModelMonitor

if TYPE_CHECKING:
    import faust

    from driftline.streaming.app import WorkerState

OVERFLOW = "__overflow__"
"""The label value that series beyond the cardinality bounds fold into."""

PROCESSING_LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
"""Upper bounds (seconds) of ``driftline_processing_latency_seconds``."""

INPUT_TIME_HEADER = "driftline-input-time"
"""Header of a model-events message: the Kafka timestamp (epoch ms) of the
oldest input message of the join batch it came from."""

MODEL_STATES: tuple[str, ...] = ("warming_up", "ok", *reversed(SEVERITIES))
"""``driftline_model_state`` values: warming up, nothing firing, or the
highest severity firing (``info`` < ``warning`` < ``error`` < ``critical``)."""

_RANK = {s: i for i, s in enumerate(reversed(SEVERITIES), start=1)}  # info 1 .. critical 4
_BY_RANK = {i: s for s, i in _RANK.items()}

Pair = tuple[str, str]


# -- what the agents count ------------------------------------------------


class BucketCounts:
    """Observations counted per bucket: a histogram without a metrics library.

    ``counts[i]`` holds observations at most ``bounds[i]`` (and above the
    bound before); the last slot is ``+Inf``. Observing is one ``bisect``
    and two additions, so an agent can afford it in its loop.

    >>> h = BucketCounts((0.1, 1.0))
    >>> h.observe(0.05); h.observe(0.5, n=3); h.observe(7.0)
    >>> h.counts, h.total
    ([1, 3, 1], 8.55)
    >>> histogram_buckets(h.bounds, h.counts)
    [('0.1', 1), ('1.0', 4), ('+Inf', 5)]
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float, n: int = 1) -> None:
        """Count ``n`` observations of ``value``."""
        self.counts[bisect_left(self.bounds, value)] += n
        self.total += value * n


def histogram_buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, int]]:
    """Per-bucket counts as Prometheus's cumulative ``(le, count)`` pairs, ``+Inf`` last."""
    out = []
    running = 0
    for bound, n in zip((*bounds, float("inf")), counts, strict=True):
        running += n
        out.append((floatToGoString(bound), running))
    return out


@dataclass
class Telemetry:
    """What the worker's agents count for ``/metrics`` beyond the monitors' own state.

    ``last_seen`` maps a model id (the model-events message key) to the wall
    clock of its latest micro-batch; ``dead_letters`` counts dead-lettered
    messages by (source topic, reason code).

    A model id per record (a broken or hostile producer) must not grow
    ``last_seen`` without end: a scrape drops the ids that have no monitor
    (the core refuses them past ``[limits]``), and between scrapes it holds
    at most :attr:`max_seen` ids.
    """

    clock: Callable[[], float] = time.time
    dead_letters: Counter[tuple[str, str]] = field(default_factory=Counter)
    processing_latency: BucketCounts = field(
        default_factory=lambda: BucketCounts(PROCESSING_LATENCY_BUCKETS)
    )
    last_seen: dict[bytes, float] = field(default_factory=dict)
    max_seen: int = 10_000

    def dead_letter(self, topic: str, code: str) -> None:
        """Count one dead-lettered message from ``topic``."""
        self.dead_letters[(topic, code)] += 1

    def monitored(self, key: bytes | None, headers: Any, events: int) -> None:
        """The monitor agent has processed one model-events message of ``events`` events.

        Called once per message, not per event. Each event counts in the
        latency histogram at the age of the oldest input message of its
        join batch (:data:`INPUT_TIME_HEADER`), an upper bound of its own.
        """
        now = self.clock()
        seen = self.last_seen
        key = key or b""
        if key in seen or len(seen) < self.max_seen:
            seen[key] = now
        if not headers or not events:
            return
        items = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in items:
            if name == INPUT_TIME_HEADER:
                try:
                    sent = int(value) / 1000.0
                except (TypeError, ValueError):
                    return
                self.processing_latency.observe(max(now - sent, 0.0), events)
                return


def input_time_headers(events: Iterable[Any]) -> list[tuple[str, bytes]] | None:
    """The :data:`INPUT_TIME_HEADER` for the model events of a batch of Faust events.

    ``None`` when no message carries a timestamp (Kafka gives -1 then).
    """
    oldest = min((e.message.timestamp or 0.0 for e in events), default=0.0)
    if oldest <= 0:
        return None
    return [(INPUT_TIME_HEADER, b"%d" % round(oldest * 1000))]


# -- label cardinality ----------------------------------------------------


class SeriesLimiter:
    """Which (model, version) label values each monitor's series get.

    Up to ``max_model_versions`` pairs have series of their own; a model
    seen after that folds into ``("__overflow__", "__overflow__")``. A new
    version of a model that has series already always gets its own: it
    takes the place of the model's oldest version when the model has
    ``max_versions_per_model`` of them or every place is taken, and that
    oldest version folds into ``(model, "__overflow__")``. So the version a
    model runs now is always visible, and a model redeployed daily for
    years cannot crowd out the others.

    A pair keeps its labels once folded (it never moves back), so folded
    counters only grow. ``folded`` counts folded pairs by the label they lost.

    >>> lim = SeriesLimiter(MetricsConfig(max_model_versions=3, max_versions_per_model=2))
    >>> [lim.labels(p) for p in [("a", "1"), ("a", "2"), ("b", "1")]]
    [('a', '1'), ('a', '2'), ('b', '1')]
    >>> lim.labels(("c", "1"))  # every place taken
    ('__overflow__', '__overflow__')
    >>> lim.labels(("a", "3")), lim.labels(("a", "1"))  # a's newest replaces its oldest
    (('a', '3'), ('a', '__overflow__'))
    >>> dict(lim.folded)
    {'model': 1, 'version': 1}
    """

    def __init__(self, cfg: MetricsConfig) -> None:
        self.cfg = cfg
        self._labels: dict[Pair, Pair] = {}
        self._versions: dict[str, list[str]] = {}  # versions with own series, oldest first
        self._own = 0
        self.folded: Counter[str] = Counter()

    def labels(self, pair: Pair) -> Pair:
        """The (model, version) label values of ``pair``'s series."""
        got = self._labels.get(pair)
        if got is not None:
            return got
        model, version = pair
        versions = self._versions.get(model)
        if versions and (
            len(versions) >= self.cfg.max_versions_per_model
            or self._own >= self.cfg.max_model_versions
        ):
            self._labels[(model, versions.pop(0))] = (model, OVERFLOW)
            self._own -= 1
            self.folded["version"] += 1
        if self._own >= self.cfg.max_model_versions:
            self.folded["model"] += 1
            got = self._labels[pair] = (OVERFLOW, OVERFLOW)
            return got
        self._own += 1
        self._versions.setdefault(model, []).append(version)
        got = self._labels[pair] = pair
        return got


# -- scrape-time collectors -------------------------------------------------


def model_state(mon: ModelMonitor) -> str:
    """The model's :data:`MODEL_STATES` value: the worst firing severity, else
    ``warming_up`` before ``warmup_predictions``, else ``ok``."""
    worst = max((_RANK.get(c.severity, 0) for c, firing in mon.policy.fired() if firing), default=0)
    if worst:
        return _BY_RANK[worst]
    return "ok" if mon.may_page() else "warming_up"


_COUNTS = (
    ("predictions", "Predictions seen (each request id once)."),
    ("outcomes", "Outcomes matched to a prediction (joined or late)."),
    ("joined", "Predictions joined with their outcome within the label TTL."),
    ("expired", "Predictions whose outcome did not come within the label TTL."),
    ("late_outcomes", "Outcomes that came after their prediction had expired."),
    ("duplicates", "Retried predictions or outcomes of a request id already seen."),
    ("refused_records", "Malformed records naming this model (sent to the dead letter)."),
    ("unscorable", "Joined pairs whose labels cannot be compared (e.g. a string outcome"
     " for a regression model)."),
)  # fmt: skip


def _counts(mon: ModelMonitor) -> tuple[int, ...]:
    return (
        mon.predictions,
        mon.outcomes,
        mon.joined,
        mon.expired,
        mon.late,
        mon.duplicates,
        mon.dead_letters,
        mon.unscorable,
    )


def _drift_detections(mon: ModelMonitor) -> dict[str, int]:
    """Detections by monitor, 0 for every enabled one: a counter that first
    appears at 1 would be invisible to ``increase()``."""
    out = {}
    if mon.loss is not None:
        out["concept_drift"] = mon.loss.detections
    if mon.score_drift is not None:
        out["prediction_drift"] = mon.score_drift.detections
    if mon.feature_drift is not None:
        out["data_drift"] = mon.feature_drift.detections
    return out


def _metric_values(metrics: Any) -> dict[str, float]:
    if metrics is None:
        return {}
    return {k: v for k, v in metrics.get().items() if k != "n" and v is not None}


class WorkerCollector:
    """The ``driftline_*`` families, built from the worker's state when scraped."""

    def __init__(self, state: WorkerState, cfg: MetricsConfig) -> None:
        self.state = state
        self.limiter = SeriesLimiter(cfg)
        # Wall clock at which each pair's event counts last changed (last_event_age).
        self._activity: dict[Pair, tuple[int, float]] = {}

    def _families(self) -> dict[str, Metric]:
        mv = ["model", "version"]
        fams: dict[str, Metric] = {}
        for name, doc in _COUNTS:
            fams[name] = CounterMetricFamily(f"driftline_{name}", doc, labels=mv)
        fams["orphans"] = CounterMetricFamily(
            "driftline_orphan_outcomes",
            "Outcomes whose prediction never came within the label TTL (no model known).",
        )
        fams["dead"] = CounterMetricFamily(
            "driftline_dead_letters",
            "Messages sent to the dead-letter topic, by source topic and the reason code"
            " of their first refused record.",
            labels=["topic", "reason"],
        )
        fams["drift"] = CounterMetricFamily(
            "driftline_drift_detections",
            "Times a drift detector or check said drift, whether or not it paged.",
            labels=[*mv, "monitor"],
        )
        fams["metric"] = GaugeMetricFamily(
            "driftline_model_metric",
            "Model quality over the rolling window (monitors.performance.window outcomes).",
            labels=[*mv, "metric"],
        )
        fams["metric_total"] = GaugeMetricFamily(
            "driftline_model_metric_since_start",
            "Model quality over every outcome since the worker first saw the version.",
            labels=[*mv, "metric"],
        )
        fams["coverage"] = GaugeMetricFamily(
            "driftline_label_coverage_ratio",
            "Share of the last monitors.label_coverage.window resolved predictions that got"
            " their outcome within the label TTL.",
            labels=mv,
        )
        fams["firing"] = GaugeMetricFamily(
            "driftline_alerts_firing",
            "Alerts firing now (1), or fired and since resolved (0).",
            labels=[*mv, "monitor", "severity"],
        )
        fams["state"] = GaugeMetricFamily(
            "driftline_model_state",
            "1 for the model's current state: warming_up, ok, or the highest severity firing.",
            labels=[*mv, "state"],
        )
        fams["age"] = GaugeMetricFamily(
            "driftline_last_event_age_seconds",
            "Seconds (wall clock) since the worker last processed an event of the model version.",
            labels=mv,
        )
        fams["delay"] = HistogramMetricFamily(
            "driftline_outcome_delay_seconds",
            "Outcome event time minus prediction event time, joined and late outcomes.",
            labels=mv,
        )
        fams["latency"] = HistogramMetricFamily(
            "driftline_processing_latency_seconds",
            "Kafka timestamp of an input message to its model events processed by the"
            " monitor agent (per event, at the oldest input message of its join batch).",
        )
        fams["overflow"] = CounterMetricFamily(
            "driftline_series_overflow",
            "Model versions whose series were folded into __overflow__, by the label folded.",
            labels=["label"],
        )
        fams["pending"] = GaugeMetricFamily(
            "driftline_join_store_entries",
            "Entries of the join store: waiting predictions and outcomes, and tombstones"
            " remembered to spot retries.",
        )
        fams["in_memory"] = GaugeMetricFamily(
            "driftline_join_in_memory",
            "What the join holds in memory, by kind: store entries, and expiry-index items"
            " (stale ones included). Beyond --join-memory-entries the rest waits on disk.",
            labels=["kind"],
        )
        fams["ready"] = GaugeMetricFamily(
            "driftline_worker_ready", "1 once the worker has restored its join state."
        )
        return fams

    def describe(self) -> Iterable[Metric]:
        """The families, without samples: lets a registry refuse clashing names."""
        return list(self._families().values())

    def collect(self) -> Iterable[Metric]:
        state = self.state
        tel: Telemetry = state.telemetry
        now = tel.clock()
        fams = self._families()
        counts: dict[Pair, list[int]] = {}
        drift: Counter[tuple[str, str, str]] = Counter()
        firing: Counter[tuple[str, str, str, str]] = Counter()
        states: dict[Pair, Counter[str]] = {}
        delays: dict[Pair, tuple[list[int], float]] = {}
        last: dict[Pair, float] = {}
        monitors = state.monitors.monitors
        limiter = self.limiter
        for pair in monitors:  # first: a new version may fold an older one seen earlier
            limiter.labels(pair)
        for pair, mon in monitors.items():
            labels = limiter.labels(pair)
            own = labels == pair
            row = _counts(mon)
            acc = counts.get(labels)
            counts[labels] = (
                list(row) if acc is None else [a + b for a, b in zip(acc, row, strict=True)]
            )
            for monitor, n in _drift_detections(mon).items():
                drift[(*labels, monitor)] += n
            for cond, on in mon.policy.fired():
                firing[(*labels, cond.monitor, cond.severity)] += int(on)
            states.setdefault(labels, Counter())[model_state(mon)] += 1
            buckets, total = delays.get(labels, ([0] * len(mon.delays.counts), 0.0))
            delays[labels] = (
                [a + b for a, b in zip(buckets, mon.delays.counts, strict=True)],
                total + mon.delay_sum + mon.delays.late_sum,
            )
            seen = self._last_event(pair, row, now)
            if seen is not None:
                last[labels] = max(last.get(labels, seen), seen)
            if own:
                model, version = pair
                for name, value in _metric_values(mon.rolling).items():
                    fams["metric"].add_metric([model, version, name], value)
                for name, value in _metric_values(mon.metrics).items():
                    fams["metric_total"].add_metric([model, version, name], value)
                if mon.coverage.n:
                    fams["coverage"].add_metric([model, version], mon.coverage.mean)

        for labels, row in counts.items():
            for (name, _doc), value in zip(_COUNTS, row, strict=True):
                fams[name].add_metric(list(labels), value)
        for key, n in drift.items():
            fams["drift"].add_metric(list(key), n)
        for key, n in firing.items():
            fams["firing"].add_metric(list(key), n)
        for labels, by_state in states.items():
            for s in MODEL_STATES:
                fams["state"].add_metric([*labels, s], by_state.get(s, 0))
        for labels, (buckets, total) in delays.items():
            fams["delay"].add_metric(
                list(labels), histogram_buckets(OUTCOME_DELAY_BUCKETS, buckets), total
            )
        for labels, seen in last.items():
            fams["age"].add_metric(list(labels), max(now - seen, 0.0))
        known = {model.encode() for model, _ in monitors}
        for key in [k for k in tel.last_seen if k not in known]:
            del tel.last_seen[key]

        fams["orphans"].add_metric([], state.monitors.orphan_outcomes)
        for (topic, code), n in sorted(tel.dead_letters.items()):
            fams["dead"].add_metric([topic, code], n)
        lat = tel.processing_latency
        fams["latency"].add_metric([], histogram_buckets(lat.bounds, lat.counts), lat.total)
        for label in ("model", "version"):
            fams["overflow"].add_metric([label], self.limiter.folded[label])
        fams["pending"].add_metric([], len(state.store))
        fams["in_memory"].add_metric(["entries"], state.store.in_memory())
        fams["in_memory"].add_metric(["index"], state.join.index_size()[0])
        fams["ready"].add_metric([], 1 if state.ready else 0)
        return list(fams.values())

    def _last_event(self, pair: Pair, row: tuple[int, ...], now: float) -> float | None:
        """Wall clock of the pair's latest event, or None before its first.

        The monitors keep event time only, and stamping the wall clock on
        every event would cost a call per record; instead a pair whose counts
        moved since the last scrape gets the time of its model's latest
        micro-batch (:attr:`Telemetry.last_seen`), exact while one version of
        a model is live.
        """
        activity = sum(row)
        if not activity:
            return None
        prev = self._activity.get(pair)
        if prev is not None and prev[0] == activity:
            return prev[1]
        seen = self.state.telemetry.last_seen.get(pair[0].encode(), now)
        self._activity[pair] = (activity, seen)
        return seen


class FaustCollector:
    """Faust's own sensor counts (``app.monitor``) and consumer lag, read when scraped.

    ``topics``: the topics whose assigned partitions get offset gauges and
    ``driftline_consumer_lag`` (the agents' inputs), so the changelog and
    Faust's other internal topics stay out.
    """

    def __init__(self, app: faust.App, topics: Iterable[str]) -> None:
        self.app = app
        self.topics = frozenset(topics)

    def _families(self) -> dict[str, Metric]:
        tp = ["topic", "partition"]
        return {
            "received": CounterMetricFamily(
                "driftline_faust_messages_received",
                "Messages delivered to streams, by topic.",
                labels=["topic"],
            ),
            "sent": CounterMetricFamily(
                "driftline_faust_messages_sent",
                "Messages sent through Faust's producer, by topic.",
                labels=["topic"],
            ),
            "send_errors": CounterMetricFamily(
                "driftline_faust_send_errors", "Messages Faust's producer failed to send."
            ),
            "events": CounterMetricFamily(
                "driftline_faust_events", "Stream events processed by the agents."
            ),
            "active": GaugeMetricFamily(
                "driftline_faust_messages_active", "Messages received and not yet acknowledged."
            ),
            "rebalances": CounterMetricFamily(
                "driftline_faust_rebalances", "Consumer group rebalances this worker went through."
            ),
            "assignments": CounterMetricFamily(
                "driftline_faust_assignments",
                "Partition assignments, by result (completed, failed).",
                labels=["result"],
            ),
            "tables": CounterMetricFamily(
                "driftline_faust_table_operations",
                "Faust table key operations (the join store bypasses them: see"
                " driftline_join_store_entries).",
                labels=["table", "operation"],
            ),
            "buffer_full": CounterMetricFamily(
                "driftline_faust_topic_buffer_full",
                "Times a partition's stream buffer was full and the consumer had to wait.",
                labels=tp,
            ),
            "end": GaugeMetricFamily(
                "driftline_faust_topic_partition_end_offset",
                "High-water mark (log end offset) of an assigned partition.",
                labels=tp,
            ),
            "committed": GaugeMetricFamily(
                "driftline_faust_topic_partition_committed_offset",
                "Offset committed by this worker for an assigned partition.",
                labels=tp,
            ),
            "read": GaugeMetricFamily(
                "driftline_faust_topic_partition_read_offset",
                "Offset of the last message read from an assigned partition.",
                labels=tp,
            ),
            "lag": GaugeMetricFamily(
                "driftline_consumer_lag",
                "Messages in an input partition not yet processed and committed"
                " (high-water mark minus committed offset; before the first commit,"
                " minus the next offset to read).",
                labels=tp,
            ),
        }

    def describe(self) -> Iterable[Metric]:
        """The families, without samples: lets a registry refuse clashing names."""
        return list(self._families().values())

    def collect(self) -> Iterable[Metric]:
        fams = self._families()
        mon = self.app.monitor
        for topic, n in sorted(mon.messages_received_by_topic.items()):
            fams["received"].add_metric([str(topic)], n)
        for topic, n in sorted(mon.messages_sent_by_topic.items()):
            fams["sent"].add_metric([str(topic)], n)
        fams["send_errors"].add_metric([], mon.send_errors)
        fams["events"].add_metric([], mon.events_total)
        fams["active"].add_metric([], mon.messages_active)
        fams["rebalances"].add_metric([], mon.rebalances or 0)
        fams["assignments"].add_metric(["completed"], mon.assignments_completed)
        fams["assignments"].add_metric(["failed"], mon.assignments_failed)
        for name, table in sorted(mon.tables.items()):
            for op in ("keys_retrieved", "keys_updated", "keys_deleted"):
                fams["tables"].add_metric([name, op], getattr(table, op, 0))
        assigned = self._assigned()
        for tp, n in mon.topic_buffer_full.items():
            fams["buffer_full"].add_metric([tp.topic, str(tp.partition)], n)
        consumer = self._consumer()
        ends, committed, reads = mon.tp_end_offsets, mon.tp_committed_offsets, mon.tp_read_offsets
        faust_committed = getattr(consumer, "_committed_offset", None) or {}
        for tp in sorted(tp for tp in assigned if tp.topic in self.topics):
            labels = [tp.topic, str(tp.partition)]
            end = _max(ends.get(tp), consumer_highwater(consumer, tp))
            done = committed.get(tp)
            if done is None:
                done = faust_committed.get(tp)
            read = reads.get(tp)
            if end is not None:
                fams["end"].add_metric(labels, end)
            if done is not None:
                fams["committed"].add_metric(labels, done)
            if read is not None:
                fams["read"].add_metric(labels, read)
            # Before this worker's first commit of a partition, what it has read
            # stands in for what it committed (an empty partition has no lag).
            position = done if done is not None else (read + 1 if read is not None else None)
            if end is not None and (position is not None or end == 0):
                fams["lag"].add_metric(labels, max(end - (position or 0), 0))
        return list(fams.values())

    def _assigned(self) -> set[Any]:
        try:
            return set(self.app.assignor.assigned_actives())
        except Exception:  # not started, or between generations
            return set()

    def _consumer(self) -> Any:
        try:
            return self.app.consumer
        except Exception:
            return None


def consumer_highwater(consumer: Any, tp: Any) -> int | None:
    """The consumer's latest known high-water mark of ``tp``; None if it has none yet.

    Read from the fetcher's state (updated by every fetch response, records
    or not), so it costs no request to the broker.
    """
    if consumer is None:
        return None
    try:
        hw = consumer.highwater(tp)
    except Exception:  # not assigned (any more), or the consumer is not started
        return None
    return hw if isinstance(hw, int) and hw >= 0 else None


def consumer_last_poll(consumer: Any, tp: Any) -> float | None:
    """When (epoch seconds) the consumer last had a fetch response for ``tp``; None if never.

    The high-water mark is only as fresh as that response: while a
    rebalance or a paused partition stops fetching, it stays where it was
    however much is written meanwhile.
    """
    try:
        ms = consumer._thread._ensure_consumer().last_poll_timestamp(tp)
    except Exception:  # not assigned (any more), not started, or another driver
        return None
    return ms / 1000.0 if isinstance(ms, int) else None


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


# -- wiring -----------------------------------------------------------------


def install_metrics(app: faust.App, state: WorkerState, config: Config) -> CollectorRegistry:
    """Register the collectors on a registry of their own and serve it at ``/metrics``.

    A registry per app (not ``prometheus_client``'s global one) keeps two
    apps in one process, as tests build them, from clashing.
    """
    registry = CollectorRegistry()
    registry.register(WorkerCollector(state, config.metrics))
    topics = config.topics
    registry.register(
        FaustCollector(app, (topics.predictions, topics.outcomes, config.model_events_topic))
    )
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, resident memory, fds

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # Collect on the event loop, where the agents mutate the state, so the
        # snapshot is consistent; format it (the larger part: ~5 µs a sample)
        # in a thread, so a scrape of many models does not stall the agents.
        snapshot = _Snapshot(list(registry.collect()))
        body = await asyncio.to_thread(generate_latest, snapshot)
        return web.bytes(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return registry


@dataclass(frozen=True)
class _Snapshot:
    """Metric families already collected, in the shape ``generate_latest`` reads."""

    families: list[Metric]

    def collect(self) -> list[Metric]:
        return self.families
