"""Rule-based margin per position: ``gross_im`` and ``net_im`` (SPEC §5.1)."""

from __future__ import annotations

import polars as pl


def short_option_unit_margin() -> pl.Expr:
    """Margin of one short option unit before quantity, USD:
    ``multiplier × fx × max(im_rate × S − otm, short_option_min_rate × S)``,
    ``otm = max(K − S, 0)`` for a call, ``max(S − K, 0)`` for a put."""
    spot = pl.col("index_price")
    strike = pl.col("strike")
    otm = (
        pl.when(pl.col("option_type") == "C")
        .then(pl.max_horizontal(strike - spot, 0.0))
        .otherwise(pl.max_horizontal(spot - strike, 0.0))
    )
    return (
        pl.col("multiplier")
        * pl.col("fx")
        * pl.max_horizontal(pl.col("im_rate") * spot - otm, pl.col("short_option_min_rate") * spot)
    )


def linear_unit_margin() -> pl.Expr:
    """Margin of one unit of a linear instrument, USD: ``multiplier × price × fx × im_rate``."""
    return pl.col("multiplier") * pl.col("price") * pl.col("fx") * pl.col("im_rate")


def rule_margin(valued: pl.LazyFrame) -> pl.LazyFrame:
    """Adds ``net_im`` (formula on ``net_qty``) and ``gross_im`` (formula on every input
    row separately: ``gross_qty`` for linear, the short rows' ``short_qty`` for options).

    Long options cost 0; a row's |q| enters linearly, so the per-row sum is exact.
    """
    is_option = pl.col("kind") == "option"
    net_qty = pl.col("net_qty")
    return valued.with_columns(
        pl.when(is_option)
        .then((-net_qty).clip(lower_bound=0.0) * short_option_unit_margin())
        .otherwise(net_qty.abs() * linear_unit_margin())
        .alias("net_im"),
        pl.when(is_option)
        .then(pl.col("short_qty") * short_option_unit_margin())
        .otherwise(pl.col("gross_qty") * linear_unit_margin())
        .alias("gross_im"),
    )
