"""The charts of one model version in the report, built from what the timeline recorded.

Which metrics a task gets, which way a score distribution is drawn (a
histogram strip for a classifier's score, percentile bands for a predicted
value, stacked shares for a predicted label), where alerts are marked and
shaded, and which stretch of event time the charts span. Each function
returns SVG text from :mod:`driftline.report.svg`; the page around them is
:mod:`driftline.report.html`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from driftline.report.svg import Band, Chart, Heat, Line, Marker, Span, render_chart, utc
from driftline.report.timeline import ModelSeries

Alert = Mapping[str, Any]

SEVERITY_COLORS = {
    "critical": "#9d174d",
    "error": "#dc2626",
    "warning": "#d97706",
    "info": "#2563eb",
}
_OTHER_SEVERITY = "#475569"

# Series colours, kept apart from the severity reds and ambers.
BLUE, TEAL, VIOLET, SLATE = "#2563eb", "#0d9488", "#7c3aed", "#334155"
HEAT, ORANGE = "#1e40af", "#ea580c"
SHARE_COLORS = ("#2563eb", "#0d9488", "#7c3aed", "#db2777", "#65a30d", "#0891b2", "#9333ea")
OTHER_COLOR = "#94a3b8"

FULL_WIDTH, HALF_WIDTH = 1100, 540
_FIRING_OPACITY = 0.05  # several alerts firing at once still leave the lines readable

# Which rolling metrics to draw for each task: (main chart, second chart).
_PLOTS: dict[str, tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]] = {
    "binary": (
        [("accuracy", "accuracy", BLUE), ("roc_auc", "ROC AUC", TEAL), ("f1", "F1", VIOLET)],
        [("log_loss", "log loss", SLATE)],
    ),
    "multiclass": (
        [("accuracy", "accuracy", BLUE), ("macro_f1", "macro F1", VIOLET)],
        [("log_loss", "log loss", SLATE)],
    ),
    "regression": (
        [("mae", "MAE", BLUE), ("rmse", "RMSE", VIOLET)],
        [("mean_error", "mean error (prediction − outcome)", SLATE)],
    ),
}


def severity_color(severity: str) -> str:
    """The colour of an alert's severity on the charts and in the alert list."""
    return SEVERITY_COLORS.get(severity, _OTHER_SEVERITY)


def glyph(status: str) -> str:
    """The sign of an alert message: firing or resolved."""
    return "▲" if status == "firing" else "✓"


def alert_marks(
    numbered: Sequence[tuple[int, Alert]], end: float
) -> tuple[list[Marker], list[Span]]:
    """A marker per alert message, and a shaded span per firing period."""
    markers = []
    spans = []
    open_at: dict[str, tuple[float, str]] = {}
    for n, a in numbered:
        t = float(a["event_time"])
        status, severity, monitor = str(a["status"]), str(a["severity"]), str(a["monitor"])
        color = severity_color(severity)
        markers.append(
            Marker(
                t=t,
                label=f"{glyph(status)} {monitor}",
                color=color,
                tooltip=f"#{n} {monitor} {status} ({severity}) at {utc(t)} UTC: {a['summary']}",
                dashed=status != "firing",
                href=f"#alert-{n}",
            )
        )
        key = str(a["dedup_key"])
        if status == "firing":
            open_at[key] = (t, color)
        elif key in open_at:
            start, c = open_at.pop(key)
            spans.append(Span(start, t, c, opacity=_FIRING_OPACITY))
    spans += [Span(start, end, c, opacity=_FIRING_OPACITY) for start, c in open_at.values()]
    return markers, spans


def _metric_lines(series: ModelSeries, which: list[tuple[str, str, str]]) -> list[Line]:
    lines = []
    for key, label, color in which:
        points = [(t, values.get(key)) for t, values in series.metrics]
        if any(v is not None for _, v in points):
            lines.append(Line(label, color, points))
    return lines


def quality_charts(
    series: ModelSeries,
    status: Mapping[str, Any],
    x_range: tuple[float, float],
    markers: list[Marker],
    spans: list[Span],
) -> tuple[str, str | None]:
    """The rolling-metric charts of one version: the main one, and a second if there is data.

    Without outcomes the main chart is a short strip that says so (its alert
    markers still show when the label-free monitors fired), and there is no
    second chart.
    """
    task = series.task or status.get("task") or ""
    main, second = _PLOTS.get(task, ([], []))
    joined = int(status.get("joined", 0))
    if not joined:
        empty = "no outcomes joined: quality metrics need ground truth (label-free monitors ran)"
    else:
        empty = f"only {joined} outcomes joined: too few for a rolling metric"
    window = f"rolling over the last {series.metric_window} outcomes"
    regression = task == "regression"
    common: dict[str, Any] = {"x_range": x_range, "spans": spans, "markers": markers}
    first = render_chart(
        Chart(
            title=f"Model quality ({window})",
            lines=_metric_lines(series, main),
            y_label="error" if regression else "metric value",
            y_clamp=(0.0, None) if regression else (0.0, 1.0),
            width=FULL_WIDTH,
            height=270 if series.metrics else 150,
            empty_text=empty,
            **common,
        )
    )
    if not second or not series.metrics:
        return first, None
    lines = _metric_lines(series, second)
    if regression and lines:
        zero = [(x_range[0], 0.0), (x_range[1], 0.0)]
        lines.insert(0, Line("zero", OTHER_COLOR, zero, dashed=True, width=1))
    name = second[0][1]
    return first, render_chart(
        Chart(
            title=f"Bias ({window})" if regression else f"{name.capitalize()} ({window})",
            lines=lines,
            y_label="prediction − outcome" if regression else name,
            y_clamp=(None, None) if regression else (0.0, None),
            width=HALF_WIDTH,
            height=250,
            empty_text=f"no {name}: the model gives no scores or probabilities",
            **common,
        )
    )


