"""Margin groups: accounts margined together as one book (SPEC §7)."""

from __future__ import annotations

import polars as pl

from transforms import summation
from transforms.account_health import margin_status


def group_membership(accounts: pl.LazyFrame) -> pl.LazyFrame:
    """One row per member account: ``account_id``, ``margin_group`` (valid accounts rows naming a group)."""
    return accounts.filter(pl.col("margin_group").is_not_null()).select("account_id", "margin_group")


def group_rows(rows: pl.LazyFrame, membership: pl.LazyFrame) -> pl.LazyFrame:
    """Member rows (positions or collateral) tagged with their ``margin_group``; others dropped."""
    return rows.join(membership, on="account_id", how="inner")


def group_margin(
    membership: pl.LazyFrame,
    group_book: pl.LazyFrame,
    member_margin: pl.LazyFrame,
    maintenance_ratio: float,
) -> pl.LazyFrame:
    """One row per margin group: ``member_count``, ``sum_member_im``, ``group_im``,
    ``aggregation_benefit``, ``group_equity``, ``group_excess``, ``status``.

    ``group_book`` holds the book figures keyed by ``margin_group``: ``group_im``
    (portfolio margin of the union of the members' positions), collateral value of the
    members' collateral summed per asset before tiers, option and spot mark value and
    ``position_count``.  ``member_margin`` holds each account's effective ``im``.
    """
    members = summation.ordered_sums(
        membership.join(member_margin.select("account_id", "im"), on="account_id", how="left"),
        ["margin_group"],
        {"member_count": pl.lit(1, dtype=pl.Int64), "sum_member_im": pl.col("im").fill_null(0.0)},
        order_by=["account_id"],
    )
    group_equity = pl.col("collateral_value_usd") + pl.col("position_value_usd")
    group_mm = pl.col("group_im") * maintenance_ratio
    return (
        members.join(group_book, on="margin_group", how="left")
        .with_columns(
            pl.col("group_im", "collateral_value_usd", "position_value_usd").fill_null(0.0),
            pl.col("position_count").fill_null(0),
        )
        .with_columns(group_equity.alias("group_equity"))
        .with_columns(
            (pl.col("sum_member_im") - pl.col("group_im")).alias("aggregation_benefit"),
            (pl.col("group_equity") - pl.col("group_im")).alias("group_excess"),
            margin_status(pl.col("group_equity"), pl.col("group_im"), group_mm, pl.col("position_count")).alias(
                "status"
            ),
        )
        .select(
            "margin_group", "member_count", "sum_member_im", "group_im", "aggregation_benefit",
            "group_equity", "group_excess", "status",
        )
    )
