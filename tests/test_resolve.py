"""transforms.resolve: a raw day resolved once — the shared tables (prices, FX,
instruments) checked and valued once, each partition's positions, collateral and
accounts checked against them and encoded (SPEC §2–§3), and the day's counts combined.

Given tiny inline books (tests/books.py: ten instruments, five FX rows, USD implied),
expect the counts, quarantine reasons, codes and usable rows stated with each test.
"""

from __future__ import annotations

import dataclasses

import polars as pl
from polars.testing import assert_frame_equal

from books import book
from transforms.resolve import day_counts, resolve_day, resolve_shared


def counts_of(frame: pl.DataFrame) -> dict[str, tuple[int, int, int]]:
    return {r["table"]: (r["read"], r["used"], r["quarantined"]) for r in frame.to_dicts()}


def test_shared_tables_resolved_once():
    # Given the default market with EUR at -1.25 (not a rate) and no price for ETH-0328.
    inputs = book(fx_rates={"EUR": -1.25}, prices={"ETH-0328": None})
    shared = resolve_shared(inputs)
    # Expect: fx 5 rows read, 4 used, 1 quarantined (EUR invalid_value); prices 9 read, 9 used;
    # instruments 10 read, 10 used; the methodology tables counted as read = used.
    counts = counts_of(shared.counts)
    assert counts["fx_rates"] == (5, 4, 1)
    assert counts["prices"] == (9, 9, 0)
    assert counts["instruments"] == (10, 10, 0)
    assert counts["scenarios"] == (8, 8, 0)
    assert shared.quarantine.select("source_table", "reason").rows() == [("fx_rates", "invalid_value")]
    # Usable FX: the 4 valid rows plus USD at 1.0.
    assert sorted(shared.fx["currency"].to_list()) == ["BTC", "ETH", "MEME", "USD", "USDC"]
    # Instrument codes rank the ids: code i is the i-th id in sorted order.
    assert shared.instrument_ids.to_list() == sorted(shared.instrument_ids.to_list())
    assert shared.instrument_ids.len() == 10
    # ETH-0328 has no price: held with missing_price, so it is not valued.
    held = dict(shared.market.select("instrument_id", "hold_reason").iter_rows())
    assert held["ETH-0328"] == "missing_price" and held["BTC-PERP"] is None
    assert shared.instrument_values.height == 9
    assert shared.scenario_ids == list(range(1, 9))


def test_partition_rows_checked_against_the_shared_tables_and_encoded():
    # Given A: BTC-PERP 1 and NOPE 1 (no such instrument), USDC 100; B: BTC 2, XYZ 5 (no FX).
    inputs = book(
        [("A", "BTC-PERP", 1.0), ("A", "NOPE", 1.0), ("B", "BTC", 2.0)],
        collateral=[("A", "USDC", 100.0), ("B", "XYZ", 5.0)],
    )
    resolved = resolve_day(inputs, resolve_shared(inputs))
    # Expect: positions 3 read, 2 used, 1 quarantined (unknown_instrument); collateral 2, 1, 1
    # (missing_fx); accounts 2, 2, 0.
    assert counts_of(resolved.counts) == {"positions": (3, 2, 1), "collateral": (2, 1, 1), "accounts": (2, 2, 0)}
    assert sorted(resolved.quarantine.select("source_table", "reason").rows()) == [
        ("collateral", "missing_fx"), ("positions", "unknown_instrument")]
    # Account codes: A → 0, B → 1; the usable positions carry codes, not ids.
    assert resolved.account_ids.to_list() == ["A", "B"]
    codes = resolved.shared.instrument_ids.to_list()
    assert sorted(resolved.positions.rows()) == [(0, codes.index("BTC-PERP"), 1.0), (1, codes.index("BTC"), 2.0)]
    assert resolved.collateral.rows() == [(0, "USDC", 100.0)]


def test_day_counts_sum_the_partitions_and_count_the_shared_tables_once():
    # Given the same day split by hand into {A} and {B}.
    inputs = book(
        [("A", "BTC-PERP", 1.0), ("A", "NOPE", 1.0), ("B", "BTC", 2.0)],
        collateral=[("A", "USDC", 100.0), ("B", "XYZ", 5.0)],
        fx_rates={"EUR": -1.25},
    )
    shared = resolve_shared(inputs)

    def only(account: str):
        keep = pl.col("account_id") == account
        return dataclasses.replace(inputs, **{t: getattr(inputs, t).filter(keep)
                                              for t in ("positions", "collateral", "accounts")})

    parts = [resolve_day(only(a), shared).counts for a in ("A", "B")]
    whole = resolve_day(inputs, shared).counts
    # Expect: positions (2+1, 1+1, 1+0), collateral (1+1, 1+0, 0+1), fx_rates (5, 4, 1) once —
    # the same as the whole day resolved as one partition.
    counts = counts_of(day_counts(shared, parts))
    assert counts["positions"] == (3, 2, 1) and counts["collateral"] == (2, 1, 1) and counts["fx_rates"] == (5, 4, 1)
    assert_frame_equal(day_counts(shared, parts), day_counts(shared, [whole]))
