#!/usr/bin/env python3
"""Hostile input against a live worker: no crash, no stall, every refusal dead-lettered.

Creates its own topics on the broker, starts ``driftline worker`` on them
(its own app id, so its own consumer group and internal topics), sends
``--pairs`` good prediction/outcome pairs with every kind of bad record of
:mod:`driftline.hostile` mixed in (``--repeat`` samples of each, across the
partitions) plus a flood of new model ids and one of new versions, waits
until every good pair is joined, and prints a tally: per kind, messages
sent, records dead-lettered (and expected) and the reason the dead letter
gives; good records sent and joined; consumer lag at the end; the worker's
memory. Exits 1 if anything is off (see
:func:`driftline.bench.hostile.run_hostile` for the checks), 2 if no
broker answers.

Usage::

    .venv/bin/python scripts/hostile_input.py                     # 20k pairs, ~1-2 minutes
    .venv/bin/python scripts/hostile_input.py --pairs 2000 --repeat 1
"""

from __future__ import annotations

import argparse
import asyncio
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="kafka://127.0.0.1:9092")
    parser.add_argument("--pairs", type=int, default=20_000, help="good pairs (default 20000)")
    parser.add_argument("--repeat", type=int, default=3, help="samples of each kind (default 3)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--max-models", type=int, default=200, help="the worker's limits.max_models (default 200)"
    )
    parser.add_argument(
        "--max-versions",
        type=int,
        default=20,
        help="the worker's limits.max_versions_per_model (default 20)",
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    from driftline.bench.hostile import report, run_hostile
    from driftline.streaming.kafka import KafkaSetupError, bootstrap_servers

    bootstrap = bootstrap_servers(args.broker)
    try:
        result = asyncio.run(
            run_hostile(
                bootstrap,
                pairs=args.pairs,
                repeat=args.repeat,
                partitions=args.partitions,
                max_models=args.max_models,
                max_versions=args.max_versions,
                timeout=args.timeout,
                echo=lambda line: print(line, file=sys.stderr, flush=True),
            )
        )
    except (KafkaSetupError, OSError) as exc:
        print(f"hostile_input: cannot reach Kafka at {bootstrap}: {exc}", file=sys.stderr)
        return 2
    print(report(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
