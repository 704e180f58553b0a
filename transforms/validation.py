"""Row validation and quarantine (SPEC §3).

Each ``check_*`` function returns its input with one extra column, ``reason``: null
for a usable row, else the first applicable reason code of SPEC §3.
``usable_rows`` and ``quarantine_rows`` split a checked frame.  Structural problems
(missing files or columns, uncastable types, bad methodology tables) are raised by the
loader before any of this runs.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from transforms.contract import REPORTING_CURRENCY  # noqa: F401 (defined once, in the contract)

#: SPEC §3 reason codes, in precedence order (the first that applies is recorded).
REASON_CODES: tuple[str, ...] = (
    "invalid_value",
    "duplicate_key",
    "invalid_price",
    "unknown_instrument",
    "expired_instrument",
    "missing_price",
    "missing_vol",
    "missing_fx",
    "missing_index",
    "missing_risk_params",
)

KINDS = ("spot", "future", "perpetual", "option")
OPTION_TYPES = ("C", "P")
MARGIN_MODES = ("isolated", "cross", "portfolio")

#: Columns of each input table kept in ``row_json`` and downstream (SPEC §2).
INPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "positions": ("account_id", "instrument_id", "quantity", "source"),
    "prices": ("instrument_id", "price", "implied_vol"),
    "collateral": ("account_id", "asset", "amount"),
    "fx_rates": ("currency", "usd_rate"),
    "instruments": (
        "instrument_id", "kind", "underlying", "currency", "multiplier", "expiry", "strike", "option_type",
    ),
    "accounts": ("account_id", "margin_group", "margin_mode", "lei"),
}


#: SPEC §3 magnitudes no real book has (``invalid_value``): ``|quantity|``, ``|amount|``
#: above ``MAX_SIZE``; a price, rate, multiplier or strike outside [``MIN_LEVEL``, ``MAX_LEVEL``];
#: an implied vol outside [``MIN_VOL``, ``MAX_VOL``] makes option positions ``missing_vol``.
#: Within them every published figure is finite.
MAX_SIZE = 1e12
MIN_LEVEL, MAX_LEVEL = 1e-12, 1e12
MIN_VOL, MAX_VOL = 1e-4, 10.0


def _bad_number(column: str) -> pl.Expr:
    """Null, NaN or ±inf."""
    return pl.col(column).is_null() | ~pl.col(column).is_finite()


def _null_key(column: str) -> pl.Expr:
    """A null key: null, empty or blank (whitespace only) text (SPEC §3)."""
    return pl.col(column).is_null() | ~pl.col(column).str.contains(r"\S")


def _bad_size(column: str) -> pl.Expr:
    """Null, NaN, ±inf, or a magnitude above ``MAX_SIZE``."""
    return _bad_number(column) | (pl.col(column).abs() > MAX_SIZE)


def _bad_level(column: str) -> pl.Expr:
    """Null, NaN, ±inf, or outside [``MIN_LEVEL``, ``MAX_LEVEL``] (≤ 0 included)."""
    return _bad_number(column) | (pl.col(column) < MIN_LEVEL) | (pl.col(column) > MAX_LEVEL)


def _first_reason(*rules: tuple[pl.Expr, str | pl.Expr]) -> pl.Expr:
    """The reason of the first rule whose condition holds, else null."""
    def as_expr(reason: str | pl.Expr) -> pl.Expr:
        return pl.lit(reason, dtype=pl.String) if isinstance(reason, str) else reason

    chain = pl.when(rules[0][0]).then(as_expr(rules[0][1]))
    for condition, reason in rules[1:]:
        chain = chain.when(condition).then(as_expr(reason))
    return chain.otherwise(pl.lit(None, dtype=pl.String)).alias("reason")


def _duplicated(key: str) -> pl.Expr:
    """Every copy of a non-null (and non-blank) key that appears more than once."""
    return ~_null_key(key) & (pl.len().over(key) > 1)


def check_instruments(instruments: pl.LazyFrame) -> pl.LazyFrame:
    """Instrument master with ``reason``: invalid_value, then duplicate_key."""
    kind = pl.col("kind")
    is_option = kind == "option"
    invalid = (
        _null_key("instrument_id")
        | kind.is_null()
        | ~kind.is_in(KINDS)
        | _bad_level("multiplier")
        | _null_key("underlying")
        | _null_key("currency")
        | ((kind == "future") & pl.col("expiry").is_null())
        | (
            is_option
            & (
                pl.col("expiry").is_null()
                | _bad_level("strike")
                | pl.col("option_type").is_null()
                | ~pl.col("option_type").is_in(OPTION_TYPES)
            )
        )
    )
    return instruments.with_columns(
        _first_reason((invalid.fill_null(True), "invalid_value"), (_duplicated("instrument_id"), "duplicate_key"))
    )


def check_prices(prices: pl.LazyFrame) -> pl.LazyFrame:
    """Prices with ``reason``: invalid_value, duplicate_key, invalid_price (price ≤ 0).

    ``implied_vol`` is not checked here: a bad vol makes option *positions*
    ``missing_vol`` while the price row itself is used (SPEC §3).
    """
    price = pl.col("price")
    invalid = _null_key("instrument_id") | _bad_number("price") | (price > MAX_LEVEL) | ((price > 0) & (price < MIN_LEVEL))
    return prices.with_columns(
        _first_reason(
            (invalid, "invalid_value"),
            (_duplicated("instrument_id"), "duplicate_key"),
            (pl.col("price") <= 0, "invalid_price"),
        )
    )


def check_fx_rates(fx_rates: pl.LazyFrame) -> pl.LazyFrame:
    """FX rates with ``reason``; a USD row with any rate other than exactly 1.0 is invalid."""
    invalid = (
        _null_key("currency")
        | _bad_level("usd_rate")
        | ((pl.col("currency") == REPORTING_CURRENCY) & (pl.col("usd_rate") != 1.0))
    )
    return fx_rates.with_columns(
        _first_reason((invalid.fill_null(True), "invalid_value"), (_duplicated("currency"), "duplicate_key"))
    )


def check_accounts(accounts: pl.LazyFrame) -> pl.LazyFrame:
    """Accounts with ``reason``: null id or margin_mode outside its set, then duplicate_key."""
    invalid = (
        _null_key("account_id")
        | pl.col("margin_mode").is_null()
        | ~pl.col("margin_mode").is_in(MARGIN_MODES)
    )
    return accounts.with_columns(
        _first_reason((invalid.fill_null(True), "invalid_value"), (_duplicated("account_id"), "duplicate_key"))
    )


def check_collateral(collateral: pl.LazyFrame, fx: pl.LazyFrame) -> pl.LazyFrame:
    """Collateral with ``reason``: invalid_value, then missing_fx for an asset without usable FX."""
    invalid = _null_key("account_id") | _null_key("asset") | _bad_size("amount")
    checked = collateral.join(
        fx.select(pl.col("currency").alias("asset"), pl.lit(True).alias("_has_fx")), on="asset", how="left"
    )
    return checked.with_columns(
        _first_reason((invalid, "invalid_value"), (pl.col("_has_fx").is_null(), "missing_fx"))
    ).drop("_has_fx")


def usable_fx(checked_fx: pl.LazyFrame) -> pl.LazyFrame:
    """Usable FX rates, one row per currency, with USD = 1.0 always present."""
    others = checked_fx.filter(
        pl.col("reason").is_null() & (pl.col("currency") != REPORTING_CURRENCY)
    ).select("currency", "usd_rate")
    usd = pl.LazyFrame({"currency": [REPORTING_CURRENCY], "usd_rate": [1.0]})
    return pl.concat([others, usd], how="vertical_relaxed")


def instrument_market(
    instruments: pl.LazyFrame,
    prices: pl.LazyFrame,
    fx: pl.LazyFrame,
    risk_params: pl.LazyFrame,
    as_of: dt.date,
) -> pl.LazyFrame:
    """One row per usable instrument with its market data and ``hold_reason``.

    ``hold_reason`` is what a position on the instrument is quarantined for (null when
    it can be margined): expired_instrument, missing_price, missing_vol, missing_fx,
    missing_index, missing_risk_params — the SPEC §3 order.  Adds ``price``,
    ``implied_vol``, ``fx``, ``index_price`` (S_u) and ``index_fx`` (fx_u) and the
    underlying's risk parameters.
    """
    price_rows = prices.select("instrument_id", "price", "implied_vol")
    fx_rates = fx.select("currency", pl.col("usd_rate").alias("fx"))
    index = (
        instruments.filter(pl.col("kind") == "spot")
        .join(price_rows, on="instrument_id", how="inner")
        .join(fx_rates, on="currency", how="inner")
        .select(
            pl.col("instrument_id").alias("underlying"),
            pl.col("price").alias("index_price"),
            pl.col("fx").alias("index_fx"),
        )
    )
    vol = pl.col("implied_vol")
    bad_vol = vol.is_null() | ~vol.is_finite() | (vol < MIN_VOL) | (vol > MAX_VOL)
    return (
        instruments.join(price_rows, on="instrument_id", how="left")
        .join(fx_rates, left_on="currency", right_on="currency", how="left")
        .join(index, on="underlying", how="left")
        .join(risk_params, on="underlying", how="left")
        .with_columns(
            _first_reason(
                (pl.col("expiry") < pl.lit(as_of), "expired_instrument"),
                (pl.col("price").is_null(), "missing_price"),
                ((pl.col("kind") == "option") & bad_vol, "missing_vol"),
                (pl.col("fx").is_null(), "missing_fx"),
                (pl.col("index_price").is_null(), "missing_index"),
                (pl.col("price_scan").is_null(), "missing_risk_params"),
            ).alias("hold_reason")
        )
    )


def check_positions(positions: pl.LazyFrame, market: pl.LazyFrame) -> pl.LazyFrame:
    """Positions with ``reason`` and, for usable rows, their instrument's market data."""
    invalid = _null_key("account_id") | _null_key("instrument_id") | _bad_size("quantity")
    joined = positions.join(
        market.with_columns(pl.lit(True).alias("_known")), on="instrument_id", how="left"
    )
    return joined.with_columns(
        _first_reason(
            (invalid, "invalid_value"),
            (pl.col("_known").is_null(), "unknown_instrument"),
            (pl.col("hold_reason").is_not_null(), pl.col("hold_reason")),
        )
    ).drop("_known", "hold_reason")


