"""Netting across sources and the rounding-residue rule (SPEC §4)."""

from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal

from books import margin, row
from transforms.netting import net_positions


def netted(rows: list[tuple], book_key: str = "account_id") -> pl.DataFrame:
    given = pl.LazyFrame(rows, schema={book_key: pl.String, "instrument_id": pl.String, "quantity": pl.Float64},
                         orient="row")
    return net_positions(given, book_key).collect().sort(book_key, "instrument_id")


def test_net_gross_and_source_count_per_account_and_instrument():
    got = netted([
        ("A", "BTC-PERP", 2.0), ("A", "BTC-PERP", -0.5), ("A", "BTC-PERP", 0.0),
        ("A", "ETH-PERP", -3.0),
        ("B", "BTC-PERP", 1.0),
    ])
    expect = pl.DataFrame({
        "account_id": ["A", "A", "B"],
        "instrument_id": ["BTC-PERP", "ETH-PERP", "BTC-PERP"],
        "net_qty": [1.5, -3.0, 1.0],           # 2 − 0.5 + 0; −3; 1
        "gross_qty": [2.5, 3.0, 1.0],          # |2| + |−0.5| + |0|
        "source_count": [3, 1, 1],             # rows, a zero row included
        "short_qty": [0.5, 3.0, 0.0],          # Σ of the short rows' |quantity|
    }, schema_overrides={"source_count": pl.Int64})
    assert_frame_equal(got, expect, check_column_order=False)


def test_decimal_residue_is_set_to_exactly_zero():
    got = netted([("A", "X", 0.1), ("A", "X", 0.2), ("A", "X", -0.3)])
    # 0.1 + 0.2 − 0.3 = 5.551115123125783e-17 ≤ 1e-9 × 0.6 → exactly 0
    assert 0.1 + 0.2 - 0.3 != 0.0
    assert got["net_qty"].to_list() == [0.0] and got["gross_qty"].to_list() == [0.6000000000000001]


def test_residue_threshold_is_relative_to_gross():
    got = netted([
        ("A", "X", 1000.0), ("A", "X", -999.9999995),   # |net| ≈ 5e-7 ≤ 1e-9 × 1999.9999995 ≈ 2e-6 → 0
        ("B", "X", 1.0), ("B", "X", -0.999999),          # |net| = 1e-6 > 1e-9 × 2 → kept
    ])
    assert got["net_qty"].to_list()[0] == 0.0
    assert abs(got["net_qty"].to_list()[1] - 1e-6) < 1e-15


def test_flat_position_kept_for_audit_with_zero_risk():
    results = margin(("A", "BTC-PERP", 1.0, "x"), ("A", "BTC-PERP", -1.0, "y"))
    got = row(results, "position_margin", account_id="A", instrument_id="BTC-PERP")
    assert (got["net_qty"], got["gross_qty"], got["source_count"]) == (0.0, 2.0, 2)
    assert (got["mv_usd"], got["delta_units"], got["net_im"]) == (0.0, 0.0, 0.0)
    assert got["gross_im"] == 10020.0  # (1 + 1) × 50100 × 0.1, row by row
    risk = row(results, "underlying_risk", account_id="A", underlying="BTC")
    assert risk["scan_risk"] == 0.0 and risk["worst_scenario"] is None and risk["risk"] == 0.0
    assert row(results, "account_margin", account_id="A")["position_count"] == 0


def test_group_residue_is_judged_against_the_group_gross():
    results = margin(
        ("A", "BTC-PERP", 0.1), ("A", "BTC-PERP", 0.2), ("B", "BTC-PERP", -0.3),
        accounts=[("A", "G", "portfolio"), ("B", "G", "portfolio")],
    )
    # members keep their own nets; the group's 0.1 + 0.2 − 0.3 = 5.55e-17 ≤ 1e-9 × 0.6 is exactly 0
    assert row(results, "position_margin", account_id="A", instrument_id="BTC-PERP")["net_qty"] == 0.30000000000000004
    group = row(results, "group_margin", margin_group="G")
    assert group["group_im"] == 0.0 and group["status"] == "ok"
