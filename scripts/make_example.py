"""Write the bundled example ``examples/covid.jsonl.gz`` and print its truth.

The replay quick-start and the docs point at this file, so it must be
the same on every machine: everything below is fixed, and
``write_jsonl`` writes gzip without a timestamp. Run it again after a
change to :mod:`driftline.scenarios` and commit the result:

    .venv/bin/python scripts/make_example.py
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from driftline.scenarios import describe, generate, write_jsonl

EXAMPLE = {
    "scenario": "covid",
    "models": 4,
    "events": 6_000,
    "seed": 2020,
    "start_time": 1_583_020_800.0,  # 2020-03-01T00:00:00Z
    "rate": 2.0,
    "change_at": 3_000,
    "missing_labels": 0.02,
}
"""Four models, 6000 predictions each at 2 per second (about 50 minutes of
traffic); ``pricing`` shifts at its 3000th prediction. Outcomes follow
after the default lognormal delay (median 60 s), and 2% never come."""


def main() -> None:
    """Generate the file, then print where it is, its size and the truth."""
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=root / "examples" / "covid.jsonl.gz")
    args = parser.parse_args()

    kwargs = dict(EXAMPLE)
    scenario = kwargs.pop("scenario")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    count = write_jsonl(args.out, generate(scenario, **kwargs))
    info = describe(scenario, **kwargs)

    data = args.out.read_bytes()
    print(f"wrote {args.out} ({count} records, {len(data) / 1e6:.2f} MB)")
    print(f"sha256 {hashlib.sha256(data).hexdigest()}")
    print(f"{info.scenario}: {info.description}")
    for m in info.models:
        line = f"  {m.model_id} {m.model_version} ({m.task}, {m.stream}): "
        if m.kind == "none":
            print(line + "stable")
            continue
        print(
            line + f"{m.kind} at prediction {m.change_index} (event time {m.change_time}), "
            f"shifted input {m.feature!r}, expected alerts: {', '.join(m.alert_kinds)}"
        )


if __name__ == "__main__":
    main()
