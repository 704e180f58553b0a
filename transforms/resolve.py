"""Resolve once: the raw day's tables turned into checked, encoded, usable tables (SPEC §2–§3).

A day is resolved in two steps, both pure (no I/O):

- ``resolve_shared(inputs) -> SharedDay``: the small tables every account needs —
  prices, FX rates and instruments checked once (their quarantine rows and counts),
  the instrument market (price, vol, FX, risk parameters and hold reason per
  instrument), the valued instruments, the instrument code book, and the methodology
  tables with their counts;
- ``resolve_day(inputs, shared) -> ResolvedDay``: one partition's positions, collateral
  and accounts (or the whole book's: one partition) checked against the shared tables,
  account ids encoded, quarantine rows and counts taken, usable rows kept.

``transforms.pipeline.margin_partition(resolved)`` then computes that partition's tables.
To compute a *subset* of accounts — what-if, explain of a group — give ``resolve_day`` a
``MarginInputs`` whose positions, collateral and accounts hold only the named accounts and
every member of their margin groups (plus any extra rows, e.g. hypothetical trades), and
the day's shared tables: ``margin_partition(resolve_day(subset_inputs, shared))``.  The
figures of those accounts are those of the full day (a margin group is margined as one
book, SPEC §7), to the bit (SPEC §8).

``day_counts`` combines the shared step's row counts with the partitions' into the
day's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import polars as pl

from transforms import encoding, validation, valuation
from transforms.contract import INPUT_TABLES, METHODOLOGY_TABLES, RESULT_KEYS

#: The daily tables split by account (margin-group partitions).
PARTITIONED_TABLES = ("positions", "collateral", "accounts")

COUNT_SCHEMA = {"table": pl.String, "read": pl.Int64, "used": pl.Int64, "quarantined": pl.Int64}
#: Columns of an instrument's values that books gather by instrument code.
INSTRUMENT_VALUE_COLUMNS = (
    "underlying", "kind", "expiry", "strike", "option_type", "multiplier", "price", "implied_vol", "fx",
    "index_price", "index_fx", "price_scan", "vol_scan", "im_rate", "spread_rate", "short_option_min_rate", "years",
    "delta", "gamma", "vega", "theta",
)


@dataclasses.dataclass(frozen=True)
class MarginInputs:
    """Typed input tables for one as-of date (structure already checked by the loader).

    Daily tables are LazyFrames with exactly the SPEC §2 columns; methodology tables
    are small, trusted, validated DataFrames.
    """

    as_of: dt.date
    positions: pl.LazyFrame
    prices: pl.LazyFrame
    collateral: pl.LazyFrame
    fx_rates: pl.LazyFrame
    instruments: pl.LazyFrame
    accounts: pl.LazyFrame
    haircuts: pl.DataFrame
    risk_params: pl.DataFrame
    scenarios: pl.DataFrame
    offsets: pl.DataFrame
    maintenance_ratio: float = 0.75
    vol_floor: float = 0.01
    #: SPEC §11 stress table (trusted, validated), or None: no stress output.
    stress_scenarios: pl.DataFrame | None = None


@dataclasses.dataclass(frozen=True)
class SharedDay:
    """What every partition of a day shares, resolved once (collected, small)."""

    as_of: dt.date
    fx: pl.DataFrame  # usable FX rates, USD included: currency, usd_rate
    market: pl.DataFrame  # one row per valid instrument with its market data, ``hold_reason`` and code
    instrument_ids: pl.Series  # code book: ids[code] == instrument_id
    instrument_values: pl.DataFrame  # usable instruments valued, ``instrument_id`` = code
    valid_underlyings: pl.DataFrame  # ``underlying`` of every valid instrument (the stresses move them)
    quarantine: pl.DataFrame  # the shared tables' quarantine rows
    counts: pl.DataFrame  # the shared and methodology tables' counts
    haircuts: pl.DataFrame
    risk_params: pl.DataFrame
    scenarios: pl.DataFrame
    offsets: pl.DataFrame
    maintenance_ratio: float
    vol_floor: float
    stress_scenarios: pl.DataFrame | None = None

    @property
    def scenario_ids(self) -> list[int]:
        return sorted(self.scenarios["scenario_id"].to_list())


@dataclasses.dataclass(frozen=True)
class ResolvedDay:
    """One partition of a day (or the whole book) resolved: checked rows with their
    ``reason`` (null = usable) and codes, the usable rows by code, the account code book."""

    shared: SharedDay
    account_ids: pl.Series  # code book: ids[code] == account_id
    checked: dict[str, pl.DataFrame]  # positions, collateral, accounts with reason and account_code
    positions: pl.DataFrame  # usable: account_id, instrument_id (codes), quantity
    collateral: pl.DataFrame  # usable: account_id (code), asset, amount
    accounts: pl.DataFrame  # usable: account_id (code), margin_group, margin_mode, lei
    quarantine: pl.DataFrame  # this partition's quarantine rows (positions, collateral, accounts)
    counts: pl.DataFrame  # this partition's counts (positions, collateral, accounts)


def table_counts(checked: dict[str, pl.LazyFrame | pl.DataFrame]) -> pl.DataFrame:
    """Rows read / used / quarantined of each checked table (``reason`` null = used)."""
    frames = [
        frame.lazy().select(
            pl.lit(table).alias("table"),
            pl.len().cast(pl.Int64).alias("read"),
            pl.col("reason").is_null().sum().cast(pl.Int64).alias("used"),
            pl.col("reason").is_not_null().sum().cast(pl.Int64).alias("quarantined"),
        )
        for table, frame in checked.items()
    ]
    return pl.concat(frames).collect() if frames else pl.DataFrame(schema=COUNT_SCHEMA)


def quarantine_of(checked: dict[str, pl.LazyFrame | pl.DataFrame]) -> pl.DataFrame:
    """The quarantine rows of checked tables, in the quarantine table's key order."""
    return pl.concat(
        [validation.quarantine_rows(frame.lazy(), table) for table, frame in checked.items()], how="vertical"
    ).sort(RESULT_KEYS["quarantine"]).collect()


