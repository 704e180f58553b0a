"""Netting of positions across sources (SPEC §4)."""

from __future__ import annotations

import polars as pl

from transforms.summation import ordered_sums

#: ``|net_qty| ≤ NET_ZERO_TOLERANCE × gross_qty`` is rounding residue, set to exactly 0.
NET_ZERO_TOLERANCE = 1e-9


def net_positions(positions: pl.LazyFrame, book_key: str = "account_id") -> pl.LazyFrame:
    """One row per book × instrument: ``net_qty``, ``gross_qty``, ``source_count``.

    ``book_key`` is ``account_id`` for accounts and ``margin_group`` for a group's
    book (netted across its members, residue judged against the group's own gross).
    A net-zero row is kept for audit.  Also carries ``short_qty`` (Σ of the short
    rows' |quantity|), which ``gross_im`` needs for options.

    Rows come out in (book, instrument) order; each sum adds the rows of one book ×
    instrument in ascending quantity (SPEC §8: the same figures whatever the threads or
    the row order of the file).
    """
    quantity = pl.col("quantity")
    netted = ordered_sums(
        positions.select(book_key, "instrument_id", "quantity"),
        [book_key, "instrument_id"],
        {
            "net_qty": quantity,
            "gross_qty": quantity.abs(),
            "source_count": pl.lit(1, dtype=pl.Int64),
            "short_qty": (-quantity).clip(lower_bound=0.0),
        },
        order_by=["quantity"],
    )
    return netted.with_columns(
        pl.when(pl.col("net_qty").abs() <= NET_ZERO_TOLERANCE * pl.col("gross_qty"))
        .then(0.0)
        .otherwise(pl.col("net_qty"))
        .alias("net_qty")
    )
