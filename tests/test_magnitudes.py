"""No NaN or infinity is ever published (SPEC §3 magnitude bounds, §6 margin_ratio).

Each case is a value the issue saw published as ``inf`` / NaN, or that failed a whole
run on a bare identity message; now the row is quarantined with its reason, the rest
of the book is margined, and every published float is finite.
"""

from __future__ import annotations

import math

import polars as pl
import pytest

from test_bad_inputs import AS_OF, book, edit, margin, new_reasons, positions_on, read, set_where  # noqa: F401
from transforms.account_health import margin_ratio
from transforms.identities import non_finite_values


def add_positions(inputs, account_id: str, instrument_id: str, *quantities: float) -> None:
    edit(inputs, "positions", lambda f: pl.concat([f, pl.DataFrame(
        {"account_id": [account_id] * len(quantities), "instrument_id": [instrument_id] * len(quantities),
         "quantity": list(quantities), "source": ["whale"] * len(quantities)}, schema=f.schema)]))


def assert_all_finite(results) -> None:
    assert non_finite_values(results.tables) == []


@pytest.mark.parametrize("quantity", [1e308, -1e308, 1.0000001e12, -5e15])
def test_quantity_beyond_1e12_is_invalid(book, quantity):
    add_positions(book, "ACC0008", "BTC-PERP", quantity)
    results = margin(book)
    assert new_reasons(results) == {("positions", "invalid_value"): 1}
    assert_all_finite(results)


def test_quantities_of_pm_1e308_in_one_account_publish_nothing_infinite(book):
    """The issue's case: +1e308 and -1e308 in one account made gross_im = inf with status ok."""
    add_positions(book, "ACC0008", "BTC-PERP", 1e308, -1e308)
    results = margin(book)
    assert new_reasons(results) == {("positions", "invalid_value"): 2}
    assert_all_finite(results)


def test_quantity_of_1e12_still_runs_and_scales(book):
    add_positions(book, "ACC0008", "BTC-PERP", 1e12)
    results = margin(book)
    assert new_reasons(results) == {}
    assert_all_finite(results)
    row = results.tables["position_margin"].filter(
        (pl.col("account_id") == "ACC0008") & (pl.col("instrument_id") == "BTC-PERP")).row(0, named=True)
    price = read(book, "prices").filter(pl.col("instrument_id") == "BTC-PERP")["price"][0]
    assert row["gross_im"] == pytest.approx(row["gross_qty"] * price * 0.10, rel=1e-9)  # im_rate 0.10


@pytest.mark.parametrize("price", [5e-324, 1e-13, 1e308, 2e12])
def test_index_price_outside_bounds_is_invalid(book, price):
    """An index price of 5e-324 published NaN gamma; 1e308 failed the run on an identity."""
    edit(book, "prices", set_where("price", price, instrument_id="BTC"))
    results = margin(book)
    assert new_reasons(results)[("prices", "invalid_value")] == 1
    btc = read(book, "instruments").filter(pl.col("underlying") == "BTC")["instrument_id"].to_list()
    held = positions_on(book, *btc)
    assert new_reasons(results)[("positions", "missing_index")] + new_reasons(results)[
        ("positions", "missing_price")] >= held - 2  # the book's own 2 quarantined rows may be on BTC
    assert_all_finite(results)


@pytest.mark.parametrize("column,value", [("multiplier", 1e13), ("multiplier", 1e-13), ("strike", 1e13),
                                          ("strike", 1e-300)])
def test_instrument_magnitudes_outside_bounds_are_invalid(book, column, value):
    option = read(book, "instruments").filter(pl.col("kind") == "option")["instrument_id"][0]
    edit(book, "instruments", set_where(column, value, instrument_id=option))
    results = margin(book)
    assert new_reasons(results).get(("instruments", "invalid_value")) == 1
    assert_all_finite(results)


@pytest.mark.parametrize("rate", [1e-13, 1e13])
def test_fx_rate_outside_bounds_is_invalid(book, rate):
    currency = read(book, "fx_rates").filter(pl.col("currency") != "USD")["currency"][0]
    edit(book, "fx_rates", set_where("usd_rate", rate, currency=currency))
    results = margin(book)
    assert new_reasons(results)[("fx_rates", "invalid_value")] == 1
    assert_all_finite(results)


@pytest.mark.parametrize("amount", [1e13, -1e300])
def test_collateral_amount_beyond_1e12_is_invalid(book, amount):
    edit(book, "collateral", lambda f: f.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(amount).otherwise(pl.col("amount")).alias("amount")))
    results = margin(book)
    assert new_reasons(results) == {("collateral", "invalid_value"): 1}
    assert_all_finite(results)


