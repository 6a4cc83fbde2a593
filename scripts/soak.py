#!/usr/bin/env python3
"""Soak a live worker at a fixed rate: RSS bounded, lag bounded, no errors.

Creates its own topics and app id on the broker, starts ``driftline
worker`` and ``driftline simulate`` (single-record messages, a lognormal
label delay), samples every ``--interval`` seconds the worker's RSS and
CPU, the consumer lag of the input topics, the ``/models`` counts and the
error lines in the worker's log, and prints a table and a summary. Exits 1
if RSS grew more than ``--max-growth`` after the warm-up, the lag went over
its bound or did not return to 0, or an error appeared; 2 if no broker
answers. See :mod:`driftline.bench.soak`.

The join keeps an entry up to two label TTLs, so the worker's memory only
levels off after that: the label TTL is 60 s here (``--label-ttl``), not the
default day, so a 10-minute soak reaches its steady state within the 2-minute
warm-up.

``--pending 200000 1000000`` measures something else: predictions only,
no outcome, a 7-day TTL, and the worker's RSS once each count is pending;
then a new worker restores them all from the changelog (``--no-restore``
skips that).

Usage::

    .venv/bin/python scripts/soak.py                         # 10 min at 500 predictions/s
    .venv/bin/python scripts/soak.py --minutes 2 --warmup 60
    .venv/bin/python scripts/soak.py --pending 200000 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="kafka://127.0.0.1:9092")
    parser.add_argument("--minutes", type=float, default=10.0, help="traffic time (default 10)")
    parser.add_argument("--rate", type=float, default=500.0, help="predictions/s (default 500)")
    parser.add_argument("--scenario", default="stable", help="simulate scenario (default stable)")
    parser.add_argument("--models", type=int, default=4, help="simulated models (default 4)")
    parser.add_argument("--label-ttl", default="60s", help="the worker's label TTL (default 60s)")
    parser.add_argument("--label-delay", default="lognormal:5:1", help="simulate --label-delay")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds before the baseline")
    parser.add_argument(
        "--max-growth", type=float, default=10.0, help="RSS growth after warm-up, %% (default 10)"
    )
    parser.add_argument(
        "--pending",
        type=int,
        nargs="+",
        metavar="N",
        help="instead of a soak: RSS with N predictions waiting for outcomes, for each N",
    )
    parser.add_argument(
        "--no-restore",
        action="store_true",
        help="with --pending: skip the new worker that restores them all at the end",
    )
    args = parser.parse_args(argv)

    from driftline.bench.soak import pending_report, run_pending, run_soak, soak_report
    from driftline.streaming.kafka import KafkaSetupError, bootstrap_servers

    bootstrap = bootstrap_servers(args.broker)

    def echo(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        if args.pending:
            pending = asyncio.run(
                run_pending(
                    bootstrap,
                    counts=args.pending,
                    partitions=args.partitions,
                    restart=not args.no_restore,
                    echo=echo,
                )
            )
            print(pending_report(pending))
            return 0
        result = asyncio.run(
            run_soak(
                bootstrap,
                seconds=args.minutes * 60,
                rate=args.rate,
                scenario=args.scenario,
                models=args.models,
                label_ttl=args.label_ttl,
                label_delay=args.label_delay,
                partitions=args.partitions,
                interval=args.interval,
                warmup=args.warmup,
                max_growth=args.max_growth / 100,
                echo=echo,
            )
        )
    except (KafkaSetupError, OSError) as exc:
        print(f"soak: cannot reach Kafka at {bootstrap}: {exc}", file=sys.stderr)
        return 2
    print(soak_report(result))
    return 0 if not result.problems else 1


if __name__ == "__main__":
    sys.exit(main())
