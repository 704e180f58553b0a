"""transforms.summation: sums over runs of equal keys, added in row order (SPEC §8)."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms import summation


def test_run_sums_one_row_per_run_in_row_order():
    given = pl.DataFrame({
        "book": [1, 1, 1, 2, 3, 3],
        "value": [0.1, 0.2, None, 5.0, -1.0, 1.0],
        "flag": [True, False, True, True, None, False],
    })
    got = summation.run_sums(given, ["book"], {"total": "value", "count": "flag", "double": pl.col("value") * 2})
    assert got["book"].to_list() == [1, 2, 3]
    assert got["total"].to_list() == [0.1 + 0.2, 5.0, 0.0]  # a null adds 0; 0.1 + 0.2 in that order
    assert got["count"].to_list() == [2, 1, 0]  # booleans sum as integers
    assert got["double"].to_list() == [0.2 + 0.4, 10.0, 0.0]
    assert got.schema == pl.Schema({"book": pl.Int64, "total": pl.Float64, "count": pl.Int64, "double": pl.Float64})


def test_run_sums_on_threads_gives_the_bits_of_one_column_at_a_time():
    """Above ``PARALLEL_ROWS`` the columns are added on several threads: every sum must be
    the very ``numpy.add.reduceat`` of its own column (bit for bit), in the sums' order."""
    rng = np.random.default_rng(16)
    rows = 3 * summation.PARALLEL_ROWS
    books = np.sort(rng.integers(0, rows // 3, rows))
    given = pl.DataFrame({"book": books, **{f"v{i}": rng.standard_normal(rows) * 10.0 ** i for i in range(9)}})
    sums = {f"s{i}": pl.col(f"v{i}") * 1.1 for i in reversed(range(9))}
    got = summation.run_sums(given, ["book"], sums)
    starts = np.flatnonzero(np.r_[True, books[1:] != books[:-1]])
    assert got.columns == ["book", *sums]
    for i in range(9):
        expected = np.add.reduceat(given.select(pl.col(f"v{i}") * 1.1).to_series().to_numpy(), starts)
        assert np.array_equal(got[f"s{i}"].to_numpy().view(np.uint64), expected.view(np.uint64)), i


def test_ordered_sums_sorts_by_key_then_tie_break():
    given = pl.LazyFrame({"book": [2, 1, 2, 1], "value": [1e16, 1.0, -1e16, 3.0]})
    got = summation.ordered_sums(given, ["book"], {"total": "value"}, order_by=["value"]).collect()
    # book 1: 1.0 + 3.0; book 2: (-1e16) + 1e16 in ascending value order
    assert got.to_dicts() == [{"book": 1, "total": 4.0}, {"book": 2, "total": 0.0}]


def test_add_runs_is_first_row_plus_the_rest_left_to_right():
    """Given runs [1e16, 1, 1], [1, 1e16, -1e16], [5]: expect 1e16 + (1 + 1) = 1e16 + 2 (the
    run's first row plus the rest, not ((1e16 + 1) + 1) = 1e16), 1 + (1e16 − 1e16) = 1, and 5:
    the order ``numpy.add.reduceat`` adds in."""
    values = np.array([1e16, 1.0, 1.0, 1.0, 1e16, -1e16, 5.0])
    starts = np.array([0, 3, 6])
    got = summation.add_runs(values, summation.run_layout(starts, values.size))
    assert got.tolist() == [1e16 + 2.0, 1.0, 5.0]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    lengths=st.lists(st.integers(1, 3 * summation.SHORT_RUN + 140), min_size=0, max_size=40),
    seed=st.integers(0, 2**32 - 1),
    special=st.sampled_from(["none", "signed_zeros", "nan_inf", "cancelling"]),
)
def test_add_runs_gives_the_bits_of_numpy_reduceat(lengths, seed, special):
    """Any runs (short, exactly ``SHORT_RUN``, long enough for numpy's pairwise blocks) and
    any values (signed zeros, NaN, ±inf, magnitudes that cancel): ``add_runs`` returns the
    very bits of ``numpy.add.reduceat``."""
    rng = np.random.default_rng(seed)
    rows = sum(lengths)
    values = rng.standard_normal(rows) * 10.0 ** rng.integers(-8, 17, rows)
    if special == "signed_zeros":
        values[rng.random(rows) < 0.5] = -0.0
        values[rng.random(rows) < 0.2] = 0.0
    elif special == "nan_inf":
        values[rng.random(rows) < 0.05] = np.nan
        values[rng.random(rows) < 0.05] = np.inf
        values[rng.random(rows) < 0.05] = -np.inf
    elif special == "cancelling":
        values = np.round(values, 1) * np.where(rng.random(rows) < 0.5, 1e16, 1.0)
    starts = np.cumsum([0, *lengths[:-1]]).astype(np.int64) if lengths else np.zeros(0, dtype=np.int64)
    with np.errstate(invalid="ignore"):  # inf − inf is NaN on both sides
        got = summation.add_runs(values, summation.run_layout(starts, rows))
        expected = np.add.reduceat(values, starts) if lengths else np.zeros(0)
    assert np.array_equal(got.view(np.uint64), expected.view(np.uint64))