def resolve_shared(inputs: MarginInputs) -> SharedDay:
    """Check prices, FX rates and instruments once and build the instrument market (SPEC §3–§4)."""
    fx_checked = validation.check_fx_rates(inputs.fx_rates)
    instruments_checked = validation.check_instruments(inputs.instruments)
    prices_checked = validation.check_prices(inputs.prices)
    fx_checked, instruments_checked, prices_checked = pl.collect_all([fx_checked, instruments_checked, prices_checked])
    fx = validation.usable_fx(fx_checked.lazy()).collect()
    instrument_ids = encoding.sorted_ids(inputs.instruments, "instrument_id")
    market = validation.instrument_market(
        validation.usable_rows(instruments_checked.lazy()),
        validation.usable_rows(prices_checked.lazy()),
        fx.lazy(),
        inputs.risk_params.lazy(),
        inputs.as_of,
    ).join(encoding.code_table(instrument_ids, encoding.INSTRUMENT_CODE), on="instrument_id", how="left").collect()
    instrument_values = valuation.value_instruments(
        market.lazy().filter(pl.col("hold_reason").is_null()), inputs.as_of
    ).select(pl.col(encoding.INSTRUMENT_CODE).alias("instrument_id"), *INSTRUMENT_VALUE_COLUMNS).collect()
    checked = {"prices": prices_checked, "fx_rates": fx_checked, "instruments": instruments_checked}
    methodology = pl.DataFrame(
        {
            "table": list(METHODOLOGY_TABLES),
            "read": [getattr(inputs, t).height for t in METHODOLOGY_TABLES],
            "used": [getattr(inputs, t).height for t in METHODOLOGY_TABLES],
            "quarantined": [0] * len(METHODOLOGY_TABLES),
        },
        schema=COUNT_SCHEMA,
    )
    return SharedDay(
        as_of=inputs.as_of,
        fx=fx,
        market=market,
        instrument_ids=instrument_ids,
        instrument_values=instrument_values,
        valid_underlyings=validation.usable_rows(instruments_checked.lazy()).select("underlying").collect(),
        quarantine=quarantine_of(checked),
        counts=pl.concat([table_counts(checked), methodology]),
        haircuts=inputs.haircuts,
        risk_params=inputs.risk_params,
        scenarios=inputs.scenarios,
        offsets=inputs.offsets,
        maintenance_ratio=inputs.maintenance_ratio,
        vol_floor=inputs.vol_floor,
        stress_scenarios=inputs.stress_scenarios,
    )


def resolve_day(inputs: MarginInputs, shared: SharedDay | None = None) -> ResolvedDay:
    """Positions, collateral and accounts of ``inputs`` checked against ``shared`` (resolved
    from ``inputs`` when not given), account ids encoded (SPEC §3)."""
    shared = shared if shared is not None else resolve_shared(inputs)
    # Ids become dense integer codes (sorted order) for every join and group-by downstream;
    # the outputs are decoded at the end, quarantine rows keep the raw strings.
    coded, account_ids = encoding.encode_accounts(
        {"positions": inputs.positions, "collateral": inputs.collateral, "accounts": inputs.accounts}
    )
    positions_checked = validation.check_positions(coded["positions"], shared.market.lazy()).select(
        *validation.INPUT_COLUMNS["positions"], encoding.ACCOUNT_CODE, encoding.INSTRUMENT_CODE, "reason"
    )
    collateral_checked = validation.check_collateral(coded["collateral"], shared.fx.lazy())
    accounts_checked = validation.check_accounts(coded["accounts"])
    checked = dict(zip(
        PARTITIONED_TABLES, pl.collect_all([positions_checked, collateral_checked, accounts_checked])
    ))
    account_code = pl.col(encoding.ACCOUNT_CODE).alias("account_id")
    instrument_code = pl.col(encoding.INSTRUMENT_CODE).alias("instrument_id")
    usable = {table: validation.usable_rows(frame.lazy()) for table, frame in checked.items()}
    positions, collateral, accounts = pl.collect_all([
        usable["positions"].select(account_code, instrument_code, "quantity"),
        usable["collateral"].select(account_code, "asset", "amount"),
        usable["accounts"].select(account_code, "margin_group", "margin_mode", "lei"),
    ])
    return ResolvedDay(
        shared=shared,
        account_ids=account_ids,
        checked=checked,
        positions=positions,
        collateral=collateral,
        accounts=accounts,
        quarantine=quarantine_of(checked),
        counts=table_counts(checked),
    )


def day_counts(shared: SharedDay, partition_counts: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """The day's rows read / used / quarantined per input table: the partitioned tables
    summed over the partitions, the shared and methodology tables counted once; in the
    contract's table order."""
    order = pl.DataFrame({"table": [*INPUT_TABLES, *METHODOLOGY_TABLES]}).with_row_index("position")
    partitioned = (
        pl.concat([c.filter(pl.col("table").is_in(PARTITIONED_TABLES)) for c in partition_counts] or
                  [pl.DataFrame(schema=COUNT_SCHEMA)])
        .group_by("table").agg(pl.col("read", "used", "quarantined").sum())
    )
    return (
        pl.concat([partitioned, shared.counts]).join(order, on="table", how="left")
        .sort("position").drop("position").select(list(COUNT_SCHEMA))
    )
