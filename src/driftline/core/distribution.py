"""Label-free distribution drift: does the recent window still look like the reference?

A model whose inputs (data drift) or outputs (prediction drift) no longer
look like what it saw when it was deployed is likely going bad, and this can
be seen long before any ground truth arrives. :class:`DistributionTracker`
watches a stream of records (a mapping of column name to value per
prediction), one histogram per column:

* The first ``reference_size`` records of the version are the *reference*.
  Each column's bins are fixed from it once (:class:`ColumnReference`):
  reference quantiles for numbers, the most common values for categories,
  and always a bin for *missing* (``None``, NaN or an absent key — a jump in
  missing rate is a broken upstream feature) and one for *other* (an unseen
  category, or a value of the wrong kind such as a string in a numeric
  column).
* After that, every ``every`` records the last ``window`` records are
  compared with the reference, column by column: a chi-square test of
  homogeneity gives a p-value, the population stability index (PSI) gives
  the size of the change. A column has drifted when its p-value is rejected
  by Benjamini-Hochberg at level ``p_value`` across the columns tested in
  that round *and* its PSI is at least ``psi_threshold``. The test alone
  would page on tiny shifts once windows are large; the PSI alone would page
  on noise in small windows; multiple-testing control keeps 200 features
  from producing a false alarm a day.

Cost is what makes this usable on every prediction: :meth:`~DistributionTracker.update`
only appends the record to a buffer. Every ``every`` records the buffer is
binned in one vectorized pass (numpy), and the window histogram is a running
sum over the last ``window // every`` chunk histograms. The whole state is
plain data, so it pickles, and it depends only on the records and their
order, so a replay reproduces every check.

>>> import random
>>> from driftline.core.config import DistributionDriftConfig
>>> cfg = DistributionDriftConfig(reference_size=1000, window=1000, every=250)
>>> tracker = DistributionTracker(cfg)
>>> rng = random.Random(42)
>>> for i in range(6000):
...     mean = 1.0 if i >= 3000 else 0.0  # "amount" shifts by one standard deviation
...     record = {"amount": rng.gauss(mean, 1.0), "age": rng.randint(18, 90),
...               "country": rng.choice("ABCD")}
...     check = tracker.update(record, event_time=float(i))
...     if check is not None and check.drifted:
...         print(f"Drift at index {i}: {check.drifted}")
...         break
Drift at index 3499: ['amount']
>>> for r in check.results:
...     print(f"{r.name:8} {r.kind:11} psi={r.psi:.2f} p={r.p_value:.1e} drifted={r.drifted}")
amount   numeric     psi=0.30 p=8.9e-26 drifted=True
age      numeric     psi=0.03 p=1.1e-01 drifted=False
country  categorical psi=0.00 p=4.8e-01 drifted=False
"""

from __future__ import annotations

import heapq
import math
import operator
from array import array
from collections import Counter, deque
from collections.abc import Hashable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from itertools import chain, islice, repeat
from typing import Literal

import numpy as np

from driftline.core.config import DistributionDriftConfig
from driftline.core.stats import PSI_EPSILON, benjamini_hochberg, chi2_sf

Kind = Literal["numeric", "categorical"]

_FAST_TYPES = frozenset({float, int, type(None)})
"""Value types a numeric column converts in one numpy call (``None`` becomes NaN)."""

_BOOL_TYPES = frozenset({bool, np.bool_})

_EMPTY: Mapping[str, object] = {}

MAX_COLUMNS = 1_000
"""Default bound on the columns a tracker discovers (``limits.max_features`` by default)."""


def _as_number(value: object) -> float | None:
    """The float of a number, or ``None`` if ``value`` is not a number.

    A number is what converts to a float *as a number* (``__float__`` or
    ``__index__``: int, float, numpy scalars, Decimal…) — not ``bool``,
    which is a category, and not a string, even ``"12.5"``: a producer that
    starts sending strings has a bug worth seeing. An integer too large for a
    float becomes ±inf.
    """
    kind = type(value)
    plain = kind is float or kind is int
    if not plain and (
        kind in _BOOL_TYPES or not (hasattr(kind, "__float__") or hasattr(kind, "__index__"))
    ):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except OverflowError:
        return math.inf if value > 0 else -math.inf  # type: ignore[operator]
    except (TypeError, ValueError):
        return None


