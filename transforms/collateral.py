"""Collateral valuation with FX and marginal haircut tiers (SPEC §6)."""

from __future__ import annotations

import polars as pl

from transforms import summation
from transforms.contract import REPORTING_CURRENCY


def haircut_tiers(haircuts: pl.LazyFrame) -> pl.LazyFrame:
    """One row per asset × tier with ``tier_start_usd``, ``tier_end_usd`` (null = open) and ``haircut``."""
    return haircuts.sort("asset", "tier_start_usd").with_columns(
        pl.col("tier_start_usd").shift(-1).over("asset", order_by="tier_start_usd").alias("tier_end_usd")
    )


def collateral_balances(collateral: pl.LazyFrame, book_key: str = "account_id") -> pl.LazyFrame:
    """One row per book × asset: ``amount`` = Σ rows (a zero sum keeps its row)."""
    return summation.ordered_sums(
        collateral.select(book_key, "asset", "amount"), [book_key, "asset"], {"amount": "amount"},
        order_by=["amount"],
    )


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
    side_by_side, depth = tiers_side_by_side(haircuts)
    return (
        valued.join(side_by_side, on="asset", how="left")
        .with_columns(eligible_asset().alias("eligible"), tiered_haircut(pl.col("value_usd"), depth).alias("haircut_usd"))
        .with_columns((pl.col("value_usd") - pl.col("haircut_usd")).alias("value_after_haircut_usd"))
        .select(book_key, "asset", "amount", "usd_rate", "value_usd", "haircut_usd", "value_after_haircut_usd", "eligible")
    )


def tiers_side_by_side(haircuts: pl.LazyFrame) -> tuple[pl.LazyFrame, int]:
    """One row per asset with tier j's ``tier_start_usd|j``, ``tier_end_usd|j``, ``haircut|j``
    side by side (and ``has_tiers``), and the number of tiers of the deepest asset.

    Each balance then takes its haircut in one left join and a horizontal sum
    (``tiered_haircut``), instead of one row per balance × tier aggregated back
    (faster: docs/performance.md, "Engine choices").  The depth comes from the (small, trusted)
    methodology table.
    """
    tiers = haircut_tiers(haircuts).with_columns(pl.int_range(pl.len()).over("asset").alias("tier"))
    depth = tiers.select(pl.len().over("asset").max()).collect().item() or 0
    in_tier = [pl.col("tier") == j for j in range(depth)]
    side_by_side = tiers.group_by("asset").agg(
        *[
            pl.col(column).filter(in_tier[j]).first().alias(f"{column}|{j}")
            for j in range(depth)
            for column in ("tier_start_usd", "tier_end_usd", "haircut")
        ],
        (pl.len() > 0).alias("has_tiers"),
    )
    return side_by_side, depth


def eligible_asset() -> pl.Expr:
    """An asset with haircut tiers, or USD (eligible at 0 % without a row)."""
    return pl.col("has_tiers").fill_null(False) | (pl.col("asset") == REPORTING_CURRENCY)


def tiered_haircut(value: pl.Expr, depth: int) -> pl.Expr:
    """``haircut_usd`` of a USD ``value`` on rows joined to ``tiers_side_by_side``: marginal by
    tier, ``Σ_i haircut_i × clamp(value − start_i, 0, start_{i+1} − start_i)`` (last tier open
    ended) for ``value > 0``; 0 for ``value ≤ 0``; an asset without tiers is haircut 100 %
    of a positive value, USD without a row 0 % (SPEC §6).  Stress tests (SPEC §11) apply it
    to stressed values."""

    def tier_haircut(j: int) -> pl.Expr:
        start, end = pl.col(f"tier_start_usd|{j}"), pl.col(f"tier_end_usd|{j}")
        tier_slice = (value - start).clip(lower_bound=0.0)
        return pl.col(f"haircut|{j}") * pl.when(end.is_null()).then(tier_slice).otherwise(
            pl.min_horizontal(tier_slice, end - start)
        )

    by_tiers = pl.sum_horizontal([tier_haircut(j) for j in range(depth)]) if depth else pl.lit(0.0)
    has_tiers = pl.col("has_tiers").fill_null(False)
    return (
        pl.when(value <= 0)
        .then(0.0)
        .when(has_tiers)
        .then(by_tiers)
        .when(pl.col("asset") == REPORTING_CURRENCY)
        .then(0.0)
        .otherwise(value)
    )


def collateral_value(valuation: pl.LazyFrame, book_key: str = "account_id") -> pl.LazyFrame:
    """One row per book: ``collateral_value_usd = Σ value_after_haircut_usd`` and ``haircut_usd``."""
    return summation.ordered_sums(
        valuation, [book_key],
        {"collateral_value_usd": "value_after_haircut_usd", "haircut_usd": "haircut_usd"},
        order_by=["asset"],
    )


def haircut_by_tier(valuation: pl.LazyFrame, haircuts: pl.LazyFrame, book_key: str = "account_id") -> pl.LazyFrame:
    """One row per book × asset × haircut tier its value reaches: ``tier_start_usd``,
    ``tier_end_usd`` (null = open), ``haircut`` (fraction) and ``haircut_usd`` =
    ``haircut × clamp(value_usd − start, 0, end − start)``, USD ≥ 0 (SPEC §6, §13).

    A tier is reached when ``value_usd > tier_start_usd``; a balance with ``value_usd ≤ 0``
    or an asset without haircut rows (ineligible: 100 % of its value) has no tier rows.
    Over an eligible asset's tiers the pieces sum to its ``haircut_usd``.  Ordered by
    book, asset, tier start.
    """
    tiers = haircut_tiers(haircuts)
    start, end = pl.col("tier_start_usd"), pl.col("tier_end_usd")
    tier_slice = (pl.col("value_usd") - start).clip(lower_bound=0.0)
    piece = pl.col("haircut") * pl.when(end.is_null()).then(tier_slice).otherwise(pl.min_horizontal(tier_slice, end - start))
    return (
        valuation.select(book_key, "asset", "value_usd")
        .join(tiers, on="asset", how="inner")
        .filter((pl.col("value_usd") > 0) & (pl.col("value_usd") > start))
        .select(book_key, "asset", "tier_start_usd", "tier_end_usd", "haircut", piece.alias("haircut_usd"))
        .sort(book_key, "asset", "tier_start_usd")
    )
