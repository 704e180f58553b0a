"""The quarantine guard (SPEC §3): given / expect for the pure function, then the run.

Book A quarantines exactly 2 of its 200 position rows (1 %, which does not exceed the
default limit).  A negative BTC-PERP price (one bad feed value) quarantines 5 more.
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import polars as pl
import pytest

from conftest import margin_cli
from flows.eod import RunFailed, run_end_of_day
from transforms.quarantine_guard import quarantine_culprits, quarantine_guard

AS_OF = dt.date(2025, 3, 14)
BOOK = "book_a_12_accounts"


def quarantined(*rows: tuple[str, str, str | None]) -> pl.LazyFrame:
    """Quarantine rows from (source_table, reason, instrument_id)."""
    return pl.LazyFrame(
        {
            "source_table": [r[0] for r in rows],
            "row_json": [json.dumps({"account_id": "A1", "instrument_id": r[2], "quantity": 1.0}) for r in rows],
            "reason": [r[1] for r in rows],
        }
    )


INSTRUMENTS = pl.LazyFrame(
    {
        "instrument_id": ["BTC-PERP", "ETH-PERP", "EURX-FUT", "DOGE-PERP", "BTC-PERP"],
        "currency": ["USD", "USD", "EUR", "USDT", "JPY"],  # a second BTC-PERP row: the first counts
        "underlying": ["BTC", "ETH", "EURX", "DOGE", "XXX"],
    }
)


def test_culprits_are_the_instrument_its_currency_or_its_underlying():
    rows = quarantined(
        *[("positions", "missing_price", "BTC-PERP")] * 3,
        ("positions", "missing_price", "ETH-PERP"),
        *[("positions", "missing_fx", "EURX-FUT")] * 2,
        ("positions", "missing_index", "DOGE-PERP"),
        ("positions", "invalid_value", None),
        ("prices", "invalid_price", "BTC-PERP"),  # not a position row: not counted
    )
    got = quarantine_culprits(rows, INSTRUMENTS).collect()
    expected = pl.DataFrame(
        {
            "reason": ["missing_price", "missing_fx", "invalid_value", "missing_index", "missing_price"],
            "culprit": ["BTC-PERP", "EUR", "(no instrument_id)", "DOGE", "ETH-PERP"],
            "rows": [3, 2, 1, 1, 1],
        }
    )
    assert got.equals(expected), got


def test_guard_trips_only_strictly_above_the_limit_and_says_why():
    culprits = quarantine_culprits(
        quarantined(*[("positions", "missing_price", "BTC-PERP")] * 3, ("positions", "missing_fx", "EURX-FUT")),
        INSTRUMENTS,
    )
    assert quarantine_guard(400, 4, 0.01, culprits) is None  # 4 / 400 = 1 %: not above 1 %
    assert quarantine_guard(0, 0, 0.01, culprits) is None  # no positions at all
    assert quarantine_guard(399, 4, 1.0, culprits) is None  # 1 turns the guard off
    # 4 / 399 = 1.0025 %: shown with the digits that tell it from the limit
    assert quarantine_guard(399, 4, 0.01, culprits) == (
        "quarantine guard: 1.003 % of position rows quarantined (limit 1 %): "
        "missing_price 3 (BTC-PERP 3), missing_fx 1 (EUR 1); nothing published"
    )
    # 2,443 / 19,544 = 12.5 %
    big = pl.DataFrame({"reason": ["missing_price"], "culprit": ["BTC-PERP"], "rows": [2443]})
    assert quarantine_guard(19_544, 2_443, 0.01, big) == (
        "quarantine guard: 12.5 % of position rows quarantined (limit 1 %): missing_price 2,443 (BTC-PERP 2,443); "
        "nothing published"
    )
    # at most three reasons, three culprits each, and how many more
    many = pl.DataFrame({"reason": ["missing_price"] * 5 + ["missing_vol", "unknown_instrument", "missing_fx"],
                         "culprit": list("ABCDE") + ["V", "U", "F"], "rows": [9, 8, 7, 6, 5, 4, 3, 2]})
    assert quarantine_guard(100, 44, 0.01, many).endswith(
        ": missing_price 35 (A 9, B 8, C 7, 2 more), missing_vol 4 (V 4), unknown_instrument 3 (U 3); nothing published"
    )


def published(db) -> tuple[list, list]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.sql("SELECT run_id, account_id, im FROM account_margin ORDER BY ALL").fetchall()
        runs = con.sql("SELECT status, error, row_counts FROM runs ORDER BY started_at").fetchall()
    finally:
        con.close()
    return rows, runs


def negative_btc_perp(inputs) -> None:
    path = inputs / f"date={AS_OF}" / "prices.parquet"
    prices = pl.read_parquet(path)
    prices.with_columns(
        pl.when(pl.col("instrument_id") == "BTC-PERP").then(-60_000.0).otherwise(pl.col("price")).alias("price")
    ).write_parquet(path)


def test_one_bad_price_fails_the_run_and_leaves_the_date_as_it_was(example_inputs, tmp_path):
    inputs = example_inputs(BOOK)
    db = tmp_path / "warehouse.duckdb"
    run_end_of_day(AS_OF, inputs, db, use_tasks=False)  # 2 of 200 quarantined: 1 %, published
    before, _ = published(db)
    negative_btc_perp(inputs)
    with pytest.raises(RunFailed) as failure:
        run_end_of_day(AS_OF, inputs, db, use_tasks=False)
    assert str(failure.value) == (
        "quarantine guard: 3.5 % of position rows quarantined (limit 1 %): missing_price 5 (BTC-PERP 5), "
        "expired_instrument 1 (BTC-20250312 1), unknown_instrument 1 (DOGE-PERP 1); nothing published"
    )
    after, runs = published(db)
    assert after == before  # nothing of the date published or replaced
    status, error, row_counts = runs[-1]
    assert status == "failed" and error == f"check: {failure.value}"
    assert json.loads(row_counts)["positions"] == {"read": 200, "used": 193, "quarantined": 7}

    # The option wins over the policy; the policy key over the default; --strict over both.
    assert run_end_of_day(AS_OF, inputs, db, use_tasks=False, max_quarantined_share=0.05)["status"] == "succeeded"
    policy = inputs / "reference" / "policy.toml"
    policy.write_text(policy.read_text() + "max_quarantined_position_share = 0.05\n")
    assert run_end_of_day(AS_OF, inputs, db, use_tasks=False)["status"] == "succeeded"
    with pytest.raises(RunFailed, match="quarantine guard: 3.5 % .* \\(limit 2 %\\)"):
        run_end_of_day(AS_OF, inputs, db, use_tasks=False, max_quarantined_share=0.02)
    with pytest.raises(RunFailed, match="^--strict: 8 rows quarantined"):
        run_end_of_day(AS_OF, inputs, db, strict=True, use_tasks=False, max_quarantined_share=1.0)


def test_margin_run_reports_the_guard_in_one_line(example_inputs, tmp_path):
    inputs = example_inputs(BOOK)
    negative_btc_perp(inputs)
    db = tmp_path / "warehouse.duckdb"
    args = ("run", "--date", str(AS_OF), "--inputs", str(inputs), "--db", str(db), "--no-summary")
    result = margin_cli(*args, env={"MARGIN_ORCHESTRATION": "none", "MARGIN_QUIET": "1"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "margin: error: quarantine guard: 3.5 % of position rows quarantined (limit 1 %): missing_price 5 "
        "(BTC-PERP 5), expired_instrument 1 (BTC-20250312 1), unknown_instrument 1 (DOGE-PERP 1); nothing published"
    ]
    for bad in ("1.5", "-0.1", "nan"):
        refused = margin_cli(*args, "--max-quarantined-share", bad, env={"MARGIN_ORCHESTRATION": "none"})
        assert refused.returncode == 1 and refused.stderr.strip().splitlines() == [
            f"margin: error: --max-quarantined-share {float(bad)!r} must be a number in [0, 1]"], refused.stderr
