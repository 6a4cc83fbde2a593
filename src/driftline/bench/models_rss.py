"""Memory per monitored model, in the pure core (:class:`~driftline.core.monitor.MonitorSet`).

``limits.max_models`` bounds the monitors a worker keeps; what that bound
means in bytes is what one :class:`~driftline.core.monitor.ModelMonitor`
with the default monitors holds. Two figures, because they differ by orders
of magnitude:

- **fresh**: a model that has seen one prediction and its outcome (every
  monitor object exists, every buffer nearly empty);
- **warm**: a model that has seen ``per_model`` predictions, each joined
  (default 4,000: ``reference_size`` to freeze the drift reference, then
  ``window`` more to fill the window's chunks; the rolling metrics, the
  coverage window and the concept-drift detector fill on the way).

RSS is read from ``/proc/self/status`` after a full garbage collection,
before and after each phase; the per-model figure is the difference over
the models of the phase. :func:`components` says where a warm monitor's
bytes go, attribute by attribute (a reachability walk, not RSS).

Records are synthetic and stationary: ``features`` numeric features
(uniform), a calibrated binary score, the outcome drawn from it.
"""

from __future__ import annotations

import gc
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from driftline.core.config import Config, load_config
from driftline.core.events import Joined, Outcome, Prediction, PredictionSeen
from driftline.core.monitor import ModelMonitor, MonitorSet

__all__ = ["ModelsRss", "components", "deep_size", "measure_models_rss", "report", "rss_bytes"]


def rss_bytes() -> int:
    """This process's resident set size (``VmRSS``), after a full collection."""
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


@dataclass(frozen=True, slots=True)
class ModelsRss:
    """RSS before and after each phase, and the settings that produced it."""

    models: int
    warm_models: int
    per_model: int
    features: int
    rss_start: int
    rss_fresh: int
    rss_warm: int
    fresh_seconds: float
    warm_seconds: float

    @property
    def fresh_per_model(self) -> float:
        """Bytes per model that has seen one prediction and its outcome."""
        return (self.rss_fresh - self.rss_start) / self.models

    @property
    def warm_per_model(self) -> float:
        """Bytes per model after ``per_model`` joined predictions (fresh included)."""
        if not self.warm_models:
            return float("nan")
        return self.fresh_per_model + (self.rss_warm - self.rss_fresh) / self.warm_models


class _Records:
    """Synthetic joined predictions for any model, stationary and calibrated."""

    def __init__(self, features: int, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.names = [f"f{j}" for j in range(features)]
        self.i = 0

    def pairs(self, model_id: str, n: int, t0: float) -> Iterator[tuple[Prediction, Joined]]:
        rnd = self.rng.random
        names = self.names
        for k in range(n):
            self.i += 1
            t = t0 + k
            score = rnd()
            p = Prediction(
                f"r{self.i}",
                model_id,
                int(score >= 0.5),
                t,
                "v1",
                score=score,
                features={name: rnd() for name in names},
            )
            yield p, Joined(p, Outcome(p.request_id, int(rnd() < score), t + 5.0))


def _feed(ms: MonitorSet, records: _Records, model_id: str, n: int, t0: float) -> None:
    handle = ms.handle
    for p, joined in records.pairs(model_id, n, t0):
        handle(PredictionSeen(p))
        handle(joined)


def measure_models_rss(
    models: int = 10_000,
    *,
    warm_models: int = 500,
    per_model: int = 4_000,
    features: int = 10,
    config: Config | None = None,
    echo: Callable[[str], None] | None = None,
) -> tuple[ModelsRss, MonitorSet]:
    """Create ``models`` fresh monitors, then warm the first ``warm_models`` of them.

    ``config`` defaults to the default monitors with ``limits.max_models``
    raised to ``models``. Returns the figures and the monitors (still alive,
    for :func:`components`).
    """
    if config is None:
        config = load_config(text=f"[limits]\nmax_models = {max(models, 1)}", env={})
    warm_models = min(warm_models, models)
    records = _Records(features)
    ms = MonitorSet(config)
    rss_start = rss_bytes()
    started = time.perf_counter()
    for m in range(models):
        _feed(ms, records, f"model-{m}", 1, 0.0)
    fresh_seconds = time.perf_counter() - started
    rss_fresh = rss_bytes()
    if echo:
        echo(f"fresh: {models:,} models in {fresh_seconds:.1f} s")
    started = time.perf_counter()
    for m in range(warm_models):
        _feed(ms, records, f"model-{m}", per_model - 1, 1.0)
    warm_seconds = time.perf_counter() - started
    rss_warm = rss_bytes()
    if echo and warm_models:
        echo(f"warm: {warm_models:,} models x {per_model:,} pairs in {warm_seconds:.1f} s")
    result = ModelsRss(
        models=models,
        warm_models=warm_models,
        per_model=per_model,
        features=features,
        rss_start=rss_start,
        rss_fresh=rss_fresh,
        rss_warm=rss_warm,
        fresh_seconds=fresh_seconds,
        warm_seconds=warm_seconds,
    )
    return result, ms


# --------------------------------------------------------------------------- where it goes


def deep_size(obj: object, seen: set[int]) -> int:
    """Bytes reachable from ``obj`` and not in ``seen`` (which it extends).

    ``sys.getsizeof`` per object (a numpy array's own buffer included, a
    view's base counted once), following ``gc.get_referents``; classes,
    modules and functions are shared, so they are not followed.
    """
    total = 0
    stack = [obj]
    skip = (type, type(sys), type(deep_size))
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, skip):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, np.ndarray):
            if o.base is not None:
                stack.append(o.base)
            continue
        stack.extend(gc.get_referents(o))
    return total


