"""The report page: markers where alerts fired, escaping, odd models, the CLI option."""

import gzip
import json
import math
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from driftline.cli import main, summary_table
from driftline.core.config import Config
from driftline.core.replay import replay
from driftline.report import ModelSeries, Timeline, render_report, replay_report
from driftline.report.svg import Chart, Line, Marker, render_chart, utc
from driftline.summary import SUMMARY_HEAD, summary_rows

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "covid.jsonl.gz"
PINNED = "2020-01-01 00:00:00 UTC"
EVIL = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def covid():
    config = Config()
    timeline = Timeline(config)
    result = replay([EXAMPLE], config, on_event=timeline)
    page = replay_report(result, timeline, sources=["examples/covid.jsonl.gz"], generated_at=PINNED)
    return result, timeline, page


def status(model_id="m", model_version="v1", **kw):
    base = {
        "model_id": model_id,
        "model_version": model_version,
        "task": "binary",
        "predictions": 0,
        "joined": 0,
        "expired": 0,
        "late": 0,
        "duplicates": 0,
        "pending": 0,
        "metrics": {},
    }
    return base | kw


def alert(t, status="firing", severity="error", monitor="concept_drift", **kw):
    base = {
        "dedup_key": f"driftline/{kw.get('model_id', 'm')}/v1/{monitor}",
        "status": status,
        "severity": severity,
        "monitor": monitor,
        "model_id": "m",
        "model_version": "v1",
        "summary": "m v1: error rate rose",
        "value": 0.3,
        "event_time": t,
    }
    return base | kw


def test_marker_sits_at_the_alert_event_time():
    chart = Chart(
        "c",
        x_range=(1000.0, 2000.0),
        lines=[Line("acc", "#000", [(1000.0, 0.9), (2000.0, 0.5)])],
        markers=[Marker(1250.0, "▲ concept_drift", "#dc2626", tooltip="the summary")],
        width=1000,
    )
    svg = render_chart(chart)
    left, right = 58.0, 1000 - 14.0  # the plot area inside the margins
    x = left + 0.25 * (right - left)
    (marker,) = re.findall(r'<g class="marker">.*?</g>', svg)
    assert f'x1="{x:.1f}"' in marker and f'x2="{x:.1f}"' in marker
    assert "<title>the summary</title>" in marker and "▲ concept_drift" in marker


def test_every_alert_is_marked_on_every_chart_of_its_model(covid):
    result, _, page = covid
    assert len(result.alerts) == 3
    for n, a in enumerate(result.alerts, 1):
        assert f'<tr id="alert-{n}">' in page
        # Three charts for a binary model: quality, log loss, score distribution.
        assert page.count(f'<a href="#alert-{n}">') == 3
        assert f"{a['monitor']} firing ({a['severity']})" in page
    firing = [m for m in re.findall(r'<a href="#alert-\d+">(.*?)</a>', page)]
    assert all('stroke="#dc2626"' in m or 'stroke="#d97706"' in m for m in firing)


def test_resolved_alert_is_dashed_and_closes_its_span():
    alerts = [alert(1500.0), alert(1800.0, status="resolved", summary="Resolved: fine")]
    series = ModelSeries("m", "v1", "binary", 1000, 500, first_time=1000.0, last_time=2000.0)
    page = render_report([status(predictions=10)], alerts, [series])
    resolved = re.search(r'<a href="#alert-2">(.*?)</a>', page).group(1)
    assert 'stroke-dasharray="4 3"' in resolved and "✓ concept_drift" in resolved
    assert 'fill="#dc2626" fill-opacity="0.05"' in page  # the firing period is shaded


def test_user_strings_in_the_data_cannot_inject_markup(tmp_path):
    # Model ids are validated by the codec, but feature names and labels are free text,
    # and they reach the page: in drift summaries and in the legend of predicted labels.
    history = tmp_path / "evil.jsonl"
    lines = []
    for i in range(5000):
        label = "<b>cat</b>" if i % 3 else "dog"
        value = (i % 100) / 100 + (1.0 if i >= 2500 else 0.0)
        lines.append(
            json.dumps(
                {
                    "request_id": f"r{i}",
                    "model_id": "evil",
                    "task": "multiclass",
                    "prediction": label,
                    "features": {EVIL: value},
                    "timestamp": 1_600_000_000 + i,
                }
            )
        )
    history.write_text("\n".join(lines) + "\n")
    config = Config()
    timeline = Timeline(config)
    result = replay([history], config, on_event=timeline)
    assert any(EVIL in a["summary"] for a in result.alerts)  # data_drift names the feature
    page = replay_report(result, timeline, sources=[str(history)])
    assert "<script" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;cat&lt;/b&gt;" in page  # the legend of predicted-label shares


