"""Collateral valuation with FX and marginal haircut tiers (SPEC §6)."""

from __future__ import annotations

import polars as pl

from transforms.validation import REPORTING_CURRENCY


def haircut_tiers(haircuts: pl.LazyFrame) -> pl.LazyFrame:
    """One row per asset × tier with ``tier_start_usd``, ``tier_end_usd`` (null = open) and ``haircut``."""
    return haircuts.sort("asset", "tier_start_usd").with_columns(
        pl.col("tier_start_usd").shift(-1).over("asset", order_by="tier_start_usd").alias("tier_end_usd")
    )


def collateral_balances(collateral: pl.LazyFrame, book_key: str = "account_id") -> pl.LazyFrame:
    """One row per book × asset: ``amount`` = Σ rows (a zero sum keeps its row)."""
    return collateral.group_by(book_key, "asset").agg(pl.col("amount").sum())


def value_collateral(
    balances: pl.LazyFrame, fx: pl.LazyFrame, haircuts: pl.LazyFrame, book_key: str = "account_id"
) -> pl.LazyFrame:
    """One row per book × asset: ``usd_rate``, ``value_usd``, ``haircut_usd``,
    ``value_after_haircut_usd``, ``eligible``.

    ``haircut_usd = Σ_i haircut_i × clamp(value_usd − start_i, 0, start_{i+1} − start_i)``
    for ``value_usd > 0`` (last tier open ended); 0 for ``value_usd ≤ 0``.  An asset
    with no haircut row is ineligible: 100 % of a positive value; USD without a row is
    eligible at 0 %.
    """
    valued = balances.join(
        fx.select(pl.col("currency").alias("asset"), "usd_rate"), on="asset", how="left"
    ).with_columns((pl.col("amount") * pl.col("usd_rate")).alias("value_usd"))
    tiers = haircut_tiers(haircuts)
    tier_slice = (pl.col("value_usd") - pl.col("tier_start_usd")).clip(lower_bound=0.0)
    tier_width = pl.col("tier_end_usd") - pl.col("tier_start_usd")
    tier_haircut = pl.col("haircut") * pl.when(pl.col("tier_end_usd").is_null()).then(tier_slice).otherwise(
        pl.min_horizontal(tier_slice, tier_width)
    )
    tiered = (
        valued.filter(pl.col("value_usd") > 0)
        .join(tiers, on="asset", how="inner")
        .group_by(book_key, "asset")
        .agg(tier_haircut.sum().alias("tiered_haircut_usd"))
    )
    eligible_assets = tiers.select("asset").unique().with_columns(pl.lit(True).alias("has_tiers"))
    eligible = pl.col("has_tiers").fill_null(False) | (pl.col("asset") == REPORTING_CURRENCY)
    haircut = (
        pl.when(pl.col("value_usd") <= 0)
        .then(0.0)
        .when(pl.col("has_tiers").fill_null(False))
        .then(pl.col("tiered_haircut_usd"))
        .when(pl.col("asset") == REPORTING_CURRENCY)
        .then(0.0)
        .otherwise(pl.col("value_usd"))
    )
    return (
        valued.join(tiered, on=[book_key, "asset"], how="left")
        .join(eligible_assets, on="asset", how="left")
        .with_columns(eligible.alias("eligible"), haircut.alias("haircut_usd"))
        .with_columns((pl.col("value_usd") - pl.col("haircut_usd")).alias("value_after_haircut_usd"))
        .select(book_key, "asset", "amount", "usd_rate", "value_usd", "haircut_usd", "value_after_haircut_usd", "eligible")
    )


def collateral_value(valuation: pl.LazyFrame, book_key: str = "account_id") -> pl.LazyFrame:
    """One row per book: ``collateral_value_usd = Σ value_after_haircut_usd`` and ``haircut_usd``."""
    return valuation.group_by(book_key).agg(
        pl.col("value_after_haircut_usd").sum().alias("collateral_value_usd"),
        pl.col("haircut_usd").sum().alias("haircut_usd"),
    )
