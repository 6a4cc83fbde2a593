"""The HTML report of a replay: what happened, when, to which model.

:class:`Timeline` records per-model time series while a replay runs (pass
it as ``on_event``); :func:`render_report` (pure) and :func:`write_report` turn them, the
per-model status and the alerts into one self-contained page.
Nothing here runs unless a report is asked for.
"""

from driftline.report.html import render_report, replay_report, write_report
from driftline.report.timeline import ModelSeries, Sampler, Timeline

__all__ = ["ModelSeries", "Sampler", "Timeline", "render_report", "replay_report", "write_report"]
