"""The bad-input catalogue (issue 7): every way an input can be wrong, and what the run does.

Each case starts from a copy of worked book A (12 accounts, 200 position rows, date
2025-03-14) and corrupts one thing.  The outcome is one of two, never a third:

* a **structural error** (SPEC §2): ``load_inputs`` raises ``StructuralError`` whose
  one-line message names the file, the column and the reason, before anything is
  computed — so nothing can be published (proved end to end by the ``margin run``
  cases at the bottom);
* **quarantine** (SPEC §3): the run goes on, the bad rows are in ``quarantine`` with
  the reason code of SPEC §3, and ``check_reconciled`` proves no row went missing:
  rows read (counted independently from the Parquet footer) = used + quarantined for
  every table, the quarantine holds exactly the counted rows, every row_json parses
  and carries every column of the original row, every used position row is in some
  ``position_margin.source_count``, and every account seen anywhere is in
  ``account_margin``.

Most cases run in-process (``load_inputs`` + ``compute_margin``, no Prefect); the
last few run the real ``margin run`` command.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from conftest import EXAMPLES, margin_cli
from flows.loading import StructuralError, TABLE_SCHEMAS, OPTIONAL_COLUMNS, load_inputs
from transforms.identities import identity_violations
from transforms.pipeline import INPUT_TABLES, METHODOLOGY_TABLES, MarginResults, compute_margin
from transforms.validation import INPUT_COLUMNS

BOOK = "book_a_12_accounts"
AS_OF = dt.date(2025, 3, 14)
NON_FINITE = (None, math.nan, math.inf, -math.inf)


# --------------------------------------------------------------------------- helpers


def table_file(inputs: Path, table: str) -> Path:
    """Where ``table`` lives in this input root (the day's folder wins over reference/)."""
    name = table if table.endswith(".toml") else f"{table}.parquet"
    for folder in (inputs / f"date={AS_OF}", inputs / "reference"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(name)


def read(inputs: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(table_file(inputs, table))


def edit(inputs: Path, table: str, change: Callable[[pl.DataFrame], pl.DataFrame]) -> pl.DataFrame:
    """Rewrite one input table in place with ``change`` applied; returns the new frame."""
    path = table_file(inputs, table)
    changed = change(pl.read_parquet(path))
    changed.write_parquet(path)
    return changed


def set_where(column: str, value, **match) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """A change that sets ``column`` to ``value`` on the rows matching every ``match`` (key = value)."""
    def change(frame: pl.DataFrame) -> pl.DataFrame:
        condition = pl.all_horizontal([pl.col(k) == v for k, v in match.items()])
        dtype = frame.schema[column]
        return frame.with_columns(pl.when(condition).then(pl.lit(value, dtype=dtype)).otherwise(pl.col(column)).alias(column))
    return change


def set_row(column: str, values: dict[int, object]) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """A change that sets ``column`` at row indices (index → value)."""
    def change(frame: pl.DataFrame) -> pl.DataFrame:
        series = frame[column].to_list()
        for index, value in values.items():
            series[index] = value
        return frame.with_columns(pl.Series(column, series, dtype=frame.schema[column], strict=False))
    return change


def structural(inputs: Path) -> StructuralError:
    """Load the day, expecting a structural error; checks the message is one line."""
    with pytest.raises(StructuralError) as caught:
        load_inputs(inputs, AS_OF)
    message = str(caught.value)
    assert "\n" not in message and message.strip() == message
    assert caught.value.file in message
    if caught.value.column:
        assert f"'{caught.value.column}'" in message
    return caught.value


def assert_structural(inputs: Path, file_name: str, column: str | None, reason_fragment: str) -> StructuralError:
    error = structural(inputs)
    assert Path(error.file).name == file_name, str(error)
    assert error.column == column, str(error)
    assert reason_fragment in error.reason, str(error)
    return error


def quarantined(results: MarginResults) -> list[tuple[str, dict, str]]:
    """(source_table, original row, reason) for every quarantine row."""
    return [
        (row["source_table"], json.loads(row["row_json"]), row["reason"])
        for row in results.tables["quarantine"].iter_rows(named=True)
    ]


def reasons(results: MarginResults) -> Counter:
    return Counter((table, reason) for table, _, reason in quarantined(results))


@functools.cache
def baseline() -> MarginResults:
    return compute_margin(load_inputs(EXAMPLES / BOOK / "inputs", AS_OF).margin_inputs)


def new_reasons(results: MarginResults) -> dict:
    """Quarantine reasons beyond the untouched book's (which has one unknown and one expired position)."""
    delta = reasons(results)
    delta.subtract(reasons(baseline()))
    return {key: n for key, n in delta.items() if n}


def check_reconciled(inputs: Path, results: MarginResults) -> None:
    """No row silently dropped (SPEC §3): the counts, the quarantine and the outputs agree with the files."""
    counts = {row["table"]: row for row in results.counts.iter_rows(named=True)}
    assert set(counts) == set(INPUT_TABLES) | set(METHODOLOGY_TABLES)
    by_table = Counter(table for table, _, _ in quarantined(results))
    for table, row in counts.items():
        in_file = pq.read_metadata(table_file(inputs, table)).num_rows
        assert row["read"] == in_file, f"{table}: read {row['read']}, file has {in_file}"
        assert row["read"] == row["used"] + row["quarantined"], row
        assert by_table[table] == row["quarantined"], f"{table}: {by_table[table]} quarantine rows, counted {row}"
    for table, original, reason in quarantined(results):
        assert set(original) == set(INPUT_COLUMNS[table]), (table, original)
    assert identity_violations(results.tables, results.counts) == []
    # Every used position row is in exactly one netted row.
    assert results.tables["position_margin"]["source_count"].sum() == counts["positions"]["used"]
    # Every account seen anywhere has a row.
    seen = set()
    for table in ("positions", "collateral", "accounts"):
        seen |= set(read(inputs, table)["account_id"].drop_nulls())
    assert seen == set(results.tables["account_margin"]["account_id"])


def margin(inputs: Path) -> MarginResults:
    """Load and compute the day, then prove the counts reconcile."""
    results = compute_margin(load_inputs(inputs, AS_OF).margin_inputs)
    check_reconciled(inputs, results)
    return results


def positions_on(inputs: Path, *instrument_ids: str) -> int:
    return read(inputs, "positions").filter(pl.col("instrument_id").is_in(instrument_ids)).height


def reason_of(results: MarginResults, table: str, **match) -> list[str]:
    """Reasons of the quarantine rows of ``table`` whose original row has every ``match`` value."""
    return sorted(
        reason for source, original, reason in quarantined(results)
        if source == table and all(original.get(k) == v for k, v in match.items())
    )


@pytest.fixture
def book(example_inputs) -> Path:
    return example_inputs(BOOK)


def test_untouched_book_reconciles(book):
    """The control: the book as shipped has two quarantined positions and reconciles."""
    results = margin(book)
    assert reasons(results) == Counter({("positions", "unknown_instrument"): 1, ("positions", "expired_instrument"): 1})


# --------------------------------------------------------------- structural: files


def test_missing_daily_file(book):
    (book / f"date={AS_OF}" / "positions.parquet").unlink()
    assert_structural(book, "positions.parquet", None, "file not found")


def test_missing_reference_table(book):
    (book / "reference" / "scenarios.parquet").unlink()
    assert_structural(book, "scenarios.parquet", None, "file not found")


def test_missing_policy(book):
    (book / "reference" / "policy.toml").unlink()
    assert_structural(book, "policy.toml", None, "file not found")


def test_date_with_no_folder(book):
    shutil.rmtree(book / f"date={AS_OF}")
    error = structural(book)
    assert error.file.endswith(f"date={AS_OF}") and "no input folder" in error.reason


def test_zero_byte_file(book):
    table_file(book, "prices").write_bytes(b"")
    assert_structural(book, "prices.parquet", None, "not a readable Parquet file")


def test_corrupt_parquet(book):
    path = table_file(book, "instruments")
    data = bytearray(path.read_bytes())
    data[4:len(data) - 8] = bytes((i * 37) % 251 for i in range(len(data) - 12))  # keep magic bytes, scramble the rest
    path.write_bytes(bytes(data))
    assert_structural(book, "instruments.parquet", None, "not a readable Parquet file")


def test_truncated_parquet(book):
    path = table_file(book, "positions")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    assert_structural(book, "positions.parquet", None, "not a readable Parquet file")


def test_csv_named_parquet(book):
    path = table_file(book, "collateral")
    path.write_text(read(book, "collateral").write_csv())
    assert_structural(book, "collateral.parquet", None, "not a readable Parquet file")


def test_unreadable_policy_toml(book):
    (book / "reference" / "policy.toml").write_text("maintenance_ratio = = 0.75\n")
    assert_structural(book, "policy.toml", None, "not a readable TOML file")


# ------------------------------------------------------------- structural: columns

REQUIRED_COLUMNS = [
    (table, column)
    for table, schema in TABLE_SCHEMAS.items()
    for column in schema
    if (table, column) not in OPTIONAL_COLUMNS
]


@pytest.mark.parametrize(("table", "column"), REQUIRED_COLUMNS, ids=[f"{t}.{c}" for t, c in REQUIRED_COLUMNS])
def test_missing_column(book, table, column):
    edit(book, table, lambda frame: frame.drop(column))
    assert_structural(book, f"{table}.parquet", column, "required column is missing")


@pytest.mark.parametrize(("table", "wrong", "right"), [
    ("positions", "quantitiy", "quantity"),
    ("prices", "Price", "price"),
    ("collateral", "account id", "account_id"),
    ("instruments", "option type", "option_type"),
    ("risk_params", "price_scan ", "price_scan"),
])
def test_misspelt_column(book, table, wrong, right):
    """Column names are exact; the message points at the near miss."""
    edit(book, table, lambda frame: frame.rename({right: wrong}))
    error = assert_structural(book, f"{table}.parquet", right, "required column is missing")
    assert repr(wrong) in error.reason


def test_optional_columns_may_be_absent(book):
    edit(book, "positions", lambda frame: frame.drop("source"))
    edit(book, "accounts", lambda frame: frame.drop("lei"))
    results = margin(book)
    assert results.tables["account_margin"]["lei"].null_count() == results.tables["account_margin"].height


def test_extra_columns_and_column_order_are_free(book):
    edit(book, "positions", lambda frame: frame.with_columns(pl.lit("x").alias("trader")).select(reversed(frame.columns + ["trader"])))
    loaded = load_inputs(book, AS_OF).margin_inputs.positions.collect()
    assert loaded.columns == list(TABLE_SCHEMAS["positions"])
    assert loaded.equals(read(book, "positions").select(list(TABLE_SCHEMAS["positions"])))


def test_integer_column_where_float_expected_is_accepted(book):
    """SPEC §2: an integer column where a float is expected is accepted."""
    edit(book, "positions", lambda frame: frame.with_columns(pl.col("quantity").round().cast(pl.Int64)))
    edit(book, "risk_params", lambda frame: frame.with_columns(pl.lit(0, dtype=pl.Int32).alias("spread_rate")))
    inputs = load_inputs(book, AS_OF).margin_inputs
    assert inputs.positions.collect_schema()["quantity"] == pl.Float64
    assert inputs.risk_params.schema["spread_rate"] == pl.Float64


WRONG_TYPES = [
    # (table, column, replacement series builder) — strings where numbers belong, and friends
    ("positions", "quantity", lambda s: s.cast(pl.String)),
    ("prices", "price", lambda s: s.cast(pl.String)),
    ("prices", "implied_vol", lambda s: s.cast(pl.String)),
    ("collateral", "amount", lambda s: s.cast(pl.String)),
    ("fx_rates", "usd_rate", lambda s: s.cast(pl.String)),
    ("instruments", "multiplier", lambda s: s.cast(pl.String)),
    ("instruments", "strike", lambda s: s.is_not_null()),  # booleans are not numbers
    ("instruments", "expiry", lambda s: s.cast(pl.String)),  # a date written as text
    ("positions", "account_id", lambda s: pl.Series(range(s.len()))),  # ids must be text
    ("accounts", "margin_mode", lambda s: pl.Series([1] * s.len())),
    ("haircuts", "haircut", lambda s: s.cast(pl.String)),
    ("scenarios", "scenario_id", lambda s: s.cast(pl.Float64)),  # an id must be an integer
    ("offsets", "credit_rate", lambda s: s.cast(pl.String)),
]


@pytest.mark.parametrize(("table", "column", "make"), WRONG_TYPES, ids=[f"{t}.{c}" for t, c, _ in WRONG_TYPES])
def test_wrongly_typed_column(book, table, column, make):
    edit(book, table, lambda frame: frame.with_columns(make(frame[column]).alias(column)))
    assert_structural(book, f"{table}.parquet", column, "cannot be read as")


def test_integer_out_of_range_for_scenario_id(book):
    """A scenario id that does not fit i32 names the column, not just the file."""
    edit(book, "scenarios", lambda frame: frame.with_columns(pl.col("scenario_id").cast(pl.Int64) * 2**40))
    assert_structural(book, "scenarios.parquet", "scenario_id", "cannot be read as")


# ------------------------------------------------- structural: methodology values

# Every numeric column of every methodology table, with null, NaN, inf and -inf taking turns.
METHODOLOGY_NUMERIC = [
    (table, column, None if kind == "i32" else (None, math.nan, math.inf, -math.inf)[index % 4])
    for index, (table, column, kind) in enumerate(
        (t, c, k) for t in METHODOLOGY_TABLES for c, k in TABLE_SCHEMAS[t].items() if k in ("f64", "i32")
    )
]


@pytest.mark.parametrize(
    ("table", "column", "value"), METHODOLOGY_NUMERIC, ids=[f"{t}.{c}={v}" for t, c, v in METHODOLOGY_NUMERIC]
)
def test_methodology_non_finite_value_is_structural(book, table, column, value):
    """Methodology tables are trusted configuration: null / NaN / inf anywhere is structural."""
    edit(book, table, set_row(column, {0: value}))
    assert_structural(book, f"{table}.parquet", column, "methodology table")


BAD_METHODOLOGY = [
    ("negative haircut", "haircuts", set_row("haircut", {1: -0.05}), "haircut", "outside [0, 1]"),
    ("haircut above 1", "haircuts", set_row("haircut", {1: 1.2}), "haircut", "outside [0, 1]"),
    ("negative tier start", "haircuts", set_row("tier_start_usd", {2: -1.0}), "tier_start_usd", "outside"),
    ("tier not starting at 0", "haircuts", set_where("tier_start_usd", 1000.0, asset="SOL", tier_start_usd=0.0),
     "tier_start_usd", "first tier must start at 0"),
    ("duplicate tier", "haircuts", lambda f: pl.concat([f, f.head(1)]), "asset, tier_start_usd", "duplicate key"),
    ("duplicate scenario id", "scenarios", set_row("scenario_id", {1: 1}), "scenario_id", "duplicate key"),
    ("cover above 1", "scenarios", set_row("cover", {0: 1.5}), "cover", "outside [0, 1]"),
    ("no scenarios", "scenarios", lambda f: f.clear(), "scenario_id", "no scenarios"),
    # 1 + price_scan × min price_move ≤ 0 couples two files; the message names risk_params.price_scan
    ("move takes price below zero", "scenarios", set_row("price_move", {15: -4.0}), "price_scan", "must be > 0"),
    ("credit rate above 1", "offsets", set_row("credit_rate", {0: 1.5}), "credit_rate", "outside [0, 1]"),
    ("negative credit rate", "offsets", set_row("credit_rate", {0: -0.5}), "credit_rate", "outside [0, 1]"),
    ("zero ratio", "offsets", set_row("ratio_b", {0: 0.0}), "ratio_b", "outside (0"),
    ("duplicate offset priority", "offsets", set_row("priority", {1: 1}), "priority", "duplicate key"),
    ("zero price scan", "risk_params", set_row("price_scan", {0: 0.0}), "price_scan", "outside (0, 1)"),
    ("price scan of 1", "risk_params", set_row("price_scan", {0: 1.0}), "price_scan", "outside (0, 1)"),
    ("negative vol scan", "risk_params", set_row("vol_scan", {0: -0.1}), "vol_scan", "outside"),
    ("im rate above 1", "risk_params", set_row("im_rate", {0: 1.1}), "im_rate", "outside [0, 1]"),
    ("duplicate underlying", "risk_params", set_row("underlying", {1: "BTC"}), "underlying", "duplicate key"),
    ("null asset", "haircuts", set_row("asset", {0: None}), "asset", "null value"),
]


@pytest.mark.parametrize(("case", "table", "change", "column", "reason"), BAD_METHODOLOGY,
                         ids=[case for case, *_ in BAD_METHODOLOGY])
def test_bad_methodology_value_is_structural(book, case, table, change, column, reason):
    edit(book, table, change)
    blamed = "risk_params" if case == "move takes price below zero" else table
    assert_structural(book, f"{blamed}.parquet", column, reason)


def test_extended_upward_moves_are_a_valid_grid(book):
    """SPEC §2 rev 2: only downward moves are bounded; +10 scan ranges (BTC +… %) load and run."""
    edit(book, "scenarios", set_row("price_move", {14: 10.0}))
    results = margin(book)
    assert results.tables["account_margin"].height == 12


BAD_STRESSES = [
    ("null underlying", set_row("underlying", {0: None}), "underlying", "null or blank"),
    ("blank stress id", set_row("stress_id", {0: "  "}), "stress_id", "null or blank"),
    ("price to zero", set_row("price_move", {0: -1.0}), "price_move", "≤ −1"),
    ("NaN vol move", set_row("vol_move", {0: float("nan")}), "vol_move", "NaN or infinite"),
    ("null price move", set_row("price_move", {0: None}), "price_move", "null value"),
    ("duplicate key", lambda f: pl.concat([f, f.head(1)]), "stress_id, underlying", "duplicate key"),
    ("string price move", lambda f: f.with_columns(pl.col("price_move").cast(pl.String)), "price_move", "cannot be read"),
]


@pytest.mark.parametrize(("case", "change", "column", "reason"), BAD_STRESSES, ids=[c for c, *_ in BAD_STRESSES])
def test_bad_stress_table_is_structural(book, case, change, column, reason):
    """SPEC §11: the stress table is trusted configuration; a bad value names the column."""
    path = book / "reference" / "stress_scenarios.parquet"
    change(pl.read_parquet(path)).write_parquet(path)
    assert_structural(book, "stress_scenarios.parquet", column, reason)


def test_absent_stress_table_means_no_stress_output(book):
    (book / "reference" / "stress_scenarios.parquet").unlink()
    results = margin(book)
    assert all(results.tables[t].height == 0 for t in ("stress_results", "stress_summary", "liquidation_distance"))
    assert results.tables["account_margin"].height == 12


@pytest.mark.parametrize(("text", "key", "reason"), [
    ("maintenance_ratio = 0\n", "maintenance_ratio", "outside (0, 1]"),
    ("maintenance_ratio = 1.5\n", "maintenance_ratio", "outside (0, 1]"),
    ('maintenance_ratio = "0.75"\n', "maintenance_ratio", "finite number"),
    ("vol_floor = 0\n", "vol_floor", "must be > 0"),
    ("vol_floor = nan\n", "vol_floor", "finite number"),
])
def test_bad_policy_value_is_structural(book, text, key, reason):
    (book / "reference" / "policy.toml").write_text(text)
    assert_structural(book, "policy.toml", key, reason)


# ------------------------------------------------------------ quarantine: values


def test_non_finite_quantity(book):
    edit(book, "positions", set_row("quantity", dict(enumerate(NON_FINITE))))
    results = margin(book)
    assert new_reasons(results) == {("positions", "invalid_value"): 4}


def test_non_finite_price(book):
    """A price row with null / NaN / ±inf is invalid; positions on it have no price."""
    options = ["ETH-20250627-1990-P", "SOL-20250627-195-P", "BTC-20250627-48040-C", "ETH-20250627"]
    for instrument, value in zip(options, NON_FINITE):
        edit(book, "prices", set_where("price", value, instrument_id=instrument))
    results = margin(book)
    assert new_reasons(results) == {
        ("prices", "invalid_value"): 4, ("positions", "missing_price"): positions_on(book, *options),
    }


def test_bad_implied_vol(book):
    """Options without a usable vol (null, NaN, ±inf, 0, < 0): their positions are missing_vol;
    the price rows themselves are used; a future's vol is ignored."""
    options = ["ETH-20250627-1990-P", "SOL-20250627-195-P", "BTC-20250627-48040-C", "SOL-20250627-164-C",
               "BTC-20250425-90080-P", "SOL-20250321-164-P"]
    for instrument, value in zip(options, (*NON_FINITE, 0.0, -0.3)):
        edit(book, "prices", set_where("implied_vol", value, instrument_id=instrument))
    edit(book, "prices", set_where("implied_vol", math.nan, instrument_id="ETH-PERP"))
    results = margin(book)
    assert new_reasons(results) == {("positions", "missing_vol"): positions_on(book, *options)}


def test_non_finite_collateral_amount(book):
    edit(book, "collateral", set_row("amount", dict(enumerate(NON_FINITE))))
    results = margin(book)
    assert new_reasons(results) == {("collateral", "invalid_value"): 4}
    incomplete = set(results.tables["account_margin"].filter(~pl.col("complete"))["account_id"])
    assert set(read(book, "collateral").head(4)["account_id"]) <= incomplete


def test_non_finite_fx_rate(book):
    """A bad rate (and a USD row that is not exactly 1.0) is invalid; collateral in the currency
    is missing_fx, and so are positions on instruments quoted in it; USD stays 1.0."""
    for currency, value in zip(("BTC", "ETH", "MEME", "USDC"), NON_FINITE):
        edit(book, "fx_rates", set_where("usd_rate", value, currency=currency))
    edit(book, "fx_rates", set_where("usd_rate", math.nan, currency="USD"))
    results = margin(book)
    collateral = read(book, "collateral")
    instruments = read(book, "instruments")
    usdc_instruments = instruments.filter(pl.col("currency") == "USDC")["instrument_id"].to_list()
    positions = read(book, "positions").filter(pl.col("instrument_id").is_in(usdc_instruments))
    assert new_reasons(results) == {
        ("fx_rates", "invalid_value"): 5,
        ("collateral", "missing_fx"): collateral.filter(pl.col("asset") != "USD").height,
        ("positions", "missing_fx"): positions.height,
    }
    usd = results.tables["collateral_valuation"].filter(pl.col("asset") == "USD")
    assert usd.height > 0 and (usd["usd_rate"] == 1.0).all()


def test_usd_rate_other_than_one(book):
    edit(book, "fx_rates", set_where("usd_rate", 1.01, currency="USD"))
    results = margin(book)
    assert new_reasons(results) == {("fx_rates", "invalid_value"): 1}
    assert reason_of(results, "fx_rates", currency="USD") == ["invalid_value"]
    usd = results.tables["collateral_valuation"].filter(pl.col("asset") == "USD")
    assert (usd["usd_rate"] == 1.0).all()


def test_zero_and_negative_fx_rate(book):
    edit(book, "fx_rates", set_where("usd_rate", 0.0, currency="MEME"))
    edit(book, "fx_rates", set_where("usd_rate", -2.0, currency="BTC"))
    results = margin(book)
    collateral = read(book, "collateral")
    assert new_reasons(results) == {
        ("fx_rates", "invalid_value"): 2,
        ("collateral", "missing_fx"): collateral.filter(pl.col("asset").is_in(["MEME", "BTC"])).height,
    }


def test_non_finite_multiplier(book):
    """A bad instruments row makes its positions unknown_instrument (SPEC §3)."""
    futures = ["ETH-20250627", "SOL-20250627", "BTC-20250425", "ETH-20250328"]
    for instrument, value in zip(futures, NON_FINITE):
        edit(book, "instruments", set_where("multiplier", value, instrument_id=instrument))
    results = margin(book)
    assert new_reasons(results) == {
        ("instruments", "invalid_value"): 4, ("positions", "unknown_instrument"): positions_on(book, *futures),
    }


def test_non_finite_strike(book):
    options = ["ETH-20250627-1990-P", "SOL-20250627-195-P", "BTC-20250627-48040-C", "SOL-20250627-164-C"]
    for instrument, value in zip(options, NON_FINITE):
        edit(book, "instruments", set_where("strike", value, instrument_id=instrument))
    results = margin(book)
    assert new_reasons(results) == {
        ("instruments", "invalid_value"): 4, ("positions", "unknown_instrument"): positions_on(book, *options),
    }


def test_invalid_instrument_fields(book):
    """kind / option_type outside their sets, null kind, multiplier ≤ 0, strike ≤ 0, a future or
    option without expiry, no underlying or currency: each row invalid_value."""
    broken = {
        "ETH-20250627": ("kind", "swap"),
        "SOL-20250627": ("kind", None),
        "ETH-20250627-1990-P": ("option_type", "X"),
        "SOL-20250627-195-P": ("option_type", None),
        "BTC-20250425": ("expiry", None),
        "BTC-20250627-48040-C": ("expiry", None),
        "SOL-20250627-164-C": ("strike", 0.0),
        "BTC-20250425-90080-P": ("strike", -5.0),
        "ETH-20250425": ("multiplier", 0.0),
        "SOL-20250425-234-C": ("multiplier", -1.0),
        "BTC-20250627-60050-P": ("underlying", None),
        "SOL-20250425-164-C": ("currency", None),
    }
    for instrument, (column, value) in broken.items():
        edit(book, "instruments", set_where(column, value, instrument_id=instrument))
    results = margin(book)
    assert new_reasons(results) == {
        ("instruments", "invalid_value"): len(broken),
        ("positions", "unknown_instrument"): positions_on(book, *broken),
    }


def test_null_keys(book):
    """A null key in any daily table is invalid_value, never dropped."""
    edit(book, "positions", set_row("account_id", {0: None}))
    edit(book, "positions", set_row("instrument_id", {1: None}))
    edit(book, "collateral", set_row("account_id", {0: None}))
    edit(book, "collateral", set_row("asset", {1: None}))
    edit(book, "prices", set_where("instrument_id", None, instrument_id="BTC-20250321-48040-P"))
    edit(book, "fx_rates", set_where("currency", None, currency="MEME"))
    edit(book, "instruments", set_where("instrument_id", None, instrument_id="SOL-20250627-148-C"))
    edit(book, "accounts", set_row("account_id", {0: None}))
    results = margin(book)
    expected = {
        ("positions", "invalid_value"): 2,
        ("collateral", "invalid_value"): 2,
        ("prices", "invalid_value"): 1,
        ("fx_rates", "invalid_value"): 1,
        ("instruments", "invalid_value"): 1,
        ("accounts", "invalid_value"): 1,
        # knock-on effects: positions whose price / instrument went, collateral whose FX went
        ("positions", "missing_price"): positions_on(book, "BTC-20250321-48040-P"),
        ("positions", "unknown_instrument"): positions_on(book, "SOL-20250627-148-C"),
        ("collateral", "missing_fx"): read(book, "collateral").filter(pl.col("asset") == "MEME").height,
    }
    assert new_reasons(results) == expected
    assert reason_of(results, "positions", account_id=None) == ["invalid_value"]


def test_invalid_margin_mode(book):
    """An accounts row with a mode outside its set is quarantined; the account is still
    margined, with mode null at the most conservative figure, and a warning."""
    edit(book, "accounts", set_where("margin_mode", "hedge", account_id="ACC0000"))
    edit(book, "accounts", set_where("margin_mode", None, account_id="ACC0001"))
    results = margin(book)
    assert new_reasons(results) == {("accounts", "invalid_value"): 2}
    rows = results.tables["account_margin"].filter(pl.col("account_id").is_in(["ACC0000", "ACC0001"]))
    assert rows["margin_mode"].null_count() == 2 and not rows["complete"].any()
    assert rows.select((pl.col("im") == pl.max_horizontal("gross_im", "net_im", "portfolio_im")).all()).item()
    assert set(results.warnings.filter(pl.col("code") == "account_row_quarantined")["account_id"]) == {"ACC0000", "ACC0001"}


# ---------------------------------------------------------- quarantine: duplicates


def test_duplicate_price(book):
    """Every copy of a duplicated key is quarantined; no copy is used."""
    edit(book, "prices", lambda f: pl.concat([f, f.filter(pl.col("instrument_id") == "ETH-PERP")]))
    results = margin(book)
    assert new_reasons(results) == {
        ("prices", "duplicate_key"): 2, ("positions", "missing_price"): positions_on(book, "ETH-PERP"),
    }


def test_duplicate_where_one_copy_is_invalid(book):
    """A copy that is also invalid gets invalid_value; the other copy still duplicate_key."""
    edit(book, "prices", lambda f: pl.concat([
        f, f.filter(pl.col("instrument_id") == "ETH-PERP").with_columns(pl.lit(math.nan).alias("price")),
    ]))
    results = margin(book)
    assert sorted(reason_of(results, "prices", instrument_id="ETH-PERP")) == ["duplicate_key", "invalid_value"]


def test_duplicate_instrument(book):
    edit(book, "instruments", lambda f: pl.concat([f, f.filter(pl.col("instrument_id") == "SOL-PERP")]))
    results = margin(book)
    assert new_reasons(results) == {
        ("instruments", "duplicate_key"): 2, ("positions", "unknown_instrument"): positions_on(book, "SOL-PERP"),
    }


def test_duplicate_fx_rate(book):
    edit(book, "fx_rates", lambda f: pl.concat([
        f, f.filter(pl.col("currency") == "ETH").with_columns(pl.col("usd_rate") * 1.01),
    ]))
    results = margin(book)
    assert new_reasons(results) == {
        ("fx_rates", "duplicate_key"): 2,
        ("collateral", "missing_fx"): read(book, "collateral").filter(pl.col("asset") == "ETH").height,
    }


def test_account_in_two_groups(book):
    """Two accounts rows with one id (here in two groups) are both duplicate_key: the account is
    margined alone at the most conservative figure, with a warning, and neither group counts it."""
    edit(book, "accounts", lambda f: pl.concat([
        f, f.filter(pl.col("account_id") == "ACC0002").with_columns(pl.lit("GRP00").alias("margin_group")),
    ]))
    before = baseline().tables["group_margin"]
    results = margin(book)
    assert new_reasons(results) == {("accounts", "duplicate_key"): 2}
    account = results.tables["account_margin"].filter(pl.col("account_id") == "ACC0002").row(0, named=True)
    assert account["margin_group"] is None and account["margin_mode"] is None and not account["complete"]
    assert account["im"] == max(account["gross_im"], account["net_im"], account["portfolio_im"])
    assert account["binding_status"] == account["status"]
    members = dict(results.tables["group_margin"].select("margin_group", "member_count").iter_rows())
    members_before = dict(before.select("margin_group", "member_count").iter_rows())
    assert members["GRP01"] == members_before["GRP01"] - 1
    assert members.get("GRP00") == members_before.get("GRP00")
    warned = set(results.warnings.filter(pl.col("account_id") == "ACC0002")["code"])
    assert warned == {"account_row_quarantined", "account_not_in_accounts"}


# ---------------------------------------------------- quarantine: reference gaps


def test_unknown_instrument(book):
    edit(book, "positions", set_row("instrument_id", {0: "XRP-PERP", 1: "btc-perp"}))
    results = margin(book)
    assert new_reasons(results) == {("positions", "unknown_instrument"): 2}


def test_expired_instrument(book):
    """Expiry before D is expired; expiry on D is still margined (T = 0)."""
    edit(book, "instruments", set_where("expiry", AS_OF - dt.timedelta(days=1), instrument_id="ETH-20250328"))
    edit(book, "instruments", set_where("expiry", AS_OF, instrument_id="SOL-20250627"))
    results = margin(book)
    assert new_reasons(results) == {("positions", "expired_instrument"): positions_on(book, "ETH-20250328")}
    assert results.tables["position_margin"].filter(pl.col("instrument_id") == "SOL-20250627").height > 0


def test_zero_and_negative_prices(book):
    edit(book, "prices", set_where("price", 0.0, instrument_id="ETH-20250627"))
    edit(book, "prices", set_where("price", -12.5, instrument_id="BTC-20250627-48040-C"))
    results = margin(book)
    assert new_reasons(results) == {
        ("prices", "invalid_price"): 2,
        ("positions", "missing_price"): positions_on(book, "ETH-20250627", "BTC-20250627-48040-C"),
    }


def test_zero_index_price(book):
    """The index's own positions have no price; every other position on the underlying has no index."""
    edit(book, "prices", set_where("price", 0.0, instrument_id="SOL"))
    results = margin(book)
    sol = read(book, "positions").filter(pl.col("instrument_id").str.starts_with("SOL"))
    assert new_reasons(results) == {
        ("prices", "invalid_price"): 1,
        ("positions", "missing_price"): positions_on(book, "SOL"),
        ("positions", "missing_index"): sol.height - positions_on(book, "SOL"),
    }


def test_underlying_without_index_price(book):
    edit(book, "prices", lambda f: f.filter(pl.col("instrument_id") != "ETH"))
    results = margin(book)
    eth = read(book, "positions").filter(pl.col("instrument_id").str.starts_with("ETH"))
    assert new_reasons(results) == {
        ("positions", "missing_price"): positions_on(book, "ETH"),
        ("positions", "missing_index"): eth.height - positions_on(book, "ETH"),
    }


def test_underlying_without_index_instrument(book):
    """No spot instrument for SOL: its own positions are unknown, the rest missing_index; the
    orphan price row is ignored (counted as used)."""
    edit(book, "instruments", lambda f: f.filter(pl.col("instrument_id") != "SOL"))
    results = margin(book)
    sol = read(book, "positions").filter(pl.col("instrument_id").str.starts_with("SOL"))
    assert new_reasons(results) == {
        ("positions", "unknown_instrument"): positions_on(book, "SOL"),
        ("positions", "missing_index"): sol.height - positions_on(book, "SOL"),
    }


def test_underlying_without_risk_params(book):
    edit(book, "risk_params", lambda f: f.filter(pl.col("underlying") != "SOL"))
    results = margin(book)
    sol = read(book, "positions").filter(pl.col("instrument_id").str.starts_with("SOL"))
    assert new_reasons(results) == {("positions", "missing_risk_params"): sol.height}
    assert results.tables["underlying_risk"].filter(pl.col("underlying") == "SOL").height == 0


def test_fx_row_missing(book):
    """No MEME rate: MEME collateral is missing_fx.  An instrument quoted in a currency with no
    rate: its positions are missing_fx."""
    edit(book, "fx_rates", lambda f: f.filter(pl.col("currency") != "MEME"))
    edit(book, "instruments", set_where("currency", "EUR", instrument_id="BTC-PERP"))
    results = margin(book)
    assert new_reasons(results) == {
        ("collateral", "missing_fx"): read(book, "collateral").filter(pl.col("asset") == "MEME").height,
        ("positions", "missing_fx"): positions_on(book, "BTC-PERP"),
    }


def test_index_quoted_in_currency_without_fx(book):
    edit(book, "instruments", set_where("currency", "EUR", instrument_id="ETH"))
    results = margin(book)
    eth = read(book, "positions").filter(pl.col("instrument_id").str.starts_with("ETH"))
    assert new_reasons(results) == {
        ("positions", "missing_fx"): positions_on(book, "ETH"),
        ("positions", "missing_index"): eth.height - positions_on(book, "ETH"),
    }


# -------------------------------------------------------- empty and extreme books


def test_book_with_no_positions(book):
    """An empty positions file (0 rows, right columns) is a book with no positions: it runs."""
    edit(book, "positions", lambda f: f.clear())
    results = margin(book)
    assert results.tables["position_margin"].height == 0
    assert results.tables["underlying_risk"].height == 0
    accounts = results.tables["account_margin"]
    seen = set(read(book, "accounts")["account_id"]) | set(read(book, "collateral")["account_id"])
    assert set(accounts["account_id"]) == seen
    assert (accounts["position_count"] == 0).all() and (accounts["im"] == 0).all()
    assert set(accounts["status"]) <= {"ok", "deficit"}


def test_empty_daily_tables(book):
    """Empty prices / collateral / accounts files are not structural: every position is then
    missing_price (unless already worse), every account unknown and warned about."""
    edit(book, "prices", lambda f: f.clear())
    edit(book, "collateral", lambda f: f.clear())
    edit(book, "accounts", lambda f: f.clear())
    results = margin(book)
    assert new_reasons(results) == {("positions", "missing_price"): 198}
    accounts = results.tables["account_margin"]
    assert accounts["margin_mode"].null_count() == accounts.height
    assert results.tables["collateral_valuation"].height == 0


def test_empty_instruments_and_fx(book):
    edit(book, "instruments", lambda f: f.clear())
    edit(book, "fx_rates", lambda f: f.clear())
    results = margin(book)
    collateral = read(book, "collateral")
    assert new_reasons(results) == {
        ("positions", "unknown_instrument"): 199,  # the expired one too: it is now unknown
        ("positions", "expired_instrument"): -1,
        ("collateral", "missing_fx"): collateral.filter(pl.col("asset") != "USD").height,
    }


def test_empty_methodology_tables(book):
    """No risk parameters: every position missing_risk_params.  No haircuts: every asset but USD ineligible."""
    edit(book, "risk_params", lambda f: f.clear())
    edit(book, "haircuts", lambda f: f.clear())
    edit(book, "offsets", lambda f: f.clear())
    results = margin(book)
    assert new_reasons(results) == {("positions", "missing_risk_params"): 198}
    valuation = results.tables["collateral_valuation"]
    assert set(valuation.filter(~pl.col("eligible"))["asset"]) == {"BTC", "ETH", "MEME", "USDC"}
    assert valuation.filter(pl.col("asset") == "USD")["eligible"].all()


def test_huge_quantity(book):
    """1e15 contracts: no real book has them (SPEC §3 bounds |quantity| at 1e12): invalid_value;
    1e12 itself is margined (tests/test_magnitudes.py)."""
    edit(book, "positions", lambda f: pl.concat([
        f, pl.DataFrame({"account_id": ["ACC0008"], "instrument_id": ["BTC-PERP"], "quantity": [1e15], "source": ["whale"]}),
    ]))
    results = margin(book)
    assert new_reasons(results) == {("positions", "invalid_value"): 1}
    assert reason_of(results, "positions", quantity=1e15) == ["invalid_value"]


def test_zero_quantity_and_orphan_price_are_used(book):
    """A zero quantity is a usable row (no risk); a price for an instrument not in the master
    is ignored and counted as used."""
    edit(book, "positions", set_row("quantity", {0: 0.0}))
    edit(book, "prices", lambda f: pl.concat([
        f, pl.DataFrame({"instrument_id": ["NOT-LISTED"], "price": [1.0], "implied_vol": [None]},
                        schema=f.schema),
    ]))
    results = margin(book)
    assert new_reasons(results) == {}


def test_quarantined_row_keeps_non_finite_values(book):
    """row_json keeps the original value: NaN, inf and null stay distinguishable."""
    edit(book, "positions", set_row("quantity", dict(enumerate(NON_FINITE))))
    results = margin(book)
    texts = sorted(
        str(original["quantity"]) for table, original, reason in quarantined(results) if reason == "invalid_value"
    )
    assert texts == sorted(["None", "NaN", "Infinity", "-Infinity"])


# ------------------------------------------------ end to end: the real command

def _published(db: Path) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {
            "tables": {
                t: con.sql(f"SELECT * FROM {t} ORDER BY ALL").pl()
                for t in ("position_margin", "account_margin", "collateral_valuation", "quarantine", "group_margin")
            },
            "runs": con.sql("SELECT run_id, status, error FROM runs ORDER BY started_at").pl(),
        }
    finally:
        con.close()


@pytest.fixture
def published_book(book, tmp_path):
    """Book A already published once for the date (in-process, no Prefect), as the previous results."""
    from flows.eod import run_end_of_day

    db = tmp_path / "warehouse.duckdb"
    run_end_of_day(AS_OF, book, db, use_tasks=False)
    return book, db, _published(db)


def _assert_failed_and_intact(result, db: Path, before: dict, *fragments: str) -> str:
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("margin: error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    after = _published(db)
    for table, frame in before["tables"].items():
        assert after["tables"][table].equals(frame), f"{table} changed after a failed run"
    assert after["runs"].height == before["runs"].height + 1
    failed = after["runs"].row(-1, named=True)
    assert failed["status"] == "failed"
    for fragment in fragments:
        assert fragment in failed["error"]
    return errors[0]


@pytest.mark.slow
def test_run_with_string_quantity_fails_and_keeps_previous_results(published_book, prefect_api):
    book, db, before = published_book
    edit(book, "positions", lambda f: f.with_columns(pl.col("quantity").cast(pl.String)))
    result = margin_cli("run", "--date", AS_OF.isoformat(), "--inputs", str(book), "--db", str(db))
    _assert_failed_and_intact(result, db, before, "positions.parquet", "'quantity'", "structural error")


@pytest.mark.slow
def test_run_with_bad_methodology_fails_and_keeps_previous_results(published_book, prefect_api):
    book, db, before = published_book
    edit(book, "haircuts", set_row("haircut", {1: 1.5}))
    result = margin_cli("run", "--date", AS_OF.isoformat(), "--inputs", str(book), "--db", str(db))
    _assert_failed_and_intact(result, db, before, "haircuts.parquet", "'haircut'", "outside [0, 1]")


@pytest.mark.slow
def test_run_for_date_without_folder_publishes_nothing(book, tmp_path, prefect_api):
    db = tmp_path / "warehouse.duckdb"
    result = margin_cli("run", "--date", "2025-03-15", "--inputs", str(book), "--db", str(db))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("margin: error:")]
    assert len(errors) == 1 and "date=2025-03-15" in errors[0], result.stderr
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.sql("SELECT count(*) FROM account_margin").fetchall() == [(0,)]
        runs = con.sql("SELECT status, as_of_date FROM runs").fetchall()
    finally:
        con.close()
    assert runs == [("failed", dt.date(2025, 3, 15))]
    assert not (tmp_path / "warehouse.duckdb.results" / "date=2025-03-15").exists()
