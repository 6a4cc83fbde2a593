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


def broker_option(f: Any) -> Any:
    return click.option(
        "--broker",
        envvar="DRIFTLINE_BROKER",
        help="Kafka bootstrap, e.g. kafka://127.0.0.1:9092 (env DRIFTLINE_BROKER).",
    )(f)


def config_option(f: Any) -> Any:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        envvar="DRIFTLINE_CONFIG",
        help="driftline.toml (env DRIFTLINE_CONFIG).",
    )(f)


def _with_broker(config: Config, broker: str | None) -> Config:
    import dataclasses

    return config if not broker else dataclasses.replace(config, broker=broker)


def _run(coro: Any) -> Any:
    import asyncio

    from driftline.streaming.kafka import KafkaSetupError

    try:
        return asyncio.run(coro)
    except KafkaSetupError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def topics() -> None:
    """Manage driftline's Kafka topics."""


@topics.command("create")
@broker_option
@config_option
@click.option("--partitions", type=int, help="Partitions per topic (default from config: 4).")
@click.option("--replication-factor", type=int, default=1, show_default=True)
def topics_create(
    broker: str | None, config_path: str | None, partitions: int | None, replication_factor: int
) -> None:
    """Create the input, internal, alert and dead-letter topics (co-partitioned)."""
    import dataclasses

    from driftline.streaming.kafka import create_topics

    config = _with_broker(_load(config_path), broker)
    if partitions:
        config = dataclasses.replace(
            config, topics=dataclasses.replace(config.topics, partitions=partitions)
        )
    for name, what in _run(create_topics(config, replication_factor)).items():
        click.echo(f"{name}: {what}")


@main.command()
@broker_option
@config_option
@click.option("--web-port", type=int, default=6066, show_default=True, envvar="DRIFTLINE_WEB_PORT")
@click.option("--web-host", default="127.0.0.1", show_default=True, envvar="DRIFTLINE_WEB_HOST")
@click.option("--store", default="memory://", show_default=True, help="Faust table store URL.")
@click.option("--data-dir", default=".driftline-data", show_default=True)
@click.option("--loglevel", default="warning", show_default=True)
def worker(
    broker: str | None,
    config_path: str | None,
    web_port: int,
    web_host: str,
    store: str,
    data_dir: str,
    loglevel: str,
) -> None:
    """Run the streaming worker: join, monitor, alert.

    Reads predictions and outcomes, writes alerts and dead letters; serves
    /healthz and /models on --web-host:--web-port.
    """
    import faust

    from driftline.streaming.app import WorkerSettings, make_app
    from driftline.streaming.kafka import preflight

    config = _with_broker(_load(config_path), broker)
    counts = _run(preflight(config))
    click.echo(
        f"driftline worker: {config.topics.predictions}/{config.topics.outcomes}"
        f" ({counts[config.topics.predictions]} partitions) at {config.broker};"
        f" http://{web_host}:{web_port}/models",
        err=True,
    )
    settings = WorkerSettings(web_port=web_port, web_host=web_host, store=store, data_dir=data_dir)
    app, _state = make_app(config, settings)
    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


@main.command()
@config_option
@click.option("--replay", "replay_mode", is_flag=True, help="Measure driftline replay (no broker).")
@click.option("--events", type=int, default=1_000_000, show_default=True)
@click.option("--runs", type=int, default=3, show_default=True)
@click.option("--cache-dir", default=".cache/bench", show_default=True, type=click.Path())
def bench(
    replay_mode: bool, config_path: str | None, events: int, runs: int, cache_dir: str
) -> None:
    """Print throughput figures.

    With --replay: events/s of `driftline replay` with default monitors on
    EVENTS records (half predictions, half outcomes, 10 models, 20 features).
    """
    if not replay_mode:
        raise click.UsageError("choose a mode: --replay")
    from driftline.bench.replay_rate import measure, report, workload

    config = _load(config_path)
    path = workload(Path(cache_dir) / f"replay-{events}.jsonl", events)
    click.echo(f"replaying {path} ({path.stat().st_size / 1e6:.0f} MB)")
    click.echo(report(measure(path, config, runs)))


if __name__ == "__main__":
    main()