def _is_nan(value: object) -> bool:
    return isinstance(value, float | np.floating) and value != value


def _plain_floats(values: list[object]) -> np.ndarray | None:
    """``values`` as floats in one C loop, or ``None`` if one is ``None``, a string or too big.

    ``array("d", values)`` refuses ``None`` and strings but accepts ``bool``:
    see :func:`_bool_positions`.
    """
    try:
        return np.frombuffer(array("d", values), dtype=float)
    except (TypeError, ValueError, OverflowError):
        return None


def _bool_positions(values: list[object], x: np.ndarray) -> list[int]:
    """Where ``values`` holds a bool, given ``x``, its conversion to floats.

    A bool converts to exactly 0.0 or 1.0, so only those values need their
    type looked at: usually none, at worst a 0/1 column's worth.
    """
    maybe = np.flatnonzero((x == 0.0) | (x == 1.0)).tolist()
    if not maybe or _BOOL_TYPES.isdisjoint(map(type, map(values.__getitem__, maybe))):
        return []
    return [i for i in maybe if type(values[i]) in _BOOL_TYPES]


def _fast_floats(values: list[object]) -> np.ndarray | None:
    """All ``values`` as floats, or ``None`` unless every value is a number."""
    x = _plain_floats(values)
    if x is None or _bool_positions(values, x):
        return None
    return x


def _to_floats(values: list[object]) -> tuple[np.ndarray, np.ndarray | None]:
    """Values of a numeric column as floats, NaN where missing or invalid, and the invalid mask.

    The mask is ``None`` when every value was a number or missing.
    """
    x = _fast_floats(values)
    if x is not None:
        return x, None
    if set(map(type, values)) <= _FAST_TYPES:  # numbers and None: numpy makes None NaN
        try:
            return np.array(values, dtype=float), None
        except OverflowError:  # an int beyond float range: one by one below
            pass
    x = np.empty(len(values))
    invalid = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        number = None if v is None else _as_number(v)
        x[i] = math.nan if number is None else number
        invalid[i] = number is None and v is not None
    return x, invalid


