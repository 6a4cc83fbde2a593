"""The two ceilings ``driftline bench`` compares the worker against.

- :func:`raw_aiokafka_rate`: an aiokafka ``getmany`` loop that ``orjson``-decodes
  every value. Nothing written in Python on this machine reads the topics
  faster, so it bounds what any consumer design could reach.
- :func:`bare_faust_rate`: a Faust agent that only iterates the stream and
  decodes. It bounds what *any* Faust-based worker can reach: the gap between
  it and the raw rate is Faust's per-event machinery (event objects, per-event
  acks, offset tracking, the stream buffer), which driftline cannot remove by
  optimising its own code, only by putting more records in each message.

Both count messages *and* records (a JSON array value counts all its
elements), time the window from the first message seen to the last one
decoded (group join and rebalance are reported separately as
``startup_seconds``) and measure process CPU over that window, which stays
meaningful when other processes compete for the machine.

Faust runs in a child process (``python -m driftline.bench.baselines faust``):
a Faust app is a tree of services that owns its event loop, installs signal
handlers, reconfigures logging and redirects stdout; inside the caller's
process that would collide with the caller's own loop (often the one of
:func:`raw_aiokafka_rate` or of the driftline worker under test) and leave
global state behind. A child starts clean, can use uvloop without affecting
the parent, and is killed outright if it hangs. It reports one JSON object
through a result file, written as soon as the count is reached (so a child
stuck in shutdown still yields its rate) and again with the shutdown time;
stdout and stderr stay Faust's console.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from driftline.bench import per_second
from driftline.core.config import SecurityConfig, load_config
from driftline.streaming.kafka import aiokafka_auth

__all__ = [
    "FAUST_SETTINGS",
    "Rate",
    "bare_faust_rate",
    "bare_faust_rate_async",
    "raw_aiokafka_rate",
]

FAUST_SETTINGS: dict[str, Any] = {
    # Nothing to serve: the web server costs startup time and a port.
    "web_enabled": False,
    # The leader-election topic ("<id>-__assignor-__leader") is only needed for
    # @app.timer(on_leader=True) and similar; skipping it avoids creating a
    # topic on the broker for every run and saves a round trip at startup.
    "topic_disable_leader": True,
    # Explicit, although it is faust-streaming's default: a fresh group must
    # read the pre-produced messages.
    "consumer_auto_offset_reset": "earliest",
    # No standby replicas for the table variant: one worker, nothing to stand by.
    "table_standby_replicas": 0,
}
"""Faust settings every bench child uses (``faust_settings`` overrides them)."""

CHILD_STOP_TIMEOUT = 20.0
"""Seconds the child gives ``worker.stop()`` before it exits anyway (with status 1)."""

_SRC_DIR = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Rate:
    """How fast one reader consumed a known set of messages.

    ``seconds`` runs from the first message seen to the last one decoded;
    ``cpu_seconds`` is the reader process's CPU time over the same window.
    ``startup_seconds`` is start to first message (connect, group join,
    assignment); ``shutdown_seconds`` is last message to a stopped consumer
    (for Faust: to the end of ``worker.stop()``; process exit excluded).
    """

    name: str
    messages: int
    records: int
    seconds: float
    cpu_seconds: float
    startup_seconds: float
    shutdown_seconds: float | None = None
    errors: int = 0

    @property
    def messages_per_second(self) -> float:
        return per_second(self.messages, self.seconds)

    @property
    def records_per_second(self) -> float:
        return per_second(self.records, self.seconds)

    @property
    def messages_per_cpu_second(self) -> float:
        """Throughput per CPU-second: robust to other load on the machine."""
        return per_second(self.messages, self.cpu_seconds)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rate:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _count_records(value: bytes | None) -> int:
    """Decode ``value`` and return how many records it holds (1 unless an array).

    Raises ``orjson.JSONDecodeError`` for invalid JSON (a ``ValueError``).
    """
    decoded = orjson.loads(value) if value is not None else None
    return len(decoded) if type(decoded) is list else 1


async def raw_aiokafka_rate(
    bootstrap: str,
    topics: Sequence[str],
    expected_messages: int,
    *,
    timeout: float = 120.0,
    security: SecurityConfig | None = None,
) -> Rate:
    """Read ``expected_messages`` from ``topics`` with a bare getmany loop.

    A fresh consumer group from the earliest offset, no commits: the point is
    the cost of fetching and decoding, not of bookkeeping. A value that is
    not JSON counts as a message with no records and as an error.
    """
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=f"driftline-bench-raw-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        # Bigger fetches than the 1 MiB default: fewer round trips per message.
        max_partition_fetch_bytes=8 * 1024 * 1024,
        **aiokafka_auth(security or SecurityConfig()),
    )
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    await consumer.start()
    deadline = loop.time() + timeout
    messages = records = errors = 0
    first = first_cpu = last = last_cpu = 0.0
    try:
        while messages < expected_messages:
            if loop.time() > deadline:
                raise TimeoutError(
                    f"raw aiokafka read {messages} of {expected_messages} messages "
                    f"from {list(topics)} in {timeout:.0f} s"
                )
            batches = await consumer.getmany(timeout_ms=200)
            if not batches:
                continue
            if not messages:
                first, first_cpu = time.perf_counter(), time.process_time()
            for batch in batches.values():
                for message in batch:
                    try:
                        records += _count_records(message.value)
                    except ValueError:
                        errors += 1
                messages += len(batch)
        last, last_cpu = time.perf_counter(), time.process_time()
    finally:
        await consumer.stop()
    return Rate(
        name="raw-aiokafka",
        messages=messages,
        records=records,
        seconds=last - first,
        cpu_seconds=last_cpu - first_cpu,
        startup_seconds=first - started if first else 0.0,
        shutdown_seconds=time.perf_counter() - last,
        errors=errors,
    )


def _faust_command(
    bootstrap: str,
    topics: Sequence[str],
    expected_messages: int,
    result_path: Path,
    *,
    uvloop: bool,
    table_writes: int,
    store: str,
    faust_settings: Mapping[str, Any] | None,
    config_path: str | None = None,
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "driftline.bench.baselines",
        "faust",
        "--bootstrap",
        bootstrap,
        "--expected",
        str(expected_messages),
        "--result",
        str(result_path),
        "--table-writes",
        str(table_writes),
        "--store",
        store,
        "--settings",
        json.dumps(dict(faust_settings or {})),
    ]
    if uvloop:
        command.append("--uvloop")
    if config_path:
        # A path, never the secrets themselves: a command line is visible to every user.
        command += ["--config", config_path]
    return [*command, "--", *topics]


def _child_env() -> dict[str, str]:
    # The child must import this very driftline, installed or not.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SRC_DIR), env.get("PYTHONPATH")) if p)
    return env


def _check_faust_args(expected_messages: int, uvloop: bool, table_writes: int) -> None:
    # Fail here, not as a child that waits for its timeout or dies on an import.
    if expected_messages < 1:
        raise ValueError(f"expected_messages must be >= 1, got {expected_messages}")
    if table_writes < 0:
        raise ValueError(f"table_writes must be >= 0, got {table_writes}")
    if uvloop and importlib.util.find_spec("uvloop") is None:
        raise RuntimeError("uvloop=True but uvloop is not installed (pip install uvloop)")


def _faust_result(
    result_path: Path, returncode: int | None, stderr: bytes, timeout: float | None
) -> Rate:
    """The child's report; it is written before the worker stops, so a child
    that reached its count but hung in shutdown still yields its rate."""
    try:
        data = json.loads(result_path.read_text())
    except (OSError, ValueError):
        tail = stderr.decode(errors="replace")[-4000:]
        if timeout is not None:
            raise TimeoutError(
                f"bare Faust child did not read its messages within {timeout:.0f} s "
                f"and was killed:\n{tail}"
            ) from None
        raise RuntimeError(
            f"bare Faust child produced no result (exit code {returncode}):\n{tail}"
        ) from None
    return Rate.from_dict(data)


def bare_faust_rate(
    bootstrap: str,
    topics: Sequence[str],
    expected_messages: int,
    *,
    uvloop: bool = False,
    table_writes: int = 0,
    store: str = "memory://",
    faust_settings: Mapping[str, Any] | None = None,
    timeout: float = 120.0,
    config_path: str | None = None,
) -> Rate:
    """Read ``expected_messages`` from ``topics`` with a bare Faust agent in a child process.

    Blocks (it is a child process); from a coroutine use
    :func:`bare_faust_rate_async`. ``uvloop`` runs the child on uvloop (must
    be installed). ``table_writes > 0`` makes the agent also set that many
    keys of a changelogged table per message (stored in ``store``), to price
    the changelog: a table is co-partitioned with the source topics and its
    changelog topic is deleted afterwards. ``faust_settings`` override
    :data:`FAUST_SETTINGS`. The child is killed after ``timeout`` seconds.
    The child connects with the ``[security]`` settings it loads, as the
    worker does, from ``config_path`` and the ``DRIFTLINE_*`` environment.
    """
    _check_faust_args(expected_messages, uvloop, table_writes)
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        command = _faust_command(
            bootstrap,
            topics,
            expected_messages,
            result_path,
            uvloop=uvloop,
            table_writes=table_writes,
            store=store,
            faust_settings=faust_settings,
            config_path=config_path,
        )
        with subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=_child_env(),
        ) as proc:
            timed_out = None
            try:
                _, stderr = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, stderr = proc.communicate()
                timed_out = timeout
            return _faust_result(result_path, proc.returncode, stderr, timed_out)


async def bare_faust_rate_async(
    bootstrap: str,
    topics: Sequence[str],
    expected_messages: int,
    *,
    uvloop: bool = False,
    table_writes: int = 0,
    store: str = "memory://",
    faust_settings: Mapping[str, Any] | None = None,
    timeout: float = 120.0,
    config_path: str | None = None,
) -> Rate:
    """:func:`bare_faust_rate` without blocking the caller's event loop."""
    _check_faust_args(expected_messages, uvloop, table_writes)
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        command = _faust_command(
            bootstrap,
            topics,
            expected_messages,
            result_path,
            uvloop=uvloop,
            table_writes=table_writes,
            store=store,
            faust_settings=faust_settings,
            config_path=config_path,
        )
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=_child_env(),
        )
        timed_out = None
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            _, stderr = await proc.communicate()
            timed_out = timeout
        return _faust_result(result_path, proc.returncode, stderr, timed_out)


