"""The ``driftline`` command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import click

from driftline.core.config import Config, ConfigError, load_config
from driftline.summary import SUMMARY_HEAD, summary_rows


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


def summary_table(models: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> str:
    """The per-model summary printed after a replay."""
    rows: list[Sequence[str]] = [SUMMARY_HEAD, *summary_rows(models, alerts)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(SUMMARY_HEAD))]
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
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    help="Also write a self-contained HTML report here: metrics, scores and alerts over time.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Processes to use, each monitoring a share of the models (default: one per CPU,"
    " at most 2). Each holds the whole input in memory: --jobs 1 for the least memory.",
)
def replay(
    files: tuple[str, ...],
    config_path: str | None,
    alerts_out: IO[bytes] | None,
    strict: bool,
    quiet: bool,
    report_path: str | None,
    jobs: int | None,
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

    timeline = None
    if report_path is not None:
        from driftline.report import Timeline

        timeline = Timeline(config)
    result = run_replay(
        [Path(f) for f in files],
        config,
        on_alert=on_alert,
        on_error=on_error,
        on_event=timeline,
        jobs=jobs,
    )
    out.flush()
    if not quiet:
        click.echo(summary_table(result.models, result.alerts), err=True)
        click.echo(
            f"{result.records} records, {result.error_count} malformed lines,"
            f" {result.orphan_outcomes} outcomes without a prediction,"
            f" {len(result.alerts)} alert messages",
            err=True,
        )
    if timeline is not None and report_path is not None:
        from driftline.report import write_report

        try:
            write_report(report_path, result, timeline, sources=files)
        except OSError as exc:
            raise click.ClickException(f"cannot write the report to {report_path}: {exc}") from None
        click.echo(f"driftline replay: report written to {report_path}", err=True)
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
@click.option(
    "--store",
    default="rocksdb://",
    show_default=True,
    help="Where the join table lives locally: rocksdb:// (on disk, under --data-dir) or memory://.",
)
@click.option("--data-dir", default=".driftline-data", show_default=True)
@click.option(
    "--join-memory-entries",
    type=click.IntRange(min=1),
    default=200_000,
    show_default=True,
    help="Join entries kept in memory with the RocksDB store (~2.7 KB each); older ones"
    " wait on disk and are read back when their outcome comes.",
)
@click.option(
    "--instance-id",
    envvar="DRIFTLINE_INSTANCE_ID",
    help="A stable name for this worker (e.g. its pod name): a worker restarted under the"
    " same name gets its partitions back at once instead of after the session timeout"
    " (Kafka static membership). Each worker of an app needs its own. A worker stopped"
    " for good then keeps its partitions for the session timeout too.",
)
@click.option(
    "--checkpoint-interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between monitor checkpoints: at most this much work is redone after a crash.",
)
@click.option("--loglevel", default="warning", show_default=True)
def worker(
    broker: str | None,
    config_path: str | None,
    web_port: int,
    web_host: str,
    store: str,
    data_dir: str,
    join_memory_entries: int,
    instance_id: str | None,
    checkpoint_interval: float,
    loglevel: str,
) -> None:
    """Run the streaming worker: join, monitor, alert.

    Reads predictions and outcomes, writes alerts and dead letters; serves
    /healthz and /models on --web-host:--web-port.
    """
    import faust

    from driftline.streaming.app import WorkerSettings, make_app, tune_gc
    from driftline.streaming.kafka import preflight

    config = _with_broker(_load(config_path), broker)
    from driftline.streaming.joinstore import CHANGELOG_MAX_BYTES

    if config.limits.max_message_bytes > CHANGELOG_MAX_BYTES // 4:
        raise click.ClickException(
            f"limits.max_message_bytes = {config.limits.max_message_bytes} is over"
            f" {CHANGELOG_MAX_BYTES // 4}: the join saves each input message's state and model"
            f" events in one changelog message of at most {CHANGELOG_MAX_BYTES} bytes"
        )
    counts = _run(preflight(config))
    from driftline.streaming.app import CHUNK_BYTES, changelog_topic_name
    from driftline.streaming.kafka import topic_max_message_bytes

    chunk_bytes = CHUNK_BYTES
    changelog = changelog_topic_name(config)
    limit = _run(topic_max_message_bytes(config, changelog))
    if limit is not None and limit < CHANGELOG_MAX_BYTES:
        chunk_bytes = max(64 << 10, limit // 4)
        click.echo(
            f"driftline worker: warning: topic {changelog} takes messages of at most {limit}"
            f" bytes (created by an older driftline); the join commits smaller chunks. Raise it:"
            f" kafka-configs.sh --bootstrap-server HOST:PORT --alter --entity-type topics"
            f" --entity-name {changelog} --add-config max.message.bytes={CHANGELOG_MAX_BYTES}",
            err=True,
        )
    click.echo(
        f"driftline worker: {config.topics.predictions}/{config.topics.outcomes}"
        f" ({counts[config.topics.predictions]} partitions) at {config.broker};"
        f" http://{web_host}:{web_port}/models",
        err=True,
    )
    settings = WorkerSettings(
        web_port=web_port,
        web_host=web_host,
        store=store,
        data_dir=data_dir,
        join_memory_entries=join_memory_entries,
        instance_id=instance_id or None,
        checkpoint_interval=checkpoint_interval,
        chunk_bytes=chunk_bytes,
    )
    app, _state = make_app(config, settings)
    runner = faust.Worker(app, loglevel=loglevel, quiet=True)
    # Faust's console spinner also sets the root logger to DEBUG, so every
    # debug call in Faust and aiokafka builds a record (~9% of the CPU).
    runner.spinner = None
    tune_gc()
    runner.execute_from_commandline()


@main.command()
@config_option
@click.option("--replay", "replay_mode", is_flag=True, help="Measure driftline replay (no broker).")
@click.option("--events", type=int, default=1_000_000, show_default=True, help="--replay only.")
@click.option("--runs", type=int, default=3, show_default=True, help="--replay only.")
@click.option(
    "--cache-dir",
    default=".cache/bench",
    show_default=True,
    type=click.Path(),
    help="--replay only.",
)
@broker_option
@click.option(
    "--pairs", type=int, help="Pairs pre-produced per batch size [default: 100000; --quick 20000]."
)
@click.option("--models", type=int, default=10, show_default=True)
@click.option("--features", type=int, default=20, show_default=True)
@click.option(
    "--batch-sizes",
    default="1,100",
    show_default=True,
    help="Records per Kafka message, one full measurement each (comma-separated).",
)
@click.option(
    "--latency-rate",
    type=float,
    default=1000.0,
    show_default=True,
    help="Offered pairs/s in the latency phase.",
)
@click.option(
    "--latency-seconds",
    type=float,
    help="Length of the latency phase; 0 skips it [default: 20; --quick 5].",
)
@click.option("--partitions", type=int, default=4, show_default=True)
@click.option("--quick", is_flag=True, help="Smaller run, about a minute.")
def bench(
    replay_mode: bool,
    config_path: str | None,
    events: int,
    runs: int,
    cache_dir: str,
    broker: str | None,
    pairs: int | None,
    models: int,
    features: int,
    batch_sizes: str,
    latency_rate: float,
    latency_seconds: float | None,
    partitions: int,
    quick: bool,
) -> None:
    """Print throughput figures.

    With --replay: events/s of `driftline replay` with default monitors on
    EVENTS records (half predictions, half outcomes, 10 models, 20 features).

    Without it, against a running broker (--broker / DRIFTLINE_BROKER): for
    each batch size, pre-produce PAIRS predictions and outcomes on fresh
    topics and read them with (a) raw aiokafka, (b) a bare Faust agent and
    (c) a `driftline worker` subprocess until every pair is joined; then
    offer --latency-rate pairs/s to a fresh worker and report the latency
    from outcome produced to pair processed. The topics are deleted at the end.
    """
    if replay_mode:
        from driftline.bench.replay_rate import measure, report, workload

        config = _load(config_path)
        path = workload(Path(cache_dir) / f"replay-{events}.jsonl", events)
        from driftline.core.replay import auto_jobs

        click.echo(
            f"replaying {path} ({path.stat().st_size / 1e6:.0f} MB)"
            f" in {auto_jobs()} process(es), replay's default"
        )
        click.echo(report(measure(path, config, runs)))
        return

    from driftline.bench import stream
    from driftline.streaming.kafka import KafkaSetupError, bootstrap_servers

    try:
        sizes = [int(x) for x in batch_sizes.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"not a list of integers: {batch_sizes!r}") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("give at least one batch size, each >= 1")
    if pairs is None:
        pairs = 20_000 if quick else 100_000
    if latency_seconds is None:
        latency_seconds = 5.0 if quick else 20.0
    if pairs < 1 or models < 1 or features < 0 or partitions < 1:
        raise click.UsageError("--pairs, --models and --partitions must be >= 1, --features >= 0")
    config = _with_broker(_load(config_path), broker)
    try:
        bootstrap = bootstrap_servers(config.broker)
    except KafkaSetupError as exc:
        raise click.ClickException(str(exc)) from None
    _run(stream.check_broker(bootstrap, security=config.security))

    def echo(line: str) -> None:
        click.echo(line, err=True)

    result = _run(
        stream.run_stream_bench(
            bootstrap,
            pairs=pairs,
            models=models,
            features=features,
            batch_sizes=sizes,
            partitions=partitions,
            latency_rate=latency_rate,
            latency_seconds=latency_seconds,
            config_path=config_path,
            security=config.security,
            echo=echo,
        )
    )
    click.echo(stream.report(result))


class _ScenarioChoice(click.Choice):
    """``click.Choice`` over :data:`driftline.scenarios.SCENARIOS`, read when first needed.

    The scenarios module imports river and numpy (about two seconds):
    every other command, and ``driftline --help``, must not pay for it.
    """

    def __init__(self) -> None:
        super().__init__((), case_sensitive=True)

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        from driftline.scenarios import SCENARIOS

        return tuple(SCENARIOS)

    @choices.setter
    def choices(self, value: Any) -> None:
        pass  # click.Choice.__init__ assigns; the list lives in the scenarios module


def _label_delay(ctx: click.Context, param: click.Parameter, value: str) -> tuple[Any, ...]:
    from driftline.simulate import parse_label_delay

    try:
        return parse_label_delay(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.option(
    "--scenario",
    type=_ScenarioChoice(),
    default="covid",
    show_default=True,
    help="Which truth to play (see driftline.scenarios.SCENARIOS).",
)
@click.option("--models", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=100.0,
    show_default=True,
    help="Predictions per second over all models, on the wall clock.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds to send for.",
)
@click.option(
    "--label-delay",
    default="lognormal:5:1",
    show_default=True,
    callback=_label_delay,
    help="Outcome delay in seconds: N, fixed:N, exponential:MEAN, uniform:LOW:HIGH or"
    " lognormal:MEDIAN:SIGMA.",
)
@click.option(
    "--missing-labels",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Share of predictions whose outcome never comes.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--change-at",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds after the start when the drift begins [default: half of --duration].",
)
@broker_option
@config_option
@click.option(
    "--batch",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Records per Kafka message (a JSON array when above 1).",
)
@click.option(
    "--run-id",
    help="Request-id prefix, so reruns into the same topics do not collide [default: random].",
)
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, writable=True),
    help="Write what the broker acknowledged, per model, to this JSON file at the end.",
)
def simulate(
    scenario: str,
    models: int,
    rate: float,
    duration: float,
    label_delay: tuple[Any, ...],
    missing_labels: float,
    seed: int,
    change_at: float | None,
    broker: str | None,
    config_path: str | None,
    batch: int,
    run_id: str | None,
    truth: str | None,
) -> None:
    """Send a scenario's predictions and outcomes to Kafka in real time.

    Predictions go to the predictions topic and each outcome to the
    outcomes topic once its label delay has passed, both keyed by request
    id and stamped with the wall-clock time they are sent. Prints where the
    drift is and when it starts, then progress. Ctrl-C stops cleanly.
    """
    from driftline.simulate import SimulationError
    from driftline.simulate import simulate as run_simulation

    config = _with_broker(_load(config_path), broker)
    try:
        stats = _run(
            run_simulation(
                config,
                scenario=scenario,
                models=models,
                rate=rate,
                duration=duration,
                label_delay=label_delay,
                missing_labels=missing_labels,
                seed=seed,
                change_at=change_at,
                batch=batch,
                run_id=run_id,
                truth=truth,
            )
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except SimulationError as exc:
        raise click.ClickException(str(exc)) from None
    if stats.interrupted:
        sys.exit(130 if stats.interrupted == "SIGINT" else 143)


@main.group()
def alerts() -> None:
    """Read driftline's alert topic."""


