"""A small two-day warehouse for the analyst-facing tests (views, report, exports, sql).

Built without Prefect: the worked example book A is loaded, computed and published
directly with ``publish_date``.  Day 2025-03-14 is the example itself; day 2025-03-13 is
the same book one day earlier with prices and crypto FX 5 % lower, a few position rows
absent and collateral 10 % larger, so day-over-day changes have all three drivers.
Accounts get valid LEIs (ISO 17442) except ACC0003, whose LEI fails its check digits,
and ACC0007, which has none.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import polars as pl
from stdnum.iso7064 import mod_97_10

from conftest import EXAMPLES
from flows.loading import load_inputs
from flows.warehouse import publish_date
from transforms.pipeline import compute_margin

DAY = dt.date(2025, 3, 14)
PREVIOUS_DAY = dt.date(2025, 3, 13)
INVALID_LEI = "969500T3MBS4SQAMHJ45"
INVALID_LEI_ACCOUNT = "ACC0003"
STABLE = ("USD", "USDC", "USDT")


def valid_lei(account_id: str) -> str:
    """A deterministic LEI with correct MOD 97-10 check digits: LOU prefix 5493, 14 chars, 2 check digits."""
    base = ("549300" + account_id.replace("ACC", "MRGACC"))[:18].ljust(18, "0")
    return base + mod_97_10.calc_check_digits(base)


def _book_inputs(target: Path) -> Path:
    inputs = target / "inputs"
    shutil.copytree(EXAMPLES / "book_a_12_accounts" / "inputs", inputs)
    accounts_path = inputs / "reference" / "accounts.parquet"
    accounts = pl.read_parquet(accounts_path)
    leis = [
        None if lei is None else INVALID_LEI if account == INVALID_LEI_ACCOUNT else valid_lei(account)
        for account, lei in zip(accounts["account_id"], accounts["lei"])
    ]
    accounts.with_columns(pl.Series("lei", leis, dtype=pl.String)).write_parquet(accounts_path)

    today = inputs / f"date={DAY.isoformat()}"
    yesterday = inputs / f"date={PREVIOUS_DAY.isoformat()}"
    yesterday.mkdir()
    shutil.copy(today / "instruments.parquet", yesterday / "instruments.parquet")
    prices = pl.read_parquet(today / "prices.parquet")
    prices.with_columns(pl.col("price") * 0.95).write_parquet(yesterday / "prices.parquet")
    fx = pl.read_parquet(today / "fx_rates.parquet")
    fx.with_columns(
        pl.when(pl.col("currency").is_in(STABLE)).then(pl.col("usd_rate")).otherwise(pl.col("usd_rate") * 0.95)
    ).write_parquet(yesterday / "fx_rates.parquet")
    positions = pl.read_parquet(today / "positions.parquet")
    positions.filter(pl.int_range(pl.len()) % 9 != 4).write_parquet(yesterday / "positions.parquet")
    collateral = pl.read_parquet(today / "collateral.parquet")
    collateral.with_columns(pl.col("amount") * 1.1).write_parquet(yesterday / "collateral.parquet")
    # cumulative variation margin collected, for the EMIR export of DAY (SPEC §10)
    pl.DataFrame(
        {"account_id": ["ACC0000", "ACC0002"], "vm_collected_usd": [1234.567891, 0.000005]}
    ).write_parquet(today / "variation_margin.parquet")
    return inputs


def run_record(as_of: dt.date, run_id: str, counts: pl.DataFrame, policy: dict) -> dict:
    started = dt.datetime.combine(as_of, dt.time(18, 0), tzinfo=dt.timezone.utc)
    return {
        "run_id": run_id,
        "as_of_date": as_of,
        "started_at": started,
        "finished_at": started + dt.timedelta(seconds=3),
        "status": "succeeded",
        "error": None,
        "code_version": "test",
        "parameters": {k: policy[k] for k in ("maintenance_ratio", "vol_floor", "reporting_lei",
                                              "collateralisation_category")},
        "input_checksums": {},
        "row_counts": {r["table"]: {k: r[k] for k in ("read", "used", "quarantined")} for r in counts.to_dicts()},
        "timings": {},
        "warnings": {},
    }


def build_warehouse(target: Path) -> tuple[Path, Path]:
    """Publish both days into ``target/warehouse.duckdb``; return (db, inputs root)."""
    inputs = _book_inputs(target)
    db = target / "warehouse.duckdb"
    for as_of in (PREVIOUS_DAY, DAY):
        loaded = load_inputs(inputs, as_of)
        results = compute_margin(loaded.margin_inputs)
        run_id = f"{as_of.isoformat()}-test"
        record = run_record(as_of, run_id, results.counts, loaded.policy)
        record["parameters"]["inputs"] = str(inputs)  # as the flow records it (margin explain reads them)
        publish_date(db, as_of, run_id, results.tables, record)
    return db, inputs


_SHARED: dict[str, tuple[Path, Path]] = {}


def shared_warehouse(tmp_path_factory) -> tuple[Path, Path]:
    """One published two-day warehouse per test process, for modules that only read it."""
    if "book" not in _SHARED:
        _SHARED["book"] = build_warehouse(tmp_path_factory.mktemp("published-book"))
    return _SHARED["book"]