def test_model_ids_summaries_and_file_names_are_escaped():
    evil_status = status(EVIL, '"><img src=x>', predictions=3, firing_alerts=[{"monitor": EVIL}])
    evil_alert = alert(
        5.0,
        model_id=EVIL,
        model_version='"><img src=x>',
        monitor="<i>m</i>",
        summary=f"{EVIL} <b>rose</b>",
    )
    series = ModelSeries(EVIL, '"><img src=x>', "binary", 1000, 500, first_time=0.0, last_time=9.0)
    page = render_report(
        [evil_status],
        [evil_alert],
        [series],
        sources=[f"{EVIL}.jsonl"],
        totals=EVIL,
        generated_at=EVIL,
        title=EVIL,
    )
    for raw in ("<script", "<img", "<b>", "<i>"):
        assert raw not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x&gt;" in page
    assert "&lt;i&gt;m&lt;/i&gt;" in page


def test_page_is_self_contained_and_deterministic(covid):
    result, timeline, page = covid
    again = replay_report(
        result, timeline, sources=["examples/covid.jsonl.gz"], generated_at=PINNED
    )
    assert again == page
    assert page.count(PINNED) == 1
    assert "generated at" not in replay_report(result, timeline)
    # Nothing to fetch: the only URL is the SVG namespace, which is a name, not a request.
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}
    for fetching in ("<script", "<link", "<img", "src=", "url(", "@import"):
        assert fetching not in page


def test_a_thin_tail_of_late_outcomes_is_cut_off_and_said_so(covid):
    _, _, page = covid
    # pricing's last outcome comes 74 minutes after its last prediction: its charts end
    # when 99.5% of its outcomes had come (to within the recorder's sample spacing).
    sent: dict[str, float] = {}
    came = []
    with gzip.open(EXAMPLE, "rt") as fh:
        for line in map(json.loads, fh):
            if "prediction" in line:
                if line["model_id"] == "pricing":
                    sent[line["request_id"]] = line["timestamp"]
            elif line["request_id"] in sent:
                came.append(max(line["timestamp"], sent[line["request_id"]]))
    came.sort()
    k = math.ceil(0.995 * len(came)) - 1
    pricing = page[page.index("<h2>pricing") :]
    note = re.search(r"The charts end at (\d\d:\d\d:\d\d) UTC, by when at least 99.5%", pricing)
    assert note is not None
    assert utc(came[k], "%H:%M:%S") <= note.group(1) <= utc(came[k + 10], "%H:%M:%S")
    assert "until 2020-03-01 02:04:37 UTC and count in the figures above" in pricing


def test_summary_table_is_the_one_the_cli_prints(covid):
    result, _, page = covid
    text = summary_table(result.models, result.alerts).splitlines()
    assert text[0].split() == list(SUMMARY_HEAD)
    assert [line.split() for line in text[1:]] == summary_rows(result.models, result.alerts)
    for row in summary_rows(result.models, result.alerts):
        assert all(f">{cell}<" in page for cell in row)


def test_model_without_predictions_and_model_without_outcomes():
    label_free = ModelSeries(
        "scores-only",
        "v1",
        "binary",
        1000,
        500,
        first_time=0.0,
        last_time=100.0,
        scores=[(float(t), 0.5, 0.1, 0.3, 0.5, 0.7, 0.9) for t in range(0, 101, 10)],
    )
    page = render_report(
        [
            status("empty", duplicates=3),
            status("scores-only", predictions=101),
        ],
        alerts=[],
        series=[label_free],
    )
    assert "No predictions recorded for this version." in page
    assert "no outcomes joined: quality metrics need ground truth" in page
    assert "Score distribution (last 500 predictions)" in page
    assert "No alerts: every monitor stayed quiet" in page


def test_regression_and_multiclass_pages_render():
    reg = ModelSeries(
        "ltv",
        "v1",
        "regression",
        1000,
        500,
        score_name="prediction",
        first_time=0.0,
        last_time=10.0,
        metrics=[
            (float(t), {"mae": 1.0 + t, "rmse": 2.0, "mean_error": -0.1, "n": 500})
            for t in range(11)
        ],
        scores=[(float(t), 5.0, 1.0, 3.0, 5.0, 7.0, 9.0) for t in range(11)],
    )
    multi = ModelSeries(
        "kind",
        "v1",
        "multiclass",
        1000,
        500,
        score_name="predicted label",
        first_time=0.0,
        last_time=10.0,
        shares=[(float(t), {"cat": 0.5, "dog": 0.3, "other": 0.2}) for t in range(11)],
    )
    page = render_report(
        [
            status("ltv", task="regression", predictions=11, joined=11),
            status("kind", task="multiclass"),
        ],
        alerts=[],
        series=[reg, multi],
    )
    assert "Prediction distribution" in page and "Bias (rolling" in page and ">MAE<" in page
    assert "Predicted label shares" in page and ">cat<" in page and ">other<" in page


def test_cli_writes_the_report_and_the_same_alerts(tmp_path):
    runner = CliRunner()
    plain = runner.invoke(main, ["replay", str(EXAMPLE)], catch_exceptions=False)
    target = tmp_path / "out" / "report.html"
    with_report = runner.invoke(
        main, ["replay", str(EXAMPLE), "--report", str(target)], catch_exceptions=False
    )
    assert with_report.exit_code == 0
    assert with_report.stdout == plain.stdout
    assert f"report written to {target}" in with_report.stderr
    page = target.read_text()
    assert page.startswith("<!DOCTYPE html>") and "pricing" in page and "generated at" in page