class ColumnReference:
    """The binning of one column, and the reference histogram over those bins.

    Built once from the reference sample of the column:

    * **numeric** when every non-missing value is a number (``int``,
      ``float``, a numpy scalar, ``Decimal``; not ``bool``, and not a numeric
      string): bin edges at the reference's ``bins``
      quantiles, duplicates removed, so each bin holds about the same share
      of the reference and a shift anywhere in the distribution moves mass
      between bins. A value that makes up at least one bin's share of the
      reference (a constant column, the zero of a zero-inflated amount, the
      classes of an integer label) also gets a bin to itself, or a change in
      how often it occurs would be hidden inside a wider bin.
    * **categorical** otherwise: the ``bins - 1`` most common reference
      values (ties in order of first appearance), everything else in *other*.

    After the value bins come two fixed bins: *other* (unseen categories;
    for numeric columns, values of the wrong kind) and *missing* (``None``
    or NaN; the tracker also counts an absent key as missing).

    Parameters
    ----------
    name
        The column.
    kind
        ``"numeric"`` or ``"categorical"``.
    edges
        Numeric only: sorted inner bin edges; value bin ``i`` is
        ``edges[i-1] <= x < edges[i]``.
    categories
        Categorical only: the values with a bin of their own.
    counts
        The reference histogram, one count per bin.
    mean
        Numeric only: mean of the finite reference values (None if none).

    Examples
    --------
    >>> ref = ColumnReference.from_values("age", [*range(20, 100), *[None] * 20], bins=4)
    >>> ref.kind, ref.labels()
    ('numeric', ['< 39', '[39, 59)', '[59, 79)', '>= 79', 'other', 'missing'])
    >>> ref.counts.tolist(), ref.missing_rate
    ([19, 20, 20, 21, 0, 20], 0.2)
    >>> [ref.bin_of(v) for v in (10, 44.0, "44", None)]
    [0, 1, 4, 5]

    Zero holds 60 % of this amount: it gets a bin of its own, so a change in
    how often the amount is zero shows.

    >>> ref = ColumnReference.from_values("amount", [0.0] * 6 + [5.0, 9.0, 12.0, 30.0], bins=4)
    >>> ref.labels(), ref.counts.tolist()
    (['< 0', '= 0', '(0, 9)', '>= 9', 'other', 'missing'], [0, 6, 1, 3, 0, 0])

    >>> ref = ColumnReference.from_values("country", ["fr", "fr", "de", "us", True], bins=3)
    >>> ref.kind, ref.categories, ref.labels()
    ('categorical', ('fr', 'de'), ["'fr'", "'de'", 'other', 'missing'])
    >>> ref.expected.tolist()
    [0.4, 0.2, 0.4, 0.0]
    """

    __slots__ = ("_lookup", "categories", "counts", "edges", "kind", "mean", "name")

    def __init__(
        self,
        name: str,
        kind: Kind,
        *,
        edges: np.ndarray | None = None,
        categories: tuple[Hashable, ...] = (),
        counts: np.ndarray | None = None,
        mean: float | None = None,
    ) -> None:
        self.name = name
        self.kind: Kind = kind
        self.edges = np.asarray(edges if edges is not None else [], dtype=float)
        self.categories = tuple(categories)
        lookup: dict[Hashable, int] = {c: i for i, c in enumerate(self.categories)}
        lookup[None] = len(self.categories) + 1  # missing
        self._lookup = lookup
        self.counts = (
            np.asarray(counts, dtype=np.int64)
            if counts is not None
            else np.zeros(self.n_bins, dtype=np.int64)
        )
        self.mean = mean

    @classmethod
    def from_values(cls, name: str, values: Sequence[object], bins: int) -> ColumnReference:
        """Choose the kind and the bins from a reference sample, then count it."""
        x = _fast_floats(values if isinstance(values, list) else list(values))
        if x is not None:  # every value a number (the usual case): drop NaN in numpy
            present: list[object] = []
            x = x[~np.isnan(x)]
        else:
            present = [v for v in values if v is not None and not _is_nan(v)]
            x = _fast_floats(present)
        if x is None:
            numbers = [_as_number(v) for v in present]
            x = None if None in numbers else np.array(numbers, dtype=float)
        if x is not None:
            finite = np.sort(x[np.isfinite(x)])
            with np.errstate(over="ignore"):
                mean = float(finite.mean()) if finite.size else None
            ref = cls(name, "numeric", edges=_quantile_edges(finite, bins), mean=mean)
        else:
            seen: Counter[Hashable] = Counter()
            for v in present:
                if isinstance(v, Hashable):
                    with suppress(TypeError):  # a tuple holding a list, say
                        seen[v] += 1
            top = tuple(c for c, _ in seen.most_common(bins - 1))
            ref = cls(name, "categorical", categories=top)
        ref.counts = np.bincount(ref.bin_indices(values), minlength=ref.n_bins).astype(np.int64)
        return ref

    @property
    def n_value_bins(self) -> int:
        """Bins for ordinary values, before *other* and *missing*."""
        if self.kind == "numeric":
            return len(self.edges) + 1
        return len(self.categories)

    @property
    def n_bins(self) -> int:
        return self.n_value_bins + 2

    @property
    def other_bin(self) -> int:
        return self.n_value_bins

    @property
    def missing_bin(self) -> int:
        return self.n_value_bins + 1

    @property
    def size(self) -> int:
        """Number of reference records."""
        return int(self.counts.sum())

    @property
    def expected(self) -> np.ndarray:
        """Reference proportions per bin: what a window should look like."""
        total = self.counts.sum()
        return self.counts / total if total else np.zeros(self.n_bins)

    @property
    def missing_rate(self) -> float:
        total = self.counts.sum()
        return float(self.counts[self.missing_bin] / total) if total else 0.0

    def bin_of(self, value: object) -> int:
        """The bin of one value: the definition the vectorized paths must match."""
        if value is None or _is_nan(value):
            return self.missing_bin
        if self.kind == "numeric":
            x = _as_number(value)
            if x is None:
                return self.other_bin
            if x != x:  # a NaN of another type, Decimal("nan") say
                return self.missing_bin
            return min(int(np.searchsorted(self.edges, x, side="right")), self.n_value_bins - 1)
        try:
            return self._lookup.get(value, self.other_bin)  # type: ignore[arg-type]
        except TypeError:  # unhashable
            return self.other_bin

    def bin_indices(self, values: Sequence[object]) -> np.ndarray:
        """The bin of every value, vectorized (one numpy pass, or one dict pass)."""
        if not isinstance(values, list):
            values = list(values)
        if self.kind == "numeric":
            x, invalid = _to_floats(values)
            idx = np.searchsorted(self.edges, x, side="right")
            np.minimum(idx, self.n_value_bins - 1, out=idx)
            idx[np.isnan(x)] = self.missing_bin
            if invalid is not None:
                idx[invalid] = self.other_bin
            return idx
        other = self.other_bin
        try:
            idx = np.fromiter(
                map(self._lookup.get, values, repeat(other)), dtype=np.intp, count=len(values)
            )
        except TypeError:  # an unhashable value somewhere: one by one
            return np.fromiter(map(self.bin_of, values), dtype=np.intp, count=len(values))
        for i in np.flatnonzero(idx == other):  # rare: NaN is missing, not a new category
            if _is_nan(values[i]):
                idx[i] = self.missing_bin
        return idx

    def labels(self) -> list[str]:
        """Human-readable bin names, for alert messages."""
        if self.kind == "categorical":
            return [*(repr(c) for c in self.categories), "other", "missing"]
        edges = self.edges.tolist()
        names = []
        for i in range(len(edges) + 1):
            lo = edges[i - 1] if i > 0 else None
            hi = edges[i] if i < len(edges) else None
            if lo is not None and hi is not None and hi == math.nextafter(lo, math.inf):
                names.append(f"= {lo:.6g}")  # an isolated mass point
                continue
            # The bin after a mass point v starts just above it: "(v, ..." not "[v + ulp, ...".
            after_point = i >= 2 and lo == math.nextafter(edges[i - 2], math.inf)
            lower = (
                f"({edges[i - 2]:.6g}" if after_point else f"[{lo:.6g}" if lo is not None else ""
            )
            if lo is None and hi is None:
                names.append("any number")
            elif lo is None:
                names.append(f"< {hi:.6g}")
            elif hi is None:
                names.append(f"> {edges[i - 2]:.6g}" if after_point else f">= {lo:.6g}")
            else:
                names.append(f"{lower}, {hi:.6g})")
        return [*names, "other", "missing"]

    def __repr__(self) -> str:
        return f"ColumnReference({self.name!r}, {self.kind}, bins={self.labels()})"


