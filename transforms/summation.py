"""Reproducible sums (SPEC §8 "reproducible to the bit").

A Polars group-by adds each group's floats in an order decided by thread scheduling
(partial sums per thread, merged as threads finish), so the last bits of a sum can
change from run to run, with ``POLARS_MAX_THREADS`` and with the partition count.
Every float sum of the methodology is therefore taken here instead: the rows are put
in an order fixed by the data (by key, then by a tie-breaking column such as the value
itself, so that even the row order of an input file does not matter) and each key's
run of consecutive rows is added left to right by ``numpy.add.reduceat``, one
sequential pass per run, whatever the number of threads.

Sums of integers are exact in any order and may stay in Polars group-bys.

The columns of one ``run_sums`` are independent, so they are added on Polars' number
of threads at once (numpy releases the GIL while it adds); each column's sum is the
same whichever thread takes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

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


def run_sums(rows: pl.DataFrame, keys: Sequence[str], sums: SumSpec) -> pl.DataFrame:
    """One row per run of equal ``keys`` in ``rows`` (which must already be in an order
    fixed by the data, each key's rows consecutive): the keys, then each sum of ``sums``
    added in row order.  Null terms count as 0, like a Polars sum; integer and boolean
    terms give an ``Int64`` sum, floats a ``Float64`` one.
    """
    keys = list(keys)
    starts = run_starts(rows.select(keys))
    terms = rows.select(
        [(pl.col(e) if isinstance(e, str) else e).alias(name) for name, e in sums.items()]
    )

    # Float terms add as Float64, integer and boolean ones as Int64 (nulls as 0).  The
    # output arrays are made here, on the calling thread, so the threads allocate nothing.
    exact = [not series.dtype.is_float() for series in terms.iter_columns()]
    totals = [np.empty(starts.size, dtype=np.int64 if whole else np.float64) for whole in exact]

    def add_runs(column: int) -> None:
        series = terms.to_series(column)
        if exact[column]:
            values = series.cast(pl.Int64).fill_null(0).to_numpy()
        else:
            values = series.cast(pl.Float64).fill_null(0.0).to_numpy()
        if starts.size:
            np.add.reduceat(values, starts, out=totals[column])

    threads = min(pl.thread_pool_size(), terms.width)
    if threads > 1 and terms.height >= PARALLEL_ROWS:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(add_runs, range(terms.width)))
    else:
        for column in range(terms.width):
            add_runs(column)
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
