#!/usr/bin/env python3
"""kill -9 the worker mid-run and restart it on the same data: counts must stay exact.

A worker killed outright (SIGKILL, the OOM killer, a lost node) runs none of
its shutdown code: this script shows whether every prediction is still
counted exactly once when it comes back. It starts a broker of its own with
``scripts/kafka-local`` on ``--port`` (never the shared 9092), creates the
topics, starts ``driftline worker`` (RocksDB store in a data directory kept
across restarts, label TTL ``--label-ttl``), ``driftline bridge webhook``
(posting to a receiver in this process) and ``driftline simulate
--scenario covid`` (5% missing labels, batched messages). While the
simulator runs it kills the worker ``--kills`` times with SIGKILL at
seeded random moments and restarts it 1-3 s later with the same command
line. Once the simulator is done, the worker caught up and a label TTL
passed (every missing label expired), it prints the kills with their
recovery times, per model the worker's counts against what the broker
acknowledged to the simulator, and the alerts on the topic against those
delivered. Exits 1 if anything is off, 2 if the broker could not be
started. Everything it started (processes, broker, data directories) is
stopped and removed at the end, also on Ctrl-C or failure. See
:mod:`driftline.bench.crash_recovery` for what is checked and how the
recovery is measured.

The defaults are the full run: 2,000 predictions/s for 110 s (220,000
predictions, 209,000 of them with an outcome) in messages of 20 records,
and 3 kills. The worker runs with ``--instance-id`` (static membership),
so a restarted worker gets its partitions back at once; a kill waits until
the previous restart has caught up. With the wait for the label TTL at the
end it takes about 3 minutes.

Usage::

    .venv/bin/python scripts/crash_recovery.py                       # the full run
    .venv/bin/python scripts/crash_recovery.py --rate 300 --duration 60 --kills 1
    .venv/bin/python scripts/crash_recovery.py --kills 0              # the control
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from driftline.bench.crash_recovery import (
        CrashOptions,
        report,
        run_crash_recovery,
        run_with_own_broker,
    )

    d = CrashOptions()  # the defaults: the full run
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=d.port, help=f"the broker port ({d.port})")
    parser.add_argument("--models", type=int, default=d.models)
    parser.add_argument("--rate", type=float, default=d.rate, help=f"predictions/s ({d.rate:g})")
    parser.add_argument(
        "--duration", type=float, default=d.duration, help=f"seconds of traffic ({d.duration:g})"
    )
    parser.add_argument("--batch", type=int, default=d.batch, help=f"records/message ({d.batch})")
    parser.add_argument("--change-at", type=float, default=None, help="drift at (duration/2)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--kills", type=int, default=d.kills, help=f"how many kill -9 ({d.kills})")
    parser.add_argument("--kill-seed", type=int, default=None, help="seed of the kill moments")
    parser.add_argument(
        "--kill-window",
        type=float,
        nargs=2,
        default=d.kill_window,
        metavar=("FROM", "TO"),
        help="shares of --duration the kill moments are spread over"
        f" ({d.kill_window[0]:g} {d.kill_window[1]:g})",
    )
    parser.add_argument(
        "--label-ttl", type=float, default=d.label_ttl, help=f"seconds ({d.label_ttl:g})"
    )
    parser.add_argument("--partitions", type=int, default=d.partitions)
    parser.add_argument(
        "--no-instance-id",
        action="store_true",
        help="run the worker without --instance-id: each restart waits out the session timeout",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="logs and truth file here")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data directories")
    args = parser.parse_args(argv)

    options = CrashOptions(
        port=args.port,
        models=args.models,
        rate=args.rate,
        duration=args.duration,
        batch=args.batch,
        change_at=args.change_at,
        seed=args.seed,
        kills=args.kills,
        kill_seed=args.kill_seed,
        kill_window=(args.kill_window[0], args.kill_window[1]),
        label_ttl=args.label_ttl,
        partitions=args.partitions,
        static_membership=not args.no_instance_id,
        workdir=args.workdir,
        keep=args.keep,
    )
    try:
        options.check()
    except ValueError as exc:
        parser.error(str(exc))
    return run_with_own_broker(
        args.port, args.keep, lambda say: run_crash_recovery(options, say=say), report
    )


if __name__ == "__main__":
    sys.exit(main())