def components(mon: ModelMonitor) -> list[tuple[str, int]]:
    """Bytes of each part of one monitor, largest first (its shared config excluded).

    The drift trackers, the rolling metrics and the detector are broken
    down one level further, as ``feature_drift._chunks`` and so on.
    """
    seen: set[int] = {id(mon.cfg), id(mon.cfg.monitors), id(mon.policy.cfg)}
    for shared in (mon.cfg, mon.policy.cfg):
        deep_size(shared, seen)  # the config is one object per model id, not per monitor
    out: list[tuple[str, int]] = []
    split = {"feature_drift", "score_drift", "rolling", "metrics", "loss"}
    for name, value in vars(mon).items():
        if name in split and value is not None and hasattr(value, "__dict__"):
            for sub, part in vars(value).items():
                out.append((f"{name}.{sub}", deep_size(part, seen)))
            out.append((f"{name} (object)", deep_size(value, seen)))
        else:
            out.append((name, deep_size(value, seen)))
    out.sort(key=lambda item: -item[1])
    return out


def report(result: ModelsRss, parts: list[tuple[str, int]] | None = None, top: int = 12) -> str:
    """The figures, and the largest parts of one warm monitor, as the script prints them."""
    mib = 2**20
    lines = [
        f"settings: default monitors, binary task with a score, {result.features} numeric"
        f" features; limits.max_models = {result.models:,}",
        f"RSS before: {result.rss_start / mib:,.1f} MiB",
        f"fresh ({result.models:,} models, 1 prediction + outcome each):"
        f" RSS {result.rss_fresh / mib:,.1f} MiB,"
        f" {result.fresh_per_model / 1024:,.1f} KiB per model"
        f" ({result.fresh_seconds:.1f} s)",
    ]
    if result.warm_models:
        lines.append(
            f"warm ({result.warm_models:,} of them, {result.per_model:,} predictions + outcomes"
            f" each): RSS {result.rss_warm / mib:,.1f} MiB,"
            f" {result.warm_per_model / 1024:,.1f} KiB per model"
            f" ({result.warm_seconds:.1f} s)"
        )
        lines.append(
            f"so {result.models:,} warm models would take about"
            f" {result.warm_per_model * result.models / mib:,.0f} MiB"
        )
    if parts:
        total = sum(size for _, size in parts)
        lines.append(
            f"one warm monitor, by part (reachable bytes, {total / 1024:,.1f} KiB in all):"
        )
        for name, size in parts[:top]:
            lines.append(f"  {name:36} {size / 1024:9,.1f} KiB")
    return "\n".join(lines)
