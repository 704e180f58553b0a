"""Reproducible sums (SPEC §8 "reproducible to the bit").

A Polars group-by adds each group's floats in an order decided by thread scheduling
(partial sums per thread, merged as threads finish), so the last bits of a sum can
change from run to run, with ``POLARS_MAX_THREADS`` and with the partition count.
Every float sum of the methodology is therefore taken here instead: the rows are put
in an order fixed by the data (by key, then by a tie-breaking column such as the value
itself, so that even the row order of an input file does not matter) and each key's
run of consecutive rows is added in an order fixed by the run alone, whatever the
number of threads: ``add_runs``, the very bits of ``numpy.add.reduceat`` (the run's
first row plus the sum of the rest, added left to right, and for runs of more than
``SHORT_RUN`` rows numpy's own pairwise sum).

Sums of integers are exact in any order and may stay in Polars group-bys.

``numpy.add.reduceat`` holds the GIL and pays a call per run (most runs are one or two
rows), so ``add_runs`` adds the short runs by gathers over every run at once, position
by position, and leaves only the rare long runs to ``reduceat``.  The columns of one
``run_sums`` are independent, so they are added on Polars' number of threads at once
(the gathers and adds release the GIL); each column's sum is the same whichever thread
takes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

#: Below this many rows ``run_sums`` adds its columns one after the other (threads cost more).
PARALLEL_ROWS = 100_000

#: A sum to take: output column → expression evaluated per row (a column name is ``pl.col``).
SumSpec = Mapping[str, pl.Expr | str]


def run_starts(keys: pl.DataFrame) -> np.ndarray:
    """Row indices where a new run of equal keys begins (row 0 included; empty frame → none)."""
    if keys.height == 0:
        return np.zeros(0, dtype=np.int64)
    changed = pl.any_horizontal(
        [pl.col(k).ne_missing(pl.col(k).shift()) for k in keys.columns]
    ) | (pl.int_range(pl.len()) == 0)
    return keys.select(changed.arg_true()).to_series().to_numpy().astype(np.int64, copy=False)


#: Runs of at most this many rows are added by ``add_runs`` itself: numpy's pairwise sum adds
#: fewer than 8 terms left to right, so a run's first row plus at most 7 more is exactly
#: ``reduceat``'s order.
SHORT_RUN = 8


@dataclass(frozen=True)
class RunLayout:
    """Where the runs of ``run_starts`` lie, laid out once for every column added over them."""

    starts: np.ndarray  # first row of each run
    pairs: np.ndarray  # runs of 2 … SHORT_RUN rows, longest first
    second_rows: np.ndarray  # the second row of each of ``pairs``
    later_rows: tuple[np.ndarray, ...]  # j = 2, 3, …: row j of the first len(later_rows[j-2]) of ``pairs``
    long_runs: np.ndarray  # runs of more than SHORT_RUN rows
    long_rows: np.ndarray  # their rows, run after run
    long_starts: np.ndarray  # where each long run begins in ``long_rows``


def run_layout(starts: np.ndarray, rows: int) -> RunLayout:
    """The layout of the runs beginning at ``starts`` (strictly increasing, from 0) over ``rows`` rows."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.diff(starts, append=np.int64(rows))
    short = lengths <= SHORT_RUN
    pairs = np.flatnonzero(short & (lengths >= 2))
    # Longest first, so the runs with a row j are a prefix (a radix sort on the small lengths).
    pairs = pairs[np.argsort((SHORT_RUN - lengths[pairs]).astype(np.int8), kind="stable")]
    pair_lengths = lengths[pairs]
    heads = starts[pairs]
    later_rows = []
    for j in range(2, SHORT_RUN):
        count = int(np.count_nonzero(pair_lengths > j))
        if count == 0:
            break
        later_rows.append(heads[:count] + j)
    long_runs = np.flatnonzero(~short)
    long_lengths = lengths[long_runs]
    long_starts = np.concatenate(([0], np.cumsum(long_lengths)[:-1])).astype(np.int64)
    long_rows = (np.repeat(starts[long_runs] - long_starts, long_lengths)
                 + np.arange(int(long_lengths.sum()), dtype=np.int64))
    return RunLayout(starts, pairs, heads + 1, tuple(later_rows), long_runs, long_rows, long_starts)


def add_runs(values: np.ndarray, layout: RunLayout, out: np.ndarray | None = None) -> np.ndarray:
    """Σ of ``values`` (float64, or int64: exact in any order) over each run of ``layout``,
    bit for bit ``numpy.add.reduceat(values, layout.starts)``: a run's first row plus the
    sum of its other rows added left to right (numpy's pairwise sum for runs longer than
    ``SHORT_RUN``)."""
    out = np.take(values, layout.starts, out=out)
    if layout.pairs.size:
        rest = np.take(values, layout.second_rows)
        for rows in layout.later_rows:
            rest[: rows.size] += np.take(values, rows)
        out[layout.pairs] += rest
    if layout.long_runs.size:
        out[layout.long_runs] = np.add.reduceat(np.take(values, layout.long_rows), layout.long_starts)
    return out


def run_sums(rows: pl.DataFrame, keys: Sequence[str], sums: SumSpec) -> pl.DataFrame:
    """One row per run of equal ``keys`` in ``rows`` (which must already be in an order
    fixed by the data, each key's rows consecutive): the keys, then each sum of ``sums``
    added in row order.  Null terms count as 0, like a Polars sum; integer and boolean
    terms give an ``Int64`` sum, floats a ``Float64`` one.
    """
    keys = list(keys)
    starts = run_starts(rows.select(keys))
    layout = run_layout(starts, rows.height)
    terms = rows.select(
        [(pl.col(e) if isinstance(e, str) else e).alias(name) for name, e in sums.items()]
    )

    # Float terms add as Float64, integer and boolean ones as Int64 (nulls as 0).  The
    # output arrays are made here, on the calling thread.
    exact = [not series.dtype.is_float() for series in terms.iter_columns()]
    totals = [np.empty(starts.size, dtype=np.int64 if whole else np.float64) for whole in exact]

    def add_column(column: int) -> None:
        series = terms.to_series(column)
        if exact[column]:
            values = series.cast(pl.Int64).fill_null(0).to_numpy()
        else:
            values = series.cast(pl.Float64).fill_null(0.0).to_numpy()
        add_runs(values, layout, out=totals[column])

    threads = min(pl.thread_pool_size(), terms.width)
    if threads > 1 and terms.height >= PARALLEL_ROWS:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(add_column, range(terms.width)))
    else:
        for column in range(terms.width):
            add_column(column)
    columns = [
        pl.Series(name, total, dtype=pl.Int64 if whole else pl.Float64)
        for name, total, whole in zip(terms.columns, totals, exact)
    ]
    return rows.select(keys)[starts].with_columns(columns)


def ordered_sums(
    rows: pl.LazyFrame | pl.DataFrame,
    keys: Sequence[str],
    sums: SumSpec,
    order_by: Sequence[str] = (),
    *,
    presorted: bool = False,
) -> pl.LazyFrame:
    """``group_by(keys).agg(sums)`` reproducible to the bit: the rows are sorted by
    ``keys`` then ``order_by`` (ties in ``order_by`` must carry equal terms), and each
    key's run is summed in that order.  ``presorted`` says ``rows`` already are in that
    order (no sort).  The result is in key order.  Collects ``rows``.
    """
    frame = rows.collect() if isinstance(rows, pl.LazyFrame) else rows
    if not presorted:
        frame = frame.sort([*keys, *order_by], nulls_last=True)
    return run_sums(frame, keys, sums).lazy()
