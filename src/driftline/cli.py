"""The ``driftline`` command line."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import IO, Any

import click

from driftline.core.config import Config, ConfigError, load_config


def _load(config_path: str | None) -> Config:
    import os

    path = config_path or os.environ.get("DRIFTLINE_CONFIG")
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(package_name="driftline")
def main() -> None:
    """driftline: catch machine-learning models going bad in production."""


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def summary_table(models: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> str:
    """The per-model summary printed after a replay."""
    fired = Counter((a["model_id"], a["model_version"]) for a in alerts if a["status"] == "firing")
    head = (
        "model",
        "version",
        "task",
        "predictions",
        "joined",
        "expired",
        "late",
        "dup",
        "pending",
        "accuracy",
        "auc",
        "mae",
        "alerts",
    )
    rows = [head]
    for m in models:
        met = m["metrics"]
        rows.append(
            (
                m["model_id"],
                m["model_version"],
                m["task"] or "-",
                str(m["predictions"]),
                str(m["joined"]),
                str(m["expired"]),
                str(m["late"]),
                str(m["duplicates"]),
                str(m.get("pending", 0)),
                _fmt(met.get("accuracy")),
                _fmt(met.get("roc_auc")),
                _fmt(met.get("mae")),
                str(fired[(m["model_id"], m["model_version"])]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join(lines)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="driftline.toml")
@click.option(
    "--alerts-out", type=click.File("wb"), help="Also write the alerts here (JSON Lines)."
)
@click.option("--strict", is_flag=True, help="Exit with status 1 if any line is malformed.")
@click.option("--quiet", "-q", is_flag=True, help="No summary table on stderr.")
def replay(
    files: tuple[str, ...],
    config_path: str | None,
    alerts_out: IO[bytes] | None,
    strict: bool,
    quiet: bool,
) -> None:
    """Replay JSON Lines history through the monitors and print the alerts.

    Each FILE (plain or .gz) holds one record per line: a line with an
    "outcome" field is an outcome, one with a "prediction" field a
    prediction. Alerts go to stdout as JSON lines, exactly as on the alert
    topic; the per-model summary and malformed lines go to stderr.
    """
    from driftline.core.replay import encode_alert
    from driftline.core.replay import replay as run_replay

    config = _load(config_path)
    out = sys.stdout.buffer

    def on_alert(alert: dict[str, Any]) -> None:
        line = encode_alert(alert) + b"\n"
        out.write(line)
        if alerts_out is not None:
            alerts_out.write(line)

    def on_error(err: Any) -> None:
        click.echo(f"driftline replay: {err}", err=True)

    result = run_replay([Path(f) for f in files], config, on_alert=on_alert, on_error=on_error)
    out.flush()
    if not quiet:
        click.echo(summary_table(result.models, result.alerts), err=True)
        click.echo(
            f"{result.records} records, {result.error_count} malformed lines,"
            f" {result.orphan_outcomes} outcomes without a prediction,"
            f" {len(result.alerts)} alert messages",
            err=True,
        )
    if strict and result.error_count:
        sys.exit(1)


if __name__ == "__main__":
    main()