# --------------------------------------------------------------------------- child side


async def _partition_count(bootstrap: str, topic: str, security: SecurityConfig) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **aiokafka_auth(security))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = described[0].get("partitions") if described else None
    if not partitions:
        raise RuntimeError(f"topic {topic!r} does not exist or has no partitions")
    return len(partitions)


def _run_faust_child(args: argparse.Namespace) -> None:
    """Body of the child: one bare agent, stop itself once ``expected`` messages are in."""
    entered = time.perf_counter()
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    import faust

    from driftline.streaming.kafka import faust_credentials

    security = load_config(args.config).security
    topics: list[str] = args.topics
    expected: int = args.expected
    result_path = Path(args.result)
    app_id = f"driftline-bench-faust-{uuid.uuid4().hex[:12]}"
    # Inside the parent's temporary directory, so it goes even if the child is killed.
    datadir = tempfile.mkdtemp(prefix=f"{app_id}-", dir=result_path.parent)
    settings = {**FAUST_SETTINGS, **json.loads(args.settings)}
    if args.table_writes:
        # The store goes in the *app* setting: a per-table ``store="rocksdb://"``
        # is silently ignored (Collection._new_store does ``self._store or
        # conf.store``, and a yarl URL with only a scheme is falsy), which
        # quietly runs the table in memory.
        settings["store"] = args.store
    app = faust.App(
        app_id,
        broker=f"kafka://{args.bootstrap}",
        datadir=datadir,
        broker_credentials=faust_credentials(security),
        **settings,
    )
    source = app.topic(*topics, key_serializer="raw", value_serializer="raw")
    table = None
    if args.table_writes:
        # A fresh loop: the worker makes and owns its own later.
        loop = asyncio.new_event_loop()
        try:
            partitions = loop.run_until_complete(
                _partition_count(args.bootstrap, topics[0], security)
            )
        finally:
            loop.close()
        table = app.Table("bench", partitions=partitions, key_type=str, value_type=int)
    writes = range(args.table_writes)
    state: dict[str, Any] = {"messages": 0, "records": 0, "errors": 0}

    def write_result(final: bool) -> None:
        rate = Rate(
            name=f"bare-faust{'+uvloop' if args.uvloop else ''}"
            + (f"+{args.table_writes}w-{state['store']}" if args.table_writes else ""),
            messages=state["messages"],
            records=state["records"],
            seconds=state["last"] - state["first"],
            cpu_seconds=state["last_cpu"] - state["first_cpu"],
            startup_seconds=state["first"] - entered,
            shutdown_seconds=(time.perf_counter() - state["last"]) if final else None,
            errors=state["errors"],
        )
        tmp = result_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rate.to_dict()))
        tmp.replace(result_path)  # atomic: the parent never reads half a file

    @app.agent(source)
    async def bare(stream: Any) -> None:
        messages = records = errors = 0
        async for value in stream:
            if not messages:
                state["first"], state["first_cpu"] = time.perf_counter(), time.process_time()
                if table is not None:
                    # Name the store Faust really built (see the "store" setting above).
                    state["store"] = type(table.data).__module__.rpartition(".")[2]
            try:
                records += _count_records(value)
            except ValueError:
                errors += 1
            if table is not None:
                for i in writes:
                    table[f"k{messages % 1000}-{i}"] = messages
            messages += 1
            if messages == expected:
                state["last"], state["last_cpu"] = time.perf_counter(), time.process_time()
                state.update(messages=messages, records=records, errors=errors)
                write_result(final=False)
                # Not awaited here: stopping the worker cancels this very agent.
                state["stopping"] = asyncio.ensure_future(stop_and_exit())

    async def stop_and_exit() -> None:
        # What the worker's SIGTERM handler does (every service stopped: group
        # left, offsets committed, producer flushed), minus mode's loop teardown
        # after it, which gathers stray tasks and then sleeps a fixed second.
        code = 0
        try:
            await asyncio.wait_for(worker.stop(), CHILD_STOP_TIMEOUT)
        except Exception as exc:
            print(f"bare Faust worker did not stop cleanly: {exc!r}", file=sys.stderr)
            code = 1
        write_result(final=True)
        await cleanup_async()
        sys.stderr.flush()
        os._exit(code)

    async def cleanup_async() -> None:
        shutil.rmtree(datadir, ignore_errors=True)
        if table is not None:
            with contextlib.suppress(Exception):
                await _delete_topics(
                    args.bootstrap, [table.changelog_topic.get_topic_name()], security
                )

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    # At loglevel WARNING or above, faust.Worker attaches its console spinner
    # as a DEBUG handler and sets the *root logger to DEBUG*: every
    # logger.debug() in aiokafka and Faust then builds a LogRecord (and the
    # spinner handles it), several per message and per produce request.
    # Without a spinner the root logger stays at WARNING.
    worker.spinner = None
    try:
        # Returns only through SystemExit, and only when the agent's stop_and_exit
        # did not run (a crash, or a signal from outside): non-zero on a crash.
        worker.execute_from_commandline()
    finally:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(cleanup_async())
        finally:
            loop.close()


async def _delete_topics(bootstrap: str, names: list[str], security: SecurityConfig) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **aiokafka_auth(security))
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m driftline.bench.baselines")
    sub = parser.add_subparsers(dest="command", required=True)
    child = sub.add_parser("faust", help="run the bare Faust agent (used by bare_faust_rate)")
    child.add_argument("--bootstrap", required=True)
    child.add_argument("--expected", type=int, required=True)
    child.add_argument("--result", required=True)
    child.add_argument("--uvloop", action="store_true")
    child.add_argument("--table-writes", type=int, default=0)
    child.add_argument("--store", default="memory://")
    child.add_argument("--settings", default="{}")
    child.add_argument("--config", help="driftline.toml whose [security] the child uses")
    child.add_argument("topics", nargs="+")
    args = parser.parse_args(argv)
    _run_faust_child(args)


if __name__ == "__main__":
    main()
