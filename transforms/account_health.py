"""Effective margin, equity, excess and status (SPEC §5.3, §6)."""

from __future__ import annotations

import polars as pl

MARGIN_STATUSES = ("ok", "margin_call", "liquidation", "deficit")


def effective_im() -> pl.Expr:
    """``im`` by margin mode: isolated → gross, cross → net, portfolio → portfolio;
    unknown mode (null) → the most conservative ``max(gross, net, portfolio)``."""
    mode = pl.col("margin_mode")
    return (
        pl.when(mode == "isolated")
        .then(pl.col("gross_im"))
        .when(mode == "cross")
        .then(pl.col("net_im"))
        .when(mode == "portfolio")
        .then(pl.col("portfolio_im"))
        .otherwise(pl.max_horizontal("gross_im", "net_im", "portfolio_im"))
    )


def margin_status(equity: pl.Expr, im: pl.Expr, mm: pl.Expr, position_count: pl.Expr) -> pl.Expr:
    """SPEC §6 status: with no positions and ``im = 0``, ``deficit`` if equity < 0 else
    ``ok``; otherwise ``liquidation`` if ``equity < mm`` or ``equity ≤ 0``, else
    ``margin_call`` if ``equity < im``, else ``ok``."""
    flat = (position_count == 0) & (im == 0)
    return (
        pl.when(flat & (equity < 0))
        .then(pl.lit("deficit"))
        .when(flat)
        .then(pl.lit("ok"))
        .when((equity < mm) | (equity <= 0))
        .then(pl.lit("liquidation"))
        .when(equity < im)
        .then(pl.lit("margin_call"))
        .otherwise(pl.lit("ok"))
    )


def margin_ratio(equity: pl.Expr, mm: pl.Expr) -> pl.Expr:
    """``mm / equity``; null when equity ≤ 0 or the ratio is not finite (a tiny positive
    equity), 0 when mm = 0 and equity > 0 (SPEC §6)."""
    ratio = mm / equity
    return pl.when((equity > 0) & ratio.is_finite()).then(ratio).otherwise(None)


def account_health(account_figures: pl.LazyFrame, maintenance_ratio: float) -> pl.LazyFrame:
    """One row per account: adds ``im``, ``mm``, ``equity``, ``excess``, ``margin_ratio``,
    ``status`` and ``netting_benefit`` to the per-account margin and collateral figures.

    ``equity = collateral_value_usd + position_value_usd`` (Σ mv of option and spot
    positions; futures and perpetuals settle into cash).
    """
    equity = pl.col("collateral_value_usd") + pl.col("position_value_usd")
    return (
        account_figures.with_columns(effective_im().alias("im"), equity.alias("equity"))
        .with_columns((pl.col("im") * maintenance_ratio).alias("mm"))
        .with_columns(
            (pl.col("equity") - pl.col("im")).alias("excess"),
            margin_ratio(pl.col("equity"), pl.col("mm")).alias("margin_ratio"),
            margin_status(pl.col("equity"), pl.col("im"), pl.col("mm"), pl.col("position_count")).alias("status"),
            (pl.col("gross_im") - pl.col("im")).alias("netting_benefit"),
        )
    )