@alerts.command("tail")
@broker_option
@config_option
@click.option("--follow", "-f", is_flag=True, help="Keep reading new alerts until Ctrl-C.")
@click.option(
    "--from-beginning/--from-end",
    default=True,
    show_default=True,
    help="Start at the oldest alert, or only show alerts that arrive from now on.",
)
def alerts_tail(
    broker: str | None, config_path: str | None, follow: bool, from_beginning: bool
) -> None:
    """Print one line per alert: time (UTC), severity, status, model/version, monitor, summary.

    Without --follow, prints the alerts on the topic and exits. Messages
    that are not alerts are reported as warnings on stderr.
    """
    from driftline.alerts_tail import tail

    config = _with_broker(_load(config_path), broker)

    def on_alert(alert: dict[str, Any], line: str) -> None:
        color = {"firing": "red", "resolved": "green"}.get(alert.get("status"))  # type: ignore[arg-type]
        click.secho(line, fg=color)

    def on_unreadable(line: str) -> None:
        click.secho(line, fg="yellow", err=True)

    stats = _run(
        tail(
            config,
            follow=follow,
            from_beginning=from_beginning,
            on_alert=on_alert,
            on_unreadable=on_unreadable,
        )
    )
    if not follow:
        unreadable = f", {stats.unreadable} unreadable" if stats.unreadable else ""
        click.echo(f"{stats.alerts} alert(s){unreadable} on {config.topics.alerts!r}", err=True)


from driftline.bridges.cli import bridge  # noqa: E402  (light: heavy imports run per command)

main.add_command(bridge)

if __name__ == "__main__":
    main()
