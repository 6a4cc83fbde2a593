"""The replay report: one self-contained HTML page.

``driftline replay --report report.html`` writes it. A backtest is only as
useful as what one can see in it, and a table of final numbers hides when
and how a model went bad; the page puts the rolling metrics and the score
distribution of each model version on an event-time axis, with every alert
drawn where it fired and where it resolved.

The page fetches nothing (inline CSS, inline SVG, no script), so it can be
mailed, attached to a ticket or opened offline years later, and it is a
pure function of its inputs: the same replay gives the same bytes, except
for the optional "generated at" line the caller passes in.

>>> page = render_report(
...     [{"model_id": "<b>m</b>", "model_version": "v1", "task": None, "predictions": 0,
...       "joined": 0, "expired": 0, "late": 0, "duplicates": 0, "metrics": {}}],
...     alerts=[],
... )
>>> "<b>m</b>" in page, "&lt;b&gt;m&lt;/b&gt;" in page
(False, True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from driftline.core.replay import ReplayResult
from driftline.report.charts import (
    FULL_WIDTH,
    SEVERITY_COLORS,
    TAIL_KEPT,
    alert_marks,
    glyph,
    quality_charts,
    score_chart,
    severity_color,
    time_range,
)
from driftline.report.svg import esc, utc
from driftline.report.timeline import ModelSeries, Timeline
from driftline.summary import SUMMARY_HEAD, fmt, summary_rows

Alert = Mapping[str, Any]


def _model_section(
    idx: int,
    status: Mapping[str, Any],
    series: ModelSeries,
    numbered: Sequence[tuple[int, Alert]],
) -> str:
    mid, ver = str(status["model_id"]), str(status["model_version"])
    fired = sum(1 for _, a in numbered if a["status"] == "firing")
    firing_now = [str(a.get("monitor")) for a in status.get("firing_alerts") or []]
    if firing_now:
        badge = f'<span class="badge bad">firing at the end: {esc(", ".join(firing_now))}</span>'
    elif fired:
        badge = f'<span class="badge warn">{fired} alert{"s" if fired > 1 else ""}, resolved</span>'
    else:
        badge = '<span class="badge ok">no alerts</span>'
    task = series.task or status.get("task") or "unknown task"
    head = (
        f'<section class="model" id="model-{idx}">'
        f'<h2>{esc(mid)} <span class="ver">{esc(ver)}</span>'
        f' <span class="task">{esc(task)}</span> {badge}</h2>'
    )
    facts = _facts(status)
    found = time_range(series, [float(a["event_time"]) for _, a in numbered])
    if found is None:
        return (
            head
            + facts
            + '<p class="empty">No predictions recorded for this version.</p></section>'
        )
    x_range = found[:2]
    if found[1] < found[2]:
        facts += (
            f'<p class="note">The charts end at {utc(found[1], "%H:%M:%S")} UTC, by when at'
            f" least {100 * TAIL_KEPT:g}% of the outcomes had come; the rest straggled in"
            f" until {utc(found[2])} UTC and count in the figures above.</p>"
        )
    markers, spans = alert_marks(numbered, x_range[1])
    quality, second = quality_charts(series, status, x_range, markers, spans)
    body = f'<div class="fig">{quality}</div>'
    if second is None:  # the score chart alone, as wide as the quality chart
        body += f'<div class="fig">{score_chart(series, x_range, markers, spans, FULL_WIDTH)}</div>'
    else:
        score = score_chart(series, x_range, markers, spans)
        body += (
            f'<div class="row"><div class="fig">{score}</div><div class="fig">{second}</div></div>'
        )
    return head + facts + body + "</section>"


def _facts(status: Mapping[str, Any]) -> str:
    """One line of key figures under a model's heading."""
    preds, joined = int(status.get("predictions", 0)), int(status.get("joined", 0))
    parts = [f"<strong>{preds}</strong> predictions", f"<strong>{joined}</strong> joined"]
    if preds:
        parts[-1] += f" ({100 * joined / preds:.1f}%)"
    for key, label in (
        ("expired", "expired"),
        ("late", "late"),
        ("duplicates", "duplicates"),
        ("pending", "pending"),
    ):
        parts.append(f"<strong>{int(status.get(key, 0) or 0)}</strong> {label}")
    delay = status.get("mean_outcome_delay")
    if delay is not None:
        parts.append(f"mean outcome delay <strong>{float(delay):.1f} s</strong>")
    first, last = status.get("first_event_time"), status.get("last_event_time")
    if first is not None and last is not None:
        same_day = utc(first, "%Y%m%d") == utc(last, "%Y%m%d")
        end = utc(last, "%H:%M:%S") if same_day else utc(last)
        parts.append(f"events {utc(first)} – {end} UTC")
    return '<p class="facts">' + " · ".join(parts) + "</p>"


