"""The data contract, defined once (SPEC §2 inputs, §8 outputs).

Input tables and their column types, the output tables with their columns, types and
keys, and the reporting currency.  Every other module imports these names:
``flows.loading`` checks the input files against ``INPUT_SCHEMAS``, ``transforms.pipeline``
selects and orders the output tables by ``RESULT_SCHEMAS`` / ``RESULT_KEYS``, the
results store, the warehouse publish and the tests iterate ``RESULT_TABLES``, and
``tests/test_contract.py`` checks ``sql/schema.sql`` against ``RESULT_SCHEMAS``.

To add an output column or table: add it here (and to ``sql/schema.sql``, which the
test compares), then produce it in ``transforms/``.
"""

from __future__ import annotations

import polars as pl

#: Currency every amount is reported in (SPEC §2: FX rates are USD per unit).
REPORTING_CURRENCY = "USD"

# ---------------------------------------------------------------------------------------
# Inputs (SPEC §2)

#: The daily tables of ``date=D/``.
INPUT_TABLES = ("positions", "prices", "collateral", "fx_rates", "instruments", "accounts")
#: The methodology tables of ``reference/`` (small, trusted, checked whole by the loader).
METHODOLOGY_TABLES = ("haircuts", "risk_params", "scenarios", "offsets")

STR, F64, I32, DATE = "str", "f64", "i32", "date"
#: Column → type of every input table, in file order.
INPUT_SCHEMAS: dict[str, dict[str, str]] = {
    "positions": {"account_id": STR, "instrument_id": STR, "quantity": F64, "source": STR},
    "prices": {"instrument_id": STR, "price": F64, "implied_vol": F64},
    "collateral": {"account_id": STR, "asset": STR, "amount": F64},
    "fx_rates": {"currency": STR, "usd_rate": F64},
    "instruments": {
        "instrument_id": STR, "kind": STR, "underlying": STR, "currency": STR, "multiplier": F64,
        "expiry": DATE, "strike": F64, "option_type": STR,
    },
    "accounts": {"account_id": STR, "margin_group": STR, "margin_mode": STR, "lei": STR},
    "haircuts": {"asset": STR, "tier_start_usd": F64, "haircut": F64},
    "risk_params": {
        "underlying": STR, "price_scan": F64, "vol_scan": F64, "im_rate": F64, "spread_rate": F64,
        "short_option_min_rate": F64,
    },
    "scenarios": {"scenario_id": I32, "price_move": F64, "vol_move": F64, "cover": F64},
    "offsets": {
        "priority": I32, "underlying_a": STR, "underlying_b": STR, "ratio_a": F64, "ratio_b": F64,
        "credit_rate": F64,
    },
    "stress_scenarios": {"stress_id": STR, "underlying": STR, "price_move": F64, "vol_move": F64, "description": STR},
}
#: Columns a file may lack (filled with nulls).
OPTIONAL_COLUMNS = frozenset({("positions", "source"), ("accounts", "lei"), ("stress_scenarios", "description")})
#: Tables that may be absent from both folders (SPEC §11: no stress table, no stress output).
OPTIONAL_INPUT_TABLES = ("stress_scenarios",)
POLARS_TYPES = {STR: pl.String, F64: pl.Float64, I32: pl.Int32, DATE: pl.Date}
#: ``INPUT_SCHEMAS`` as Polars dtypes (for writers of input files: the generator, tests).
INPUT_POLARS_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    table: {column: POLARS_TYPES[kind] for column, kind in columns.items()} for table, columns in INPUT_SCHEMAS.items()
}

# ---------------------------------------------------------------------------------------
# Outputs (SPEC §8): every warehouse row also carries ``as_of_date`` and ``run_id``.

F, S, I, B = pl.Float64, pl.String, pl.Int64, pl.Boolean
#: Column → dtype of every result table, in table order.
RESULT_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "position_margin": {
        "account_id": S, "instrument_id": S, "underlying": S, "kind": S, "net_qty": F, "gross_qty": F,
        "source_count": I, "price": F, "mv_usd": F, "delta_units": F, "delta_usd": F, "gamma_units": F,
        "vega_usd": F, "theta_usd": F, "net_im": F, "gross_im": F, "worst_scenario_loss": F,
    },
    "underlying_risk": {
        "account_id": S, "underlying": S, "net_delta_units": F, "delta_usd": F, "gamma_units": F, "vega_usd": F,
        "theta_usd": F, "scenario_losses": pl.List(F), "scan_risk": F, "worst_scenario": pl.Int32,
        "calendar_charge": F, "short_option_min": F, "inter_credit": F, "risk": F,
    },
    "collateral_valuation": {
        "account_id": S, "asset": S, "amount": F, "usd_rate": F, "value_usd": F, "haircut_usd": F,
        "value_after_haircut_usd": F, "eligible": B,
    },
    "account_margin": {
        "account_id": S, "margin_group": S, "margin_mode": S, "lei": S, "position_count": I, "gross_im": F,
        "net_im": F, "portfolio_im": F, "inter_credit": F, "im": F, "mm": F, "collateral_value_usd": F,
        "haircut_usd": F, "position_value_usd": F, "equity": F, "excess": F, "margin_ratio": F, "status": S,
        "binding_status": S, "netting_benefit": F, "complete": B,
    },
    "group_margin": {
        "margin_group": S, "member_count": I, "sum_member_im": F, "group_im": F, "aggregation_benefit": F,
        "group_equity": F, "group_excess": F, "status": S,
    },
    "quarantine": {"source_table": S, "row_json": S, "reason": S},
    # SPEC §11 (empty when the day has no stress table); a counterparty is (book_type, book_id).
    "stress_results": {
        "book_type": S, "book_id": S, "stress_id": S, "position_pnl_usd": F, "collateral_change_usd": F,
        "stressed_equity": F, "shortfall_usd": F, "mm": F,
    },
    "stress_summary": {
        "stress_id": S, "ladder_move": F, "counterparties_below_mm": I, "counterparties_in_shortfall": I,
        "total_shortfall_usd": F, "cover1_usd": F, "cover2_usd": F, "cover1_book_type": S, "cover1_book_id": S,
        "cover2_book_type": S, "cover2_book_id": S,
    },
    "liquidation_distance": {"book_type": S, "book_id": S, "move_down": F, "move_up": F},
}
#: The result tables, in publish order.
RESULT_TABLES: tuple[str, ...] = tuple(RESULT_SCHEMAS)
#: Key (and row order) of each result table within its date; quarantine has no key,
#: its rows are ordered by all three columns.
RESULT_KEYS: dict[str, list[str]] = {
    "position_margin": ["account_id", "instrument_id"],
    "underlying_risk": ["account_id", "underlying"],
    "collateral_valuation": ["account_id", "asset"],
    "account_margin": ["account_id"],
    "group_margin": ["margin_group"],
    "quarantine": ["source_table", "reason", "row_json"],
    "stress_results": ["stress_id", "book_type", "book_id"],
    "stress_summary": ["stress_id"],
    "liquidation_distance": ["book_type", "book_id"],
}
#: The stress-test tables (SPEC §11).
STRESS_TABLES = ("stress_results", "stress_summary", "liquidation_distance")


def result_columns(table: str) -> tuple[str, ...]:
    """The columns of result table ``table``, in order."""
    return tuple(RESULT_SCHEMAS[table])
