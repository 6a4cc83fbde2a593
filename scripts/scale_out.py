#!/usr/bin/env python3
"""Scale the worker out (a second one joins) and in (the first stops): counts must stay exact.

A deployment adds a worker to take load and removes one when it is no
longer needed; each time, model-events partitions and the monitors of their
models move between processes through the checkpoint topic. This script
shows, at full rate, that every model lives on exactly one worker once the
partitions have moved, that no prediction is lost or counted twice on the
way, and how long each move stops the counting. It starts a broker of its
own with ``scripts/kafka-local`` on ``--port`` (never the shared 9092),
creates the topics (``--partitions``, 8 by default so two workers split the
models), starts worker A (``driftline worker``, its own data directory and
port, label TTL ``--label-ttl``; ``--instance-id`` adds static membership), ``driftline bridge
webhook`` (posting to a receiver in this process) and ``driftline simulate
--scenario covid`` (8 models, 5% missing labels, batched messages). At
``--scale-out-at`` of the traffic it starts worker B, at ``--scale-in-at``
it sends worker A SIGTERM; B runs to the
end. Both workers' ``/models`` are sampled every 0.5 s. Once the simulator
is done, B caught up and a label TTL passed, it prints the moves with their
times (rebalance, counting paused, scale-in), every sample where a model was
listed on both workers, the handover of each model, per model B's counts
against what the broker acknowledged to the simulator, the alerts on the
topic against those delivered, and the rebalance events, warnings and
errors of both workers' logs. Exits 1 if anything is off, 2 if the broker
could not be started. Everything it started (processes, broker, data
directories) is stopped and removed at the end, also on Ctrl-C or failure;
with ``--workdir`` the logs (``worker-a.log``, ``worker-b.log``,
``simulate.log``, ``bridge.log``) stay there. See
:mod:`driftline.bench.scale_out` for what is checked and how it is measured.

The defaults are the full run: 1,000 predictions/s for 150 s (150,000
predictions) in messages of 20 records, B at 37.5 s, A stopped at 90 s.
With the wait for the label TTL at the end it takes about 5 minutes.

Usage::

    .venv/bin/python scripts/scale_out.py                          # the full run
    .venv/bin/python scripts/scale_out.py --rate 300 --duration 60
    .venv/bin/python scripts/scale_out.py --workdir scale-logs      # keep the logs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from driftline.bench.crash_recovery import run_with_own_broker
    from driftline.bench.scale_out import ScaleOptions, report, run_scale_out

    d = ScaleOptions()  # the defaults: the full run
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
    parser.add_argument(
        "--label-ttl", type=float, default=d.label_ttl, help=f"seconds ({d.label_ttl:g})"
    )
    parser.add_argument(
        "--partitions", type=int, default=d.partitions, help=f"per topic ({d.partitions})"
    )
    parser.add_argument(
        "--scale-out-at",
        type=float,
        default=d.scale_out_at,
        help=f"share of --duration at which worker B starts ({d.scale_out_at:g})",
    )
    parser.add_argument(
        "--scale-in-at",
        type=float,
        default=d.scale_in_at,
        help=f"share of --duration at which worker A gets SIGTERM ({d.scale_in_at:g})",
    )
    parser.add_argument(
        "--instance-id",
        action="store_true",
        help="run the workers with --instance-id (static membership; see docs/reliability.md)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="logs and truth file here")
    parser.add_argument("--keep", action="store_true", help="keep the broker's data too")
    args = parser.parse_args(argv)

    options = ScaleOptions(
        port=args.port,
        models=args.models,
        rate=args.rate,
        duration=args.duration,
        batch=args.batch,
        change_at=args.change_at,
        seed=args.seed,
        label_ttl=args.label_ttl,
        partitions=args.partitions,
        scale_out_at=args.scale_out_at,
        scale_in_at=args.scale_in_at,
        static_membership=args.instance_id,
        workdir=args.workdir,
        keep=args.keep,
    )
    try:
        options.check()
    except ValueError as exc:
        parser.error(str(exc))
    return run_with_own_broker(
        args.port, args.keep, lambda say: run_scale_out(options, say=say), report
    )


if __name__ == "__main__":
    sys.exit(main())