def _quantile_edges(finite: np.ndarray, bins: int) -> np.ndarray:
    """Inner edges at the ``bins`` quantiles of sorted ``finite``, mass points isolated."""
    if finite.size == 0:
        return np.empty(0)
    # inverted_cdf: every edge is a reference value, so a mass point is an edge, not
    # something between two values.
    levels = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    edges = np.unique(np.quantile(finite, levels, method="inverted_cdf"))
    # A value holding at least one bin's share gets [v, next float after v): itself only.
    share = np.searchsorted(finite, edges, side="right") - np.searchsorted(finite, edges)
    heavy = edges[share * bins >= finite.size]
    return np.unique(np.concatenate([edges, np.nextafter(heavy, math.inf)]))


_Chunk = tuple[np.ndarray, np.ndarray, np.ndarray, float, float]
"""One chunk's bin counts, numeric sums and finite counts, oldest and newest event time."""


@dataclass(slots=True)
class ColumnResult:
    """One column's comparison in one check.

    ``statistic`` and ``p_value`` come from the chi-square test of
    homogeneity over ``df + 1`` occupied bins; a column with fewer than two
    occupied bins (constant in both samples) cannot be tested and reports
    ``p_value`` 1. Means are over finite values, numeric columns only.
    """

    name: str
    kind: Kind
    psi: float
    statistic: float
    p_value: float
    drifted: bool
    reference_mean: float | None
    window_mean: float | None
    missing_rate_reference: float
    missing_rate_window: float
    df: int = 0


