#!/usr/bin/env python3
"""RSS per monitored model with the default monitors, in one process, no broker.

Creates ``--models`` monitors with one prediction and outcome each
("fresh"), then feeds the first ``--warm-models`` of them ``--per-model``
predictions and outcomes each ("warm": drift reference frozen, drift
window, rolling metrics and coverage window full). Prints RSS before and
after each phase, per model, and where one warm monitor's bytes go. See
:mod:`driftline.bench.models_rss`.

``--trace`` also runs the warm phase under ``tracemalloc`` and prints the
source lines whose allocations are still alive at the end, largest first
(slower: use few warm models).

Usage::

    .venv/bin/python scripts/models_rss.py                    # 10,000 fresh, 500 warm, ~1 min
    .venv/bin/python scripts/models_rss.py --models 1000 --warm-models 1000
    .venv/bin/python scripts/models_rss.py --models 100 --warm-models 50 --trace
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=10_000, help="fresh models (default 10000)")
    parser.add_argument(
        "--warm-models", type=int, default=500, help="of which warmed (default 500)"
    )
    parser.add_argument(
        "--per-model", type=int, default=4_000, help="pairs per warm model (default 4000)"
    )
    parser.add_argument("--features", type=int, default=10, help="features per record (10)")
    parser.add_argument("--trace", action="store_true", help="tracemalloc the warm phase")
    args = parser.parse_args(argv)

    import tracemalloc

    from driftline.bench.models_rss import components, measure_models_rss, report

    if args.trace:
        tracemalloc.start()
    result, ms = measure_models_rss(
        args.models,
        warm_models=args.warm_models,
        per_model=args.per_model,
        features=args.features,
        echo=lambda line: print(line, file=sys.stderr, flush=True),
    )
    warm = [m for m in ms.monitors.values() if m.predictions >= args.per_model]
    print(report(result, components(warm[0]) if warm else None))
    if args.trace:
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        stats = snapshot.statistics("lineno")
        total = sum(s.size for s in stats)
        print(f"tracemalloc: {total / 2**20:,.1f} MiB alive; largest source lines:")
        for s in stats[:15]:
            frame = s.traceback[0]
            where = f"{frame.filename.rsplit('/src/', 1)[-1]}:{frame.lineno}"
            print(f"  {s.size / 2**20:8.2f} MiB {s.count:>10,} blocks  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