def score_chart(
    series: ModelSeries,
    x_range: tuple[float, float],
    markers: list[Marker],
    spans: list[Span],
    width: int = HALF_WIDTH,
) -> str:
    """The score (or predicted value, or predicted label) distribution over event time.

    The span of the drift reference (the predictions the label-free monitors
    compare the recent window with) is shaded, so a shift can be read
    against what the monitors call normal.
    """
    spans = list(spans)
    if series.first_time is not None:
        end = series.reference_end
        label = "drift reference" if end is not None else "drift reference (not full yet)"
        end = x_range[1] if end is None else end
        spans.insert(0, Span(series.first_time, end, "#475569", label, 0.10, edge=True))
    window = f"last {series.score_window} predictions"
    common: dict[str, Any] = {
        "x_range": x_range,
        "spans": spans,
        "markers": markers,
        "width": width,
        "height": 250,
    }
    name = series.score_name
    if series.shares:
        return render_chart(
            Chart(
                title=f"Predicted label shares ({window})",
                bands=_share_bands(series.shares),
                y_label="share of predictions",
                y_fixed=(0.0, 1.0),
                **common,
            )
        )
    pts = series.scores
    median = [(t, p[3]) for t, *p in pts]
    mean = [(t, p[0]) for t, *p in pts]
    if series.histograms:
        bins = len(series.histograms[0][1])
        heat = Heat(
            "share of predictions (darker: more)",
            HEAT,
            times=[t for t, _ in series.histograms],
            edges=[b / bins for b in range(bins + 1)],
            cells=[h for _, h in series.histograms],
        )
        return render_chart(
            Chart(
                title=f"{name.capitalize()} histogram ({window})",
                heats=[heat],
                lines=[
                    Line("median", ORANGE, median, width=1.6),
                    Line("mean", SLATE, mean, dashed=True, width=1.6),
                ],
                y_label=name,
                y_fixed=(0.0, 1.0),
                **common,
            )
        )
    return render_chart(
        Chart(
            title=f"{name.capitalize()} distribution ({window})",
            bands=[
                Band("p10–p90", BLUE, [(t, p[1], p[5]) for t, *p in pts], opacity=0.16),
                Band("p25–p75", BLUE, [(t, p[2], p[4]) for t, *p in pts], opacity=0.24),
            ]
            if pts
            else [],
            lines=[Line("median", BLUE, median), Line("mean", SLATE, mean, dashed=True, width=1.4)]
            if pts
            else [],
            y_label=name,
            y_clamp=(None, None) if series.task == "regression" else (0.0, 1.0),
            empty_text=f"no {name}s recorded",
            **common,
        )
    )


def _share_bands(shares: Sequence[tuple[float, Mapping[str, float]]]) -> list[Band]:
    """Stacked bands of the most common predicted labels, the rest as ``other``."""
    totals: Counter[str] = Counter()
    for _, sample in shares:
        totals.update(sample)
    top = [label for label, _ in totals.most_common() if label != "other"][: len(SHARE_COLORS)]
    bands = []
    low = [0.0] * len(shares)
    for label, color in zip(top, SHARE_COLORS, strict=False):
        share = [sample.get(label, 0.0) for _, sample in shares]
        points = [(t, lo, lo + x) for (t, _), lo, x in zip(shares, low, share, strict=True)]
        bands.append(Band(label, color, points, opacity=0.55))
        low = [lo + x for lo, x in zip(low, share, strict=True)]
    if max((1.0 - lo for lo in low), default=0.0) > 1e-9:
        points = [(t, lo, 1.0) for (t, _), lo in zip(shares, low, strict=True)]
        bands.append(Band("other", OTHER_COLOR, points, opacity=0.55))
    return bands


TAIL_KEPT = 0.995
"""Share of a version's outcomes its charts must show; the rest may be cut off."""


def time_range(
    series: ModelSeries, alert_times: Sequence[float] = ()
) -> tuple[float, float, float] | None:
    """The event times a version's charts span: ``(start, end, last event)``.

    A few outcomes straggling in long after the last prediction would squeeze
    the whole history into the left of every chart, so the charts end at the
    last prediction, the last alert, or once at least ``TAIL_KEPT`` of the
    outcomes had come, whichever is latest; unless that cuts off under a
    tenth of the range, which is not worth a note.

    Here 1000 outcomes come one a second, but the last 4 an hour late:

    >>> times = [(n, float(n)) for n in range(1, 997)] + [(1000, 4600.0)]
    >>> series = ModelSeries("m", "v", first_time=0.0, last_time=4600.0,
    ...                      last_prediction=990.0, outcomes=1000, outcome_times=times)
    >>> time_range(series)
    (0.0, 995.0, 4600.0)
    >>> time_range(series, alert_times=[1800.0])
    (0.0, 1800.0, 4600.0)
    """
    if series.first_time is None or series.last_time is None:
        return None
    start, last = series.first_time, series.last_time
    keep = [t for t in (series.last_prediction, *alert_times) if t is not None]
    need = TAIL_KEPT * series.outcomes
    keep += [t for n, t in series.outcome_times if n >= need][:1]
    end = min(max(keep, default=last), last)
    if last - end < 0.1 * (last - start):
        end = last
    return start, end, last