@dataclass(slots=True)
class DriftCheck:
    """The outcome of one comparison of the window with the reference.

    ``event_time`` is the newest event time in the window (what an alert
    resting on this check is stamped with); ``window_start`` and
    ``window_end`` are the oldest and newest. ``new_columns`` lists keys
    first seen after the reference was frozen: reported, never tested, as
    there is no reference for them.
    """

    event_time: float
    window_events: int
    window_start: float
    window_end: float
    reference_events: int
    results: list[ColumnResult]
    drifted: list[str]
    max_psi: float
    new_columns: tuple[str, ...] = field(default=())


class DistributionTracker:
    """Sliding-window drift test of many columns against a frozen reference.

    Parameters
    ----------
    cfg
        ``reference_size``, ``window``, ``every``, ``bins``, ``p_value`` and
        ``psi_threshold`` are used. The window holds ``window // every``
        chunks of ``every`` records (at least one), so it is exactly
        ``window`` records when ``every`` divides it.
    columns
        The columns to test. ``None`` discovers them from the reference: every
        key seen in a reference record, in order of first appearance. Keys
        first seen later are collected in :attr:`new_columns`, not tested.
    max_columns
        Bound on discovered columns, and on :attr:`new_columns`. A producer
        that puts a new key in every record (an id as a feature name, by bug
        or malice) would otherwise make every key of the reference a column:
        2,000 records of 10 such keys took 19 s and 360 MB to freeze, 1,000
        keys each would take hours. Past the bound, the keys present in the
        most reference records are kept (ties: first seen first).

    Attributes
    ----------
    references
        Column name to :class:`ColumnReference`, empty until the reference
        is complete (``frozen``).
    new_columns
        Keys first seen after the reference was frozen (column discovery only).
    detections
        Checks that found drift, whether or not anyone was paged for it.

    Notes
    -----
    ``update`` appends the record and returns; the binning happens once per
    ``every`` records, for the whole chunk at once, so the cost per record is
    a small constant: about 1.5 µs for 20 numeric columns, checks included.
    Records are binned as they are when their chunk completes: a caller must
    not mutate a mapping after passing it.

    Examples
    --------
    Prediction drift is the one-column case:

    >>> cfg = DistributionDriftConfig(reference_size=100, window=100, every=50)
    >>> tracker = DistributionTracker(cfg, columns=["prediction"])
    >>> labels = ["cat", "dog"] * 100 + ["cat"] * 100
    >>> checks = [tracker.update({"prediction": y}, float(t)) for t, y in enumerate(labels)]
    >>> [(t, c.drifted) for t, c in enumerate(checks) if c is not None]
    [(199, []), (249, ['prediction']), (299, ['prediction'])]
    """

    def __init__(
        self,
        cfg: DistributionDriftConfig,
        columns: Sequence[str] | None = None,
        *,
        max_columns: int = MAX_COLUMNS,
    ) -> None:
        self.cfg = cfg
        self.max_columns = max_columns
        self.columns: tuple[str, ...] = tuple(columns) if columns is not None else ()
        self.references: dict[str, ColumnReference] = {}
        self.new_columns: set[str] = set()
        self.frozen = False
        self._discover = columns is None
        self._n_chunks = max(1, cfg.window // cfg.every)
        self._buffer: list[Mapping[str, object]] = []
        self._times: list[float] = []
        self._need = cfg.reference_size
        self._chunks: deque[_Chunk] = deque()
        self._chunks_done = 0
        self._window_counts = np.zeros(0, dtype=np.int64)
        self._layout: _Layout | None = None
        self.detections = 0

    @property
    def n_seen(self) -> int:
        """Records seen so far."""
        done = self.cfg.reference_size + self._chunks_done * self.cfg.every if self.frozen else 0
        return done + len(self._buffer)

    def update(self, values: Mapping[str, object] | None, event_time: float) -> DriftCheck | None:
        """Add one record; return a :class:`DriftCheck` when this record completes one.

        ``values`` maps column to value; ``None`` counts every column as missing.
        """
        buffer = self._buffer
        buffer.append(_EMPTY if values is None else values)
        self._times.append(event_time)
        if len(buffer) < self._need:
            return None
        return self._flush()

    def histogram(self, records: Sequence[Mapping[str, object] | None]) -> np.ndarray:
        """Bin counts of ``records``: all columns, in order, each over its reference bins.

        Column ``c`` occupies ``counts[start:start + references[c].n_bins]``
        with starts in column order. Only valid once the reference is frozen.
        """
        if self._layout is None:
            raise RuntimeError("histogram: the reference is not complete yet")
        recs = [_EMPTY if r is None else r for r in records]
        return self._layout.tally(recs)[0]

    def _flush(self) -> DriftCheck | None:
        records, times = self._buffer, self._times
        self._buffer, self._times = [], []
        if not self.frozen:
            self._freeze(records)
            return None
        layout = self._layout
        assert layout is not None
        counts, sums, finite, complete = layout.tally(records)
        if self._discover and not (complete and set(map(len, records)) == {len(self.columns)}):
            # Some record lacks a known key or has another count of keys: look for new ones.
            room = self.max_columns - len(self.new_columns)
            if room > 0:
                fresh = set().union(*records).difference(self.columns, self.new_columns)
                self.new_columns.update(islice(fresh, room))
        self._chunks.append((counts, sums, finite, min(times), max(times)))
        self._window_counts += counts
        if len(self._chunks) > self._n_chunks:
            self._window_counts -= self._chunks.popleft()[0]
        self._chunks_done += 1
        if len(self._chunks) < self._n_chunks:
            return None
        return self._check()

    def _freeze(self, records: list[Mapping[str, object]]) -> None:
        if self._discover:
            self.columns = tuple(dict.fromkeys(chain.from_iterable(records)))
            if len(self.columns) > self.max_columns:  # a flood of invented keys
                seen = Counter(chain.from_iterable(records))
                keep = set(heapq.nlargest(self.max_columns, self.columns, key=seen.__getitem__))
                self.columns = tuple(c for c in self.columns if c in keep)
        bins = self.cfg.bins
        self.references = {
            name: ColumnReference.from_values(name, [r.get(name) for r in records], bins)
            for name in self.columns
        }
        self._layout = _Layout([self.references[c] for c in self.columns])
        self._window_counts = np.zeros(self._layout.total, dtype=np.int64)
        self._need = self.cfg.every
        self.frozen = True

    def _check(self) -> DriftCheck:
        cfg = self.cfg
        layout = self._layout
        assert layout is not None
        n_ref = cfg.reference_size
        n_win = self._n_chunks * cfg.every
        window = self._window_counts
        stat, occupied, psi_values = layout.compare(window, n_ref, n_win)
        stat_l, occupied_l, psi_l = stat.tolist(), occupied.tolist(), psi_values.tolist()
        n_cols = len(self.columns)
        tested = [j for j in range(n_cols) if occupied_l[j] >= 2]
        p_values = [1.0] * n_cols
        for j in tested:
            p_values[j] = chi2_sf(stat_l[j], occupied_l[j] - 1)
        rejected = [False] * n_cols
        for j, reject in zip(
            tested, benjamini_hochberg([p_values[j] for j in tested], cfg.p_value), strict=True
        ):
            rejected[j] = reject
        window_means: list[float | None] = [None] * n_cols
        if layout.num_slots:
            sums = sum(c[1] for c in self._chunks)
            finite = sum(c[2] for c in self._chunks)
            for k, j in enumerate(layout.num_slots):
                if finite[k]:
                    window_means[j] = float(sums[k] / finite[k])
        missing_window = (window[layout.missing_at] / n_win).tolist()
        threshold = cfg.psi_threshold
        results = [
            ColumnResult(
                name=name,
                kind=ref.kind,
                psi=psi_l[j],
                statistic=stat_l[j],
                p_value=p_values[j],
                drifted=rejected[j] and psi_l[j] >= threshold,
                reference_mean=ref.mean,
                window_mean=window_means[j],
                missing_rate_reference=layout.missing_reference[j],
                missing_rate_window=missing_window[j],
                df=max(occupied_l[j] - 1, 0),
            )
            for j, (name, ref) in enumerate(self.references.items())
        ]
        chunks = self._chunks
        window_end = max(c[4] for c in chunks)
        drifted = [r.name for r in results if r.drifted]
        if drifted:
            self.detections += 1
        return DriftCheck(
            event_time=window_end,
            window_events=n_win,
            window_start=min(c[3] for c in chunks),
            window_end=window_end,
            reference_events=n_ref,
            results=results,
            drifted=drifted,
            max_psi=max(psi_l, default=0.0),
            new_columns=tuple(sorted(self.new_columns)),
        )


class _Layout:
    """All columns' bins laid end to end in one flat vector, and the vectorized binning.

    Numeric columns are binned together as one ``(records, columns)`` float
    matrix: ``itemgetter`` pulls every numeric column out of a record in one
    C call, ``array("d", ...)`` converts the whole chunk in another, and
    comparing the matrix with edge ``t`` of every column at once (padded
    with +inf) counts, for each value, the edges at or below it — the bin
    ``np.searchsorted(edges, x, "right")`` would give — in a handful of numpy
    calls for all columns. Categorical columns go through their dict. One
    ``np.bincount`` of the flat bin indices then gives every histogram.
    """

    def __init__(self, refs: list[ColumnReference]) -> None:
        sizes = [r.n_bins for r in refs]
        self.starts = np.cumsum([0, *sizes])[:-1].astype(np.intp)
        self.total = int(sum(sizes))
        self.ref_counts = (
            np.concatenate([r.counts for r in refs]) if refs else np.zeros(0, dtype=np.int64)
        )
        num = [j for j, r in enumerate(refs) if r.kind == "numeric"]
        cat = [j for j, r in enumerate(refs) if r.kind == "categorical"]
        self.num_slots = num  # column index of each numeric slot
        self.missing_at = self.starts + np.array([r.missing_bin for r in refs], dtype=np.intp)
        self.missing_reference = [r.missing_rate for r in refs]
        self.num_names = tuple(refs[j].name for j in num)
        self.num_getter = operator.itemgetter(*self.num_names) if num else None
        width = max((len(refs[j].edges) for j in num), default=0)
        edges = np.full((len(num), width), math.inf)  # padding: no value is above +inf
        for k, j in enumerate(num):
            edges[k, : len(refs[j].edges)] = refs[j].edges
        self.num_edges = [np.ascontiguousarray(e) for e in edges.T]  # edge t of every column
        self.count_dtype: type[np.signedinteger] = (
            np.int8 if width < 127 else np.int16 if width < 32767 else np.intp
        )
        self.whole_block = True
        self.num_top = np.array([refs[j].n_value_bins - 1 for j in num], dtype=np.intp)
        self.num_other = np.array([refs[j].other_bin for j in num], dtype=np.intp)
        self.num_missing = np.array([refs[j].missing_bin for j in num], dtype=np.intp)
        self.num_starts = self.starts[num]
        self.cat_names = tuple(refs[j].name for j in cat)
        self.cat_getter = operator.itemgetter(*self.cat_names) if cat else None
        self.cat_refs = [refs[j] for j in cat]
        self.cat_starts = self.starts[cat]

    def tally(
        self, records: list[Mapping[str, object]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """Bin counts, numeric sums and finite counts, and whether every key was present."""
        n = len(records)
        parts: list[np.ndarray] = []
        complete = True
        sums = np.zeros(len(self.num_names))
        finite_n = np.zeros(len(self.num_names), dtype=np.int64)
        if self.num_getter is not None:
            flat, ok = _extract(records, self.num_names, self.num_getter)
            complete &= ok
            x, invalid = self._numeric_matrix(flat, n)
            with np.errstate(over="ignore", invalid="ignore"):
                sums = x.sum(axis=0)
                finite_n = np.full(len(self.num_names), n, dtype=np.int64)
                # A finite column sum means every value in the column is finite (NaN or
                # inf would spread): only the other columns need masking.
                dirty = np.flatnonzero(~np.isfinite(sums))
                for j in dirty.tolist():
                    column = x[:, j]
                    ok = np.isfinite(column)
                    sums[j] = column[ok].sum()
                    finite_n[j] = ok.sum()
            # searchsorted(edges, x, "right") is the number of edges <= x: count them.
            idx = np.zeros(x.shape, dtype=self.count_dtype)
            as_int8 = self.count_dtype is np.int8  # add the booleans' bytes as they are
            for edge in self.num_edges:
                hit = x >= edge
                idx += hit.view(np.int8) if as_int8 else hit
            np.minimum(idx, self.num_top, out=idx, casting="unsafe")  # +inf passes the padding
            if dirty.size:  # NaN can only be in a dirty column
                idx = np.where(np.isnan(x), self.num_missing, idx)
            if invalid is not None:
                idx = np.where(invalid, self.num_other, idx)
            parts.append((idx + self.num_starts).ravel())  # intp from here
        if self.cat_getter is not None:
            flat, ok = _extract(records, self.cat_names, self.cat_getter)
            complete &= ok
            k = len(self.cat_names)
            for j, ref in enumerate(self.cat_refs):
                parts.append(ref.bin_indices(flat[j::k]) + self.cat_starts[j])
        if not parts:
            return np.zeros(0, dtype=np.int64), sums, finite_n, complete
        flat_idx = parts[0] if len(parts) == 1 else np.concatenate(parts)
        counts = np.bincount(flat_idx, minlength=self.total).astype(np.int64)
        return counts, sums, finite_n, complete

    def _numeric_matrix(self, flat: list[object], n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``(n, k)`` floats with NaN for missing and invalid, and the invalid mask if any.

        One C-level conversion for the whole chunk when every value is a
        number; else column by column, so only a column holding ``None`` or a
        wrong kind takes the slower exact path. ``whole_block`` remembers
        whether the last chunk was clean, to skip a whole-chunk attempt that
        would fail again. Bools pass the conversion as 0.0 and 1.0; one scan of
        the finished matrix finds them (row-major positions are positions in
        ``flat``).
        """
        k = len(self.num_names)
        x = _plain_floats(flat) if self.whole_block else None
        invalid: np.ndarray | None = None
        if x is None:
            x = np.empty(n * k)
            columns = x.reshape(n, k)
            clean = True
            for j in range(k):
                column = flat[j::k]
                xj = _plain_floats(column)
                if xj is None:
                    clean = False
                    xj, bad = _to_floats(column)
                    if bad is not None:
                        if invalid is None:
                            invalid = np.zeros(n * k, dtype=bool)
                        invalid.reshape(n, k)[:, j] = bad
                columns[:, j] = xj
            self.whole_block = clean
        bools = _bool_positions(flat, x)
        if bools:
            x[bools] = math.nan
            if invalid is None:
                invalid = np.zeros(n * k, dtype=bool)
            invalid[bools] = True
        return x.reshape(n, k), None if invalid is None else invalid.reshape(n, k)

    def compare(
        self, window: np.ndarray, n_ref: int, n_win: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per column: chi-square homogeneity statistic, occupied bins, PSI.

        The same arithmetic as :func:`~driftline.core.stats.chi2_homogeneity`
        and :func:`~driftline.core.stats.psi`, for all columns in a few numpy
        calls: every record adds exactly one count to every column (missing
        is a bin), so each column's totals are ``n_ref`` and ``n_win``.
        """
        if self.total == 0:
            empty = np.zeros(0)
            return empty, empty.astype(np.intp), empty
        r = self.ref_counts.astype(float)
        w = window.astype(float)
        both = r + w
        num = (r * n_win - w * n_ref) ** 2
        terms = np.divide(num, float(n_ref) * n_win * both, out=np.zeros_like(num), where=both > 0)
        stat = np.add.reduceat(terms, self.starts)
        occupied = np.add.reduceat((both > 0).astype(np.intp), self.starts)
        p_r = np.maximum(r / n_ref, PSI_EPSILON)
        p_w = np.maximum(w / n_win, PSI_EPSILON)
        psi_values = np.add.reduceat((p_w - p_r) * np.log(p_w / p_r), self.starts)
        return stat, occupied, psi_values


def _extract(
    records: list[Mapping[str, object]], names: tuple[str, ...], getter: operator.itemgetter
) -> tuple[list[object], bool]:
    """The values of ``names`` in every record, row by row in one flat list.

    ``itemgetter`` fetches all columns of a record in one C call; a record
    lacking a key falls back to ``get`` (an absent key is a missing value).
    The flag says whether every record had every key.
    """
    try:
        rows = list(map(getter, records))
        complete = True
    except KeyError:
        complete = False
        if len(names) == 1:
            (name,) = names
            return [r.get(name) for r in records], complete
        rows = []
        for r in records:
            try:
                rows.append(getter(r))
            except KeyError:
                rows.append(tuple(map(r.get, names)))
    if len(names) == 1:
        return rows, complete
    return list(chain.from_iterable(rows)), complete