@pytest.mark.parametrize("vol", [5e-5, 10.5, 1e300])
def test_implied_vol_outside_bounds_makes_positions_missing_vol(book, vol):
    prices = read(book, "prices").join(read(book, "instruments").filter(pl.col("kind") == "option"),
                                       on="instrument_id")
    held = read(book, "positions")["instrument_id"].value_counts()
    option = prices.join(held, on="instrument_id").sort("count", "instrument_id", descending=[True, False])[
        "instrument_id"][0]
    edit(book, "prices", set_where("implied_vol", vol, instrument_id=option))
    results = margin(book)
    assert new_reasons(results) == {("positions", "missing_vol"): positions_on(book, option)}
    assert_all_finite(results)


def test_implied_vol_at_the_bounds_is_used(book):
    option = read(book, "instruments").filter(pl.col("kind") == "option")["instrument_id"][0]
    for vol in (1e-4, 10.0):
        edit(book, "prices", set_where("implied_vol", vol, instrument_id=option))
        results = margin(book)
        assert new_reasons(results) == {}
        assert_all_finite(results)


BLANKS = ("", "   ", "\t")


def test_empty_and_blank_ids_are_null_keys(book):
    """SPEC §3: an empty or blank key is null: invalid_value, and no account for a blank id."""
    for index, blank in enumerate(BLANKS):
        edit(book, "positions", lambda f, i=index, b=blank: f.with_columns(
            pl.when(pl.int_range(pl.len()) == i).then(pl.lit(b)).otherwise(pl.col("account_id")).alias("account_id")))
    edit(book, "positions", lambda f: f.with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(pl.lit(" ")).otherwise(pl.col("instrument_id")).alias("instrument_id")))
    edit(book, "collateral", lambda f: f.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("")).otherwise(pl.col("asset")).alias("asset")))
    edit(book, "fx_rates", set_where("currency", "  ", currency="MEME"))
    edit(book, "accounts", lambda f: pl.concat([f, f.head(1).with_columns(pl.lit(" ").alias("account_id"))]))
    results = compute(book)
    reasons = new_reasons(results)
    assert reasons[("positions", "invalid_value")] == 4
    assert reasons[("collateral", "invalid_value")] == 1
    assert reasons[("fx_rates", "invalid_value")] == 1
    assert reasons[("accounts", "invalid_value")] == 1
    ids = results.tables["account_margin"]["account_id"].to_list()
    assert not [i for i in ids if i is None or not i.strip()], ids  # a blank id makes no account


def test_two_blank_currency_rows_are_invalid_not_duplicates(book):
    edit(book, "fx_rates", lambda f: pl.concat([f, pl.DataFrame({"currency": ["", ""], "usd_rate": [1.0, 2.0]},
                                                                schema=f.schema)]))
    assert new_reasons(margin(book)) == {("fx_rates", "invalid_value"): 2}


def compute(inputs):
    from flows.loading import load_inputs
    from transforms.identities import identity_violations
    from transforms.pipeline import compute_margin

    results = compute_margin(load_inputs(inputs, AS_OF).margin_inputs)
    assert identity_violations(results.tables, results.counts) == []
    return results


def test_margin_ratio_is_null_when_not_finite():
    frame = pl.DataFrame({"equity": [5e-324, 100.0, 100.0, 0.0, -5.0, 1e-300],
                          "mm": [1e6, 25.0, 0.0, 10.0, 10.0, 1e300]})
    got = frame.select(margin_ratio(pl.col("equity"), pl.col("mm")).alias("ratio"))["ratio"].to_list()
    # 1e6 / 5e-324 = inf → null; 25 / 100 = 0.25; 0 / 100 = 0; equity ≤ 0 → null; 1e300/1e-300 = inf → null
    assert got == [None, 0.25, 0.0, None, None, None]


def test_non_finite_values_names_table_and_column():
    tables = {
        "account_margin": pl.DataFrame({"im": [1.0, math.inf], "margin_ratio": [None, 0.5], "status": ["ok", "ok"]}),
        "underlying_risk": pl.DataFrame({"scenario_losses": [[1.0, math.nan], [2.0, 3.0]]}),
    }
    assert non_finite_values(tables) == [
        "account_margin.im: 1 NaN or infinite values", "underlying_risk.scenario_losses: 1 NaN or infinite values"]
