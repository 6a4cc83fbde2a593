#!/usr/bin/env python3
"""Broker restart mid-run: worker, simulator and bridge reconnect, counts stay exact.

Starts a broker of its own with ``scripts/kafka-local`` on ``--port``
(never the shared 9092), creates topics on it, starts ``driftline worker``,
``driftline bridge webhook`` (posting to a receiver in this process that
counts deliveries per dedup key) and ``driftline simulate`` (a scenario
with a drift, so alerts fire); ``--stop-at`` seconds into the traffic it
stops the broker, waits ``--down`` seconds and starts it again. Once the
simulator is done and the worker has caught up it prints, per model, the
worker's counts against what the broker acknowledged to the simulator, the
time each client took to recover, and the alerts on the topic against
those delivered. Exits 1 if a count is off, an alert was lost or something
did not reconnect; 2 if the broker could not be started. Everything it
started (processes, broker, its data directory) is stopped and removed at
the end, also on Ctrl-C or failure. See
:mod:`driftline.bench.broker_restart` for what is checked.

Usage::

    .venv/bin/python scripts/broker_restart.py                  # ~2.5 minutes
    .venv/bin/python scripts/broker_restart.py --down 30 --port 29192
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=29092, help="the broker's port (29092)")
    parser.add_argument("--scenario", default="covid")
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--rate", type=float, default=100.0, help="predictions/s in all (100)")
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of traffic (90)")
    parser.add_argument("--change-at", type=float, default=45.0, help="drift at (45 s)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--stop-at", type=float, default=20.0, help="stop the broker at (20 s)")
    parser.add_argument("--down", type=float, default=15.0, help="seconds it stays down (15)")
    parser.add_argument("--keep", action="store_true", help="keep the logs and broker data")
    args = parser.parse_args(argv)

    from driftline.bench.broker_restart import (
        BrokerError,
        LocalBroker,
        RestartOptions,
        report,
        run_broker_restart,
    )

    try:
        broker = LocalBroker(args.port)
    except ValueError as exc:
        parser.error(str(exc))
    if broker.running():
        print(
            f"something already answers on {broker.bootstrap}: this script starts and stops"
            " a broker of its own; pick a free --port",
            file=sys.stderr,
        )
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="driftline-broker-restart-"))
    options = RestartOptions(
        scenario=args.scenario,
        models=args.models,
        rate=args.rate,
        duration=args.duration,
        change_at=args.change_at,
        seed=args.seed,
        partitions=args.partitions,
        stop_at=args.stop_at,
        down=args.down,
        workdir=workdir,
    )

    # The clients' own retries say why they wait; aiokafka's line per refused connection
    # while the broker is down (from this script's lag readers) says nothing more.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    async def run() -> int:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        print(f"starting a broker on {broker.bootstrap}")
        await asyncio.to_thread(broker.start)
        result = await run_broker_restart(broker, options, say=lambda line: print(line, flush=True))
        print()
        print(report(result))
        return 1 if result.problems else 0

    try:
        return asyncio.run(run())
    except BrokerError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        try:
            broker.stop()
        except BrokerError as exc:
            print(exc, file=sys.stderr)
        if args.keep:
            print(f"kept: logs in {workdir}, broker data in {broker.data_dir}")
        else:
            broker.wipe()
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