def _summary_table(models: Sequence[Mapping[str, Any]], alerts: Sequence[Alert]) -> str:
    rows = summary_rows(models, alerts)
    head = "".join(
        f'<th class="{"l" if i < 3 else "r"}">{esc(h)}</th>' for i, h in enumerate(SUMMARY_HEAD)
    )
    body = []
    for idx, row in enumerate(rows, 1):
        cells = []
        for i, c in enumerate(row):
            text = esc(c)
            if i == 0:
                text = f'<a href="#model-{idx}">{text}</a>'
            if i == len(row) - 1 and c != "0":
                text = f'<span class="count-bad">{text}</span>'
            cells.append(f'<td class="{"l" if i < 3 else "r"}">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<table class="summary"><thead><tr>'
        + head
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table>"
    )


def _alerts_table(numbered: Sequence[tuple[int, Alert]]) -> str:
    if not numbered:
        return '<p class="empty">No alerts: every monitor stayed quiet over this history.</p>'
    rows = []
    for n, a in numbered:
        sev = str(a["severity"])
        status = str(a["status"])
        value = a.get("value")
        rows.append(
            f'<tr id="alert-{n}"><td class="r">{n}</td>'
            f'<td class="nowrap">{utc(float(a["event_time"]))}</td>'
            f'<td class="nowrap">{esc(a["model_id"])} <span class="ver">'
            f"{esc(a['model_version'])}</span></td>"
            f"<td>{esc(a['monitor'])}</td>"
            f'<td><span class="sev" style="background:{severity_color(sev)}">{esc(sev)}</span></td>'
            f'<td class="nowrap st-{"firing" if status == "firing" else "resolved"}">'
            f"{glyph(status)} {esc(status)}</td>"
            f'<td class="r">{fmt(value, 4) if isinstance(value, float) else esc(fmt(value))}</td>'
            f"<td>{esc(a['summary'])}</td></tr>"
        )
    return (
        '<table class="alerts"><thead><tr><th class="r">#</th><th>event time (UTC)</th>'
        "<th>model</th><th>monitor</th><th>severity</th><th>status</th>"
        '<th class="r">value</th><th>summary</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )


_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f1f5f9;color:#0f172a;
 font:14px/1.45 system-ui,-apple-system,"Segoe UI","DejaVu Sans",sans-serif}
