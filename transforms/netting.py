"""Netting of positions across sources (SPEC §4)."""

from __future__ import annotations

import polars as pl

#: ``|net_qty| ≤ NET_ZERO_TOLERANCE × gross_qty`` is rounding residue, set to exactly 0.
NET_ZERO_TOLERANCE = 1e-9


def net_positions(positions: pl.LazyFrame, book_key: str = "account_id") -> pl.LazyFrame:
    """One row per book × instrument: ``net_qty``, ``gross_qty``, ``source_count``.

    ``book_key`` is ``account_id`` for accounts and ``margin_group`` for a group's
    book (netted across its members, residue judged against the group's own gross).
    A net-zero row is kept for audit.  Also carries ``short_qty`` (Σ of the short
    rows' |quantity|), which ``gross_im`` needs for options.
    """
    quantity = pl.col("quantity")
    netted = positions.group_by(book_key, "instrument_id").agg(
        quantity.sum().alias("net_qty"),
        quantity.abs().sum().alias("gross_qty"),
        pl.len().cast(pl.Int64).alias("source_count"),
        (-quantity).clip(lower_bound=0.0).sum().alias("short_qty"),
    )
    return netted.with_columns(
        pl.when(pl.col("net_qty").abs() <= NET_ZERO_TOLERANCE * pl.col("gross_qty"))
        .then(0.0)
        .otherwise(pl.col("net_qty"))
        .alias("net_qty")
    )
