"""``margin whatif`` (SPEC §12): the "after" figures are what a full ``margin run`` publishes
with the trade rows appended to positions and their cash to collateral; bad rows are
reported with their §3 reason; only the named accounts and their groups are margined."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import polars as pl
import pytest

from conftest import margin_cli
from flows.eod import run_end_of_day
from flows.whatif import ACCOUNT_FIGURES, GROUP_FIGURES, what_if

BOOK = "book_a_12_accounts"
AS_OF = dt.date(2025, 3, 14)
OPTION = "BTC-20250321-54050-C"
#: ACC0008 sells 2 perpetuals (no cash); ACC0002 (group GRP01 with ACC0005) buys 1.5 calls at
#: 1,500 (cash −1.5 × 1 × 1,500 × 1 = −2,250 USD) and 0.25 BTC spot at the mark; then three bad rows.
TRADES = f"""account_id,instrument_id,quantity,price
ACC0008,BTC-PERP,-2,
ACC0002,{OPTION},1.5,1500
ACC0002,BTC,0.25,
ACC0007,NOPE,1,
ACC0007,BTC,abc,
ACC0011,BTC,0.5,-3
"""


def published_accounts(db) -> tuple[pl.DataFrame, pl.DataFrame]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return (con.sql("SELECT * FROM account_margin ORDER BY account_id").pl(),
                con.sql("SELECT * FROM group_margin ORDER BY margin_group").pl())
    finally:
        con.close()


@pytest.fixture
def book(example_inputs, tmp_path):
    inputs = example_inputs(BOOK)
    trades = tmp_path / "trades.csv"
    trades.write_text(TRADES)
    return inputs, trades


def assert_figures(side: str, whatif_frame: pl.DataFrame, published: pl.DataFrame, key: str, figures) -> None:
    joined = whatif_frame.join(published, on=key, how="left")
    assert joined.height == whatif_frame.height
    for figure in figures:
        got, want = joined[f"{figure}_{side}"], joined[figure]
        assert got.to_list() == want.to_list(), figure  # bit for bit: sums in an order fixed by the data


def test_after_equals_a_full_run_with_the_trades_appended(book, tmp_path):
    inputs, trades = book
    result = what_if(inputs, AS_OF, trades)
    # Only the named accounts and the other member of ACC0002's group were margined.
    assert result.accounts_margined == 5  # ACC0002, ACC0005 (GRP01), ACC0007, ACC0008, ACC0011
    assert result.accounts["account_id"].to_list() == ["ACC0002", "ACC0007", "ACC0008", "ACC0011"]
    assert result.groups["margin_group"].to_list() == ["GRP01"]
    assert result.applied == 3
    assert result.rejected.select("row", "reason").rows() == [
        (4, "unknown_instrument"), (5, "invalid_value"), (6, "invalid_price")]

    # "before": the day as `margin run` publishes it
    before_db = tmp_path / "before.duckdb"
    run_end_of_day(AS_OF, inputs, before_db, use_tasks=False)
    accounts, groups = published_accounts(before_db)
    assert_figures("before", result.accounts, accounts, "account_id", ACCOUNT_FIGURES)
    assert_figures("before", result.groups, groups, "margin_group", GROUP_FIGURES)

    # "after": the trade rows appended to positions, their cash to collateral, a full run
    day = inputs / f"date={AS_OF}"
    positions = pl.read_parquet(day / "positions.parquet")
    appended = pl.DataFrame({
        "account_id": ["ACC0008", "ACC0002", "ACC0002"], "instrument_id": ["BTC-PERP", OPTION, "BTC"],
        "quantity": [-2.0, 1.5, 0.25], "source": ["whatif"] * 3,
    })
    pl.concat([positions, appended.select(positions.columns)], how="vertical_relaxed").write_parquet(
        day / "positions.parquet")
    mark = pl.read_parquet(day / "prices.parquet").filter(pl.col("instrument_id") == "BTC")["price"][0]
    collateral = pl.read_parquet(day / "collateral.parquet")
    cash = pl.DataFrame({"account_id": ["ACC0002", "ACC0002"], "asset": ["USD", "USD"],
                         "amount": [-1.5 * 1.0 * 1500.0 * 1.0, -0.25 * 1.0 * mark * 1.0]})
    pl.concat([collateral, cash.select(collateral.columns)], how="vertical_relaxed").write_parquet(
        day / "collateral.parquet")
    after_db = tmp_path / "after.duckdb"
    run_end_of_day(AS_OF, inputs, after_db, use_tasks=False)
    accounts, groups = published_accounts(after_db)
    assert_figures("after", result.accounts, accounts, "account_id", ACCOUNT_FIGURES)
    assert_figures("after", result.groups, groups, "margin_group", GROUP_FIGURES)
    # the trades changed something: ACC0008's rule margin, GRP01's book
    acc8 = result.accounts.filter(pl.col("account_id") == "ACC0008").row(0, named=True)
    assert acc8["net_im_change"] > 0 and acc8["equity_change"] == 0.0  # a perpetual moves no cash
    assert result.groups["group_im_change"][0] != 0.0


def test_whatif_command_json_writes_nothing(book, tmp_path):
    inputs, trades = book
    before = sorted(p.relative_to(inputs) for p in inputs.rglob("*"))
    result = margin_cli("whatif", "--date", AS_OF.isoformat(), "--trades", str(trades), "--inputs", str(inputs),
                        "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [a["account_id"] for a in document["accounts"]] == ["ACC0002", "ACC0007", "ACC0008", "ACC0011"]
    assert set(document["accounts"][0]["after"]) == set(ACCOUNT_FIGURES)
    assert [g["margin_group"] for g in document["groups"]] == ["GRP01"]
    assert [r["reason"] for r in document["rejected"]] == ["unknown_instrument", "invalid_value", "invalid_price"]
    assert sorted(p.relative_to(inputs) for p in inputs.rglob("*")) == before  # nothing written
    table = margin_cli("whatif", "--date", AS_OF.isoformat(), "--trades", str(trades), "--inputs", str(inputs))
    assert table.returncode == 0 and "portfolio_im" in table.stdout and "invalid_price" in table.stdout


def test_whatif_missing_column_is_one_line(book, tmp_path):
    inputs, _ = book
    bad = tmp_path / "bad.csv"
    bad.write_text("account_id,instrument,quantity\nACC0008,BTC-PERP,1\n")
    result = margin_cli("whatif", "--date", AS_OF.isoformat(), "--trades", str(bad), "--inputs", str(inputs))
    assert result.returncode == 1
    # the command's first line says what it does; then one error line names the column
    errors = [line for line in result.stderr.splitlines() if line.startswith("margin: error:")]
    assert len(errors) == 1 and "instrument_id" in errors[0] and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0]
