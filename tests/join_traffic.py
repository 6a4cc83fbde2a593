"""Mixed join traffic over several partitions, and a player that records what a join emits.

Shared by the tests of the join's bounded expiry index (core, and the
worker's on-disk tail).
"""

import random

from driftline.core.events import Outcome, Prediction
from driftline.core.join import JoinBuffer, position


def traffic(seed, n=400):
    """``n`` records over 3 partitions: times mostly rising, a third out of order, retries,
    and timer moves that jump ahead (``a``)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = i + rng.choice([0, 0, 0.5, rng.randint(-60, 10) + rng.random()])
        kind = rng.choice("pppoooa")
        if kind == "a":
            t += rng.randint(0, 60)
        rid = f"r{rng.randint(max(0, i - 80), i + 5)}" if kind == "o" else f"r{i}"
        out.append((rng.randint(0, 2), kind, rid, t))
    return out


def play(j: JoinBuffer, records: list) -> tuple[list, list]:
    """Feed (partition, kind, rid, time) records, then a timer move; the events and expiry log."""
    j.expiry_log = []
    out = []
    for n, (part, kind, rid, t) in enumerate(records):
        j.partition = part
        j.position = position(n, 0, part)
        if kind == "p":
            out.extend(j.add_prediction(Prediction(rid, "m", True, float(t))))
        elif kind == "o":
            out.extend(j.add_outcome(Outcome(rid, True, float(t))))
        else:
            out.extend(j.advance(t, part))
    out.extend(j.advance(1e9))
    return out, j.expiry_log
