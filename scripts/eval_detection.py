#!/usr/bin/env python3
"""Detection quality of driftline's monitors, measured on drift put there on purpose.

Each case is a frozen model (trained once on one concept of a river
synthetic stream, then never updated) scored on a stream whose concept
changes at a known prediction index. Its predictions and outcomes go
through the real core (:class:`driftline.core.pipeline.Pipeline`, default
configuration except the concept-drift detector) and the alerts that come
out are compared with the truth from :mod:`driftline.scenarios`. Printed
per detector and scenario:

* delay: outcomes after the true change at which the ``concept_drift``
  alert fires, median and p90 over seeds; a run with no firing within
  ``window`` outcomes of the change is *missed*;
* false alarms per 100k outcomes: firings on ``stable`` streams, and
  before the change on drifting ones;
* false pages on ``improving`` (a model getting better must never page);
* label-free monitors (prediction and data drift) on ``score_shift`` and
  ``feature_break``, and their false alarms on ``stable``;
* the regression model's MAE drift (``regression_mae``).

Every outcome comes a fixed 60 s (``--label-delay``) after its prediction,
so the join emits outcomes in prediction order and "the n-th joined
outcome" is prediction n: delays count outcome events, whatever the label
delay (which adds its own wall-clock lag on top). At 10 predictions a
second the first outcome arrives after 600 predictions, past the alert
warm-up, as it would with real, late labels. STAGGER is not one of
:mod:`driftline.scenarios`' families, so its case is built here (a frozen
one-hot logistic regression on river's STAGGER, 5% label noise) and fed
through the same core as wire-format records.

Usage::

    .venv/bin/python scripts/eval_detection.py            # full run, a few minutes
    .venv/bin/python scripts/eval_detection.py --quick    # about a minute
    .venv/bin/python scripts/eval_detection.py --markdown docs/detection.md
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from river import linear_model, preprocessing
from river.datasets import synth

from driftline import scenarios
from driftline.core.codec import decode_line
from driftline.core.config import DETECTORS, ConceptDriftConfig, Config, LimitsConfig, load_config
from driftline.core.detectors import BINARY_ONLY
from driftline.core.events import Outcome, Prediction
from driftline.core.pipeline import Pipeline

STREAMS = ("agrawal", "hyperplane", "sea", "stagger")
"""Binary stream families; ``stagger`` is built here, the others by scenarios."""
DRIFTS = ("abrupt", "gradual", "recurring")
LABEL_FREE = ("score_shift", "feature_break")
LABEL_FREE_MONITORS = ("prediction_drift", "data_drift")
DEFAULT_DETECTOR = ConceptDriftConfig().detector

RATE = 10.0  # predictions per second
LABEL_DELAY = 60.0  # seconds (scenarios' median); fixed, so outcomes keep prediction order
START_TIME = 1_700_000_000.0
STAGGER_CONCEPTS = (0, 1)  # "small and red" -> "green or circular"
STAGGER_NOISE = 0.05  # share of flipped labels, as SEA's and Hyperplane's noise
STAGGER_TRAIN = 5_000

FULL = {"seeds": 5, "events": 8_000, "stable_events": 15_000}
QUICK = {"seeds": 2, "events": 6_000, "stable_events": 4_000}
BEGIN, END = "<!-- eval_detection:begin -->", "<!-- eval_detection:end -->"

Seen = tuple[str, str, int]
"""One alert: (kind, status, prediction index of the record that caused it)."""


# --------------------------------------------------------------------------
# cases and their truth


@dataclass(frozen=True, slots=True)
class Case:
    """One model on one stream with one seed; the change sits halfway."""

    scenario: str
    stream: str
    seed: int
    events: int
    label_delay: float = LABEL_DELAY

    @property
    def stream_seed(self) -> int:
        """The seed the traffic is drawn with.

        ``recurring`` with the seed of ``abrupt`` would repeat it event for
        event up to the return; its own seeds make its rows independent.
        """
        return self.seed + (1_000 if self.scenario == "recurring" else 0)

    @property
    def change(self) -> int | None:
        """Prediction index of the change (the centre of a gradual one)."""
        return None if self.scenario == "stable" else self.events // 2

    @property
    def width(self) -> int:
        return max(self.events // 10, 1) if self.scenario == "gradual" else 1

    @property
    def end(self) -> int | None:
        """Where a recurring concept returns (as :func:`scenarios.describe` puts it)."""
        if self.scenario != "recurring":
            return None
        half = self.events // 2
        return half + (self.events - half) // 2

    @property
    def window(self) -> int:
        """Events after the change within which a detection must come."""
        return (self.events - self.events // 2) // 2

    @property
    def onset(self) -> int:
        """Firings before this index are false alarms (all of them when nothing degrades)."""
        if self.change is None or self.scenario == "improving":
            return self.events
        if self.scenario == "gradual":
            return self.change - self.width  # the sigmoid is at 2% there
        return self.change


@dataclass(frozen=True, slots=True)
class Run:
    """The alerts of one case through the core with one detector."""

    case: Case
    detector: str
    alerts: tuple[Seen, ...]
    detections: int = 0
    """Raw detector firings, confirmed or not (the monitor's status)."""

    def firings(self, kind: str) -> list[int]:
        return [i for k, s, i in self.alerts if k == kind and s == "firing"]

    def delay(self, kind: str = "concept_drift") -> int | None:
        """Events from the change to the first firing that counts, or None if missed."""
        c = self.case
        if c.change is None:
            return None
        for i in self.firings(kind):
            if c.onset <= i < c.change + c.window:
                return i - c.change
        return None

    def false_alarms(self, kind: str = "concept_drift") -> int:
        return sum(1 for i in self.firings(kind) if i < self.case.onset)

    def resolved_after(self, kind: str = "concept_drift") -> int | None:
        """Events from the old concept's return to the alert's resolve (recurring)."""
        end = self.case.end
        if end is None or self.delay(kind) is None:
            return None
        done = [i for k, s, i in self.alerts if k == kind and s == "resolved" and i >= end]
        return done[0] - end if done else None


# --------------------------------------------------------------------------
# traffic


def case_records(case: Case) -> list[dict[str, Any]]:
    """The case's predictions and outcomes as wire-format dicts, in event-time order."""
    if case.stream == "stagger":
        return stagger_records(case)
    kwargs: dict[str, Any] = {
        "models": 1,
        "events": case.events,
        "seed": case.stream_seed,
        "rate": RATE,
        "start_time": START_TIME,
        "label_delay": case.label_delay,
    }
    if case.change is not None:
        kwargs["change_at"] = case.change
        kwargs["width"] = case.width
    if case.stream != "friedman":
        kwargs["stream"] = case.stream
    truth = scenarios.describe(case.scenario, **kwargs).models[0]
    expected = (case.change, case.end) if case.change is not None else (None, None)
    if (truth.change_index, truth.end_index) != expected or truth.stream != case.stream:
        raise RuntimeError(f"{case}: scenarios put the change elsewhere: {truth}")
    return list(scenarios.generate(case.scenario, **kwargs))


@lru_cache(maxsize=32)
def stagger_scores(seed: int) -> dict[tuple[int, int, int], float]:
    """Train river's one-hot logistic regression on STAGGER's first concept, then freeze.

    STAGGER has 27 possible inputs, so the frozen model is its table of scores.
    """
    model = preprocessing.OneHotEncoder() | linear_model.LogisticRegression()
    noise = random.Random(seed)
    train = synth.STAGGER(STAGGER_CONCEPTS[0], seed=seed)
    for x, y in itertools.islice(train, STAGGER_TRAIN):
        model.learn_one(x, 1 - y if noise.random() < STAGGER_NOISE else y)
    names = ("size", "color", "shape")
    return {
        xs: round(model.predict_proba_one(dict(zip(names, xs, strict=True))).get(1, 0.0), 6)
        for xs in itertools.product(range(3), repeat=3)
    }


def stagger_stream(case: Case) -> Iterator[tuple[dict[str, int], int]]:
    """STAGGER traffic with a ConceptDriftStream at the case's change (and return)."""
    old, new = STAGGER_CONCEPTS
    s = 1 + 10 * case.stream_seed
    stream: Any = synth.STAGGER(old, seed=s + 1)
    if case.change is None:
        return iter(stream)
    # scenarios' ConceptDriftStream makes river's draws without its math.exp
    # overflow (river's own raises for width 1 beyond position ~178).
    drift_stream = scenarios._SafeConceptDriftStream
    stream = drift_stream(
        stream=stream,
        drift_stream=synth.STAGGER(new, seed=s + 2),
        position=case.change + 1,
        width=case.width,
        seed=s + 3,
    )
    if case.end is not None:
        stream = drift_stream(
            stream=stream,
            drift_stream=synth.STAGGER(old, seed=s + 4),
            position=case.end + 1,
            width=case.width,
            seed=s + 5,
        )
    return iter(stream)


def stagger_records(case: Case) -> list[dict[str, Any]]:
    """Wire records of a frozen STAGGER model, shaped like :func:`scenarios.generate`'s."""
    if case.scenario not in ("stable", *DRIFTS):
        raise ValueError(f"no {case.scenario!r} scenario for stagger")
    scores = stagger_scores(case.seed)
    rng = random.Random(case.stream_seed + 7_000)
    rows: list[tuple[float, int, int, dict[str, Any]]] = []
    t = START_TIME
    for i, (x, y) in enumerate(itertools.islice(stagger_stream(case), case.events)):
        t = round(t + rng.expovariate(RATE), 3)
        label = 1 - y if rng.random() < STAGGER_NOISE else y
        score = scores[(x["size"], x["color"], x["shape"])]
        rid = f"stagger-{i:08d}"
        prediction = {
            "request_id": rid,
            "model_id": "stagger",
            "model_version": "v1",
            "timestamp": t,
            "prediction": int(score >= 0.5),
            "score": score,
            "features": dict(x),
        }
        outcome = {"request_id": rid, "outcome": label, "timestamp": round(t + case.label_delay, 3)}
        rows.append((t, 0, i, prediction))
        rows.append((outcome["timestamp"], 1, i, outcome))
    rows.sort(key=lambda r: r[:3])
    return [r[3] for r in rows]


# --------------------------------------------------------------------------
# running the core


@cache
def detector_config(detector: str) -> Config:
    """The default configuration with ``detector`` watching the loss."""
    return load_config(text=f'[monitors.concept_drift]\ndetector = "{detector}"\n', env={})


def request_index(request_id: str) -> int:
    return int(request_id.rsplit("-", 1)[1])


def run_core(
    records: Sequence[Prediction | Outcome], config: Config
) -> tuple[tuple[Seen, ...], int]:
    """Feed decoded records to a fresh pipeline; return its alerts and raw detections."""
    pipe = Pipeline(config)
    seen: list[Seen] = []
    for rec in records:
        alerts = pipe.prediction(rec) if type(rec) is Prediction else pipe.outcome(rec)  # type: ignore[arg-type]
        for a in alerts:
            seen.append((a["kind"], a["status"], request_index(rec.request_id)))
    detections = sum((m["concept_drift"] or {}).get("detections", 0) for m in pipe.status())
    return tuple(seen), detections


def evaluate(case: Case, detectors: Sequence[str]) -> list[Run]:
    """Generate the case once, then run it through the core with each detector."""
    limits = LimitsConfig()
    records = [decode_line(r, limits) for r in case_records(case)]
    return [Run(case, d, *run_core(records, detector_config(d))) for d in detectors]


def _evaluate(job: tuple[Case, tuple[str, ...]]) -> list[Run]:
    return evaluate(*job)


def plan(
    seeds: int,
    events: int,
    stable_events: int,
    detectors: tuple[str, ...],
    label_delay: float = LABEL_DELAY,
) -> list[tuple[Case, tuple[str, ...]]]:
    """Every (case, detectors) job of an evaluation."""
    regression = tuple(d for d in detectors if d not in BINARY_ONLY)
    jobs: list[tuple[Case, tuple[str, ...]]] = []
    for seed in range(seeds):
        specs = [("stable", s, stable_events, detectors) for s in STREAMS]
        specs += [(kind, s, events, detectors) for s in STREAMS for kind in DRIFTS]
        specs += [("improving", s, events, detectors) for s in scenarios.STREAMS]
        # Label-free monitors ignore the concept-drift detector: one run does.
        specs += [(k, s, events, detectors[:1]) for s in scenarios.STREAMS for k in LABEL_FREE]
        if regression:
            specs.append(("regression_mae", "friedman", events, regression))
        jobs += [(Case(k, s, seed, n, label_delay), dets) for k, s, n, dets in specs]
    return jobs


def run_all(jobs: list[tuple[Case, tuple[str, ...]]], workers: int) -> list[Run]:
    """Run every job, in parallel processes when ``workers > 1``; order is kept."""
    out: list[Run] = []
    show = sys.stderr.isatty()
    if workers <= 1:
        results: Iterator[list[Run]] = map(_evaluate, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(workers)
        results = pool.map(_evaluate, jobs)
    try:
        for n, runs in enumerate(results, 1):
            out += runs
            if show:
                print(f"\r{n}/{len(jobs)} cases", end="", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.shutdown()
    if show:
        print(file=sys.stderr)
    return out


# --------------------------------------------------------------------------
# figures


def p90(values: Sequence[int]) -> int:
    """Nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def delay_cell(runs: Sequence[Run], kind: str = "concept_drift") -> str:
    """``median / p90`` of the delays, with the missed runs counted."""
    if not runs:
        return "-"
    delays = [d for r in runs if (d := r.delay(kind)) is not None]
    missed = len(runs) - len(delays)
    if not delays:
        return f"missed {missed}/{len(runs)}"
    text = f"{statistics.median(delays):.0f} / {p90(delays)}"
    return text + (f", {missed} missed" if missed else "")


def rate_cell(runs: Sequence[Run], kinds: Sequence[str] = ("concept_drift",)) -> str:
    """False alarms per 100k events, with the count and the exposure."""
    exposure = sum(r.case.onset for r in runs)
    if not exposure:
        return "-"
    count = sum(r.false_alarms(k) for r in runs for k in kinds)
    return f"{1e5 * count / exposure:.1f} ({count} in {exposure / 1000:.0f}k)"


def concept_table(runs: list[Run], detectors: Sequence[str]) -> list[list[str]]:
    rows = []
    for det in detectors:
        for kind in DRIFTS:
            cells = [
                delay_cell(
                    [
                        r
                        for r in runs
                        if (r.detector, r.case.scenario, r.case.stream) == (det, kind, s)
                    ]
                )
                for s in STREAMS
            ]
            rows.append([det, kind, *cells])
    return rows


def summary_table(runs: list[Run], detectors: Sequence[str]) -> list[list[str]]:
    rows = []
    for det in detectors:
        mine = [r for r in runs if r.detector == det]
        drifting = [r for r in mine if r.case.scenario in DRIFTS]
        found = [d for r in drifting if (d := r.delay()) is not None]
        detected = f"{len(found)}/{len(drifting)}"
        stable = [r for r in mine if r.case.scenario == "stable"]
        improving = [r for r in mine if r.case.scenario == "improving"]
        pages = sum(r.false_alarms() for r in improving)
        raw = sum(r.detections for r in stable) / max(sum(r.case.events for r in stable), 1)
        regression = [r for r in mine if r.case.scenario == "regression_mae"]
        resolved = [
            d
            for r in mine
            if r.case.scenario == "recurring" and (d := r.resolved_after()) is not None
        ]
        recurring = sum(1 for r in mine if r.case.scenario == "recurring" and r.delay() is not None)
        rows.append(
            [
                f"{det} (default)" if det == DEFAULT_DETECTOR else det,
                detected,
                f"{statistics.median(found):.0f} / {p90(found)}" if found else "-",
                rate_cell(stable),
                f"{1e5 * raw:.1f}",
                rate_cell(drifting),
                f"{pages} in {len(improving)} runs",
                delay_cell(regression) if regression else "= ADWIN (fallback)",
                f"{statistics.median(resolved):.0f} ({len(resolved)}/{recurring})"
                if resolved
                else f"- (0/{recurring})",
            ]
        )
    return rows


def label_free_table(runs: list[Run], detector: str) -> list[list[str]]:
    mine = [r for r in runs if r.detector == detector]
    rows = []
    for kind in LABEL_FREE:
        for s in scenarios.STREAMS:
            case_runs = [r for r in mine if (r.case.scenario, r.case.stream) == (kind, s)]
            rows.append([f"{kind}/{s}"] + [delay_cell(case_runs, m) for m in LABEL_FREE_MONITORS])
    shifted = [r for r in mine if r.case.scenario in LABEL_FREE]
    rows.append(
        ["false alarms before the change"] + [rate_cell(shifted, (m,)) for m in LABEL_FREE_MONITORS]
    )
    stable = [r for r in mine if r.case.scenario == "stable"]
    rows.append(["false alarms on stable"] + [rate_cell(stable, (m,)) for m in LABEL_FREE_MONITORS])
    return rows


CONCEPT_HEADERS = ["detector", "scenario", *STREAMS]
SUMMARY_HEADERS = [
    "detector",
    "detected",
    "delay median / p90",
    "false alarms /100k, stable",
    "raw detections /100k, stable",
    "false alarms /100k, before change",
    "improving: pages",
    "regression_mae delay",
    "recurring: resolved after",
]
LABEL_FREE_HEADERS = ["scenario/stream", *LABEL_FREE_MONITORS]


def render(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    """A fixed-width text table, or a GitHub-flavoured Markdown one."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


def report(runs: list[Run], args: argparse.Namespace, markdown: bool) -> str:
    """Parameters and the three tables."""
    detectors = args.detectors
    h = "### " if markdown else ""
    seeds = f"0-{args.seeds - 1}" if args.seeds > 1 else "0"
    params = (
        f"seeds {seeds}; drifting runs of {args.events} predictions, change at"
        f" {args.events // 2} (gradual: sigmoid of width {args.events // 10}, recurring: old"
        f" concept back at {Case('recurring', '', 0, args.events).end}), detection window"
        f" {Case('abrupt', '', 0, args.events).window} events; stable runs of"
        f" {args.stable_events}; outcomes {args.label_delay:g} s after their prediction, all"
        f" labelled; default configuration apart from the detector."
    )
    parts = [
        params,
        f"{h}Concept drift: delay in outcomes after the change (median / p90 over seeds)",
        render(CONCEPT_HEADERS, concept_table(runs, detectors), markdown),
        f"{h}Concept drift: per detector",
        render(SUMMARY_HEADERS, summary_table(runs, detectors), markdown),
        f"{h}Label-free drift: delay in predictions after the change"
        f" (detector-independent, run with {detectors[0]})",
        render(LABEL_FREE_HEADERS, label_free_table(runs, detectors[0]), markdown),
    ]
    return "\n\n".join(parts) + "\n"


def write_markdown(path: Path, body: str, command: str) -> None:
    """Write the tables; in an existing file, only between the generated-section markers."""
    section = f"{BEGIN}\nProduced by `{command}`.\n\n{body}{END}"
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = f"# Detection quality\n\n{section}\n"
    path.write_text(text)


# --------------------------------------------------------------------------
# command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, short streams (~1 min)")
    parser.add_argument("--seeds", type=int, help=f"seeds per case (default {FULL['seeds']})")
    parser.add_argument("--events", type=int, help="predictions per drifting run")
    parser.add_argument("--stable-events", type=int, help="predictions per stable run")
    parser.add_argument(
        "--detectors",
        type=lambda s: tuple(x.strip() for x in s.split(",") if x.strip()),
        default=DETECTORS,
        help=f"comma-separated, default {','.join(DETECTORS)}",
    )
    parser.add_argument(
        "--label-delay",
        type=float,
        default=LABEL_DELAY,
        help=f"seconds from a prediction to its outcome (default {LABEL_DELAY:g}; fixed, so"
        " outcomes keep prediction order)",
    )
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = [d for d in args.detectors if d not in DETECTORS]
    if unknown or not args.detectors:
        parser.error(f"--detectors: choose from {', '.join(DETECTORS)}; got {unknown or 'none'}")
    if args.seeds < 1 or args.events < 100 or args.stable_events < 100 or args.label_delay < 0:
        parser.error(
            "--seeds positive, --events and --stable-events at least 100, --label-delay >= 0"
        )
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    jobs = plan(args.seeds, args.events, args.stable_events, args.detectors, args.label_delay)
    runs = run_all(jobs, args.jobs)
    print(report(runs, args, markdown=False))
    if args.markdown:
        command = " ".join([".venv/bin/python scripts/eval_detection.py", *sys.argv[1:]])
        write_markdown(args.markdown, report(runs, args, markdown=True), command)
        print(f"wrote {args.markdown}")
    print(f"{len(jobs)} cases, {len(runs)} runs in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