def usable_rows(checked: pl.LazyFrame) -> pl.LazyFrame:
    """Rows that passed validation, without the ``reason`` column."""
    return checked.filter(pl.col("reason").is_null()).drop("reason")


#: Float columns of the daily tables (SPEC §2); their NaN / ±inf must survive into ``row_json``.
FLOAT_COLUMNS = frozenset({"quantity", "price", "implied_vol", "amount", "usd_rate", "multiplier", "strike"})


def _json_value(column: str) -> pl.Expr:
    """JSON text of one value.  JSON has no NaN or infinity, and the plain encoder writes
    them as ``null``; they are written as the strings "NaN", "Infinity", "-Infinity" so an
    auditor can tell them from a missing value."""
    encoded = pl.struct(pl.col(column)).struct.json_encode().str.strip_prefix(f'{{"{column}":').str.strip_suffix("}")
    if column not in FLOAT_COLUMNS:
        return encoded
    value = pl.col(column)
    return (
        pl.when(value.is_nan()).then(pl.lit('"NaN"'))
        .when(value == float("inf")).then(pl.lit('"Infinity"'))
        .when(value == float("-inf")).then(pl.lit('"-Infinity"'))
        .otherwise(encoded)
    )


def row_json(columns: tuple[str, ...]) -> pl.Expr:
    """The original row as a JSON object with every column (SPEC §3)."""
    parts: list[pl.Expr] = [pl.lit("{")]
    for position, column in enumerate(columns):
        parts += [pl.lit(("," if position else "") + f'"{column}":'), _json_value(column)]
    parts.append(pl.lit("}"))
    return pl.concat_str(parts)


def quarantine_rows(checked: pl.LazyFrame, source_table: str) -> pl.LazyFrame:
    """One quarantine row per failed input row: ``source_table``, ``row_json``, ``reason``."""
    return checked.filter(pl.col("reason").is_not_null()).select(
        pl.lit(source_table).alias("source_table"),
        row_json(INPUT_COLUMNS[source_table]).alias("row_json"),
        pl.col("reason"),
    )