main{max-width:1160px;margin:0 auto;padding:24px 20px 48px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:0 0 6px}
.sub{color:#475569;margin:0}
.card,.model{background:#fff;border:1px solid #e2e8f0;border-radius:10px;padding:16px 18px;
 margin:16px 0;box-shadow:0 1px 2px rgba(15,23,42,.05)}
.card h2{margin-bottom:10px}
table{border-collapse:collapse;width:100%;font-size:13px}
th{font-weight:600;color:#475569;text-align:left;border-bottom:2px solid #e2e8f0;padding:6px 8px}
td{border-bottom:1px solid #f1f5f9;padding:6px 8px;vertical-align:top}
.summary td,.summary th{font-variant-numeric:tabular-nums}
.r{text-align:right}.l{text-align:left}.nowrap{white-space:nowrap}
a{color:#1d4ed8;text-decoration:none}a:hover{text-decoration:underline}
.ver{color:#64748b;font-weight:400}
.task{font-size:12px;font-weight:500;color:#334155;background:#e2e8f0;border-radius:4px;
 padding:1px 6px;vertical-align:middle}
.badge{font-size:12px;font-weight:600;border-radius:10px;padding:2px 9px;vertical-align:middle}
.badge.ok{background:#dcfce7;color:#166534}.badge.warn{background:#fef3c7;color:#92400e}
.badge.bad{background:#fee2e2;color:#991b1b}
.count-bad{color:#b91c1c;font-weight:700}
.sev{color:#fff;border-radius:4px;padding:1px 6px;font-size:12px;font-weight:600}
.st-firing{color:#b91c1c;font-weight:600}.st-resolved{color:#15803d;font-weight:600}
.facts{color:#334155;margin:0 0 10px;font-size:13px}
.note{color:#64748b;margin:-6px 0 10px;font-size:12px}
.empty{color:#64748b;font-style:italic}
.fig{margin:6px 0}
.row{display:flex;gap:20px;flex-wrap:wrap}.row .fig{flex:1 1 500px;min-width:0}
.key{font-size:12px;color:#475569;margin:8px 0 0}
.key i{display:inline-block;width:18px;border-top:2px solid;vertical-align:middle;
 margin:0 4px 0 10px}
svg.chart{width:100%;height:auto;display:block}
svg.chart text{font:11px system-ui,"DejaVu Sans",sans-serif;fill:#334155}
svg.chart text.title{font-size:13px;font-weight:600;fill:#0f172a}
svg.chart text.tick{fill:#475569}svg.chart text.date{fill:#64748b;font-size:10px}
svg.chart text.axis-label{fill:#64748b}
svg.chart text.empty{font-size:13px;fill:#94a3b8;font-style:italic}
svg.chart text.marker-label{font-weight:600;paint-order:stroke;stroke:#fff;stroke-width:3px}
svg.chart text.span-label{font-size:10px;fill:#334155;paint-order:stroke;stroke:#fff;
 stroke-width:3px;stroke-linejoin:round}
svg.chart .plot{fill:none;stroke:#cbd5e1}
svg.chart .grid{stroke:#eef2f6}svg.chart .axis{stroke:#94a3b8}
footer{color:#64748b;font-size:12px;margin-top:24px}
"""


def _marker_key() -> str:
    sev = "".join(f'<i style="border-color:{c}"></i>{esc(s)}' for s, c in SEVERITY_COLORS.items())
    return (
        '<p class="key">Alerts on the charts: ▲ solid line = firing, ✓ dashed = resolved,'
        " shaded while firing; colour = severity:" + sev + ". Grey shade on the score chart:"
        " the predictions the drift monitors compare against. Hover a line for the summary;"
        " click it for its row in the alert list.</p>"
    )


def render_report(
    models: Sequence[Mapping[str, Any]],
    alerts: Sequence[Alert],
    series: Iterable[ModelSeries] = (),
    *,
    sources: Sequence[str] = (),
    totals: str = "",
    generated_at: str | None = None,
    title: str = "driftline replay report",
) -> str:
    """The whole page.

    Parameters
    ----------
    models
        Per-model status, as ``ReplayResult.models`` (``Pipeline.status()``).
    alerts
        Every alert message, in the order they were emitted; they are
        numbered from 1 in that order on the charts and in the list.
    series
        What the :class:`~driftline.report.timeline.Timeline` recorded.
    sources
        The input files, named in the header.
    totals
        One line of run totals (records, malformed lines, ...).
    generated_at
        Shown in the footer when given; the only part of the page that is
        not a function of the replay.
    """
    by_key = {(s.model_id, s.model_version): s for s in series}
    numbered = list(enumerate(alerts, 1))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{esc(title)}</h1>",
    ]
    if sources:
        parts.append(
            '<p class="sub">Input: ' + ", ".join(f"<code>{esc(s)}</code>" for s in sources) + "</p>"
        )
    if totals:
        parts.append(f'<p class="sub">{esc(totals)}</p>')
    parts.append('<div class="card"><h2>Models</h2>' + _summary_table(models, alerts) + "</div>")
    parts.append(
        f'<div class="card"><h2>Alerts ({len(numbered)})</h2>'
        + _alerts_table(numbered)
        + _marker_key()
        + "</div>"
    )
    for idx, st in enumerate(models, 1):
        key = (st["model_id"], st["model_version"])
        s = by_key.get(key) or ModelSeries(str(key[0]), str(key[1]), task=st.get("task"))
        mine = [(n, a) for n, a in numbered if (a["model_id"], a["model_version"]) == key]
        parts.append(_model_section(idx, st, s, mine))
    footer = "driftline replay report"
    if generated_at:
        footer += f" · generated at {esc(generated_at)}"
    parts.append(f"<footer>{footer}</footer></main></body></html>")
    return "\n".join(parts) + "\n"


def replay_report(
    result: ReplayResult,
    timeline: Timeline,
    *,
    sources: Sequence[str] = (),
    generated_at: str | None = None,
) -> str:
    """The page for a finished replay (a ``ReplayResult``) and its timeline."""
    totals = (
        f"{result.records} records, {result.error_count} malformed lines,"
        f" {result.orphan_outcomes} outcomes without a prediction,"
        f" {len(result.alerts)} alert messages"
    )
    return render_report(
        result.models,
        result.alerts,
        timeline.snapshot(),
        sources=sources,
        totals=totals,
        generated_at=generated_at,
    )


def write_report(
    path: str | Path,
    result: ReplayResult,
    timeline: Timeline,
    *,
    sources: Sequence[str] = (),
    generated_at: str | None = None,
) -> Path:
    """Write the page to ``path`` (creating its directory); return the path.

    ``generated_at`` defaults to the current UTC time: the one line that
    tells two reports of the same history apart.
    """
    if generated_at is None:
        generated_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    page = replay_report(result, timeline, sources=sources, generated_at=generated_at)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
