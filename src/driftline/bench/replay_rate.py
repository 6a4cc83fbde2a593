"""How fast ``driftline replay`` runs: events per second with default monitors.

The workload is fixed so figures compare across commits: 10 models, 20
features each, half predictions and half outcomes, from the ``stable``
scenario (no alert fires, so every event costs the steady-state price).
The input file is generated once and cached; each run replays it from
disk, decoding included, as a user's ``driftline replay`` would.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from driftline.core.config import Config
from driftline.core.replay import replay
from driftline.scenarios import generate, write_jsonl


@dataclass(frozen=True)
class ReplayRun:
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def workload(path: Path, events: int, models: int = 10, features: int = 20) -> Path:
    """Write (once) a file of ``events`` records: half predictions, half outcomes."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    per_model = events // (2 * models)
    tmp = path.with_suffix(".partial")
    write_jsonl(
        tmp,
        generate("stable", models=models, events=per_model, n_features=features, seed=1),
    )
    tmp.rename(path)
    return path


def measure(path: Path, config: Config, runs: int = 3) -> list[ReplayRun]:
    """Replay ``path`` ``runs`` times; one figure per run."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = replay([path], config)
        seconds = time.perf_counter() - t0
        out.append(ReplayRun(result.records + result.error_count, seconds))
    return out


def report(runs: list[ReplayRun]) -> str:
    rates = [r.rate for r in runs]
    lines = [
        f"run {i + 1}: {r.events} events in {r.seconds:.2f} s = {r.rate:,.0f} events/s"
        for i, r in enumerate(runs)
    ]
    lines.append(f"median: {statistics.median(rates):,.0f} events/s over {len(runs)} runs")
    return "\n".join(lines)
