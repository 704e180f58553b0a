"""The identity checks run on every result fail on broken outputs, on both of their paths:
tables in key order (linear duplicate check, per-account sums by run and binary search)
and shuffled tables (hash group-by and join)."""

from __future__ import annotations

import polars as pl
import pytest

from books import margin
from transforms.identities import identity_violations
from transforms.pipeline import SORT_KEYS


@pytest.fixture(scope="module")
def results():
    return margin(
        ("A", "BTC-PERP", 1.0), ("A", "ETH", 5.0), ("B", "BTC", 2.0), ("C", "BTC-0328", -1.0), ("D", "ETH-PERP", 3.0),
        collateral=[("A", "USD", 50_000.0), ("A", "BTC", 20.0), ("B", "USDC", 2_000_000.0), ("D", "ETH", 4.0),
                    ("D", "USD", -100.0)],
        accounts=[("A", None, "portfolio"), ("B", None, "cross"), ("C", "G", "isolated"), ("D", "G", "portfolio")],
        # Every stress table has rows: B and the group breach (A holds BTC and USD against one perpetual).
        stress_scenarios=[("crash", "*", -0.9, 0.0), ("ladder_down_50", "*", -0.5, 0.0), ("rally", "*", 0.9, 0.0)],
    )


def shuffled(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    return {name: frame.reverse() for name, frame in tables.items()}


def with_table(tables, name, frame):
    return {**tables, name: frame}


@pytest.mark.parametrize("order", [dict, shuffled], ids=["key order", "shuffled"])
def test_a_clean_result_passes(results, order):
    assert results.tables["collateral_valuation"]["account_id"].n_unique() == 3
    assert identity_violations(order(results.tables), results.counts) == []


@pytest.mark.parametrize("order", [dict, shuffled], ids=["key order", "shuffled"])
def test_doubled_im_fails(results, order):
    accounts = results.tables["account_margin"].with_columns(pl.col("im") * 2)
    problems = identity_violations(order(with_table(results.tables, "account_margin", accounts)), results.counts)
    assert problems == ["im differs from its mode's figure for 4 accounts"]


@pytest.mark.parametrize("order", [dict, shuffled], ids=["key order", "shuffled"])
def test_collateral_value_off_fails(results, order):
    accounts = results.tables["account_margin"].with_columns(
        pl.when(pl.col("account_id") == "D").then(pl.col("collateral_value_usd") + 1.0)
        .otherwise(pl.col("collateral_value_usd")).alias("collateral_value_usd")
    )
    problems = identity_violations(order(with_table(results.tables, "account_margin", accounts)), results.counts)
    assert problems == ["collateral_value_usd != Σ value_after_haircut_usd for 1 accounts"]


@pytest.mark.parametrize("order", [dict, shuffled], ids=["key order", "shuffled"])
def test_lost_collateral_row_fails(results, order):
    collateral = results.tables["collateral_valuation"].filter(
        ~((pl.col("account_id") == "A") & (pl.col("asset") == "BTC"))
    )
    problems = identity_violations(order(with_table(results.tables, "collateral_valuation", collateral)), results.counts)
    assert problems == ["collateral_value_usd != Σ value_after_haircut_usd for 1 accounts"]


@pytest.mark.parametrize("order", [dict, shuffled], ids=["key order", "shuffled"])
def test_haircut_above_value_fails(results, order):
    collateral = results.tables["collateral_valuation"].with_columns(
        (pl.col("haircut_usd") + 1e9).alias("haircut_usd"), (pl.col("value_after_haircut_usd") - 1e9)
    )
    accounts = results.tables["account_margin"].join(
        collateral.group_by("account_id").agg(pl.col("value_after_haircut_usd").sum().alias("new")), on="account_id",
        how="left", maintain_order="left",
    ).with_columns(pl.col("new").fill_null(pl.col("collateral_value_usd")).alias("collateral_value_usd")).drop("new")
    tables = {**results.tables, "collateral_valuation": collateral, "account_margin": accounts}
    assert identity_violations(order(tables), results.counts) == ["Σ haircut_usd > Σ positive value_usd for 3 accounts"]


@pytest.mark.parametrize("table", [t for t in SORT_KEYS if t != "quarantine"])
@pytest.mark.parametrize("order", [dict, shuffled], ids=["key order", "shuffled"])
def test_duplicate_key_fails(results, table, order):
    doubled = pl.concat([results.tables[table], results.tables[table].head(1)]).sort(SORT_KEYS[table])
    problems = identity_violations(order(with_table(results.tables, table, doubled)), results.counts)
    assert f"{table}: duplicate key {SORT_KEYS[table]}" in problems


def test_counts_that_do_not_add_up_fail(results):
    counts = results.counts.with_columns(
        pl.when(pl.col("table") == "positions").then(pl.col("used") + 1).otherwise("used").alias("used")
    )
    assert identity_violations(results.tables, counts) == [
        f"positions: read {counts['read'][0]} != used {counts['used'][0]} + quarantined {counts['quarantined'][0]}"
    ]


@pytest.mark.parametrize("order", [dict, shuffled], ids=["key order", "shuffled"])
def test_worst_scenario_loss_off_fails(results, order):
    positions = results.tables["position_margin"].with_columns(
        pl.when(pl.col("account_id") == "A").then(pl.col("worst_scenario_loss") * (1 + 1e-6))
        .otherwise(pl.col("worst_scenario_loss")).alias("worst_scenario_loss")
    )
    problems = identity_violations(order(with_table(results.tables, "position_margin", positions)), results.counts)
    assert problems == ["Σ worst_scenario_loss != scan_risk for 2 account × underlying rows"]  # A's BTC and ETH


@pytest.mark.parametrize("order", [dict, shuffled], ids=["key order", "shuffled"])
def test_worst_scenario_loss_where_scan_risk_is_zero_fails(results, order):
    risk = results.tables["underlying_risk"].with_columns(
        pl.when(pl.col("account_id") == "D").then(0.0).otherwise(pl.col("scan_risk")).alias("scan_risk")
    )
    problems = identity_violations(order(with_table(results.tables, "underlying_risk", risk)), results.counts)
    assert problems == ["worst_scenario_loss not 0 where scan_risk is 0 for 1 account × underlying rows"]


def test_worst_scenario_loss_sums_in_an_order_fixed_by_the_data(results):
    from transforms.identities import worst_loss_by_underlying
    positions = results.tables["position_margin"]
    in_order = worst_loss_by_underlying(positions, in_key_order=True)
    assert in_order.equals(worst_loss_by_underlying(positions.reverse(), in_key_order=False))
    assert in_order.select("account_id", "underlying").equals(
        results.tables["underlying_risk"].select("account_id", "underlying"))
