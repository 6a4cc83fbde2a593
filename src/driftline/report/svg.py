"""Time-series charts as inline SVG text, with no plotting library.

The report must open anywhere, offline, and be the same bytes for the same
replay; a few hundred lines of SVG text do that where a plotting library
would add a dependency and a script. A :class:`Chart` is plain data (lines,
shaded bands, heat strips, shaded spans of time, vertical markers) over
event time;
:func:`render_chart` turns it into one ``<svg>`` element. Every string that
reaches the output goes through :func:`esc`, so a model id or an alert
summary can never become markup.

Axes are readable on their own: event-time ticks at round UTC times (with
the date under the first tick and wherever the day changes), "nice" y
ticks, a legend, and marker labels stacked in lanes so that alerts close in
time do not print over each other.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

CHAR_PX = 6.2
"""Rough width of one character of the 11 px chart font, for laying out labels and legends."""

_STEPS = (
    (1, "%H:%M:%S"),
    (2, "%H:%M:%S"),
    (5, "%H:%M:%S"),
    (10, "%H:%M:%S"),
    (15, "%H:%M:%S"),
    (30, "%H:%M:%S"),
    (60, "%H:%M"),
    (120, "%H:%M"),
    (300, "%H:%M"),
    (600, "%H:%M"),
    (900, "%H:%M"),
    (1800, "%H:%M"),
    (3600, "%H:%M"),
    (7200, "%H:%M"),
    (10800, "%H:%M"),
    (21600, "%H:%M"),
    (43200, "%H:%M"),
    (86400, "%Y-%m-%d"),
    (2 * 86400, "%Y-%m-%d"),
    (7 * 86400, "%Y-%m-%d"),
    (14 * 86400, "%Y-%m-%d"),
    (28 * 86400, "%Y-%m-%d"),
    (91 * 86400, "%Y-%m-%d"),
    (364 * 86400, "%Y-%m-%d"),
)
_DAY = 86400


def esc(text: object) -> str:
    """Text made safe for HTML and SVG content and attribute values.

    >>> esc('<script>alert("x")</script>')
    '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'
    """
    return escape(str(text), quote=True)


def _num(x: float) -> str:
    """A coordinate with one decimal: short output, identical across runs."""
    return f"{x:.1f}"


def utc(t: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """An epoch time as UTC text.

    >>> utc(1583020800.5)
    '2020-03-01 00:00:00'
    """
    return time.strftime(fmt, time.gmtime(t))


def time_ticks(t0: float, t1: float, max_ticks: int = 8) -> list[tuple[float, str, str]]:
    """Round UTC times between ``t0`` and ``t1``: ``(time, label, date or "")``.

    The date is given under the first tick and where the day changes, so a
    chart spanning midnight says so.

    >>> [(label, date) for _, label, date in time_ticks(1583020800.0, 1583028277.7, 6)]
    [('00:00', '2020-03-01'), ('00:30', ''), ('01:00', ''), ('01:30', ''), ('02:00', '')]
    >>> [(label, date) for _, label, date in time_ticks(1583103000.0, 1583110000.0, 4)]
    [('23:00', '2020-03-01'), ('23:30', ''), ('00:00', '2020-03-02'), ('00:30', '')]
    """
    if not t1 > t0:
        t1 = t0 + 1.0
    max_ticks = max(max_ticks, 2)
    step, fmt = next(((s, f) for s, f in _STEPS if (t1 - t0) / s <= max_ticks), _STEPS[-1])
    out: list[tuple[float, str, str]] = []
    t = math.ceil(t0 / step) * step
    last_day = None
    while t <= t1:
        day = utc(t, "%Y-%m-%d")
        date = day if step < _DAY and day != last_day else ""
        out.append((float(t), utc(t, fmt), date))
        last_day = day
        t += step
    return out


def nice_ticks(lo: float, hi: float, max_ticks: int = 5) -> tuple[list[float], int]:
    """Round y ticks covering ``[lo, hi]``, and the decimals they need.

    >>> nice_ticks(0.62, 0.97)
    ([0.6, 0.7, 0.8, 0.9, 1.0], 1)
    >>> nice_ticks(1.8, 2.45)
    ([1.8, 2.0, 2.2, 2.4, 2.6], 1)
    """
    if not hi > lo:
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(max_ticks - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if round(step / 10**-decimals, 9) % 1:  # 2.5 x 10^k needs one more
        decimals += 1
    ticks = [round(k * step, decimals + 2) for k in range(first, last + 1)]
    return ticks, decimals


@dataclass(frozen=True)
class Line:
    """A series drawn as a line; ``None`` values leave a gap."""

    label: str
    color: str
    points: Sequence[tuple[float, float | None]]
    dashed: bool = False
    width: float = 1.8


@dataclass(frozen=True)
class Band:
    """A shaded area between a lower and an upper series: ``(t, low, high)``."""

    label: str
    color: str
    points: Sequence[tuple[float, float, float]]
    opacity: float = 0.22


@dataclass(frozen=True)
class Heat:
    """A heat strip: for each column, ending at ``times[j]``, the weight of each y bin.

    ``edges`` are the y bin edges (one more than the bins); a cell's
    opacity is the square root of its weight relative to the heaviest cell,
    so a thin tail of the distribution stays visible next to a tall mode.
    """

    label: str
    color: str
    times: Sequence[float]
    edges: Sequence[float]
    cells: Sequence[Sequence[float]]
    max_columns: int = 160


@dataclass(frozen=True)
class Span:
    """A shaded stretch of event time, e.g. while an alert was firing."""

    start: float
    end: float
    color: str
    label: str = ""
    opacity: float = 0.08
    edge: bool = False  # a dashed line where it ends, for spans that heat cells may cover


@dataclass(frozen=True)
class Marker:
    """A vertical line at one event time, labelled above the plot."""

    t: float
    label: str
    color: str
    tooltip: str = ""
    dashed: bool = False
    href: str | None = None


@dataclass(frozen=True)
class Chart:
    """One chart over event time; see :func:`render_chart`."""

    title: str
    x_range: tuple[float, float]
    lines: Sequence[Line] = ()
    bands: Sequence[Band] = ()
    heats: Sequence[Heat] = ()
    spans: Sequence[Span] = ()
    markers: Sequence[Marker] = ()
    y_label: str = ""
    y_clamp: tuple[float | None, float | None] = (None, None)
    y_fixed: tuple[float, float] | None = None
    width: int = 1100
    height: int = 260
    empty_text: str = "no data"


_LEFT, _RIGHT, _BOTTOM = 58, 14, 34
_TITLE_H, _LANE_H, _MAX_LANES = 22, 14, 3
_HEAT_LEVELS = 16


@dataclass(frozen=True)
class _Frame:
    """Where the plot sits in the SVG and how times and values map onto it."""

    left: float
    right: float
    top: float
    bottom: float
    t0: float
    t1: float
    y0: float
    y1: float

    def x(self, t: float) -> float:
        return self.left + (t - self.t0) / (self.t1 - self.t0) * (self.right - self.left)

    def y(self, v: float) -> float:
        return self.bottom - (v - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)

    def shows(self, t: float) -> bool:
        return self.t0 <= t <= self.t1


def _text_px(text: str) -> float:
    return len(text) * CHAR_PX


def _lanes(markers: Sequence[Marker], x: list[float], right: float) -> list[int | None]:
    """The label lane of each marker (or None: no room, tooltip only), left to right."""
    ends: list[float] = []
    out: list[int | None] = [None] * len(markers)
    for i in sorted(range(len(markers)), key=lambda i: (x[i], i)):
        w = _text_px(markers[i].label) + 8
        lo, hi = (x[i] - w, x[i]) if x[i] + w > right else (x[i], x[i] + w)
        for lane, end in enumerate(ends):
            if lo > end:
                ends[lane] = hi
                out[i] = lane
                break
        else:
            if len(ends) < _MAX_LANES:
                ends.append(hi)
                out[i] = len(ends) - 1
    return out


_LegendItem = tuple[str, str, str, float]  # label, colour, kind, opacity


def _legend(chart: Chart) -> list[_LegendItem]:
    items = [(h.label, h.color, "heat", 1.0) for h in chart.heats if h.label]
    items += [(b.label, b.color, "band", b.opacity) for b in chart.bands if b.label]
    return items + [
        (ln.label, ln.color, "dash" if ln.dashed else "line", 1.0) for ln in chart.lines
    ]


def _legend_width(items: list[_LegendItem]) -> float:
    return sum(22 + _text_px(item[0]) + 12 for item in items)


def _legend_svg(items: list[_LegendItem], right: float, y: float) -> str:
    x = right - _legend_width(items)
    parts = []
    for label, color, kind, opacity in items:
        if kind == "heat":  # a small ramp, light to dark
            sw = "".join(
                f'<rect x="{_num(x + 4 * i)}" y="{_num(y - 8)}" width="4" height="10"'
                f' fill="{_blend(color, (i + 1) / 4)}"/>'
                for i in range(4)
            )
        elif kind == "band":
            sw = (
                f'<rect x="{_num(x)}" y="{_num(y - 8)}" width="16" height="10" fill="{esc(color)}"'
                f' fill-opacity="{min(1.0, 1.5 * opacity):.2f}"/>'
            )
        else:
            dash = ' stroke-dasharray="4 3"' if kind == "dash" else ""
            sw = (
                f'<line x1="{_num(x)}" y1="{_num(y - 3)}" x2="{_num(x + 16)}" y2="{_num(y - 3)}"'
                f' stroke="{esc(color)}" stroke-width="2.2"{dash}/>'
            )
        parts.append(sw + f'<text x="{_num(x + 21)}" y="{_num(y)}">{esc(label)}</text>')
        x += 22 + _text_px(label) + 12
    return '<g class="legend">' + "".join(parts) + "</g>"


def _blend(color: str, amount: float) -> str:
    """``color`` (``#rrggbb``) mixed into white: 0 is white, 1 is the colour.

    >>> _blend("#1e40af", 0.5)
    '#8ea0d7'
    """
    rgb = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(255 + (c - 255) * amount):02x}" for c in rgb)


def _y_axis(chart: Chart) -> tuple[list[float], int, float, float, bool]:
    """Ticks, their decimals, the value range, and whether there is anything to draw."""
    values = [v for ln in chart.lines for t, v in ln.points if v is not None]
    values += [v for b in chart.bands for _, lo, hi in b.points for v in (lo, hi)]
    values = [v for v in values if math.isfinite(v)]
    has_data = bool(values) or any(h.times for h in chart.heats)
    if chart.y_fixed is not None:
        y0, y1 = chart.y_fixed
        ticks, decimals = nice_ticks(y0, y1)
        return [t for t in ticks if y0 - 1e-9 <= t <= y1 + 1e-9], decimals, y0, y1, has_data
    if not values:
        return [], 0, 0.0, 1.0, has_data
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.06
    lo, hi = lo - pad, hi + pad
    c_lo, c_hi = chart.y_clamp
    lo = lo if c_lo is None else max(lo, c_lo)
    hi = hi if c_hi is None else min(hi, c_hi)
    ticks, decimals = nice_ticks(lo, hi)
    y0, y1 = ticks[0], ticks[-1]
    if c_lo is not None and y0 < c_lo:
        y0, ticks = c_lo, [t for t in ticks if t >= c_lo]
    if c_hi is not None and y1 > c_hi:
        y1, ticks = c_hi, [t for t in ticks if t <= c_hi]
    return ticks, decimals, y0, y1, has_data


def _spans_svg(spans: Sequence[Span], f: _Frame) -> tuple[list[str], list[str]]:
    """The shaded spans, and their labels (drawn last, over the data)."""
    rects, labels = [], []
    for sp in spans:
        a, b = max(f.x(sp.start), f.left), min(f.x(sp.end), f.right)
        if b <= a:
            continue
        rects.append(
            f'<rect x="{_num(a)}" y="{_num(f.top)}" width="{_num(b - a)}"'
            f' height="{_num(f.bottom - f.top)}" fill="{esc(sp.color)}"'
            f' fill-opacity="{sp.opacity}"/>'
        )
        if sp.edge and b < f.right:
            rects.append(
                f'<line x1="{_num(b)}" y1="{_num(f.top)}" x2="{_num(b)}" y2="{f.bottom}"'
                f' stroke="{esc(sp.color)}" stroke-width="1.2" stroke-dasharray="2 3"/>'
            )
        if sp.label and b - a > 20:  # the label may run past a narrow span: it has a halo
            labels.append(
                f'<text class="span-label" x="{_num(a + 4)}" y="{_num(f.bottom - 5)}">'
                f"{esc(sp.label)}</text>"
            )
    return rects, labels


def _axes_svg(chart: Chart, f: _Frame, ticks: list[float], decimals: int) -> list[str]:
    out = []
    for v in ticks:
        y = f.y(v)
        out.append(
            f'<line class="grid" x1="{f.left}" y1="{_num(y)}" x2="{f.right}" y2="{_num(y)}"/>'
            f'<text class="tick" x="{f.left - 6}" y="{_num(y + 3.5)}" text-anchor="end">'
            f"{v:.{decimals}f}</text>"
        )
    for t, label, date in time_ticks(f.t0, f.t1, max(2, int((f.right - f.left) / 75))):
        x = _num(f.x(t))
        out.append(
            f'<line class="grid" x1="{x}" y1="{_num(f.top)}" x2="{x}" y2="{f.bottom}"/>'
            f'<line class="axis" x1="{x}" y1="{f.bottom}" x2="{x}" y2="{f.bottom + 4}"/>'
            f'<text class="tick" x="{x}" y="{f.bottom + 16}" text-anchor="middle">{label}</text>'
        )
        if date:
            out.append(
                f'<text class="tick date" x="{x}" y="{f.bottom + 29}" text-anchor="middle">'
                f"{date}</text>"
            )
    out.append(
        f'<text class="axis-label" x="{f.right}" y="{f.bottom + 29}" text-anchor="end">'
        "event time (UTC)</text>"
    )
    if chart.y_label:
        out.append(
            f'<text class="axis-label" transform="translate(13,{_num((f.top + f.bottom) / 2)})'
            f' rotate(-90)" text-anchor="middle">{esc(chart.y_label)}</text>'
        )
    return out


def _heat_svg(heat: Heat, f: _Frame) -> str:
    """The heat strip as one path per shade, on at most ``max_columns`` columns.

    Cells are solid colours (the weight mixed into white) and overlap their
    neighbours by a fraction of a unit, so no hairline seams show between
    them at any zoom; one path per shade keeps the SVG small.
    """
    shown = [j for j, t in enumerate(heat.times) if f.shows(t)]
    if not shown:
        return ""
    k = min(len(shown), heat.max_columns)
    n = len(shown)
    picked = sorted({shown[round(i * (n - 1) / (k - 1))] for i in range(k)}) if k > 1 else shown
    peak = max((max(heat.cells[j], default=0.0) for j in picked), default=0.0) or 1.0
    span = f.x(heat.times[picked[-1]]) - f.x(heat.times[picked[0]])
    typical = max(span / max(len(picked) - 1, 1), 1.0)
    cells: dict[int, list[str]] = {}
    prev: float | None = None
    for j in picked:
        x1 = f.x(heat.times[j])
        # A column covers the time since the one before, but never a long gap in the data.
        x0 = x1 - typical if prev is None or x1 - prev > 3 * typical else prev
        x0, prev = max(x0, f.left), x1
        if x1 <= x0:
            continue
        for b, weight in enumerate(heat.cells[j]):
            level = round(math.sqrt(max(weight, 0.0) / peak) * _HEAT_LEVELS)
            if level:
                y0, y1 = f.y(heat.edges[b + 1]), f.y(heat.edges[b])
                cells.setdefault(level, []).append(
                    f"M{_num(x0)} {_num(y0)}h{_num(x1 - x0 + 0.6)}v{_num(y1 - y0 + 0.6)}"
                    f"h{_num(-(x1 - x0 + 0.6))}z"
                )
    return "".join(
        f'<path fill="{_blend(heat.color, level / _HEAT_LEVELS)}" d="{"".join(cells[level])}"/>'
        for level in sorted(cells)
    )


def _path(points: list[tuple[float, float]]) -> str:
    return "M" + "L".join(f"{_num(x)},{_num(y)}" for x, y in points)


def _data_svg(chart: Chart, f: _Frame) -> list[str]:
    """Bands, then lines; points outside the time range are left out."""
    out = []
    for band in chart.bands:
        pts = [p for p in band.points if f.shows(p[0])]
        upper = [(f.x(t), f.y(hi)) for t, _, hi in pts]
        lower = [(f.x(t), f.y(lo)) for t, lo, _ in reversed(pts)]
        if upper:
            out.append(
                f'<path d="{_path(upper + lower)}Z" fill="{esc(band.color)}"'
                f' fill-opacity="{band.opacity}" stroke="none"/>'
            )
    for ln in chart.lines:
        segments: list[list[tuple[float, float]]] = [[]]
        for t, v in ln.points:
            if v is None or not math.isfinite(v):
                if segments[-1]:
                    segments.append([])
            elif f.shows(t):
                segments[-1].append((f.x(t), f.y(v)))
        d = "".join(_path(s) for s in segments if s)
        if d:
            dash = ' stroke-dasharray="5 3"' if ln.dashed else ""
            out.append(
                f'<path d="{d}" fill="none" stroke="{esc(ln.color)}" stroke-width="{ln.width}"'
                f' stroke-linejoin="round"{dash}/>'
            )
    return out


def _markers_svg(
    markers: Sequence[Marker], xs: list[float], lanes: list[int | None], f: _Frame, lane_top: float
) -> list[str]:
    out = []
    for m, x, lane in zip(markers, xs, lanes, strict=True):
        if not f.left - 0.5 <= x <= f.right + 0.5:
            continue
        y_from = f.top if lane is None else lane_top + lane * _LANE_H + 3
        dash = ' stroke-dasharray="4 3"' if m.dashed else ""
        g = [
            f'<g class="marker"><title>{esc(m.tooltip or m.label)}</title>',
            f'<line x1="{_num(x)}" y1="{_num(y_from)}" x2="{_num(x)}" y2="{f.bottom}"'
            f' stroke="{esc(m.color)}" stroke-width="1.6"{dash}/>',
        ]
        if lane is not None:
            flip = x + _text_px(m.label) + 8 > f.right
            anchor = ' text-anchor="end"' if flip else ""
            g.append(
                f'<text class="marker-label" x="{_num(x - 4 if flip else x + 4)}"'
                f' y="{_num(lane_top + lane * _LANE_H + 12)}" style="fill:{esc(m.color)}"{anchor}>'
                f"{esc(m.label)}</text>"
            )
        g.append("</g>")
        body = "".join(g)
        out.append(f'<a href="{esc(m.href)}">{body}</a>' if m.href else body)
    return out


def render_chart(chart: Chart) -> str:
    """The chart as one ``<svg>`` element (scales with its container's width).

    Layout, top to bottom: title and legend (the legend on a row of its own
    when it does not fit beside the title), marker labels in up to three
    lanes, the plot, the event-time axis.
    """
    w, h = chart.width, chart.height
    t0, t1 = chart.x_range
    if not t1 > t0:
        t0, t1 = t0 - 1.0, t1 + 1.0
    left, right = float(_LEFT), float(w - _RIGHT)
    xs = [left + (m.t - t0) / (t1 - t0) * (right - left) for m in chart.markers]
    lanes = _lanes(chart.markers, xs, right)
    n_lanes = max((lane + 1 for lane in lanes if lane is not None), default=0)
    legend = _legend(chart)
    title_w = _text_px(chart.title) * 1.1 + 24
    legend_row = _legend_width(legend) > (right - left) - title_w
    top = _TITLE_H + (16 if legend_row else 0) + n_lanes * _LANE_H + 6
    ticks, decimals, y0, y1, has_data = _y_axis(chart)
    f = _Frame(left, right, top, float(h - _BOTTOM), t0, t1, y0, y1 if y1 > y0 else y0 + 1.0)
    out = [
        f'<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}"'
        f' xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(chart.title)}">',
        f'<text class="title" x="{left}" y="15">{esc(chart.title)}</text>',
    ]
    if legend:
        out.append(_legend_svg(legend, right, 15 + (16 if legend_row else 0)))
    out.append(
        f'<rect class="plot" x="{left}" y="{_num(top)}" width="{_num(right - left)}"'
        f' height="{_num(f.bottom - top)}"/>'
    )
    out.extend(_axes_svg(chart, f, ticks, decimals))
    out.extend(_heat_svg(heat, f) for heat in chart.heats)  # solid cells: over the grid
    spans, span_labels = _spans_svg(chart.spans, f)
    out.extend(spans)
    if has_data:
        out.extend(_data_svg(chart, f))
    else:
        out.append(
            f'<text class="empty" x="{_num((left + right) / 2)}" y="{_num((top + f.bottom) / 2)}"'
            f' text-anchor="middle">{esc(chart.empty_text)}</text>'
        )
    out.extend(span_labels)
    out.extend(_markers_svg(chart.markers, xs, lanes, f, top - 6 - n_lanes * _LANE_H))
    out.append("</svg>")
    return "\n".join(out)
